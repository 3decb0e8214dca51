"""Every limit the fetcher enforces, and the per-host admission that enforces them.

Our own semaphores (per host, then global) sit *in front of* aiohttp's
connector, with the same numbers, so the connector never queues and time spent
waiting for a slot never counts against a request's timeouts (aiohttp counts
pool waits against ``connect``/``total``). A host that answered 429/503 with
Retry-After gets a "not before" time that holds every request to it, not only
the one that saw the answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Final, NamedTuple

from yarl import URL

DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True)
class FetchLimits:
    """Every limit the fetcher enforces, with the documented defaults.

    Timeouts apply to one network request (one attempt, one redirect hop) from
    the moment it holds its slots: ``connect_timeout`` for the TCP/TLS connect,
    ``read_timeout`` between two reads, ``total_timeout`` for the whole request
    including its body. Waiting for a slot or for a throttled host is not counted.
    """

    concurrency: int = 32
    per_host: int = 8
    connect_timeout: float = 10
    read_timeout: float = 30
    total_timeout: float = 120
    max_bytes: int = 50 * 1024 * 1024
    max_redirects: int = 5
    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 120.0

    def __post_init__(self) -> None:
        for name in ("concurrency", "per_host", "max_attempts", "max_bytes"):
            if getattr(self, name) < 1:
                value = getattr(self, name)
                raise ValueError(f"FetchLimits.{name} must be at least 1, got {value}")
        if self.max_redirects < 0:
            raise ValueError(f"FetchLimits.max_redirects must be >= 0, got {self.max_redirects}")
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FetchLimits.{name} must be positive, got {getattr(self, name)}")


class Origin(NamedTuple):
    """Where a request goes: (scheme, host, port), the unit of every per-host limit.

    Two servers on two ports of one address are two hosts, each with its own
    slots, pauses and statistics — as aiohttp's connector and browsers see it.
    """

    scheme: str
    host: str
    port: int

    @property
    def label(self) -> str:
        """``host`` on the scheme's default port, else ``host:port`` (for people and metrics)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if DEFAULT_PORTS.get(self.scheme) == self.port:
            return host
        return f"{host}:{self.port}"


def origin_of(url: URL) -> Origin:
    """The origin of an absolute http(s) URL."""
    scheme = (url.scheme or "http").lower()
    port = url.port if url.port is not None else DEFAULT_PORTS.get(scheme, 0)
    return Origin(scheme, (url.host or "").lower(), port)


DEFAULT_LIMITS: Final = FetchLimits()
"""The documented defaults (frozen, safe to share)."""


@dataclass
class HostStats:
    """What one host cost us; ``Fetcher.host_stats()`` hands out copies."""

    host: str
    requests: int = 0
    bytes: int = 0
    retries: int = 0
    throttled: int = 0  # 429 and 503 answers
    latency_ms_total: float = 0.0
    first_start: float | None = None  # time.monotonic() of the first request
    last_end: float | None = None  # time.monotonic() of the latest request end

    @property
    def latency_ms_avg(self) -> float:
        return self.latency_ms_total / self.requests if self.requests else 0.0

    @property
    def requests_per_s(self) -> float:
        """Requests per second of wall time between the first start and the last end."""
        if self.first_start is None or self.last_end is None:
            return 0.0
        span = self.last_end - self.first_start
        return self.requests / span if span > 0 else 0.0


class HostGate:
    """Admits one request at a time per slot: a host slot, then a global slot.

    Also keeps each host's statistics, so what a host cost and how it is
    limited live in one place.
    """

    def __init__(self, limits: FetchLimits) -> None:
        self.limits = limits
        self._global = asyncio.Semaphore(limits.concurrency)
        self._host_slots: dict[str, asyncio.Semaphore] = {}
        self._not_before: dict[str, float] = {}  # host -> loop.time() before which we wait
        self._stats: dict[str, HostStats] = {}
        self._held = 0  # global slots held by requests now

    async def acquire(self, host: str) -> asyncio.Semaphore:
        """Wait for the host's "not before" time, then a host slot, then a global slot.

        Returns the host slot; pass it to ``release`` when the request ends.
        """
        loop = asyncio.get_running_loop()
        slot = self._host_slots.get(host)
        if slot is None:
            slot = self._host_slots[host] = asyncio.Semaphore(self.limits.per_host)
        while True:
            wait = self._not_before.get(host, 0.0) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            # Host first: holding a global slot while queued for a busy host would
            # starve every other host.
            await slot.acquire()
            try:
                await self._global.acquire()
            except BaseException:
                slot.release()
                raise
            if self._not_before.get(host, 0.0) <= loop.time():
                self._held += 1
                return slot
            # Throttled while we queued: give the slots back and wait again.
            self._global.release()
            slot.release()

    def release(self, slot: asyncio.Semaphore) -> None:
        self._held -= 1
        self._global.release()
        slot.release()

    def free_slots(self) -> int:
        """Global slots no request holds now (``concurrency`` when idle)."""
        return self.limits.concurrency - self._held

    def throttle(self, host: str, delay: float) -> None:
        """Hold every request to ``host`` for ``delay`` seconds (unless held longer already)."""
        until = asyncio.get_running_loop().time() + delay
        if until > self._not_before.get(host, 0.0):
            self._not_before[host] = until

    def stats(self, host: str) -> HostStats:
        """The live statistics of ``host`` (created on first use)."""
        stats = self._stats.get(host)
        if stats is None:
            stats = self._stats[host] = HostStats(host)
        return stats

    def snapshot(self) -> dict[str, HostStats]:
        """Copies of every host's statistics."""
        return {host: dataclasses.replace(s) for host, s in self._stats.items()}

