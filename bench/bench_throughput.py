"""End-to-end throughput (issue 14), in ONE run, library on disk (not tmpfs).

* (a) ``batch`` — small distinct JPEGs (500×750, ~42 KB: passthrough as poster and
  fanart) from 4 loopback servers (``tests/support/server.py``, one process each, 20 ms
  per request): ``pipeline.run`` against a fetch-only aiohttp loop with the same limits
  (32 at once, 8 per server: ``TCPConnector(limit=32, limit_per_host=8)``), and against
  the bare chain (``bare_chain``): that loop plus artpipe's passthrough check, staged
  write and group commit, nothing else. The servers' CPU per request is measured too:
  on 2 cores they share the machine with the client.
* (b) ``movies`` — 49 movies × 12 slots with real-photo sizes (2000×3000 posters,
  3840×2160 fanarts, 1600×620 PNG logos; ``bench_pipeline.make_art``) from 2 servers at
  110 ms: 8 distinct URLs per movie, the fanart's URL also named by landscape, thumb,
  keyart and the first extrafanart (one output, 5 slots). Against the seed's designs:
  ``sequential`` (urllib + Pillow, one image at a time) and ``ember-async`` (per movie,
  5 downloads at once, then Pillow saves).
* (c) ``writes`` — the per-file cost of a durable write: artpipe's ``save_one`` of a
  42 KB passthrough JPEG (decode check, temp file, fsync, rename, directory fsync) on 1
  and ``cpu_count`` threads, and as the pipeline runs it (``cpu_count`` render threads
  stage, ``commit.GroupCommitter`` makes batches durable with one sync pass), against
  the floor of the same disk: write + fsync + rename +
  directory fsync in plain Python on 1 and 8 threads, and ``sync()`` once per 128 files.

Client CPU is this process's (all threads; the servers run in their own processes).

    python bench/bench_throughput.py                 # all three, a few minutes
    python bench/bench_throughput.py --images 1000 --only batch
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bench_pipeline  # noqa: E402  (the seed's designs and the photo-like sources)
from bench_fetch import start_server  # noqa: E402

EXTRA: dict[str, Any] = {}
LOOP: list[Callable[[], asyncio.AbstractEventLoop] | None] = [None]  # --uvloop: its factory


def run(main: Any) -> Any:
    """``asyncio.run``, on uvloop's loop with ``--uvloop`` (every client alike)."""
    with asyncio.Runner(loop_factory=LOOP[0]) as runner:
        return runner.run(main)
PNG_ARTS = ("clearlogo", "clearart", "discart", "characterart")
bench_pipeline.PNG_ARTS = PNG_ARTS  # the seed's designs save these as PNG too
bench_pipeline.LIMITS.update({"clearart": (1000, 562), "discart": (1000, 1000),
                              "characterart": (512, 512), "keyart": (1920, 1080),
                              "thumb": (1920, 1080)})


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    c0, t0 = cpu_s(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, cpu_s() - c0, out


def row(name: str, images: int, wall: float, cpu: float, **extra: Any) -> dict[str, Any]:
    return {"run": name, "images": images, "wall s": round(wall, 2),
            "images/s": round(images / wall, 1), "CPU ms/image": round(1000 * cpu / images, 2),
            **extra}


# -- (a) the small-image batch ------------------------------------------------------
def batch_items(bases: list[str], images: int) -> list[dict[str, Any]]:
    items = []
    for n in range(images // 2):
        a, b = bases[(2 * n) % len(bases)], bases[(2 * n + 1) % len(bases)]
        items.append({"id": f"s{n}", "type": "movie", "path": f"Movies/S{n}/S{n}.mkv",
                      "art": {"poster": f"{a}/p/{n}.jpg", "fanart": f"{b}/f/{n}.jpg"}})
    return items


async def fetch_only(urls: list[str]) -> int:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=32, limit_per_host=8)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)
    ok = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal ok
            while not queue.empty():
                url = queue.get_nowait()
                async with session.get(url) as resp:
                    ok += resp.status == 200 and len(await resp.read()) > 0

        await asyncio.gather(*(worker() for _ in range(32)))
    return ok


async def bare_chain(urls: list[str], library: Path) -> int:
    """The fetch-only loop plus the least a durable, validated save needs: artpipe's own
    passthrough check and staged write (``image.stage_image``) on ``cpu_count`` threads
    and its group commit, one folder per title as in the batch. No planning, cache, store,
    report or metrics: the ceiling any orchestration of these parts can reach here."""
    import aiohttp
    from artpipe.commit import GroupCommitter
    from artpipe.image import stage_image

    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="render")
    committer = GroupCommitter()

    def save(data: bytes, target: str) -> Any:
        _, staged = stage_image(data, target, root=str(library), max_size=(1000, 1500),
                                format="jpeg")
        return committer.commit(staged)

    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for n, url in enumerate(urls):
        queue.put_nowait((n, url))
    ok = 0
    connector = aiohttp.TCPConnector(limit=32, limit_per_host=8)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal ok
                while not queue.empty():
                    n, url = queue.get_nowait()
                    async with session.get(url) as resp:
                        data = await resp.read()
                    target = f"{library}/Movies/S{n // 2}/{('poster', 'fanart')[n % 2]}.jpg"
                    await asyncio.wrap_future(await loop.run_in_executor(pool, save, data,
                                                                         target))
                    ok += 1

            await asyncio.gather(*(worker() for _ in range(32)))
    finally:
        committer.close()
        pool.shutdown()
    return ok


def servers_cpu_s(servers: list[tuple[Any, int]]) -> float:
    """CPU seconds the server processes used so far (Linux: /proc)."""
    total = 0.0
    for proc, _ in servers:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def artpipe_run(items: list[dict[str, Any]], library: Path) -> dict[str, Any]:
    from artpipe import pipeline
    from artpipe.fetch import FetchLimits

    limits = FetchLimits(concurrency=32, per_host=8)
    report = await pipeline.run(items, library, limits=limits, **EXTRA)
    assert report.exit_code == 0, (report.stats.errors, report.stats)
    counters = report.metrics.counters()
    assert counters.get("http.requests_in_save", 0) == 0
    timers = report.metrics.timers()
    render = timers.get("render", {})
    return {"saved": report.stats.slots.get("saved", 0),
            "renders": int(render.get("count", 0)) - counters.get("images.render_copied", 0),
            "copied": counters.get("images.render_copied", 0),
            "render thread s": round(render.get("total_ms", 0) / 1000, 2)}


def bench_batch(scratch: Path, images: int) -> list[dict[str, Any]]:
    servers = [start_server(0.02) for _ in range(4)]
    try:
        bases = [f"http://127.0.0.1:{port}" for _, port in servers]
        items = batch_items(bases, images)
        urls = [u for it in items for u in it["art"].values()]
        n = len(urls)
        run(fetch_only(urls[:200]))  # warm the servers' generated images
        rows = []

        def measure(name: str, client: Callable[[], Any]) -> Any:
            before = servers_cpu_s(servers)
            wall, cpu, out = measured(client)
            rows.append(row(name, n, wall, cpu, **(out if isinstance(out, dict) else {})))
            rows[-1]["servers CPU ms/request"] = round(
                1000 * (servers_cpu_s(servers) - before) / n, 2)
            rows[-1]["× fetch-only"] = round(rows[0]["wall s"] / wall, 2)
            print(rows[-1], flush=True)
            return out

        ok = measure("fetch-only aiohttp loop", lambda: run(fetch_only(urls)))
        assert ok == n, ok
        bare = scratch / "bare-lib"
        bare.mkdir()
        ok = measure("bare chain: fetch, passthrough check, group-committed write",
                     lambda: run(bare_chain(urls, bare)))
        assert ok == n, ok
        shutil.rmtree(bare)  # the next run starts on as empty a disk as this one did
        library = scratch / "batch-lib"
        library.mkdir()
        extra = measure("artpipe run", lambda: run(artpipe_run(items, library)))
        assert extra["saved"] == n, extra
        return rows
    finally:
        for proc, _ in servers:
            proc.kill()
            proc.wait()


# -- (b) the 49-movie shape ---------------------------------------------------------
def movie_items(bases: list[str], movies: int) -> list[dict[str, Any]]:
    items = []
    for n in range(movies):
        k = n % 3
        a, b = bases[n % 2], bases[(n + 1) % 2]
        fanart = f"{a}/m{n}/fanart{k}.jpg"
        art: dict[str, Any] = {
            "poster": f"{b}/m{n}/poster{k}.jpg",
            "fanart": fanart, "landscape": fanart, "thumb": fanart, "keyart": fanart,
            "extrafanart": [fanart, f"{b}/m{n}/fanart{(k + 1) % 3}.jpg"],
            "banner": f"{a}/m{n}/banner0.jpg",
        }
        for i, name in enumerate(PNG_ARTS):
            art[name] = f"{(a, b)[i % 2]}/m{n}/{name}/clearlogo0.png"
        items.append({"id": f"tt{n:07d}", "type": "movie", "title": f"Movie {n}",
                      "path": f"Movies/Movie {n}/Movie {n}.mkv", "art": art})
    return items


def bench_movies(scratch: Path, movies: int, latency: float,
                 skip: list[str]) -> list[dict[str, Any]]:
    art = scratch / "art"
    bench_pipeline.make_art(art)
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    servers = [ctx.Process(target=bench_pipeline.serve, args=(str(art), latency, ports),
                           daemon=True) for _ in range(2)]
    for s in servers:
        s.start()
    try:
        bases = [f"http://127.0.0.1:{ports.get(timeout=60)}" for _ in servers]
        items = movie_items(bases, movies)
        slots = sum(len(bench_pipeline.jobs_of(i, Path("."))) for i in items)
        distinct = len({u for i in items for _, u, _ in bench_pipeline.jobs_of(i, Path("."))})
        print(f"(b) {movies} movies, {slots} slots, {distinct} distinct URLs, "
              f"{latency * 1000:.0f} ms latency", flush=True)
        runners: dict[str, Callable[[Path], Any]] = {
            "artpipe run": lambda lib: run(artpipe_run(items, lib)),
            "ember-async (seed, fixed async)":
                lambda lib: run(bench_pipeline.run_ember_async(items, lib)),
            "sequential (seed)": lambda lib: bench_pipeline.run_sequential(items, lib),
        }
        rows = []
        for name, fn in runners.items():
            if name.split()[0] in skip:
                continue
            library = scratch / f"movies-{name.split()[0]}"
            library.mkdir()
            wall, cpu, extra = measured(lambda fn=fn, library=library: fn(library))
            rows.append(row(name, slots, wall, cpu, **{"ms/movie": round(
                1000 * wall / movies, 1)}, **(extra or {})))
            print(rows[-1], flush=True)
        return rows
    finally:
        for s in servers:
            s.kill()


# -- (c) durable writes -------------------------------------------------------------
def floor_write(folder: Path, data: bytes, i: int) -> None:
    target = folder / f"f{i}.jpg"
    tmp = folder / f".f{i}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def sync_batched(folder: Path, data: bytes, files: int, batch: int) -> None:
    for start in range(0, files, batch):
        names = range(start, min(files, start + batch))
        for i in names:
            (folder / f".f{i}.tmp").write_bytes(data)
        os.sync()
        for i in names:
            os.replace(folder / f".f{i}.tmp", folder / f"f{i}.jpg")
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def bench_writes(scratch: Path, files: int) -> list[dict[str, Any]]:
    from artpipe.save import SaveJob, save_one

    from tests.support.server import make_image

    data = make_image(500, 750, seed=1)
    cores = os.cpu_count() or 2
    rows = []

    def pooled(threads: int, one: Callable[[int], Any]) -> Callable[[], None]:
        def go() -> None:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(one, range(files)))
        return go

    def fresh(name: str) -> Path:
        folder = scratch / "writes" / name
        folder.mkdir(parents=True)
        return folder

    cases: list[tuple[str, Callable[[Path], Callable[[], None]]]] = []
    for threads in sorted({1, cores}):
        def artpipe(folder: Path, threads: int = threads) -> Callable[[], None]:
            def one(i: int) -> None:
                out = save_one(SaveJob(data=data, target=str(folder / f"f{i}.jpg"),
                                       format="jpeg", root=str(folder)))
                assert out.saved is not None and out.saved.passthrough, out.error
            return pooled(threads, one)
        cases.append((f"artpipe save_one, {threads} thread(s)", artpipe))

    def grouped(folder: Path) -> Callable[[], None]:
        """As the pipeline runs it: render threads stage, one thread commits in batches."""
        from artpipe.commit import GroupCommitter

        def go() -> None:
            committer = GroupCommitter()

            def one(i: int) -> Any:
                out = save_one(SaveJob(data=data, target=str(folder / f"f{i}.jpg"),
                                       format="jpeg", root=str(folder), stage=True))
                assert out.staged is not None, out.error
                return committer.commit(out.staged)

            try:
                with ThreadPoolExecutor(cores) as pool:
                    for future in list(pool.map(one, range(files))):
                        future.result()
            finally:
                committer.close()
        return go
    cases.append((f"artpipe save_one staged + group commit, {cores} thread(s)", grouped))

    def render_only(folder: Path) -> Callable[[], None]:
        """The validation of the passthrough alone, no file: the part that is not the write."""
        from artpipe import render

        return pooled(cores, lambda i: render(data, max_size=(1000, 1500), format="jpeg"))
    cases.append((f"render only (passthrough check, no write), {cores} thread(s)", render_only))
    for threads in (1, 8):
        def floor(folder: Path, threads: int = threads) -> Callable[[], None]:
            return pooled(threads, lambda i: floor_write(folder, data, i))
        cases.append((f"floor: write+fsync+rename+dir fsync, {threads} thread(s)", floor))
    cases.append(("floor: sync() per 128 files, renames, 1 dir fsync",
                  lambda folder: lambda: sync_batched(folder, data, files, 128)))
    for name, make in cases:
        folder = fresh(f"case{len(rows)}")
        wall, cpu, _ = measured(make(folder))
        rows.append(row(name, files, wall, cpu, **{"ms/file": round(1000 * wall / files, 3)}))
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    def cell(value: Any) -> str:
        return f"{value:.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)

    lines += ["| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=4000, help="(a) images in the batch")
    parser.add_argument("--movies", type=int, default=49)
    parser.add_argument("--latency", type=float, default=0.11, help="(b) seconds per request")
    parser.add_argument("--files", type=int, default=1000, help="(c) files per write case")
    parser.add_argument("--only", choices=["batch", "movies", "writes"], action="append")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="(b) designs to leave out: sequential, ember-async")
    parser.add_argument("--dir", type=Path, default=None,
                        help="scratch folder on the disk to measure (default: the temp dir)")
    parser.add_argument("--uvloop", action="store_true",
                        help="run every client on uvloop's loop (the CLI does when the `fast` "
                             "extra is installed)")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        LOOP[0] = uvloop.new_event_loop
    only = set(args.only or ["batch", "movies", "writes"])
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()}, "
          f"loop {'uvloop' if args.uvloop else 'asyncio'}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="artpipe-throughput-", dir=args.dir))
    try:
        out = []
        if "batch" in only:
            out.append("(a)\n" + table(bench_batch(scratch, args.images)))
            print(out[-1], flush=True)
        if "movies" in only:
            out.append("(b)\n" + table(bench_movies(scratch, args.movies, args.latency,
                                                    args.skip)))
            print(out[-1], flush=True)
        if "writes" in only:
            out.append("(c)\n" + table(bench_writes(scratch, args.files)))
            print(out[-1], flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"load average after: {os.getloadavg()}; threads alive: {threading.active_count()}")
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
