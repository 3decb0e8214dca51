"""The async HTTP client: one aiohttp session per run, with limits that hold.

Media sites rate-limit (429/503 with Retry-After), CDNs stall, and scraped
URLs point at anything. ``Fetcher`` is the only code in artpipe that talks
HTTP, and it enforces every safety limit of DESIGN.md:

- Concurrency: our own semaphores (global, then per host) sit *in front of*
  aiohttp's connector, with the same numbers, so the connector never queues and
  time spent waiting for a slot never counts against a request's timeouts
  (aiohttp counts pool waits against ``connect``/``total``).
- Single-flight: concurrent fetches of one URL with the same validators share
  one network request (DESIGN invariant 2).
- Retries with capped exponential backoff and full jitter, only for what can
  succeed later: connection errors, timeouts, 5xx, 408 and 429. A 429/503
  Retry-After slows the whole host down, not only the request that saw it.
- Size caps on the wire (Content-Length checked before reading) and after
  decompression: we turn aiohttp's auto-decompression off and inflate the
  stream ourselves with a bounded output size, so a gzip bomb costs at most
  ``max_bytes`` of memory instead of whatever it expands to.
- Content is sniffed by magic bytes: an HTML error page served as image/jpeg
  is rejected, whatever the Content-Type says.
- ``SAVE_PHASE`` counts any request made while the save step runs
  (``http.requests_in_save``), the guard for DESIGN invariant 3.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import functools
import random
import socket
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from artpipe.errors import (
    FetchError,
    FetchTimeoutError,
    HTTPStatusError,
    NotAnImageError,
    RedirectError,
    ResponseTooLargeError,
)
from artpipe.metrics import Metrics

SAVE_PHASE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "artpipe_save_phase", default=False
)
"""True inside the task that runs the save step; requests made there are counted."""

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES: Final = frozenset({408, 429})
_THROTTLE_STATUSES: Final = frozenset({429, 503})
_COUNTERS: Final = (
    "http.requests",
    "http.bytes",
    "http.retries",
    "http.not_modified",
    "http.429",
    "http.requests_in_save",
)


@dataclass(frozen=True)
class FetchLimits:
    """Every limit the fetcher enforces; DESIGN.md defaults.

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


@dataclass(frozen=True)
class FetchResult:
    """One fetched URL. ``data`` is None only when ``not_modified`` (HTTP 304)."""

    url: str
    data: bytes | None
    status: int
    etag: str | None
    last_modified: str | None
    not_modified: bool
    attempts: int
    final_url: str


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


def sniff_image(data: bytes) -> str | None:
    """The image format named by ``data``'s magic bytes, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, float(value))  # lenient: "1.5"
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _plural(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def _when(status: int | None, attempt: int) -> str:
    """ "HTTP 200, after 2 attempts" — the status only when the server sent one."""
    if status is None:
        return f"after {_plural(attempt)}"
    return f"HTTP {status}, after {_plural(attempt)}"


def _describe_body(data: bytes) -> str:
    head = data[:24]
    text = head.decode("ascii", "replace").replace("\n", " ").replace("\r", " ")
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f'starts with "{text}"'
    return f"starts with bytes {head[:12].hex(' ')}"


class _Retryable(Exception):
    """Internal: this attempt failed in a way a later attempt may not."""

    def __init__(
        self,
        error: FetchError,
        retry_after: float | None = None,
        throttle: bool = False,
        host: str | None = None,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.throttle = throttle
        self.host = host  # the host that answered (a redirect target, maybe)


@dataclass
class _Flight:
    """One in-flight download and the callers waiting on it besides its leader."""

    future: asyncio.Future[FetchResult]
    waiters: int = 0
    task: asyncio.Task[FetchResult] | None = None  # set when a cancelled leader hands off


@dataclass
class _Response:
    status: int
    headers: CIMultiDictProxy[str]
    data: bytes | None
    url: URL


@dataclass
class _Inflater:
    """Bounded streaming decompression for gzip/deflate bodies."""

    limit: int
    encoding: str
    _obj: zlib._Decompress | None = field(default=None, init=False)
    total: int = field(default=0, init=False)

    def feed(self, chunk: bytes, out: list[bytes]) -> None:
        if self._obj is None:
            if self.encoding == "deflate":
                # "deflate" is zlib-wrapped by the RFC but raw in the wild.
                zlib_header = (
                    len(chunk) >= 2
                    and (chunk[0] & 0x0F) == 8
                    and ((chunk[0] << 8) | chunk[1]) % 31 == 0
                )
                self._obj = zlib.decompressobj(15 if zlib_header else -15)
            else:
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        data = chunk
        while data:
            # max_length keeps each step's output bounded, however well it compresses.
            piece = self._obj.decompress(data, self.limit - self.total + 1)
            self._take(piece, out)
            data = self._obj.unconsumed_tail

    def finish(self, out: list[bytes]) -> None:
        if self._obj is not None:
            self._take(self._obj.flush(), out)

    def _take(self, piece: bytes, out: list[bytes]) -> None:
        self.total += len(piece)
        if self.total > self.limit:
            raise _TooLarge
        if piece:
            out.append(piece)


class _TooLarge(Exception):
    pass


class _StaticResolver(aiohttp.abc.AbstractResolver):
    """Pins some host names to an address and port, like curl's ``--resolve``.

    URLs keep their stable host name (so the store and cache keys do not change
    from run to run) while the connection goes to, say, a loopback server on
    an ephemeral port — what ``artpipe demo`` needs. Other names resolve normally.
    """

    def __init__(self, pinned: Mapping[str, tuple[str, int]]) -> None:
        self._pinned = dict(pinned)
        self._fallback = aiohttp.resolver.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        if host in self._pinned:
            address, pinned_port = self._pinned[host]
            return [
                {
                    "hostname": host,
                    "host": address,
                    "port": pinned_port,
                    "family": socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            ]
        return list(await self._fallback.resolve(host, port, family))

    async def close(self) -> None:
        await self._fallback.close()


class Fetcher:
    """Async context manager owning the run's one ``aiohttp.ClientSession``.

    ::

        async with Fetcher(FetchLimits(concurrency=32, per_host=8), metrics) as f:
            result = await f.fetch(url, etag=old_etag)
    """

    def __init__(
        self,
        limits: FetchLimits = FetchLimits(),  # frozen, safe to share
        metrics: Metrics | None = None,
        user_agent: str = "artpipe/0.1",
        resolve: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        self.limits = limits
        self.resolve = dict(resolve or {})
        self.metrics = metrics
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._global = asyncio.Semaphore(limits.concurrency)
        self._host_slots: dict[str, asyncio.Semaphore] = {}
        self._not_before: dict[str, float] = {}  # host -> loop.time() before which we wait
        self._flights: dict[tuple[str, str | None, str | None], _Flight] = {}
        self._stats: dict[str, HostStats] = {}
        self._timeout = aiohttp.ClientTimeout(
            total=limits.total_timeout,
            sock_connect=limits.connect_timeout,
            sock_read=limits.read_timeout,
        )

    # -- lifecycle ---------------------------------------------------------------
    async def __aenter__(self) -> Fetcher:
        if self.metrics is not None:
            # Present as 0 from the start: a report shows "requests_in_save: 0", the proof,
            # rather than no line at all.
            for name in _COUNTERS:
                self.metrics.count(name, 0)
        connector = aiohttp.TCPConnector(
            limit=self.limits.concurrency,
            limit_per_host=self.limits.per_host,
            ttl_dns_cache=300,
            resolver=_StaticResolver(self.resolve) if self.resolve else None,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            headers={"User-Agent": self.user_agent, "Accept-Encoding": "gzip, deflate"},
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session; fetches still running end with a FetchError."""
        handoffs = [f.task for f in self._flights.values() if f.task is not None]
        for task in handoffs:
            task.cancel()
        if handoffs:
            await asyncio.gather(*handoffs, return_exceptions=True)
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- public ------------------------------------------------------------------
    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        """Download ``url`` (original bytes) or learn it is unchanged (304).

        Raises a ``FetchError`` subclass that names the URL, the HTTP status
        (if any), the attempt count and what to do. Concurrent calls with the
        same URL and validators share one network request; cancelling one
        caller leaves the others' request running, cancelling the last one
        cancels the request.
        """
        if self._session is None:
            raise RuntimeError("Fetcher is not open; use 'async with Fetcher(...) as fetcher'")
        key = (url, etag, last_modified)
        flight = self._flights.get(key)
        if flight is not None:
            return await self._join(key, flight)
        # The first caller (the leader) downloads in its own task — no extra task per
        # fetch on the hot path — and publishes the outcome to any callers who join.
        flight = _Flight(asyncio.get_running_loop().create_future())
        self._flights[key] = flight
        try:
            result = await self._fetch(url, etag, last_modified)
        except asyncio.CancelledError:
            self._leader_cancelled(key, flight, url, etag, last_modified)
            raise
        except BaseException as exc:
            self._land(key, flight)
            flight.future.set_exception(exc)
            flight.future.exception()  # retrieved: joiners still receive it
            raise
        self._land(key, flight)
        flight.future.set_result(result)
        return result

    def host_stats(self) -> dict[str, HostStats]:
        """Per-host requests, bytes, retries, throttling and latency (copies)."""
        return {
            host: HostStats(
                host=s.host,
                requests=s.requests,
                bytes=s.bytes,
                retries=s.retries,
                throttled=s.throttled,
                latency_ms_total=s.latency_ms_total,
                first_start=s.first_start,
                last_end=s.last_end,
            )
            for host, s in self._stats.items()
        }

    # -- internals ---------------------------------------------------------------
    async def _join(self, key: tuple[str, str | None, str | None], flight: _Flight) -> FetchResult:
        """Wait for a download another caller started (shielded: leaving does not stop it)."""
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.future)
        finally:
            flight.waiters -= 1
            task = flight.task
            if flight.waiters == 0 and task is not None and not task.done():
                # The leader left earlier and now every joiner has too: nobody wants it.
                task.cancel()
                self._land(key, flight)

    def _leader_cancelled(
        self,
        key: tuple[str, str | None, str | None],
        flight: _Flight,
        url: str,
        etag: str | None,
        last_modified: str | None,
    ) -> None:
        if flight.waiters == 0:
            self._land(key, flight)
            flight.future.cancel()
            return
        # Others still wait: carry on for them in a task (a fresh attempt; the
        # cancelled request's connection is gone). It runs in the leader's context.
        task = asyncio.get_running_loop().create_task(
            self._fetch(url, etag, last_modified), name=f"fetch {url}"
        )
        flight.task = task
        task.add_done_callback(functools.partial(self._handoff_done, key, flight))

    def _handoff_done(
        self,
        key: tuple[str, str | None, str | None],
        flight: _Flight,
        task: asyncio.Task[FetchResult],
    ) -> None:
        self._land(key, flight)
        if flight.future.done():
            return
        if task.cancelled():
            flight.future.cancel()
        elif (exc := task.exception()) is not None:
            flight.future.set_exception(exc)
        else:
            flight.future.set_result(task.result())

    def _land(self, key: tuple[str, str | None, str | None], flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _count(self, name: str, n: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.count(name, n)

    def _host_stats(self, host: str) -> HostStats:
        stats = self._stats.get(host)
        if stats is None:
            stats = self._stats[host] = HostStats(host)
        return stats

    async def _fetch(self, url: str, etag: str | None, last_modified: str | None) -> FetchResult:
        limits = self.limits
        try:
            start = URL(url)
        except (ValueError, TypeError) as exc:
            raise FetchError(
                f"could not fetch {url!r}: not a valid URL ({exc}); fix the URL in the manifest",
                url,
                None,
                0,
            ) from exc
        if start.scheme not in ("http", "https") or not start.host:
            raise FetchError(
                f"could not fetch {url}: only http and https URLs with a host can be "
                "downloaded; fix the URL in the manifest",
                url,
                None,
                0,
            )
        headers: dict[str, str] = {}
        if etag is not None:
            headers["If-None-Match"] = etag
        if last_modified is not None:
            headers["If-Modified-Since"] = last_modified
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = await self._follow(url, start, headers, attempt)
            except _Retryable as failure:
                host = failure.host or start.host
                delay = self._backoff(attempt)
                if failure.retry_after is not None:
                    delay = min(failure.retry_after, limits.retry_after_cap)
                if failure.throttle:
                    # Slow the host down for everyone (even when this URL gives up now).
                    until = asyncio.get_running_loop().time() + delay
                    if until > self._not_before.get(host, 0.0):
                        self._not_before[host] = until
                if attempt >= limits.max_attempts:
                    raise failure.error from failure.__cause__
                self._count("http.retries")
                self._host_stats(host).retries += 1
                await asyncio.sleep(delay)
                continue
            return self._result(url, start, resp, attempt, etag, last_modified)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        ceiling = min(self.limits.backoff_cap, self.limits.backoff_base * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)

    def _result(
        self,
        url: str,
        start: URL,
        resp: _Response,
        attempt: int,
        sent_etag: str | None,
        sent_last_modified: str | None,
    ) -> FetchResult:
        etag = resp.headers.get("ETag")
        last_modified = resp.headers.get("Last-Modified")
        final_url = url if resp.url is start else str(resp.url)
        if resp.status == 304:
            # A 304 may omit the validators; the ones we sent are still the current ones.
            etag = etag if etag is not None else sent_etag
            last_modified = last_modified if last_modified is not None else sent_last_modified
            self._count("http.not_modified")
            return FetchResult(url, None, 304, etag, last_modified, True, attempt, final_url)
        return FetchResult(
            url, resp.data, resp.status, etag, last_modified, False, attempt, final_url
        )

    async def _follow(
        self, url: str, start: URL, headers: dict[str, str], attempt: int
    ) -> _Response:
        """One attempt: request ``start`` and follow up to max_redirects redirects."""
        current = start
        for hop in range(self.limits.max_redirects + 1):
            resp = await self._request(url, current, headers, attempt)
            if resp.status not in _REDIRECTS:
                return resp
            location = resp.headers.get("Location")
            if not location:
                raise HTTPStatusError(
                    f"could not fetch {url}: HTTP {resp.status} redirect from {current} "
                    f"without a Location header (after {_plural(attempt)}); "
                    "the server is misconfigured — report it or use another URL",
                    url,
                    resp.status,
                    attempt,
                )
            try:
                target = current.join(URL(location))
            except (ValueError, TypeError) as exc:
                raise RedirectError(
                    f"could not fetch {url}: HTTP {resp.status} redirect to an invalid "
                    f"location {location!r} (after {_plural(attempt)}); use another URL",
                    url,
                    resp.status,
                    attempt,
                ) from exc
            if target.scheme not in ("http", "https") or not target.host:
                raise RedirectError(
                    f"could not fetch {url}: HTTP {resp.status} redirect to {location!r} refused "
                    f"— only http and https are followed (after {_plural(attempt)}); "
                    "use a direct http(s) URL to the image",
                    url,
                    resp.status,
                    attempt,
                )
            del hop
            current = target
        raise RedirectError(
            f"could not fetch {url}: more than {self.limits.max_redirects} redirects "
            f"(last to {current}; after {_plural(attempt)}) — a redirect loop? "
            "use the final image URL instead",
            url,
            None,
            attempt,
        )

    async def _acquire(self, host: str) -> asyncio.Semaphore:
        """Wait for the host's "not before" time, then a host slot, then a global slot."""
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
                return slot
            # Throttled while we queued: give the slots back and wait again.
            self._global.release()
            slot.release()

    async def _request(
        self, url: str, target: URL, headers: dict[str, str], attempt: int
    ) -> _Response:
        """One network request, holding one global and one host slot (one frame: cheap)."""
        host = target.host or ""
        slot = await self._acquire(host)
        try:
            limits = self.limits
            session = self._session
            if session is None:
                raise FetchError(
                    f"could not fetch {url}: the fetcher was closed while the download was "
                    f"running ({_when(None, attempt)}); run again to fetch it",
                    url,
                    None,
                    attempt,
                )
            stats = self._host_stats(host)
            self._count("http.requests")
            if SAVE_PHASE.get():
                self._count("http.requests_in_save")
            stats.requests += 1
            start_ns = time.perf_counter_ns()
            if stats.first_start is None:
                stats.first_start = time.monotonic()
            wire = 0
            status: int | None = None
            try:
                # aiohttp's own total timer covers connect, headers and body; it would also
                # count a wait for a pooled connection, but holding our slots means there is none.
                async with session.get(target, headers=headers, allow_redirects=False) as resp:
                    status = resp.status
                    if status in _THROTTLE_STATUSES:
                        stats.throttled += 1
                    if status == 429:
                        self._count("http.429")
                    if status in _REDIRECTS or status == 304:
                        return _Response(status, resp.headers, None, target)
                    if status not in (200, 203):
                        self._status_error(url, status, resp.headers, attempt, host)
                    data, wire = await self._read_body(url, resp, attempt)
                    return _Response(status, resp.headers, data, target)
            except (FetchError, _Retryable):
                raise
            except TimeoutError as exc:
                # aiohttp's total, connect and read timeouts all land here.
                what = _timeout_kind(exc, limits)
                raise _Retryable(
                    FetchTimeoutError(
                        f"could not fetch {url}: {what} ({_when(status, attempt)}); "
                        "the server is slow or unreachable — retry later or raise the timeout",
                        url,
                        status,
                        attempt,
                    )
                ) from exc
            except aiohttp.ClientPayloadError as exc:
                raise _Retryable(
                    FetchError(
                        f"could not fetch {url}: the body ended early or was malformed ({exc}) "
                        f"({_when(status, attempt)}); the connection is unreliable "
                        "— retry later",
                        url,
                        status,
                        attempt,
                    )
                ) from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise _Retryable(
                    FetchError(
                        f"could not fetch {url}: connection failed "
                        f"({type(exc).__name__}: {exc}) ({_when(status, attempt)}); "
                        "check the network or the host name, or retry later",
                        url,
                        status,
                        attempt,
                    )
                ) from exc
            finally:
                elapsed_ms = (time.perf_counter_ns() - start_ns) / 1e6
                stats.latency_ms_total += elapsed_ms
                stats.bytes += wire
                stats.last_end = time.monotonic()
                if self.metrics is not None:
                    self.metrics.count("http.bytes", wire)
                    self.metrics.record("fetch.web", elapsed_ms, start_ns=start_ns, track="fetch")
                    self.metrics.record(f"host.{host}.fetch", elapsed_ms)
        finally:
            self._global.release()
            slot.release()

    def _status_error(
        self, url: str, status: int, headers: CIMultiDictProxy[str], attempt: int, host: str
    ) -> None:
        if status in _RETRY_STATUSES or 500 <= status <= 599:
            retry_after = None
            if status in _THROTTLE_STATUSES:
                retry_after = parse_retry_after(headers.get("Retry-After"))
            if status == 429:
                hint = "the server rate-limits us; lower the concurrency or retry later"
            else:
                hint = "the server is failing or overloaded; retry later"
            raise _Retryable(
                HTTPStatusError(
                    f"could not fetch {url}: server answered HTTP {status} "
                    f"(after {_plural(attempt)}); {hint}",
                    url,
                    status,
                    attempt,
                ),
                retry_after=retry_after,
                throttle=status in _THROTTLE_STATUSES,
                host=host,
            )
        if status == 404 or status == 410:
            hint = "the image is gone; update or remove the URL in the manifest"
        elif status in (401, 403):
            hint = "access is denied; check the URL or the site's API key"
        else:
            hint = "check the URL"
        raise HTTPStatusError(
            f"could not fetch {url}: server answered HTTP {status} "
            f"(after {_plural(attempt)}, not retried); {hint}",
            url,
            status,
            attempt,
        )

    async def _read_body(
        self, url: str, resp: aiohttp.ClientResponse, attempt: int
    ) -> tuple[bytes, int]:
        """Stream the body with running counts on the wire and after decompression."""
        cap = self.limits.max_bytes
        status = resp.status
        declared = resp.content_length
        if declared is not None and declared > cap:
            raise ResponseTooLargeError(
                f"could not fetch {url}: Content-Length {declared} bytes is over the "
                f"{cap}-byte cap (HTTP {status}, after {_plural(attempt)}, body not read); "
                "raise max_bytes if this image is legitimate",
                url,
                status,
                attempt,
            )
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        inflater: _Inflater | None = None
        if encoding in ("gzip", "x-gzip", "deflate"):
            inflater = _Inflater(cap, "deflate" if encoding == "deflate" else "gzip")
        elif encoding not in ("identity", ""):
            raise FetchError(
                f"could not fetch {url}: unsupported Content-Encoding {encoding!r} "
                f"(HTTP {status}, after {_plural(attempt)}); ask the site to serve it plain",
                url,
                status,
                attempt,
            )
        parts: list[bytes] = []
        wire = 0
        sniffed = False
        try:
            content = resp.content
            while True:
                # readany hands over what is buffered; aiohttp's flow control keeps that
                # to a few hundred KB, so each step's memory is bounded.
                chunk = await content.readany()
                if not chunk:
                    break
                wire += len(chunk)
                if wire > cap:
                    raise _TooLarge
                if inflater is None:
                    parts.append(chunk)
                else:
                    inflater.feed(chunk, parts)
                if not sniffed:
                    head = b"".join(parts[:4])[:32]
                    if len(head) >= 12:
                        self._check_image(url, head, status, attempt)
                        sniffed = True
            if inflater is not None:
                inflater.finish(parts)
        except _TooLarge:
            raise ResponseTooLargeError(
                f"could not fetch {url}: the body passed the {cap}-byte cap "
                f"({'after decompression' if inflater is not None else 'on the wire'}; "
                f"HTTP {status}, after {_plural(attempt)}); raise max_bytes if this image "
                "is legitimate",
                url,
                status,
                attempt,
            ) from None
        except zlib.error as exc:
            raise _Retryable(
                FetchError(
                    f"could not fetch {url}: the {encoding} body is corrupt ({exc}) "
                    f"(HTTP {status}, after {_plural(attempt)}); retry later",
                    url,
                    status,
                    attempt,
                )
            ) from exc
        if declared is not None and wire < declared:
            raise _Retryable(
                FetchError(
                    f"could not fetch {url}: body is {wire} bytes, shorter than its "
                    f"Content-Length {declared} (HTTP {status}, after {_plural(attempt)}); "
                    "the connection is unreliable — retry later",
                    url,
                    status,
                    attempt,
                )
            )
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if not sniffed:
            self._check_image(url, data, status, attempt)
        return data, wire

    @staticmethod
    def _check_image(url: str, head: bytes, status: int, attempt: int) -> None:
        if sniff_image(head) is None:
            what = "an empty body" if not head else f"a body that {_describe_body(head)}"
            raise NotAnImageError(
                f"could not fetch {url}: got {what}, not a JPEG, PNG, GIF or WebP image "
                f"(HTTP {status}, after {_plural(attempt)}; an error page?) — check the URL",
                url,
                status,
                attempt,
            )


def _timeout_kind(exc: BaseException, limits: FetchLimits) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"connect timed out after {limits.connect_timeout:g} s"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return f"no data for {limits.read_timeout:g} s (read timeout)"
    return f"request took over {limits.total_timeout:g} s (total timeout)"


__all__ = [
    "SAVE_PHASE",
    "FetchLimits",
    "FetchResult",
    "Fetcher",
    "HostStats",
    "parse_retry_after",
    "sniff_image",
]
