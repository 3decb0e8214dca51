"""Timers, counters and the Chrome trace: the formats docs/contracts.md promises."""

from __future__ import annotations

import json
import statistics
import threading
from pathlib import Path

from artpipe.metrics import Metrics
from hypothesis import given
from hypothesis import strategies as st


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200))
def test_timer_summary_is_exact(samples: list[float]) -> None:
    m = Metrics(trace=False)
    for s in samples:
        m.record("t", s)
    t = m.timers()["t"]
    assert t["count"] == len(samples)
    assert abs(t["total_ms"] - round(sum(samples), 3)) <= 1e-3 * max(1.0, sum(samples))
    assert t["min_ms"] == round(min(samples), 3)
    assert t["max_ms"] == round(max(samples), 3)
    assert t["min_ms"] <= t["p50_ms"] <= t["p95_ms"] <= t["max_ms"]
    ordered = sorted(samples)
    assert round(ordered[0], 3) <= t["p50_ms"] <= round(statistics.median_high(ordered), 3)


def test_counters_from_many_threads_add_up() -> None:
    m = Metrics()

    def work() -> None:
        for _ in range(1000):
            m.count("c")
            with m.timer("t"):
                pass

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.counters()["c"] == 8000
    assert m.timers()["t"]["count"] == 8000


def test_json_and_trace_files(tmp_path: Path) -> None:
    m = Metrics()
    with m.timer("render", track="worker-1"):
        pass
    with m.timer("render", track="worker-2"):
        pass
    m.count("http.requests", 3)
    m.write_json(tmp_path / "m.json")
    m.write_trace(tmp_path / "t.json")
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["counters"] == {"http.requests": 3}
    assert set(doc["timers"]["render"]) == {"count", "total_ms", "avg_ms", "min_ms", "max_ms",
                                            "p50_ms", "p95_ms"}
    trace = json.loads((tmp_path / "t.json").read_text())
    names = [e for e in trace["traceEvents"] if e["ph"] == "M"]
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["args"]["name"] for e in names} == {"worker-1", "worker-2"}
    assert len({e["tid"] for e in spans}) == 2
    assert all(isinstance(e["ts"], float) and e["dur"] >= 0 for e in spans)


def test_merge_folds_in_a_worker_snapshot() -> None:
    a, b = Metrics(), Metrics()
    a.count("x")
    b.count("x", 2)
    b.record("t", 5.0)
    a.merge(b.raw())
    assert a.counters()["x"] == 3
    assert a.timers()["t"]["count"] == 1


def test_memory_stays_flat_past_the_sample_cap() -> None:
    from artpipe.metrics import MAX_SAMPLES

    m = Metrics(trace=False)
    n = MAX_SAMPLES * 3
    for i in range(n):
        m.record("t", float(i % 1000))
    t = m.timers()["t"]
    assert t["count"] == n
    assert t["min_ms"] == 0 and t["max_ms"] == 999
    assert abs(t["total_ms"] - sum(float(i % 1000) for i in range(n))) < 1e-3
    assert 400 <= t["p50_ms"] <= 600  # a uniform sample of a uniform stream
    assert len(m.raw()["timers"]["t"]["samples"]) == MAX_SAMPLES


def test_merge_keeps_exact_aggregates() -> None:
    a, b = Metrics(), Metrics()
    for i in range(5):
        a.record("t", float(i))
        b.record("t", float(10 + i))
    a.merge(b.raw())
    t = a.timers()["t"]
    assert (t["count"], t["min_ms"], t["max_ms"], t["total_ms"]) == (10, 0, 14, 70)
