"""Scoped timers, counters and a Chrome trace of the same scopes.

Cheap enough to stay on by default: a scope is two ``perf_counter_ns`` calls
and an append under a lock. Samples are kept so p50/p95 are exact; one float
per scope is a few MB even for a million images. The lock exists because the
save step runs timers in executor threads while the event loop runs others.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Trace events beyond this many are dropped (the counters and timers stay exact);
# a trace of a million-image run would otherwise be a multi-GB JSON file.
MAX_TRACE_EVENTS = 200_000


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile; the list must be sorted and non-empty."""
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Metrics:
    """Counters and timers for one run; exported as JSON and Chrome trace."""

    def __init__(self, trace: bool = True) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, int] = defaultdict(int)
        self._samples: dict[str, list[float]] = defaultdict(list)
        self._trace_enabled = trace
        self._events: list[dict[str, Any]] = []
        self._t0_ns = time.perf_counter_ns()
        self._pid = os.getpid()

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
            self._samples[name].append(ms)
            if (
                self._trace_enabled
                and start_ns is not None
                and len(self._events) < MAX_TRACE_EVENTS
            ):
                self._events.append(
                    {
                        "name": name,
                        "ph": "X",
                        "ts": (start_ns - self._t0_ns) / 1000.0,
                        "dur": ms * 1000.0,
                        "pid": self._pid,
                        "tid": track or threading.current_thread().name,
                    }
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

    def merge(self, other: dict[str, Any]) -> None:
        """Fold in a snapshot from another process (a shard worker's ``raw()``)."""
        with self._lock:
            for name, n in other.get("counters", {}).items():
                self._counters[name] += int(n)
            for name, samples in other.get("samples", {}).items():
                self._samples[name].extend(float(s) for s in samples)

    def raw(self) -> dict[str, Any]:
        """Picklable snapshot (counters + raw samples) for ``merge``."""
        with self._lock:
            return {
                "counters": dict(self._counters),
                "samples": {k: list(v) for k, v in self._samples.items()},
            }

    # -- export ---------------------------------------------------------
    def timers(self) -> dict[str, dict[str, float | int]]:
        with self._lock:
            snapshot = {k: sorted(v) for k, v in self._samples.items() if v}
        out: dict[str, dict[str, float | int]] = {}
        for name, values in sorted(snapshot.items()):
            total = sum(values)
            out[name] = {
                "count": len(values),
                "total_ms": round(total, 3),
                "avg_ms": round(total / len(values), 3),
                "min_ms": round(values[0], 3),
                "max_ms": round(values[-1], 3),
                "p50_ms": round(_percentile(values, 50), 3),
                "p95_ms": round(_percentile(values, 95), 3),
            }
        return out

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counters.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"timers": self.timers(), "counters": self.counters()}

    def write_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def write_trace(self, path: str | os.PathLike[str]) -> None:
        """Chrome trace-event JSON (open in Perfetto or chrome://tracing)."""
        with self._lock:
            events = list(self._events)
        tracks = sorted({str(e["tid"]) for e in events})
        tid_of = {name: i + 1 for i, name in enumerate(tracks)}
        trace_events: list[dict[str, Any]] = [
            {"name": "thread_name", "ph": "M", "pid": self._pid, "tid": tid_of[name],
             "args": {"name": name}}
            for name in tracks
        ]
        for e in events:
            trace_events.append({**e, "tid": tid_of[str(e["tid"])]})
        doc = {"traceEvents": trace_events, "displayTimeUnit": "ms"}
        Path(path).write_text(json.dumps(doc) + "\n", encoding="utf-8")
