"""Memory bound of `artpipe run`: peak RSS against manifest size (a benchmark, not a test).

docs/contracts.md promises memory "bounded by the queue sizes, never by the
manifest". This runs the real CLI over manifests of increasing size (default 10,000
and 100,000 movies, one tiny poster each) against the loopback image server in
a separate process (``tests/support/server.py``: every ``.jpg`` path is a
distinct generated JPEG), and records the artpipe process's peak RSS
(``os.wait4``) plus its RSS sampled over the run from ``/proc``. Target: peak
≤ 300 MB and flat — the 100k run's peak within a few MB of the 10k run's.

    python bench/bench_memory.py                       # 10k and 100k
    python bench/bench_memory.py --items 1000 10000    # quicker
    python bench/bench_memory.py --json out.json       # machine-readable too
    python bench/bench_memory.py --workdir /dev/shm/x  # libraries on tmpfs

Every write is fsynced (file and folder), so on a real disk the run is bound by
fsync latency (~100 items/s here); a tmpfs ``--workdir`` measures the engine
(~400 items/s on 2 cores) with the same memory behaviour.

Prints a Markdown table for bench/RESULTS.md. Run from the repository root
with artpipe importable (installed, or PYTHONPATH=python).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 300


@dataclass
class Result:
    items: int
    wall_s: float
    items_per_s: float
    peak_rss_mb: float
    rss_samples_mb: list[float] = field(default_factory=list)  # at 10%, 20%, ... 100% of the run
    saved: int = 0
    failed: int = 0
    requests: int = 0
    exit_code: int = 0


def start_server(width: int, height: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "support" / "server.py"), "--port", "0",
         "--latency", "0", "--width", str(width), "--height", str(height)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"image server did not start: {line!r}")
    return proc, int(line.split()[1])


def write_manifest(path: Path, items: int, port: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(items):
            folder = f"Movies/{i // 1000:03d}/Movie {i} ({1950 + i % 70})"
            f.write(json.dumps({
                "id": f"tt{i:08d}", "type": "movie", "title": f"Movie {i}",
                "year": 1950 + i % 70, "path": f"{folder}/Movie {i} ({1950 + i % 70}).mkv",
                "art": {"poster": f"http://127.0.0.1:{port}/poster/{i}.jpg"},
            }) + "\n")


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(items: int, port: int, workdir: Path, extra: list[str]) -> Result:
    case = workdir / f"run-{items}"
    if case.exists():
        shutil.rmtree(case)
    library = case / "library"
    library.mkdir(parents=True)
    manifest = case / "manifest.jsonl"
    write_manifest(manifest, items, port)
    metrics = case / "metrics.json"
    args = [sys.executable, "-m", "artpipe", "run", str(manifest), "--library", str(library),
            "--metrics", str(metrics), "--quiet", *extra]
    start = time.monotonic()
    # This script stays small: Linux carries the RSS high-water mark across fork+exec,
    # so a child of a big parent would report the parent's peak.
    proc = subprocess.Popen(args, cwd=ROOT)
    timeline: list[tuple[float, float]] = []
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        sample = rss_mb(proc.pid)
        if sample is not None:
            timeline.append((time.monotonic() - start, sample))
        time.sleep(0.25)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    counters = json.loads(metrics.read_text())["counters"] if metrics.exists() else {}
    samples = []
    for tenth in range(1, 11):
        upto = [rss for t, rss in timeline if t <= wall * tenth / 10]
        samples.append(round(upto[-1], 1) if upto else 0.0)
    result = Result(
        items=items, wall_s=round(wall, 1), items_per_s=round(items / wall, 1),
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1), rss_samples_mb=samples,
        saved=counters.get("images.saved", 0), failed=counters.get("images.failed", 0),
        requests=counters.get("http.requests", 0), exit_code=proc.returncode,
    )
    shutil.rmtree(case, ignore_errors=True)
    return result


def markdown(results: list[Result], image: tuple[int, int]) -> str:
    lines = [
        f"`python bench/bench_memory.py --items {' '.join(str(r.items) for r in results)}` — "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"one {image[0]}×{image[1]} JPEG poster per movie from a loopback server process, "
        "thread executor, default limits.",
        "",
        "| items | wall s | items/s | peak RSS MB | RSS over the run (10% … 100%) MB | saved |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        curve = " ".join(f"{v:.0f}" for v in r.rss_samples_mb)
        lines.append(f"| {r.items:,} | {r.wall_s} | {r.items_per_s} | {r.peak_rss_mb} | "
                     f"{curve} | {r.saved:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where libraries are built (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("extra", nargs="*", help="extra `artpipe run` options, after --")
    args = parser.parse_args()

    server, port = start_server(args.width, args.height)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="artpipe-bench-memory-"))
    results = []
    try:
        for n in args.items:
            result = measure(n, port, workdir, args.extra)
            results.append(result)
            verdict = "ok" if result.peak_rss_mb <= TARGET_MB else f"OVER {TARGET_MB} MB"
            print(f"{n} items: {result.wall_s} s, peak RSS {result.peak_rss_mb} MB ({verdict}), "
                  f"saved {result.saved}, failed {result.failed}, exit {result.exit_code}",
                  flush=True)
    finally:
        server.terminate()
        server.wait(10)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(markdown(results, (args.width, args.height)))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
