"""Memory is bounded by bytes in flight, not by item count.

Counting items or slots does not bound memory: one item may list 1,500
extrafanart URLs (every body held until it is saved), and one 16-bit PNG
under the pixel limit decodes to over a gigabyte, so eight render workers
can ask for ten. ``ByteBudget`` is an async byte semaphore that admission
control waits on before the bytes exist: the runner reserves a body's
declared size once its headers are in and before it is read (the cap when no
size is declared or the body is encoded; grown to the real size when the bytes
came from the cache or another item's download), and the decoded size from the
header probe before a render. A request larger than
the whole budget is admitted once nothing else holds any, so it runs alone
instead of never. Waiters are served in order, so a large request is not
starved by a stream of small ones.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["ByteBudget", "Held"]


class Held:
    """What one holder has reserved; ``resize`` may shrink it (never grow it)."""

    def __init__(self, budget: ByteBudget, n: int) -> None:
        self._budget = budget
        self.n = n
        self.closed = False

    def resize(self, n: int) -> None:
        """Keep only ``n`` bytes (the body turned out smaller than the cap)."""
        n = max(0, n)
        if n < self.n:
            self._budget.release(self.n - n)
            self.n = n

    def drop(self) -> None:
        """Hold nothing for now (a request about to wait for a connection, or to retry)."""
        if not self.closed:
            self.resize(0)

    async def grow_to(self, n: int) -> None:
        """Hold at least ``n`` bytes, waiting for room (a body whose size is now known).

        A holder that ended meanwhile (its block was left, e.g. cancelled while a shared
        download carried on) keeps nothing: what was granted is handed back at once.
        """
        if n <= self.n or self.closed:
            return
        # Ask for the whole amount again rather than the difference: a request larger than
        # the whole budget is admitted only when nothing is held, this holder included.
        self._budget.release(self.n)
        self.n = 0
        await self._budget.acquire(n)
        if self.closed:
            self._budget.release(n)
        else:
            self.n = n


class ByteBudget:
    """At most ``capacity`` bytes reserved at once (one oversize request alone)."""

    def __init__(self, capacity: int, name: str = "bytes") -> None:
        if capacity < 1:
            raise ValueError(f"the {name} budget must be at least 1 byte, not {capacity}")
        self.capacity = capacity
        self.name = name
        self.used = 0
        self.high_water = 0  # the most bytes ever reserved at once: what the tests assert on
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, n: int) -> bool:
        return self.used + n <= self.capacity or self.used == 0

    def _grant(self, n: int) -> None:
        self.used += n
        self.high_water = max(self.high_water, self.used)

    async def acquire(self, n: int) -> None:
        """Wait until ``n`` more bytes fit (or nothing else is held), then reserve them."""
        if n <= 0:
            return
        if not self._waiters and self._fits(n):
            self._grant(n)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, future)
        self._waiters.append(entry)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release(n)  # granted as we were cancelled: hand it on
            else:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._wake()
            raise

    def release(self, n: int) -> None:
        if n <= 0:
            return
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if not self._fits(n):
                return
            self._waiters.popleft()
            self._grant(n)
            future.set_result(None)

    @asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[Held]:
        """Reserve ``n`` bytes for the block; what is still held is released at its end."""
        n = max(0, n)
        await self.acquire(n)
        held = Held(self, n)
        try:
            yield held
        finally:
            held.closed = True
            self.release(held.n)
