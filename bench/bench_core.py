"""Image-core benchmarks: artpipe vs Pillow, Pillow + draft() and Pillow-SIMD, per chain.

Run: ``pytest bench/bench_core.py --benchmark-enable`` (add ``--benchmark-group-by=group``
for one table per chain). Groups are the chains of bench/peers/chains.py; every case records
in ``extra_info`` whether its output was correct (size, and for artpipe PSNR against
Pillow's LANCZOS output). Pillow-SIMD replaces PIL, so it runs in its own venv
(bench/.venvs/pillow-simd, made by bench/peers/build_pillow_simd.sh) as a worker process;
the timing still happens here, so all peers share one run (the pipe adds ~0.1 ms a call).
Without that venv the Pillow-SIMD cases are skipped. ``bench/peers/compare.py`` prints the
same measurements as the ratio table of bench/RESULTS.md.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import artpipe
import numpy as np
import pytest
from artpipe.image import encode as artpipe_encode
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))
sys.path.insert(0, str(HERE.parent))

from chains import CHAINS, Chain, load_inputs, make_inputs, pillow, prepared  # noqa: E402

from tests.support.images import psnr  # noqa: E402

INPUT_DIR = HERE / "out" / "core-inputs"
SIMD_PYTHON = HERE / ".venvs" / "pillow-simd" / "bin" / "python"
JPEG_CHAINS = ("poster", "fanart4k", "fanart")
IMPLS = ("artpipe", "pillow", "pillow-draft", "pillow-simd", "pillow-simd-draft")
THREADED_BATCH = 8  # images per round in the 1-vs-2-threads groups


class SimdWorker:
    """bench/peers/chains.py serving in the Pillow-SIMD venv."""

    def __init__(self, python: Path, inputs: Path) -> None:
        self.proc = subprocess.Popen(
            [str(python), str(HERE / "peers" / "chains.py"), "serve", str(inputs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.version = self.proc.stdout.readline().split()[-1]

    def run(self, chain: str, draft: bool, threads: int = 1, count: int = 1) -> int:
        """Run in the worker; returns the total output size."""
        return self.run_timed(chain, draft, threads, count)[0]

    def run_timed(
        self, chain: str, draft: bool, threads: int = 1, count: int = 1
    ) -> tuple[int, float]:
        """Run in the worker; returns (total output size, worker CPU seconds)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{chain} {'draft' if draft else 'plain'} {threads} {count}\n")
        self.proc.stdin.flush()
        size, cpu = self.proc.stdout.readline().split()
        return int(size), float(cpu)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def inputs_dir() -> Path:
    make_inputs(INPUT_DIR)
    return INPUT_DIR


def start_simd() -> SimdWorker | None:
    return SimdWorker(SIMD_PYTHON, inputs_dir()) if SIMD_PYTHON.exists() else None


def artpipe_call(chain: Chain, data: bytes) -> Callable[[], Any]:
    """One artpipe run of ``chain``."""
    if chain.name == "decode":
        return lambda: artpipe.decode(data)
    if chain.name == "encode":
        with Image.open(io.BytesIO(data)) as im:
            pixels = np.asarray(im.convert("RGB"))
        return lambda: artpipe_encode(pixels, format="jpeg", quality=90)
    fmt = "jpeg" if chain.format == "JPEG" else "png"
    return lambda: artpipe.render(data, max_size=chain.size, format=fmt)


def call_for(
    chain: Chain, impl: str, inputs: dict[str, bytes], simd: SimdWorker | None
) -> Callable[[], Any]:
    """A zero-argument callable that runs ``chain`` once with ``impl``."""
    data = inputs[chain.source]
    if impl == "artpipe":
        return artpipe_call(chain, data)
    if impl.startswith("pillow-simd"):
        if simd is None:
            pytest.skip("Pillow-SIMD venv missing: run bench/peers/build_pillow_simd.sh")
        draft = impl.endswith("draft")
        name = chain.name
        return lambda: simd.run(name, draft)
    ready = prepared(chain, data)
    draft = impl == "pillow-draft"
    return lambda: pillow(chain, ready, draft)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """Long-lived pools, like the pipeline's: per-thread state (artpipe's resizer and scratch
    buffers) is reused across batches instead of being rebuilt with every new thread."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix=f"bench{threads}")
    return _POOLS[threads]


def batch_call(
    impl: str, threads: int, inputs: dict[str, bytes], simd: SimdWorker | None
) -> Callable[[], Any]:
    """THREADED_BATCH poster chains on a pool of ``threads`` threads."""
    chain = CHAINS["poster"]
    if impl.startswith("pillow-simd"):
        if simd is None:
            pytest.skip("Pillow-SIMD venv missing: run bench/peers/build_pillow_simd.sh")
        return lambda: simd.run("poster", True, threads, THREADED_BATCH)
    one = call_for(chain, impl, inputs, simd)
    pool = _pool(threads)
    return lambda: list(pool.map(lambda _: one(), range(THREADED_BATCH)))


def check(chain: Chain, impl: str, result: Any, inputs: dict[str, bytes]) -> dict[str, Any]:
    """What ``extra_info`` records: was the output right?"""
    if impl.startswith("pillow-simd"):
        return {"output_bytes": result, "correct": bool(result)}
    if chain.name == "decode":
        shape = result.shape if impl == "artpipe" else result
        return {"correct": tuple(shape[:2]) in ((3000, 2000), (2000, 3000))}
    with Image.open(io.BytesIO(result)) as im:
        ours = np.asarray(im.convert("RGBA" if chain.format == "PNG" else "RGB"))
        size = im.size
    info: dict[str, Any] = {"output_bytes": len(result), "size": list(size)}
    if chain.name == "encode":
        info["correct"] = size == chain.size
        return info
    oracle = pillow(chain, inputs[chain.source], draft=False)
    with Image.open(io.BytesIO(oracle)) as im:
        theirs = np.asarray(im.convert("RGBA" if chain.format == "PNG" else "RGB"))
    db = psnr(ours, theirs) if ours.shape == theirs.shape else 0.0
    info["psnr_vs_pillow_db"] = round(db, 2)
    info["correct"] = ours.shape == theirs.shape and db >= 30
    return info


@pytest.fixture(scope="module")
def inputs() -> dict[str, bytes]:
    return load_inputs(inputs_dir())


@pytest.fixture(scope="module")
def simd() -> Iterator[SimdWorker | None]:
    worker = start_simd()
    yield worker
    if worker is not None:
        worker.close()


def _cases() -> list[tuple[str, str]]:
    cases = []
    for name in CHAINS:
        for impl in IMPLS:
            if impl.endswith("draft") and name not in JPEG_CHAINS:
                continue
            cases.append((name, impl))
    return cases


@pytest.mark.parametrize(("chain_name", "impl"), _cases())
def test_chain(
    benchmark: Any,
    chain_name: str,
    impl: str,
    inputs: dict[str, bytes],
    simd: SimdWorker | None,
) -> None:
    chain = CHAINS[chain_name]
    call = call_for(chain, impl, inputs, simd)
    benchmark.group = chain.title
    result = benchmark(call)
    benchmark.extra_info.update(check(chain, impl, result, inputs))
    assert benchmark.extra_info["correct"]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("impl", ["artpipe", "pillow-draft", "pillow-simd-draft"])
def test_threads(
    benchmark: Any,
    impl: str,
    threads: int,
    inputs: dict[str, bytes],
    simd: SimdWorker | None,
) -> None:
    run = batch_call(impl, threads, inputs, simd)
    benchmark.group = f"threads: {THREADED_BATCH} posters 2000x3000 -> 1000x1500, {impl}"
    benchmark.extra_info["images_per_round"] = THREADED_BATCH
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
