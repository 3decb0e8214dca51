"""Print the image-core ratio table of bench/RESULTS.md, all peers measured in one run.

Usage (from the repository root, after ``maturin develop --release`` and, for the
Pillow-SIMD columns, bench/peers/build_pillow_simd.sh):

    python bench/peers/compare.py [--repeat N]

Each cell is the median CPU time (and, in a second table, wall time) of one call on one
thread after warm-up; ratios are peer time / artpipe time, so > 1 means artpipe is faster.
CPU time is the fairer "per core" figure on a shared machine (anchors: two-core wall times
swing ±30-50 %). The threads rows time a batch of
posters on 1 and 2 threads and report the speed-up. Uses the same chains, inputs and calls
as bench/bench_core.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import bench_core  # noqa: E402
from artpipe import _core  # noqa: E402
from chains import CHAINS  # noqa: E402


def measure(
    call: Callable[[], Any], repeat: int, cpu_of: Callable[[Any], float] | None = None
) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of one call, after two warm-up calls. ``cpu_of`` reads
    the CPU time from the call's result (the Pillow-SIMD worker reports its own)."""
    for _ in range(2):
        call()
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        walls.append(time.perf_counter() - wall)
        cpus.append(cpu_of(result) if cpu_of else time.process_time() - cpu)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


def best_s(call: Callable[[], Any], repeat: int = 5) -> float:
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads-only", action="store_true", help="only the threads rows")
    args = parser.parse_args()
    from PIL import Image

    inputs = bench_core.load_inputs(bench_core.inputs_dir())
    simd = bench_core.start_simd()
    impls = [i for i in bench_core.IMPLS if simd is not None or not i.startswith("pillow-simd")]
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(
        f"artpipe._core {_core.__version__}; Pillow {Image.__version__}; "
        f"Pillow-SIMD {simd.version if simd else 'not built'}; Python {platform.python_version()}"
    )
    print()
    if args.threads_only:
        print_threads(inputs, simd)
        return
    others = [i for i in impls if i != "artpipe"]
    head = "| chain | " + " | ".join(f"{i} CPU ms" for i in impls)
    head += " | " + " | ".join(f"{i} / artpipe" for i in others) + " |"
    wall_rows = []
    print(head)
    print("|---" * (len(impls) + len(others) + 1) + "|")
    for name, chain in CHAINS.items():
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for impl in impls:
            if impl.endswith("draft") and name not in bench_core.JPEG_CHAINS:
                continue
            if impl.startswith("pillow-simd") and simd is not None:
                draft = impl.endswith("draft")

                def run_simd(
                    n: str = name, d: bool = draft, w: bench_core.SimdWorker = simd
                ) -> tuple[int, float]:
                    return w.run_timed(n, d)

                wall[impl], cpu[impl] = measure(run_simd, args.repeat, lambda r: r[1])
            else:
                call = bench_core.call_for(chain, impl, inputs, simd)
                wall[impl], cpu[impl] = measure(call, args.repeat)
        cells = [f"{cpu[i]:.1f}" if i in cpu else "–" for i in impls]
        ratios = [f"{cpu[i] / cpu['artpipe']:.2f}×" if i in cpu else "–" for i in others]
        print(f"| {chain.title} | " + " | ".join(cells + ratios) + " |")
        wall_cells = [f"{wall[i]:.1f}" if i in wall else "–" for i in impls]
        wall_ratios = [f"{wall[i] / wall['artpipe']:.2f}×" if i in wall else "–" for i in others]
        wall_rows.append(f"| {chain.title} | " + " | ".join(wall_cells + wall_ratios) + " |")
    print()
    print(head.replace("CPU ms", "wall ms"))
    print("|---" * (len(impls) + len(others) + 1) + "|")
    print("\n".join(wall_rows))
    print()
    print_threads(inputs, simd)


def print_threads(inputs: dict[str, bytes], simd: bench_core.SimdWorker | None) -> None:
    batch = bench_core.THREADED_BATCH
    print(f"| threads ({batch} posters) | 1 thread s | 2 threads s | speed-up |")
    print("|---|---|---|---|")
    for impl in ("artpipe", "pillow-draft", "pillow-simd-draft"):
        if impl.startswith("pillow-simd") and simd is None:
            continue
        one = best_s(bench_core.batch_call(impl, 1, inputs, simd))
        two = best_s(bench_core.batch_call(impl, 2, inputs, simd))
        print(f"| {impl} | {one:.3f} | {two:.3f} | {one / two:.2f}× |")
    if simd is not None:
        simd.close()


if __name__ == "__main__":
    main()
