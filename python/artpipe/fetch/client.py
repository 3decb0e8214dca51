"""``Fetcher``: the run's one aiohttp session, its attempt loop, redirects and results.

Single-flight: concurrent fetches of one URL (by its normalized form, the
cache key) with the same validators share one network request (invariant 2
in docs/contracts.md); this is the only coalescing layer of a run. Each
attempt follows redirects by hand (so every hop holds its own slots and only
http/https is followed); a ``Retryable`` failure waits (``retry``) and tries
again, up to ``max_attempts`` real failures — while a host that throttles is
waited for until ``throttle_deadline``, so no slot is lost to a busy host.
``SAVE_PHASE`` counts any request made while the save step runs
(``http.requests_in_save``), the guard for invariant 3.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from artpipe.cache import normalize_url
from artpipe.errors import (
    FetchError,
    FetchTimeoutError,
    HTTPStatusError,
    RedirectError,
)
from artpipe.fetch.body import read_body
from artpipe.fetch.limits import (
    DEFAULT_LIMITS,
    OTHER_HOSTS,
    FetchLimits,
    HostGate,
    HostStats,
    origin_of,
)
from artpipe.fetch.messages import fetch_failure
from artpipe.fetch.retry import (
    REDIRECTS,
    THROTTLE_STATUSES,
    Retryable,
    pushes_back,
    status_failure,
)
from artpipe.metrics import Metrics

SAVE_PHASE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "artpipe_save_phase", default=False
)
"""True inside the task that runs the save step; requests made there are counted."""
class BodyReservation(Protocol):
    """Memory a caller holds for the body it is waiting for (``pipeline.budget.Held``)."""

    async def grow_to(self, n: int) -> None: ...

    def drop(self) -> None: ...


BODY_RESERVE: contextvars.ContextVar[BodyReservation | None] = contextvars.ContextVar(
    "artpipe_body_reserve", default=None)
"""Set by a caller that bounds the bytes it holds. A request drops the reservation before
it waits for a connection slot, and grows it to the body's size (its Content-Length, or
``max_bytes`` when none is declared or the body is compressed) once the headers passed
their checks, before the body is read; a failed attempt drops it again. So no request
ever waits for a slot while holding memory, nor holds memory while it sleeps to retry."""

_COUNTERS: Final = (
    "http.requests",
    "http.bytes",
    "http.retries",
    "http.not_modified",
    "http.429",
    "http.throttled",
    "http.requests_in_save",
)
# What the metrics' "hosts" section keeps of each host's statistics.
_HOST_FIELDS: Final = ("requests", "throttled", "retries", "wait_ms", "window", "window_min",
                       "rate", "windows")
_FlightKey = tuple[str, str | None, str | None]


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
        limits: FetchLimits = DEFAULT_LIMITS,
        metrics: Metrics | None = None,
        user_agent: str = "artpipe/0.1",
        resolve: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        self.limits = limits
        self.resolve = dict(resolve or {})
        self.metrics = metrics
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._gate = HostGate(limits)
        self._flights: dict[_FlightKey, _Flight] = {}
        self._timed_hosts: set[str] = set()  # hosts with a host.<name>.fetch timer (bounded)
        # Where downloaded originals go (the run's cache), awaited inside the flight.
        self.keep: Callable[[FetchResult], Awaitable[None]] | None = None
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
            if self.metrics is not None:
                self.metrics.set_hosts({
                    name: {key: getattr(s, key) for key in _HOST_FIELDS}
                    for name, s in self._gate.snapshot().items()
                })

    # -- public ------------------------------------------------------------------
    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        """Download ``url`` (original bytes) or learn it is unchanged (304).

        Raises a ``FetchError`` subclass that names the URL, the HTTP status
        (if any), the attempt count and what to do. Concurrent calls with the
        same URL (``cache.normalize_url``: scheme and host case, default port
        and fragment do not matter) and validators share one network request;
        cancelling the first caller hands the download over to the others,
        cancelling the last one cancels the request.
        """
        if self._session is None:
            raise RuntimeError("Fetcher is not open; use 'async with Fetcher(...) as fetcher'")
        key = (normalize_url(url), etag, last_modified)
        flight = self._flights.get(key)
        if flight is not None:
            return await self._join(key, flight)
        # The first caller (the leader) downloads in its own task — no extra task per
        # fetch on the hot path — and publishes the outcome to any callers who join.
        flight = _Flight(asyncio.get_running_loop().create_future())
        self._flights[key] = flight
        try:
            result = await self._download(url, etag, last_modified)
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

    def host_stats(self, top: int | None = None) -> dict[str, HostStats]:
        """Per-host requests, bytes, retries, throttling, latency and window (copies).

        Busiest first; hosts past ``top`` (and hosts forgotten to keep the
        tables bounded) are summed into one ``OTHER_HOSTS`` row.
        """
        return self._gate.snapshot(top)

    def host_windows(self) -> dict[str, int]:
        """Each tracked host's adaptive window now (requests it may have in flight)."""
        return self._gate.windows()

    def hosts_tracked(self) -> int:
        """Origins with state held now (at most ``limits.max_hosts`` when idle)."""
        return len(self._gate)

    def downloads_in_flight(self) -> int:
        """Distinct downloads running now (callers sharing one count once)."""
        return len(self._flights)

    def free_slots(self) -> int:
        """Request slots free now, all hosts together (``concurrency`` when idle)."""
        return self._gate.free_slots()

    # -- single flight -----------------------------------------------------------
    async def _join(self, key: _FlightKey, flight: _Flight) -> FetchResult:
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
        key: _FlightKey,
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
            self._download(url, etag, last_modified), name=f"fetch {url}"
        )
        flight.task = task
        task.add_done_callback(functools.partial(self._handoff_done, key, flight))

    def _handoff_done(
        self, key: _FlightKey, flight: _Flight, task: asyncio.Task[FetchResult]
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

    def _land(self, key: _FlightKey, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _count(self, name: str, n: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.count(name, n)

    # -- attempts ----------------------------------------------------------------
    async def _download(
        self, url: str, etag: str | None, last_modified: str | None
    ) -> FetchResult:
        """The whole flight: fetch, then ``keep`` the bytes before anyone else may ask.

        Keeping inside the flight closes the gap between "the download landed"
        and "the bytes are in the cache", where a second want of the URL would
        find neither and download it again.
        """
        result = await self._fetch(url, etag, last_modified)
        if self.keep is not None and result.data is not None:
            await self.keep(result)
        return result

    async def _fetch(self, url: str, etag: str | None, last_modified: str | None) -> FetchResult:
        try:
            start = URL(url)
        except (ValueError, TypeError) as exc:
            raise fetch_failure(FetchError, url, f"{url!r} is not a valid URL ({exc})",
                                "fix the URL in the manifest") from exc
        if start.scheme not in ("http", "https") or not start.raw_host:
            raise fetch_failure(FetchError, url, "only http and https URLs with a host can be "
                                "downloaded", "fix the URL in the manifest")
        headers: dict[str, str] = {}
        if etag is not None:
            headers["If-None-Match"] = etag
        if last_modified is not None:
            headers["If-Modified-Since"] = last_modified
        attempt = failures = throttles = 0
        throttled_since: float | None = None
        while True:
            attempt += 1
            try:
                resp = await self._follow(url, start, headers, attempt)
            except Retryable as failure:
                origin = failure.host or origin_of(start)
                if failure.patient:
                    throttles += 1
                    delay = failure.delay(throttles, self.limits)
                else:
                    failures += 1
                    delay = failure.delay(failures, self.limits)
                if failure.throttle:
                    # Slow the host down for everyone (even when this URL gives up now).
                    self._gate.throttle(origin, delay)
                if failure.patient:
                    # The host is busy, not broken: wait for it, up to the deadline.
                    now = time.monotonic()
                    if throttled_since is None:
                        throttled_since = now
                    if now + delay - throttled_since > self.limits.throttle_deadline:
                        raise self._throttled_out(url, failure, attempt, now - throttled_since,
                                                  delay) from failure
                elif failures >= self.limits.max_attempts:
                    raise failure.error from failure.__cause__
                self._count("http.retries")
                self._gate.stats(origin).retries += 1
                await asyncio.sleep(delay)
                continue
            return self._result(url, start, resp, attempt, etag, last_modified)

    def _throttled_out(self, url: str, failure: Retryable, attempt: int, waited: float,
                       delay: float) -> FetchError:
        """The one way a throttled request fails: the deadline, said as such."""
        status = failure.error.status
        deadline = self.limits.throttle_deadline
        return fetch_failure(
            HTTPStatusError, url,
            f"the server kept throttling it for {waited:.0f} s and asked for {delay:.0f} s "
            "more", "the host limits how fast we may ask: lower --per-host, set --rate "
            "HOST=N/s, raise --throttle-deadline, or run again later",
            status=status, attempt=attempt, note=f"throttle deadline of {deadline:g} s")

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
        for _hop in range(self.limits.max_redirects + 1):
            problem = host_problem(current)
            if problem is not None:  # getaddrinfo would raise UnicodeError outside any handler
                raise fetch_failure(
                    FetchError if current is start else RedirectError, url,
                    f"{'redirect to ' if current is not start else ''}{current} {problem}",
                    "fix the URL in the manifest" if current is start else "use another URL",
                    attempt=attempt)
            resp = await self._request(url, current, headers, attempt)
            if resp.status not in REDIRECTS:
                return resp
            status = resp.status
            location = resp.headers.get("Location")
            if not location:
                raise fetch_failure(
                    HTTPStatusError, url, f"redirect from {current} without a Location header",
                    "the server is misconfigured — report it or use another URL",
                    status=status, attempt=attempt)
            try:
                target = current.join(URL(location))
            except (ValueError, TypeError) as exc:
                raise fetch_failure(
                    RedirectError, url, f"redirect to an invalid location {location!r}",
                    "use another URL", status=status, attempt=attempt) from exc
            if target.scheme not in ("http", "https") or not target.raw_host:
                raise fetch_failure(
                    RedirectError, url, f"redirect to {location!r} refused — only http and "
                    "https are followed", "use a direct http(s) URL to the image",
                    status=status, attempt=attempt)
            current = target
        raise fetch_failure(
            RedirectError, url, f"more than {self.limits.max_redirects} redirects, the last "
            f"to {current} (a redirect loop?)", "use the final image URL instead",
            attempt=attempt)

    async def _request(
        self, url: str, target: URL, headers: dict[str, str], attempt: int
    ) -> _Response:
        """One network request, holding one global and one origin slot (one frame: cheap)."""
        origin = origin_of(target)
        reservation = BODY_RESERVE.get()
        if reservation is not None:
            reservation.drop()  # never wait for a slot while holding memory (a deadlock)
        waited_ns = time.perf_counter_ns()
        ticket = await self._gate.acquire(origin)
        waited_ms = (time.perf_counter_ns() - waited_ns) / 1e6
        try:
            session = self._session
            if session is None:
                raise fetch_failure(FetchError, url, "the fetcher was closed while the "
                                    "download was running", "run again to fetch it",
                                    attempt=attempt)
            stats = ticket.host.stats
            host = self._timer_host(stats.host)
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
                    if pushes_back(status, resp.headers):
                        self._gate.pushed_back(ticket)
                        self._count("http.throttled")
                    elif status < 400:
                        self._gate.accepted(ticket)
                    if status == 429:
                        self._count("http.429")
                    if status in REDIRECTS or status == 304:
                        return _Response(status, resp.headers, None, target)
                    if status not in (200, 203):
                        raise status_failure(url, status, resp.headers, attempt, origin)
                    data, wire = await read_body(url, resp, attempt, self.limits.max_bytes,
                                                 reservation)
                    return _Response(status, resp.headers, data, target)
            except (FetchError, Retryable):
                raise
            except TimeoutError as exc:
                # aiohttp's total, connect and read timeouts all land here.
                raise Retryable(fetch_failure(
                    FetchTimeoutError, url, _timeout_kind(exc, self.limits),
                    "the server is slow or unreachable — retry later or raise the timeout",
                    status=status, attempt=attempt)) from exc
            except aiohttp.ClientPayloadError as exc:
                raise Retryable(fetch_failure(
                    FetchError, url, f"the body ended early or was malformed ({exc})",
                    "the connection is unreliable — retry later",
                    status=status, attempt=attempt)) from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise Retryable(fetch_failure(
                    FetchError, url, f"connection failed ({type(exc).__name__}: {exc})",
                    "check the network or the host name, or retry later",
                    status=status, attempt=attempt)) from exc
            finally:
                elapsed_ms = (time.perf_counter_ns() - start_ns) / 1e6
                stats.latency_ms_total += elapsed_ms
                stats.bytes += wire
                stats.last_end = time.monotonic()
                if self.metrics is not None:
                    self.metrics.count("http.bytes", wire)
                    self.metrics.record("fetch.web", elapsed_ms, start_ns=start_ns, track="fetch")
                    self.metrics.record("fetch.wait", waited_ms)
                    self.metrics.record(f"host.{host}.fetch", elapsed_ms)
                    if status in THROTTLE_STATUSES:  # when a host pushed back, for the
                        self.metrics.record("fetch.throttled", elapsed_ms,  # report's timeline
                                            start_ns=start_ns, track="fetch")
        except BaseException:
            if reservation is not None:
                reservation.drop()  # a retry sleeps, and waits for a slot, holding nothing
            raise
        finally:
            self._gate.release(ticket)

    def _timer_host(self, name: str) -> str:
        """The host part of a ``host.<name>.fetch`` timer: one per host, up to
        ``max_hosts`` of them, then one shared row (100k hosts, not 100k timers)."""
        if name in self._timed_hosts:
            return name
        if len(self._timed_hosts) < self.limits.max_hosts:
            self._timed_hosts.add(name)
            return name
        return OTHER_HOSTS


def host_problem(url: URL) -> str | None:
    """Why ``url``'s host can never be looked up (IDNA cannot encode it), or None.

    ``xn--zz-`` or ``a..b`` parse as URLs, but yarl's ``URL.host`` (IDNA decode)
    or the resolver (IDNA encode) raises ``UnicodeError``; checked before every
    hop touches either, so such a host fails its slot instead of the run.
    """
    return _host_name_problem(url.raw_host or "")


@functools.lru_cache(maxsize=4096)  # asked for every hop; a run talks to few hosts
def _host_name_problem(host: str) -> str | None:
    try:
        host.encode("idna").decode("idna")
    except UnicodeError as exc:
        return f"has a host name that cannot be encoded ({exc})"
    return None


def _timeout_kind(exc: BaseException, limits: FetchLimits) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"connect timed out after {limits.connect_timeout:g} s"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return f"no data for {limits.read_timeout:g} s (read timeout)"
    return f"request took over {limits.total_timeout:g} s (total timeout)"
