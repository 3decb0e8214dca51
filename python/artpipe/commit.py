"""Group commit: many rendered files made durable with one sync pass.

A durable write costs two flushes to disk (the file's data, then its name in
the folder), and on a small disk that is most of the time a passthrough
thumbnail takes. Render threads therefore only *stage* a file (written in
full beside its target, under the temp name the sweeper knows) and hand it
here; one thread takes every staged file that is waiting, flushes them
together and renames each over its target (``_core.commit_writes``). While
one batch is on its way to disk the next one gathers, so the batch grows
with the load and costs nothing when it is light.

The guarantees are ``write_image``'s, file by file: a killed run leaves each
target complete old or complete new (a staged file is renamed only after its
data is on disk), and a future resolves only once the new file and its name
are durable, so the store, which records a file after its future, never
records one that a power cut could take back.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

from artpipe import _core
from artpipe.batches import BatchThread

__all__ = ["GroupCommitter"]

_MAX_BATCH = 256  # files per sync pass, at most: the first of them waits for all the rest
# Who waits for a commit: a thread (a concurrent future) or a task (an asyncio future,
# resolved on its loop with one wake-up per batch rather than one per file).
_Waiter = Future[None] | asyncio.Future[None]


class GroupCommitter(BatchThread[tuple[_core.StagedWrite, _Waiter]]):
    """One thread that commits staged writes in batches; ``commit`` returns a future."""

    def __init__(self, name: str = "commit") -> None:
        super().__init__(name, _MAX_BATCH)

    def commit(self, staged: _core.StagedWrite) -> Future[None]:
        """Put ``staged`` in place durably; the future raises why it could not be."""
        future: Future[None] = Future()
        self._give((staged, future))
        return future

    def commit_for(self, staged: _core.StagedWrite, waiter: asyncio.Future[None]) -> None:
        """``commit``, resolving ``waiter`` on its event loop (callable from any thread).

        The waiters of one batch are resolved together, in one call on their loop: a
        future per file handed across threads costs the loop a wake-up per file.
        A waiter cancelled before its batch is flushed drops its file, as ``commit``'s.
        """
        self._give((staged, waiter))

    def handle(self, batch: list[tuple[_core.StagedWrite, _Waiter]]) -> None:
        self._commit(batch)

    @staticmethod
    def _commit(batch: list[tuple[_core.StagedWrite, _Waiter]]) -> None:
        # A write whose waiter gave up (a cancelled run) is left out: dropped, its temp
        # file is removed and the target keeps its old file. The rest can no longer be
        # cancelled, so each waiter gets the result of its own file.
        batch = [(staged, waiter) for staged, waiter in batch if _claim(waiter)]
        if not batch:
            return
        try:
            errors: list[BaseException | None] = list(
                _core.commit_writes([staged for staged, _ in batch]))
        except Exception as exc:  # never expected: fail the batch, keep the thread
            errors = [exc] * len(batch)
        on_loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None],
                                                             BaseException | None]]] = {}
        for (_, waiter), error in zip(batch, errors, strict=True):
            if isinstance(waiter, Future):
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
            else:
                on_loops.setdefault(waiter.get_loop(), []).append((waiter, error))
        for loop, results in on_loops.items():
            settle_on_loop(loop, results)


def _claim(waiter: _Waiter) -> bool:
    """Whether the write is still wanted; a concurrent future can no longer be cancelled."""
    if isinstance(waiter, Future):
        return waiter.set_running_or_notify_cancel()
    # A task cancelled after this check finds its file in place, unrecorded: complete, and
    # the next run treats it as a file it did not write (hashes it, then keeps or replaces).
    return not waiter.cancelled()


def settle_on_loop(loop: asyncio.AbstractEventLoop,
                   results: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    """``settle`` on ``loop``, from any thread; nothing if the loop is closed (nobody waits)."""
    try:
        loop.call_soon_threadsafe(settle, results)
    except RuntimeError:
        pass


def settle(results: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    """Resolve asyncio futures with their results (on their loop: not thread-safe)."""
    for waiter, error in results:
        if waiter.done():  # cancelled meanwhile
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
