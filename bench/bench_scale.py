"""Scale-out on a CPU-bound batch: threads vs spawn processes vs a Dask LocalCluster.

Every item is one 3840×2160 fanart that must be decoded, resized to 1920×1080
and re-encoded: the render dominates, the network does not (a loopback server
with no latency, in its own process). A handful of distinct 4K JPEGs is served
under as many URLs as there are items, so each URL is a separate download and
a separate render (the per-worker caches never turn one into a cache hit).

Each executor runs with 1 and with 2 render workers, into a fresh library:

* ``thread``  — ``executor="thread"``, ``workers=N`` render threads;
* ``process`` — ``executor="process"``, a spawn pool of N processes;
* ``dask``    — ``executor="dask://…"`` on a LocalCluster of N worker
  processes × 1 thread, one render thread per shard (``workers=1``).

    python bench/bench_scale.py                        # 2,000 fanarts, ~12 min on 2 cores
    python bench/bench_scale.py --items 200 --only dask
    python bench/bench_scale.py --driver 100000        # the driver's recording rate alone

``--rounds R`` interleaves R passes over the configurations and keeps each
one's best, so a burst of load from elsewhere does not pick a winner.
Prints a Markdown table (wall time, images/s, speed-up over 1 worker and over
``thread`` × 1); paste it into bench/RESULTS.md under "Scale-out".
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
if (ROOT / "python" / "artpipe").is_dir():
    sys.path.insert(0, str(ROOT / "python"))

SIZE = (3840, 2160)


def make_fanarts(count: int) -> list[bytes]:
    """``count`` distinct photo-like 4K JPEGs (Pillow, q90, a few seconds each)."""
    from PIL import Image, ImageDraw, ImageFilter

    out = []
    w, h = SIZE
    for seed in range(count):
        img = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        draw = ImageDraw.Draw(img)
        for i in range(60):
            x, y = (seed * 97 + i * 131) % w, (seed * 53 + i * 71) % h
            r = 30 + (i * 37 + seed * 11) % (h // 5)
            draw.ellipse((x - r, y - r, x + r, y + r),
                         fill=((i * 40 + seed * 25) % 256, (seed * 60 + i * 20) % 256,
                               (i * 90) % 256))
        noise = Image.effect_noise((w, h), 24).convert("RGB")
        img = Image.blend(img.filter(ImageFilter.GaussianBlur(2)), noise, 0.06)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def serve(images: list[bytes], port_queue: Any) -> None:
    """Server process: ``/f/<n>.jpg`` is image ``n % len(images)``, no latency."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.Response(body=images[n % len(images)], content_type="image/jpeg")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/f/{n}.jpg", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        port_queue.put(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        await asyncio.Event().wait()

    asyncio.run(main())


def manifest(base: str, items: int) -> list[dict[str, Any]]:
    return [{"id": f"tt{n:07d}", "type": "movie", "title": f"Movie {n}",
             "path": f"Movies/Movie {n}/Movie {n}.mkv",
             "art": {"fanart": f"{base}/f/{n}.jpg"}} for n in range(items)]


async def run_once(items: list[dict[str, Any]], library: Path, executor: str, workers: int,
                   shard_size: int) -> dict[str, Any]:
    from artpipe import pipeline

    library.mkdir(parents=True)
    start = time.perf_counter()
    report = await pipeline.run(items, library, executor=executor, workers=workers,
                                shard_size=shard_size)
    wall = time.perf_counter() - start
    counters = report.metrics.counters()
    assert report.exit_code == 0, report.stats.errors.most_common(3)
    assert report.summary()["saved"] == len(items), report.summary()
    assert counters.get("http.requests_in_save", 0) == 0
    render = report.metrics.timers()["render"]
    return {"wall_s": wall, "images_per_s": len(items) / wall,
            "render_avg_ms": render["avg_ms"], "requests": counters["http.requests"]}


def measure_driver(outcomes: int, slots_per_item: int = 3) -> dict[str, float]:
    """How fast the driver alone records outcomes (store batches + report rows).

    This is the one serial part of a cluster run: it snapshots every item's rows
    for its shard, and every worker's results pass through it. Synthetic
    outcomes, a real SQLite store (WAL, batches of 64) and report file.
    """
    from artpipe.metrics import Metrics
    from artpipe.models import ArtSlot, ArtType, ContentType, Item, SlotStatus
    from artpipe.pipeline import ItemOutcome, RunStats, SlotResult, StoreSink
    from artpipe.store import Store

    arts = [ArtType.POSTER, ArtType.FANART, ArtType.BANNER, ArtType.LANDSCAPE][:slots_per_item]
    with tempfile.TemporaryDirectory(prefix="artpipe-driver-") as tmp:
        store = Store(Path(tmp) / "artpipe.db")
        with open(Path(tmp) / "report.jsonl", "w", encoding="utf-8") as report:
            sink = StoreSink(store, report, RunStats(), Metrics(trace=False), None, 64)
            start = time.perf_counter()
            for n in range(outcomes):
                item = Item(f"tt{n:08d}", ContentType.MOVIE, f"Movies/M{n}/M{n}.mkv", f"M{n}",
                            None, None, tuple(ArtSlot(a, 0, f"http://h/{n}/{a}.jpg")
                                              for a in arts))
                store.artwork_for(item.id)  # the snapshot a shard carries to its worker
                sink.add(ItemOutcome(item, tuple(
                    SlotResult(item.id, "movie", a.value, 0, f"http://h/{n}/{a}.jpg",
                               SlotStatus.SAVED, f"{tmp}/Movies/M{n}/M{n}-{a.value}.jpg",
                               1920, 1080, 400_000, None, "ab" * 32, '"etag"')
                    for a in arts)))
            sink.flush()
            wall = time.perf_counter() - start
        store.close()
    return {"items_per_s": outcomes / wall, "slots_per_s": outcomes * len(arts) / wall}


def cpu_seconds() -> float:
    """CPU of this process plus its reaped children (pool processes, Dask workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_config(name: str, n: int, items: list[dict[str, Any]], scratch: Path,
               shard_size: int) -> dict[str, Any]:
    """One configuration, with the CPU it cost (driver + its workers, not the server).

    The server process is reaped only at the very end, so its CPU is not counted;
    pool processes and Dask workers are reaped when their pool or cluster closes.
    """
    library = scratch / f"{name}-{n}"
    cpu0 = cpu_seconds()
    if name != "dask":
        result = asyncio.run(run_once(items, library, name, n, shard_size))
    else:
        from distributed import LocalCluster

        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None,
                          worker_dashboard_address=None) as cluster:
            spec = "dask://" + cluster.scheduler_address.split("://", 1)[1]
            result = asyncio.run(run_once(items, library, spec, 1, shard_size))
    shutil.rmtree(library, ignore_errors=True)
    result["cpu_ms_per_image"] = (cpu_seconds() - cpu0) * 1000 / len(items)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=2000, help="4K fanarts to render")
    parser.add_argument("--distinct", type=int, default=6, help="distinct source JPEGs")
    parser.add_argument("--shard-size", type=int, default=100,
                        help="items per Dask shard (the run needs several shards per worker)")
    parser.add_argument("--only", choices=["thread", "process", "dask"], action="append",
                        help="run only these executors (repeatable)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every configuration this many times (interleaved); "
                             "report the best")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--driver", type=int, metavar="N",
                        help="only measure the driver recording N synthetic items")
    args = parser.parse_args()
    if args.driver:
        d = measure_driver(args.driver)
        print(f"driver: {d['items_per_s']:,.0f} items/s ({d['slots_per_s']:,.0f} slots/s) "
              f"recorded into SQLite + report.jsonl")
        return 0
    # A SIGTERM ends the run through the finally below, which stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    # Dask workers and spawn children import artpipe from the source tree too.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "python"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    t0 = time.perf_counter()
    images = make_fanarts(args.distinct)
    print(f"# {args.distinct} distinct {SIZE[0]}x{SIZE[1]} JPEGs "
          f"({sum(map(len, images)) / len(images) / 1e6:.1f} MB avg) "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    ctx = multiprocessing.get_context("spawn")
    port_queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(images, port_queue), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{port_queue.get(timeout=60)}"
    items = manifest(base, args.items)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="artpipe-scale-") as tmp:
            for round_no in range(1, args.rounds + 1):
                for name in args.only or ["thread", "process", "dask"]:
                    for n in args.workers:
                        result = run_config(name, n, items, Path(tmp), args.shard_size)
                        best = results.get((name, n))
                        walls = [*(best["walls"] if best else []), result["wall_s"]]
                        if best is None or result["wall_s"] < best["wall_s"]:
                            best = result
                        results[(name, n)] = {**best, "walls": walls}
                        print(f"round {round_no} {name:8} x{n}: {result['wall_s']:7.1f} s  "
                              f"{result['images_per_s']:6.1f} img/s  "
                              f"render avg {result['render_avg_ms']:.0f} ms  "
                              f"CPU {result['cpu_ms_per_image']:.0f} ms/image", flush=True)
    finally:
        server.terminate()
        server.join()
    base_key = ("thread", 1) if ("thread", 1) in results else next(iter(results))
    baseline = results[base_key]["wall_s"]
    print()
    print(f"{args.items} × {SIZE[0]}×{SIZE[1]} JPEG → 1920×1080 JPEG, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"best of {args.rounds}, Dask shards of {args.shard_size}")
    print()
    print(f"| executor | workers | wall s | images/s | vs same executor ×1 "
          f"| vs {base_key[0]} ×{base_key[1]} | CPU ms/image | render avg ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, n), r in results.items():
        one = results.get((name, 1))
        vs_one = f"{one['wall_s'] / r['wall_s']:.2f}×" if one else "–"
        print(f"| {name} | {n} | {r['wall_s']:.1f} | {r['images_per_s']:.1f} | {vs_one} "
              f"| {baseline / r['wall_s']:.2f}× | {r['cpu_ms_per_image']:.0f} "
              f"| {r['render_avg_ms']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(
            {f"{k[0]}x{k[1]}": v for k, v in results.items()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
