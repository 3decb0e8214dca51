"""Scoped timers, counters and a Chrome trace of the same scopes.

Cheap enough to stay on by default: a scope is two ``perf_counter_ns`` calls
and an update under a lock. Count, total, min and max are exact; p50/p95 come
from at most ``MAX_SAMPLES`` samples per timer (exact below that, a uniform
reservoir sample above it), so memory stays flat whatever the manifest size.
The lock exists because the save step runs timers in executor threads while
the event loop runs others.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Trace events beyond this many are dropped (the counters and timers stay exact);
# a trace of a million-image run would otherwise be a multi-GB JSON file.
MAX_TRACE_EVENTS = 100_000

# Samples kept per timer for the percentiles; beyond it, reservoir sampling.
MAX_SAMPLES = 10_000

# Per-host totals that add up when shards' "hosts" sections are merged.
_HOST_SUMS = ("requests", "throttled", "retries", "wait_ms")


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile; the list must be sorted and non-empty."""
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class _Timer:
    """Exact count/total/min/max plus a bounded uniform sample for percentiles."""

    __slots__ = ("count", "max", "min", "samples", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.samples: list[float] = []

    def add(self, ms: float, rng: random.Random) -> None:
        self.count += 1
        self.total += ms
        self.min = min(self.min, ms)
        self.max = max(self.max, ms)
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(ms)
        else:  # Algorithm R: every sample so far stays equally likely to be kept
            slot = rng.randrange(self.count)
            if slot < MAX_SAMPLES:
                self.samples[slot] = ms

    def merge(self, other: dict[str, Any], rng: random.Random) -> None:
        count = int(other["count"])
        if not count:
            return
        self.total += float(other["total"])
        self.min = min(self.min, float(other["min"]))
        self.max = max(self.max, float(other["max"]))
        merged = self.samples + [float(x) for x in other["samples"]]
        self.count += count
        if len(merged) > MAX_SAMPLES:
            merged = rng.sample(merged, MAX_SAMPLES)
        self.samples = merged

    def raw(self) -> dict[str, Any]:
        return {"count": self.count, "total": self.total, "min": self.min, "max": self.max,
                "samples": list(self.samples)}


class Metrics:
    """Counters and timers for one run; exported as JSON and Chrome trace."""

    def __init__(self, trace: bool = True) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, int] = defaultdict(int)
        self._timers: dict[str, _Timer] = defaultdict(_Timer)
        self._rng = random.Random(0)
        self._trace_enabled = trace
        self._events: list[tuple[str, float, float, str]] = []
        self._t0_ns = time.perf_counter_ns()
        self._pid = os.getpid()
        self._hosts: dict[str, dict[str, Any]] = {}

    # -- counters -------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def counter(self, name: str) -> int:
        with self._lock:
            return self._counters.get(name, 0)

    # -- timers ---------------------------------------------------------
    def record(
        self, name: str, ms: float, start_ns: int | None = None, track: str | None = None
    ) -> None:
        """Add one sample; with ``start_ns`` the scope also goes into the trace."""
        with self._lock:
            self._timers[name].add(ms, self._rng)
            if (
                self._trace_enabled
                and start_ns is not None
                and len(self._events) < MAX_TRACE_EVENTS
            ):
                # (name, start µs, duration µs, track): a tuple, not a dict, so a
                # full trace buffer costs ~15 MB rather than ~100 MB
                self._events.append(
                    (name, (start_ns - self._t0_ns) / 1000.0, ms * 1000.0,
                     track or threading.current_thread().name)
                )

    @contextmanager
    def timer(self, name: str, track: str | None = None) -> Iterator[None]:
        """Time a scope. ``track`` names the trace row (default: the thread)."""
        start = time.perf_counter_ns()
        try:
            yield
        finally:
            end = time.perf_counter_ns()
            self.record(name, (end - start) / 1e6, start_ns=start, track=track)

    # -- hosts ----------------------------------------------------------
    def set_hosts(self, hosts: dict[str, dict[str, Any]]) -> None:
        """The fetcher's per-host section (window over time, throttled, waiting), at its close."""
        with self._lock:
            self._hosts = {name: dict(h) for name, h in hosts.items()}

    def hosts(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: dict(h) for name, h in self._hosts.items()}

    def merge(self, other: dict[str, Any]) -> None:
        """Fold in a snapshot from another process (a shard worker's ``raw()``)."""
        with self._lock:
            for name, n in other.get("counters", {}).items():
                self._counters[name] += int(n)
            for name, timer in other.get("timers", {}).items():
                self._timers[name].merge(timer, self._rng)
            for name, host in other.get("hosts", {}).items():
                mine = self._hosts.get(name)
                if mine is None:
                    self._hosts[name] = dict(host)
                    continue
                for key in _HOST_SUMS:  # totals add up; the window is the latest shard's
                    mine[key] = mine.get(key, 0) + host.get(key, 0)
                mine.update({k: v for k, v in host.items() if k not in _HOST_SUMS})

    def raw(self) -> dict[str, Any]:
        """Picklable snapshot (counters + timers with their samples) for ``merge``."""
        with self._lock:
            return {
                "counters": dict(self._counters),
                "timers": {k: t.raw() for k, t in self._timers.items() if t.count},
                "hosts": {name: dict(h) for name, h in self._hosts.items()},
            }

    # -- export ---------------------------------------------------------
    def timers(self) -> dict[str, dict[str, float | int]]:
        with self._lock:
            snapshot = {k: (t.count, t.total, t.min, t.max, sorted(t.samples))
                        for k, t in self._timers.items() if t.count}
        out: dict[str, dict[str, float | int]] = {}
        for name, (count, total, low, high, values) in sorted(snapshot.items()):
            out[name] = {
                "count": count,
                "total_ms": round(total, 3),
                "avg_ms": round(total / count, 3),
                "min_ms": round(low, 3),
                "max_ms": round(high, 3),
                "p50_ms": round(_percentile(values, 50), 3),
                "p95_ms": round(_percentile(values, 95), 3),
            }
        return out

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counters.items()))

    def to_dict(self) -> dict[str, Any]:
        """``{"timers", "counters"}``, plus ``"hosts"`` when a fetcher reported its hosts."""
        out: dict[str, Any] = {"timers": self.timers(), "counters": self.counters()}
        hosts = self.hosts()
        if hosts:
            out["hosts"] = hosts
        return out

    def write_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def write_trace(self, path: str | os.PathLike[str]) -> None:
        """Chrome trace-event JSON (open in Perfetto or chrome://tracing)."""
        with self._lock:
            events = list(self._events)
        tracks = sorted({track for *_, track in events})
        tid_of = {name: i + 1 for i, name in enumerate(tracks)}
        trace_events: list[dict[str, Any]] = [
            {"name": "thread_name", "ph": "M", "pid": self._pid, "tid": tid_of[name],
             "args": {"name": name}}
            for name in tracks
        ]
        trace_events.extend(
            {"name": name, "ph": "X", "ts": ts, "dur": dur, "pid": self._pid,
             "tid": tid_of[track]}
            for name, ts, dur, track in events
        )
        doc = {"traceEvents": trace_events, "displayTimeUnit": "ms"}
        Path(path).write_text(json.dumps(doc) + "\n", encoding="utf-8")
