"""A thread that takes work from a queue in batches: what the batching writers share.

A thread that flushes many writes at once (``commit.GroupCommitter``, the cache's
``cache.CacheWriter``) blocks for the first item, then takes everything already
waiting: the batch grows with the load and costs nothing when it is light.
"""

from __future__ import annotations

import queue
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


def next_batch(waiting: queue.SimpleQueue[T | None], most: int) -> tuple[list[T], bool]:
    """Every item waiting (up to ``most``), blocking for the first; and whether a ``None``
    (asking the thread to stop after these) came with them."""
    first = waiting.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < most:
        try:
            more = waiting.get_nowait()
        except queue.Empty:
            break
        if more is None:
            return batch, True
        batch.append(more)
    return batch, False


class BatchThread(Generic[T]):
    """One daemon thread handing every queued item (up to ``most``) to ``handle`` at once.

    ``close`` lets the thread finish what is queued, then joins it; items given after
    that are refused (``RuntimeError``), never silently dropped.
    """

    def __init__(self, name: str, most: int) -> None:
        self._queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._most = most
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _give(self, item: T) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the {self._thread.name} thread is closed")
            self._queue.put(item)

    def idle(self) -> bool:
        """Whether nothing more is waiting (from the thread: the batch in hand is the last)."""
        return self._queue.empty()

    def close(self) -> None:
        """Handle what is queued, then stop the thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while True:
            batch, stopping = next_batch(self._queue, self._most)
            if batch:
                self.handle(batch)
            # Hold nothing while waiting: a dropped item (a staged file, a download's
            # bytes) must be freed now, not when the next one arrives.
            del batch
            if stopping:
                return

    def handle(self, batch: list[T]) -> None:
        raise NotImplementedError
