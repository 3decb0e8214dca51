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
    python bench/bench_memory.py --budgets 0 256       # the memory budgets (issue #15)

``--budgets`` runs the two cases the byte budgets exist for, at 10x the size the tests
use: one item with 1,500 extrafanart URLs of ~1.7 MB, and 24 16-bit RGBA PNGs of
2500x2500 (50 MB decoded each) with 8 render workers; each MIB given is one run with
both budgets at that size (0: the defaults).

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


# -- the memory budgets: bytes in flight, not item count (issue #15, class 2) ------------------

SERVE_FILES = """
import sys
from aiohttp import web
bodies = {".jpg": open(sys.argv[1], "rb").read(), ".png": open(sys.argv[2], "rb").read()}
async def serve(request):
    suffix = request.path[-4:]
    kind = "image/png" if suffix == ".png" else "image/jpeg"
    return web.Response(body=bodies[suffix], content_type=kind)
app = web.Application()
app.router.add_get("/{tail:.*}", serve)
runner = web.AppRunner(app)
async def main():
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("PORT", runner.addresses[0][1], flush=True)
    import asyncio
    await asyncio.Event().wait()
web.asyncio.run(main())
"""

RUN_API = """
import asyncio, json, sys
from artpipe import pipeline
items = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
options = json.loads(sys.argv[3])
report = asyncio.run(pipeline.run(items, sys.argv[2], **options))
json.dump(report.metrics.counters(), open(sys.argv[4], "w"))
"""


def noisy_jpeg(path: Path, width: int, height: int) -> int:
    """A JPEG of noise (it barely compresses: ~1.7 MB at 1600×1000, q95)."""
    from PIL import Image

    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(
        path, "JPEG", quality=95)
    return path.stat().st_size


def png16(path: Path, width: int, height: int) -> int:
    """A 16-bit RGBA PNG (8 bytes a pixel decoded), written by hand: Pillow writes none."""
    import struct
    import zlib

    row = b"\x00" + bytes((x * 7 + c) % 256 for x in range(width) for c in range(8))
    raw = zlib.compress(row * height, 1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw)
                     + chunk(b"IEND", b""))
    return path.stat().st_size


def run_child(args: list[str]) -> tuple[float, float, int]:
    """(wall s, peak RSS MB, exit code) of a child process (small parent: see measure)."""
    start = time.monotonic()
    proc = subprocess.Popen(args, cwd=ROOT)
    _pid, status, usage = os.wait4(proc.pid, 0)
    return (round(time.monotonic() - start, 1), round(usage.ru_maxrss / 1024, 1),
            os.waitstatus_to_exitcode(status))


def measure_budgets(workdir: Path, fanarts: int, pngs: int, png_side: int,
                    budgets_mb: list[int | None]) -> str:
    """Peak RSS of the two cases the budgets exist for, at each budget (None: defaults)."""
    jpeg_size = noisy_jpeg(workdir / "fanart.jpg", 1600, 1000)
    png_size = png16(workdir / "poster.png", png_side, png_side)
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE_FILES, str(workdir / "fanart.jpg"),
         str(workdir / "poster.png")], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = int(server.stdout.readline().split()[1])
    cases = {
        f"1 item, {fanarts:,} extrafanart of {jpeg_size / 1e6:.1f} MB": [
            {"id": "m", "type": "movie", "title": "M", "path": "Movies/M/M.mkv",
             "art": {"extrafanart": [f"http://127.0.0.1:{port}/x{n}.jpg"
                                     for n in range(fanarts)]}}],
        f"{pngs} 16-bit RGBA PNGs {png_side}×{png_side} ({png_side**2 * 8 / 1e6:.0f} MB "
        f"decoded, {png_size / 1e6:.1f} MB file), 8 workers": [
            {"id": f"p{n}", "type": "movie", "title": f"P{n}", "path": f"P/{n}/{n}.mkv",
             "art": {"poster": f"http://127.0.0.1:{port}/p{n}.png"}} for n in range(pngs)],
    }
    lines = ["| case | budget (bodies, pixels) | wall s | peak RSS MB | bodies reserved peak MB | "
             "pixels peak MB | saved |", "|---|---|---:|---:|---:|---:|---:|"]
    try:
        for name, items in cases.items():
            manifest = workdir / "manifest.jsonl"
            manifest.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
            for mb in budgets_mb:
                library = workdir / "library"
                shutil.rmtree(library, ignore_errors=True)
                library.mkdir()
                options: dict[str, object] = {"workers": 8, "item_workers": 8,
                                              "db": str(workdir / "a.db"),
                                              "cache_dir": str(workdir / "cache")}
                shutil.rmtree(workdir / "cache", ignore_errors=True)  # every run downloads
                for db in workdir.glob("a.db*"):
                    db.unlink()
                if mb is not None:
                    options.update(body_budget=mb * 2**20, pixel_budget=mb * 2**20)
                counters_path = workdir / "counters.json"
                wall, peak, code = run_child(
                    [sys.executable, "-c", RUN_API, str(manifest), str(library),
                     json.dumps(options), str(counters_path)])
                counters = json.loads(counters_path.read_text()) if code in (0, 1) else {}
                label = "defaults (1 GiB, 1 GiB)" if mb is None else f"{mb} MiB, {mb} MiB"
                lines.append(
                    f"| {name} | {label} | {wall} | {peak} | "
                    f"{counters.get('memory.bodies_peak_bytes', 0) / 2**20:.0f} | "
                    f"{counters.get('memory.pixels_peak_bytes', 0) / 2**20:.0f} | "
                    f"{counters.get('images.saved', 0):,} |")
                print(lines[-1], flush=True)
    finally:
        server.terminate()
        server.wait(10)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where libraries are built (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--budgets", type=int, nargs="*", default=None, metavar="MIB",
                        help="measure the memory budgets instead (each MIB a run; 0: the "
                             "defaults): 1,500 extrafanart bodies and 24 16-bit PNGs")
    parser.add_argument("--fanarts", type=int, default=1500)
    parser.add_argument("--pngs", type=int, default=24)
    parser.add_argument("--png-side", type=int, default=2500)
    parser.add_argument("extra", nargs="*", help="extra `artpipe run` options, after --")
    args = parser.parse_args()

    if args.budgets is not None:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="artpipe-bench-budgets-"))
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            table = measure_budgets(workdir, args.fanarts, args.pngs, args.png_side,
                                    [mb or None for mb in args.budgets or [0]])
        finally:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
        print()
        print(table)
        return

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
