"""Every limit the fetcher enforces, and the per-origin admission that enforces them.

Limits, Retry-After pauses and statistics are kept per *origin* (scheme, host,
port), as aiohttp's connector and browsers do: two servers on two ports of
one address are two hosts, each with its own slots.

Our own admission (per origin, then global) sits *in front of* aiohttp's
connector, with the same numbers, so the connector never queues and time spent
waiting for a slot never counts against a request's timeouts (aiohttp counts
pool waits against ``connect``/``total``).

Each origin's concurrency is an AIMD window, as in TCP and Scrapy's
AutoThrottle: it opens towards ``per_host`` (at once, or with ``slow_start``
as TCP does: one request, then doubling every round until ``per_host`` or the
first push-back, so a host that allows 2 at once refuses 2 requests, not 6),
is cut (halved, never below 1) when the host pushes back (429, 503, a
Retry-After), and grows back by one per window's worth of successes — more
slowly above the level where the host last pushed back — never above
``per_host``. A host that rate-limits by requests
per second also gets a learned rate (token bucket, one token of burst) from
the answers it accepted in the second before it pushed back; ``--rate`` caps
it from the start. A Retry-After pauses every request to the origin, not
only the one that saw it.

State is bounded: at most ``max_hosts`` origins are tracked; the least
recently used idle one is forgotten first (its totals are folded into one
"other hosts" row), so a scraper touching 100k hosts does not grow memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from yarl import URL

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
OTHER_HOSTS: Final = "(other hosts)"
"""The statistics row of origins forgotten to keep the tables bounded."""

# Above the window at which a host last pushed back, grow one step per this
# many windows' worth of successes: probing past a known limit is what gets
# a client throttled again, so it is done rarely.
PROBE_ROUNDS: Final = 8
# A learned rate is this fraction of what the host accepted in the second
# before it pushed back: just under its limit, not on it ...
RATE_MARGIN: Final = 0.9
# ... and grows back by RATE_GROWTH req/s per success (about +0.5 % a second at
# any rate) up to RATE_HOLD of it, then by a tenth of that: probing past a
# known limit costs a refusal and a Retry-After pause, so it is done rarely,
# but a host that relaxes is still found again.
RATE_GROWTH: Final = 0.005
RATE_HOLD: Final = 0.97
MIN_RATE: Final = 0.1  # req/s; the slowest pace a learned rate can reach
WINDOW_HISTORY: Final = 32  # (seconds into the run, window) pairs kept per host


class Origin(NamedTuple):
    """Where a request goes: (scheme, host, port), the unit of every per-host limit."""

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


_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(?:/\s*s)?\s*$")


def parse_rate(text: str) -> float:
    """``"20/s"`` or ``"20"`` or ``"0.5/s"`` -> requests per second (> 0)."""
    match = _RATE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"rate {text!r} is not a positive number of requests per second "
                         "(e.g. 20/s or 0.5/s)")
    return float(match.group(1))


def parse_host_rate(text: str) -> tuple[str, float]:
    """``"HOST=N/s"`` -> (HOST, N). HOST is a host name, ``host:port`` or an http(s) origin."""
    host, sep, rate = text.partition("=")
    if not sep or not host.strip():
        raise ValueError(f"rate {text!r} is not HOST=N/s (e.g. api.themoviedb.org=40/s)")
    return host.strip().lower(), parse_rate(rate)


def _matches(spec: str, origin: Origin) -> bool:
    """Does a ``--rate`` host spec name this origin? (bare host: every port of it)."""
    if "://" in spec:
        try:
            return origin_of(URL(spec)) == origin
        except (ValueError, TypeError):
            return False
    if spec == origin.host or spec == origin.label:
        return True
    return spec == f"{origin.host}:{origin.port}"


@dataclass(frozen=True)
class FetchLimits:
    """Every limit the fetcher enforces, with the documented defaults.

    Timeouts apply to one network request (one attempt, one redirect hop) from
    the moment it holds its slots: ``connect_timeout`` for the TCP/TLS connect,
    ``read_timeout`` between two reads, ``total_timeout`` for the whole request
    including its body. Waiting for a slot or for a throttled host is not counted.

    ``max_attempts`` counts real failures (connection errors, timeouts, 5xx
    without Retry-After). A request the host throttled (429, or any answer
    with Retry-After) is retried for as long as the host keeps asking us to
    wait, up to ``throttle_deadline`` seconds after its first throttled answer.
    ``per_host`` is the most a host's adaptive window may reach (``adaptive``
    off: the window stays there); ``slow_start`` opens it from one request,
    doubling each round, rather than at ``per_host`` at once. ``rates`` caps
    chosen hosts' requests per second from the start (``(host spec, req/s)``;
    a bare host name covers all its ports), ``rate_default`` every other host's.
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
    throttle_deadline: float = 600.0
    adaptive: bool = True
    slow_start: bool = True
    rates: tuple[tuple[str, float], ...] = ()
    rate_default: float | None = None
    max_hosts: int = 1024

    def __post_init__(self) -> None:
        for name in ("concurrency", "per_host", "max_attempts", "max_bytes", "max_hosts"):
            if getattr(self, name) < 1:
                value = getattr(self, name)
                raise ValueError(f"FetchLimits.{name} must be at least 1, got {value}")
        if self.max_redirects < 0:
            raise ValueError(f"FetchLimits.max_redirects must be >= 0, got {self.max_redirects}")
        for name in ("connect_timeout", "read_timeout", "total_timeout", "throttle_deadline"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FetchLimits.{name} must be positive, got {getattr(self, name)}")
        for spec, rate in self.rates:
            if rate <= 0:
                raise ValueError(f"FetchLimits.rates: {spec} must be above 0 req/s, got {rate}")
        if self.rate_default is not None and self.rate_default <= 0:
            raise ValueError(f"FetchLimits.rate_default must be above 0 req/s, "
                             f"got {self.rate_default}")

    def rate_for(self, origin: Origin) -> float | None:
        """The configured requests per second for ``origin`` (None: no fixed rate)."""
        for spec, rate in self.rates:
            if _matches(spec, origin):
                return rate
        return self.rate_default


DEFAULT_LIMITS: Final = FetchLimits()
"""The documented defaults (frozen, safe to share)."""


@dataclass
class HostStats:
    """What one origin cost us, and how it is limited now; ``Fetcher.host_stats()`` copies."""

    host: str  # the origin's label: host, or host:port off the default port
    requests: int = 0
    bytes: int = 0
    retries: int = 0
    throttled: int = 0  # 429 and 503 answers, and any answer with Retry-After
    latency_ms_total: float = 0.0
    first_start: float | None = None  # time.monotonic() of the first request
    last_end: float | None = None  # time.monotonic() of the latest request end
    wait_ms: float = 0.0  # waiting for a slot, a pause or a token, all requests together
    window: int = 0  # requests allowed in flight now (the AIMD window)
    window_min: int = 0  # the smallest window this run
    rate: float | None = None  # requests per second allowed now (learned or configured)
    windows: list[tuple[float, int]] = field(default_factory=list)  # (s into run, window)

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


_SUMMED: Final = ("requests", "bytes", "retries", "throttled", "latency_ms_total", "wait_ms")


class _Host:
    """One origin's admission state: the window, pauses, rate, and its statistics."""

    __slots__ = ("accepted", "active", "ceiling", "cut_active", "cut_recent", "cut_throttled",
                 "epoch", "fixed_rate", "learned_rate", "limit", "not_before", "probe",
                 "rate_hold", "slow", "stamp", "stats", "tokens", "waiters", "window")

    def __init__(self, label: str, limit: int, fixed_rate: float | None, slow: bool) -> None:
        self.limit = limit
        self.slow = slow and limit > 1  # opening: +1 per success (doubling per round)
        self.window = 1.0 if self.slow else float(limit)
        self.stats = HostStats(label, window=int(self.window), window_min=limit,
                               rate=fixed_rate)
        self.ceiling: int | None = None  # the window at which the host last pushed back
        self.probe = 0.0  # growth credit above the ceiling
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.not_before = 0.0  # loop.time() before which nobody asks this host
        self.epoch = 0  # bumped by each cut: answers to requests sent before it do not cut again
        self.cut_active = 0
        self.cut_throttled = 0
        self.cut_recent = 0  # accepted in the second before this round's cut (0: no rate learned)
        self.fixed_rate = fixed_rate
        self.learned_rate: float | None = None
        self.rate_hold = 0.0  # above this, a learned rate grows only slowly
        self.tokens = 1.0
        self.stamp = 0.0
        self.accepted: deque[float] = deque(maxlen=4096)  # start times of accepted requests

    def rate(self) -> float | None:
        rates = [r for r in (self.fixed_rate, self.learned_rate) if r is not None]
        return min(rates) if rates else None

    def idle(self, now: float) -> bool:
        return self.active == 0 and not self.waiters and self.not_before <= now


@dataclass(frozen=True, slots=True)
class Ticket:
    """A request's hold on its origin and a global slot; give it back with ``release``."""

    host: _Host
    epoch: int
    start: float  # loop.time() when admitted


class HostGate:
    """Admits requests: the origin's window, its pause and rate, then a global slot.

    Also keeps each origin's statistics, so what a host cost and how it is
    limited live in one place.
    """

    def __init__(self, limits: FetchLimits) -> None:
        self.limits = limits
        self._global = asyncio.Semaphore(limits.concurrency)
        self._hosts: OrderedDict[Origin, _Host] = OrderedDict()
        self._other = HostStats(OTHER_HOSTS)
        self._held = 0  # global slots held by requests now
        self._t0 = time.monotonic()

    # -- admission ---------------------------------------------------------------
    def host(self, origin: Origin) -> _Host:
        """The state of ``origin`` (created on first use; marks it recently used)."""
        state = self._hosts.get(origin)
        if state is None:
            limits = self.limits
            state = _Host(origin.label, limits.per_host, limits.rate_for(origin),
                          slow=limits.slow_start and limits.adaptive)
            self._hosts[origin] = state
            self._prune()
        else:
            self._hosts.move_to_end(origin)
        return state

    async def acquire(self, origin: Origin) -> Ticket:
        """Wait for a place in the origin's window, its pause, a rate token, a global slot.

        Returns a ticket; pass it to ``release`` when the request ends.
        """
        loop = asyncio.get_running_loop()
        state = self.host(origin)
        began = loop.time()
        # Host first: holding a global slot while queued for a busy host would
        # starve every other host.
        await self._enter(state)
        try:
            while True:
                await self._wait_pause(state, loop)
                await self._take_token(state, loop)
                await self._global.acquire()
                if state.not_before <= loop.time():
                    break
                self._global.release()  # paused while we queued: wait again
        except BaseException:
            self._leave(state)
            raise
        self._held += 1
        now = loop.time()
        state.stats.wait_ms += (now - began) * 1000.0
        return Ticket(state, state.epoch, now)

    def release(self, ticket: Ticket) -> None:
        self._held -= 1
        self._global.release()
        self._leave(ticket.host)

    async def _enter(self, state: _Host) -> None:
        if state.active < int(state.window) and not state.waiters:
            state.active += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        try:
            await waiter  # ``_wake`` counted us in ``active`` before waking us
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._leave(state)  # woken and cancelled at once: pass the place on
            elif waiter in state.waiters:  # ``_wake`` may have dropped it, cancelled, already
                state.waiters.remove(waiter)
            raise

    def _leave(self, state: _Host) -> None:
        state.active -= 1
        self._wake(state)

    def _wake(self, state: _Host) -> None:
        while state.waiters and state.active < int(state.window):
            waiter = state.waiters.popleft()
            if not waiter.done():
                state.active += 1
                waiter.set_result(None)

    @staticmethod
    async def _wait_pause(state: _Host, loop: asyncio.AbstractEventLoop) -> None:
        while True:  # a pause may be extended while we sleep
            wait = state.not_before - loop.time()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    @staticmethod
    async def _take_token(state: _Host, loop: asyncio.AbstractEventLoop) -> None:
        """A token bucket with one token of burst: requests are paced, never bunched."""
        while (rate := state.rate()) is not None:
            now = loop.time()
            state.tokens = min(1.0, state.tokens + (now - state.stamp) * rate)
            state.stamp = now
            if state.tokens >= 1.0:
                state.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - state.tokens) / rate)

    def free_slots(self) -> int:
        """Global slots no request holds now (``concurrency`` when idle)."""
        return self.limits.concurrency - self._held

    # -- feedback ------------------------------------------------------------------
    def throttle(self, origin: Origin, delay: float) -> None:
        """Hold every request to ``origin`` for ``delay`` seconds (unless held longer already)."""
        state = self.host(origin)
        now = asyncio.get_running_loop().time()
        state.not_before = max(state.not_before, now + delay)

    def accepted(self, ticket: Ticket) -> None:
        """The host served a request: grow its window (and learned rate) a little."""
        state = ticket.host
        state.accepted.append(ticket.start)
        if not self.limits.adaptive:
            return
        if state.learned_rate is not None:
            step = RATE_GROWTH * min(1.0, state.learned_rate)
            state.learned_rate += step if state.learned_rate < state.rate_hold else step / 10
            state.stats.rate = state.rate()
        if state.window >= state.limit:
            return
        if state.slow:
            self._set_window(state, min(state.limit, state.window + 1.0))
            return
        if state.ceiling is None or state.window < state.ceiling:
            self._set_window(state, min(state.limit, state.window + 1.0 / state.window))
            return
        # At or above the level the host last refused: probe upwards, rarely.
        state.probe += 1.0 / (PROBE_ROUNDS * state.window)
        if state.probe >= 1.0:
            state.probe = 0.0
            state.ceiling = int(state.window) + 1
            self._set_window(state, min(state.limit, int(state.window) + 1.0))

    def pushed_back(self, ticket: Ticket) -> None:
        """The host throttled a request: cut its window once per round, learn its rate."""
        state = ticket.host
        state.stats.throttled += 1
        if not self.limits.adaptive:
            return
        state.slow = False
        if ticket.epoch == state.epoch:
            # The first push-back of this round: the requests in flight now were
            # one too many. Halve, and remember the level (TCP's ssthresh).
            state.epoch += 1
            state.cut_active = state.active
            state.cut_throttled = 1
            state.cut_recent = 0
            state.ceiling = max(1, state.active - 1)
            state.probe = 0.0
            self._set_window(state, max(1.0, min(state.window / 2, float(state.ceiling))),
                             cut=True)
            self._learn_rate(state, ticket)
        elif ticket.epoch == state.epoch - 1:
            # More answers of the same round: each one refused is one more over the limit.
            state.cut_throttled += 1
            state.ceiling = max(1, state.cut_active - state.cut_throttled)
            if state.window > state.ceiling:
                self._set_window(state, float(state.ceiling), cut=True)
            if state.cut_recent:  # it was counted as accepted while in flight: it was not
                self._set_rate(state, state.cut_recent - (state.cut_throttled - 1))

    def _learn_rate(self, state: _Host, ticket: Ticket) -> None:
        """A per-second limit shows as "it took N in the last second, then said no"."""
        first = state.stats.first_start
        if first is None or time.monotonic() - first < 1.0:
            return  # too early to tell a rate limit from a concurrency limit
        # a little over a second: the host counted our requests on arrival, a few
        # milliseconds after we sent them; the others in flight now reached it too
        # (those refused in this round are taken off as their answers come)
        since = ticket.start - 1.05
        recent = sum(1 for t in state.accepted if t > since) + state.active - 1
        if recent <= 0:
            return
        if state.learned_rate is not None and RATE_MARGIN * recent >= state.learned_rate:
            return  # already slower than that
        state.cut_recent = recent
        self._set_rate(state, recent)

    @staticmethod
    def _set_rate(state: _Host, accepted: int) -> None:
        state.learned_rate = max(MIN_RATE, RATE_MARGIN * accepted)
        state.rate_hold = RATE_HOLD * accepted
        state.stats.rate = state.rate()

    def _set_window(self, state: _Host, window: float, cut: bool = False) -> None:
        before = int(state.window)
        state.window = window
        after = int(window)
        if after != before:
            stats = state.stats
            stats.window = after
            if cut:  # the smallest window a push-back left (not the slow start's)
                stats.window_min = min(stats.window_min, after)
            stats.windows.append((round(time.monotonic() - self._t0, 3), after))
            if len(stats.windows) > WINDOW_HISTORY:
                del stats.windows[0]
            self._wake(state)

    # -- statistics ----------------------------------------------------------------
    def stats(self, origin: Origin) -> HostStats:
        """The live statistics of ``origin`` (created on first use)."""
        return self.host(origin).stats

    def windows(self) -> dict[str, int]:
        """Each tracked origin's window now."""
        return {state.stats.host: int(state.window) for state in self._hosts.values()}

    def snapshot(self, top: int | None = None) -> dict[str, HostStats]:
        """Copies of the origins' statistics, busiest first (``top``: only that many).

        Forgotten origins, and those past ``top``, are summed into one
        ``OTHER_HOSTS`` row, so the totals stay right.
        """
        states = sorted(self._hosts.items(), key=lambda kv: -kv[1].stats.requests)
        shared = Counter(origin.label for origin, _ in states)
        out: dict[str, HostStats] = {}
        other = dataclasses.replace(self._other, windows=[])
        for i, (origin, state) in enumerate(states):
            if top is not None and i >= top:
                _fold(other, state.stats)
                continue
            label = origin.label
            if shared[label] > 1 and origin.scheme != "https":
                label = f"{origin.scheme}://{label}"  # http://a and https://a in one run
            out[label] = dataclasses.replace(state.stats, host=label,
                                             windows=list(state.stats.windows))
        if other.requests:
            out[OTHER_HOSTS] = other
        return out

    def _prune(self) -> None:
        """Forget least recently used idle origins beyond ``max_hosts``."""
        excess = len(self._hosts) - self.limits.max_hosts
        if excess <= 0:
            return
        now = asyncio.get_running_loop().time()
        for origin in list(self._hosts)[:-1]:  # never the one just added
            if excess <= 0:
                break
            state = self._hosts[origin]
            if state.idle(now):  # a paused or busy origin keeps its state
                _fold(self._other, state.stats)
                del self._hosts[origin]
                excess -= 1

    def __len__(self) -> int:
        return len(self._hosts)


def _fold(into: HostStats, stats: HostStats) -> None:
    for name in _SUMMED:
        setattr(into, name, getattr(into, name) + getattr(stats, name))
    if stats.first_start is not None:
        into.first_start = min(into.first_start or math.inf, stats.first_start)
    if stats.last_end is not None:
        into.last_end = max(into.last_end or 0.0, stats.last_end)
