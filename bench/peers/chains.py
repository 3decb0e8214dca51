"""The image chains artpipe is measured on, runnable under Pillow or Pillow-SIMD.

Both bench/bench_core.py (pytest-benchmark) and bench/peers/compare.py use these
definitions, so every implementation runs exactly the same work on exactly the same input
files. Pillow-SIMD replaces the ``PIL`` module and therefore lives in its own venv
(bench/.venvs/pillow-simd, built by build_pillow_simd.sh); this file only needs PIL there,
and it doubles as a small worker (``python chains.py serve DIR``) that runs one chain per
request line, so the timing stays in the calling process and the peers share one run.

Chains (input -> output, JPEG q90 4:2:0, PNG as each library does by default):
  poster     2000x3000 JPEG -> 1000x1500 JPEG
  fanart4k   3840x2160 JPEG -> 1920x1080 JPEG
  fanart     1920x1080 JPEG -> 1280x720 JPEG
  clearlogo  1000x562 RGBA PNG -> 500x281 PNG
  decode     2000x3000 JPEG -> pixels (no resize)
  encode     1000x1500 pixels -> JPEG
"""

from __future__ import annotations

import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class Chain:
    name: str
    title: str
    source: str  # file name under the input directory
    size: tuple[int, int]  # output box
    format: str  # Pillow format name of the output


CHAINS: dict[str, Chain] = {
    c.name: c
    for c in (
        Chain("poster", "poster JPEG 2000x3000 -> 1000x1500", "poster.jpg", (1000, 1500), "JPEG"),
        Chain(
            "fanart4k", "fanart JPEG 3840x2160 -> 1920x1080", "fanart4k.jpg", (1920, 1080), "JPEG"
        ),
        Chain("fanart", "fanart JPEG 1920x1080 -> 1280x720", "fanart.jpg", (1280, 720), "JPEG"),
        Chain(
            "clearlogo",
            "clearlogo PNG RGBA 1000x562 -> 500x281",
            "clearlogo.png",
            (500, 281),
            "PNG",
        ),
        Chain("decode", "decode only: JPEG 2000x3000 -> pixels", "poster.jpg", (2000, 3000), ""),
        Chain(
            "encode",
            "encode only: 1000x1500 pixels -> JPEG q90",
            "encode.png",
            (1000, 1500),
            "JPEG",
        ),
    )
}


def make_inputs(directory: Path) -> None:
    """Write the input files (needs the repository's tests/support/images.py and numpy)."""
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    from tests.support.images import encode, logo, photo

    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "poster.jpg": lambda: encode(photo(2000, 3000, seed=1), "JPEG", quality=90),
        "fanart4k.jpg": lambda: encode(photo(3840, 2160, seed=2), "JPEG", quality=90),
        "fanart.jpg": lambda: encode(photo(1920, 1080, seed=3), "JPEG", quality=90),
        "clearlogo.png": lambda: encode(logo(1000, 562, seed=4), "PNG"),
        "encode.png": lambda: encode(photo(1000, 1500, seed=5), "PNG", compress_level=1),
    }
    for name, make in files.items():
        path = directory / name
        if not path.exists():
            path.write_bytes(make())


def load_inputs(directory: Path) -> dict[str, bytes]:
    return {c.source: (directory / c.source).read_bytes() for c in CHAINS.values()}


def _save(image: Image.Image, chain: Chain) -> bytes:
    out = io.BytesIO()
    if chain.format == "JPEG":
        image.save(out, "JPEG", quality=90)
    else:
        image.save(out, chain.format)
    return out.getvalue()


def pillow(chain: Chain, data: bytes | Image.Image, draft: bool = False) -> Any:
    """The chain with Pillow's own API (``draft`` = its JPEG DCT scaling)."""
    if chain.name == "encode":
        assert isinstance(data, Image.Image)
        return _save(data, chain)
    assert isinstance(data, bytes)
    with Image.open(io.BytesIO(data)) as im:
        if chain.name == "decode":
            im.load()
            return im.size
        w, h = im.size
        scale = min(chain.size[0] / w, chain.size[1] / h, 1.0)
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
        if draft and im.format == "JPEG":
            im.draft("RGB", target)
        im.load()
        resized = im.resize(target, Image.Resampling.LANCZOS)
        return _save(resized, chain)


def prepared(chain: Chain, data: bytes) -> bytes | Image.Image:
    """Input as the chain takes it: the encode chain starts from decoded pixels."""
    if chain.name == "encode":
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    return data


_POOLS: dict[int, Any] = {}


def run_many(chain: Chain, data: bytes | Image.Image, draft: bool, threads: int, count: int) -> int:
    """Run the chain ``count`` times on a long-lived pool of ``threads`` threads; returns the
    total output size."""
    from concurrent.futures import ThreadPoolExecutor

    if threads == 1 and count == 1:
        return _size(pillow(chain, data, draft))
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads)
    pool = _POOLS[threads]
    return sum(pool.map(lambda _: _size(pillow(chain, data, draft)), range(count)))


def _size(result: Any) -> int:
    """Output bytes, or the pixel count for the decode chain (which returns a size)."""
    if isinstance(result, tuple):
        return int(result[0] * result[1])
    return len(result) if isinstance(result, bytes) else 0


def serve(directory: Path) -> None:
    """Worker loop: each stdin line 'CHAIN IMPL THREADS COUNT' (IMPL = plain|draft) runs the
    chain COUNT times on THREADS threads and answers one line: the total output size and the
    CPU seconds this process spent on it (so CPU time per image can be compared too)."""
    inputs = load_inputs(directory)
    ready = {name: prepared(c, inputs[c.source]) for name, c in CHAINS.items()}
    print(f"ready {Image.__version__}", flush=True)
    for line in sys.stdin:
        name, impl, threads, count = line.split()
        chain = CHAINS[name]
        cpu = time.process_time()
        size = run_many(chain, ready[name], impl == "draft", int(threads), int(count))
        print(size, time.process_time() - cpu, flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(Path(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "make-inputs":
        make_inputs(Path(sys.argv[2]))
    else:
        sys.exit("usage: chains.py serve DIR | chains.py make-inputs DIR")
