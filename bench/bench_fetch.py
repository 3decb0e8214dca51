"""Fetcher throughput: artpipe vs a plain aiohttp loop vs img2dataset, in ONE run.

5,000 distinct ~42 KB JPEGs (500×750) from a loopback aiohttp server in its
own process (``tests/support/server.py``) with 20 ms latency per request:

* ``aiohttp`` — the network ceiling of a Python client: one session,
  ``TCPConnector(limit=C)``, C worker tasks, ``await resp.read()``, bytes kept
  in memory and dropped. No caps, no sniffing, no retries.
* ``artpipe`` — ``Fetcher`` with the same concurrency (``FetchLimits(
  concurrency=C, per_host=C)``), C worker tasks calling ``fetch``: limits,
  timeouts, streamed caps, magic-byte sniffing, metrics, single-flight.
* ``artpipe+cache`` — the same, plus ``Cache.put`` (atomic, fsynced blob +
  SQLite index) in a worker thread: comparable with img2dataset, which writes
  every image to disk.
* ``img2dataset`` — 1.47 in its own venv (``bash bench/peers/img2dataset_install.sh``),
  ``--resize_mode no --disable_all_reencoding True``, 2 processes × 64 threads,
  1,000 per shard, files output; wall time of the whole command.

Every client fetches its own URL set (distinct paths), so nothing is cached
anywhere. Each run checks it got every image (``ok`` column).

    python bench/bench_fetch.py                      # 5,000 images, C=64
    python bench/bench_fetch.py -n 1000 --skip img2dataset

Prints a markdown table (images/s, client CPU ms/image, ratios); paste it into
bench/RESULTS.md under "## Fetcher".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT))

IMG2DATASET = HERE / ".venvs" / "img2dataset" / "bin" / "img2dataset"


@dataclass
class Row:
    client: str
    images: int
    ok: int
    seconds: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_s / self.ok if self.ok else 0.0


def start_server(latency: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "support" / "server.py"), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"benchmark server did not start: {line!r}")
    return proc, int(line.split()[1])


async def _workers(urls: list[str], concurrency: int, one: Callable[[str], Awaitable[bool]]) -> int:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)
    ok = 0

    async def worker() -> None:
        nonlocal ok
        while True:
            try:
                url = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if await one(url):
                ok += 1

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    return ok


async def run_aiohttp(urls: list[str], concurrency: int) -> int:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str) -> bool:
            async with session.get(url) as resp:
                data = await resp.read()
                return resp.status == 200 and len(data) > 0

        return await _workers(urls, concurrency, one)


async def run_artpipe(urls: list[str], concurrency: int, cache_dir: Path | None = None) -> int:
    from artpipe.cache import Cache
    from artpipe.fetch import Fetcher, FetchLimits
    from artpipe.metrics import Metrics

    limits = FetchLimits(concurrency=concurrency, per_host=concurrency)
    cache = Cache(cache_dir) if cache_dir is not None else None
    try:
        async with Fetcher(limits, Metrics()) as fetcher:

            async def one(url: str) -> bool:
                result = await fetcher.fetch(url)
                if cache is not None and result.data is not None:
                    await asyncio.to_thread(cache.put, url, result.data)
                return result.data is not None

            return await _workers(urls, concurrency, one)
    finally:
        if cache is not None:
            cache.close()


def timed_async(name: str, urls: list[str], fn: Callable[[], Awaitable[int]]) -> Row:
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    ok = asyncio.run(fn())  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    return Row(name, len(urls), ok, seconds, time.process_time() - cpu0)


def run_img2dataset(urls: list[str], workdir: Path, processes: int, threads: int) -> Row:
    url_file = workdir / "urls.txt"
    url_file.write_text("\n".join(urls) + "\n")
    out = workdir / "img2dataset-out"
    cmd = [
        str(IMG2DATASET),
        "--url_list",
        str(url_file),
        "--input_format",
        "txt",
        "--output_folder",
        str(out),
        "--output_format",
        "files",
        "--resize_mode",
        "no",
        "--disable_all_reencoding",
        "True",
        "--processes_count",
        str(processes),
        "--thread_count",
        str(threads),
        "--number_sample_per_shard",
        "1000",
        "--distributor",
        "multiprocessing",
        "--enable_wandb",
        "False",
        "--retries",
        "0",
        "--timeout",
        "10",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ok = sum(1 for _ in out.rglob("*.jpg"))
    return Row("img2dataset", len(urls), ok, seconds, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--images", type=int, default=5000)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--rounds", type=int, default=1, help="alternate the clients N times")
    parser.add_argument("--skip", action="append", default=[], help="client to leave out")
    args = parser.parse_args()

    server, port = start_server(args.latency)
    rows: list[Row] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-fetch-"))
    try:

        def urls(tag: str) -> list[str]:
            return [f"http://127.0.0.1:{port}/{tag}/{i:05d}.jpg" for i in range(args.images)]

        # Warm-up: imports (outside the timed runs), the server's first requests.
        import artpipe.cache
        import artpipe.fetch
        import artpipe.metrics  # noqa: F401

        timed_async("warmup", urls("warm")[:200], lambda: run_aiohttp(urls("warm")[:200], 16))
        c = args.concurrency
        for r in range(args.rounds):
            if "aiohttp" not in args.skip:
                u = urls(f"aiohttp{r}")
                rows.append(timed_async("aiohttp", u, lambda u=u: run_aiohttp(u, c)))
            if "artpipe" not in args.skip:
                u = urls(f"artpipe{r}")
                rows.append(timed_async("artpipe", u, lambda u=u: run_artpipe(u, c)))
            if "artpipe+cache" not in args.skip:
                u = urls(f"cache{r}")
                d = workdir / f"cache{r}"
                rows.append(timed_async("artpipe+cache", u, lambda u=u, d=d: run_artpipe(u, c, d)))
            if "img2dataset" not in args.skip:
                if IMG2DATASET.exists():
                    d = workdir / f"i2d{r}"
                    d.mkdir()
                    rows.append(run_img2dataset(urls(f"i2d{r}"), d, 2, 64))
                else:
                    print("img2dataset not installed: bash bench/peers/img2dataset_install.sh")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    def best(name: str) -> Row | None:
        mine = [row for row in rows if row.client == name]
        return max(mine, key=lambda row: row.rate) if mine else None

    print(
        f"\n{args.images} images, concurrency {args.concurrency}, {args.latency * 1000:g} ms "
        f"latency, {platform.python_version()}, {os.cpu_count()} CPUs\n"
    )
    print("| client | ok | seconds | images/s | client CPU ms/image |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.client} | {row.ok}/{row.images} | {row.seconds:.2f} | {row.rate:.0f} "
            f"| {row.cpu_ms:.2f} |"
        )
    base, mine, cached, peer = (
        best("aiohttp"),
        best("artpipe"),
        best("artpipe+cache"),
        best("img2dataset"),
    )
    print()
    per_round = [
        (a.rate, b.rate)
        for a, b in zip(
            [row for row in rows if row.client == "artpipe"],
            [row for row in rows if row.client == "aiohttp"],
            strict=False,
        )
    ]
    if per_round:
        ratios = ", ".join(f"{a / b:.2f}x" for a, b in per_round)
        print(f"artpipe / plain aiohttp per round: {ratios}")
    if base and mine:
        print(
            f"artpipe / plain aiohttp (best of each): {mine.rate / base.rate:.2f}x (target >= 0.9x)"
        )
    if peer and mine:
        print(f"artpipe / img2dataset: {mine.rate / peer.rate:.2f}x (target >= 1.5x)")
    if peer and cached:
        print(f"artpipe+cache / img2dataset: {cached.rate / peer.rate:.2f}x")


if __name__ == "__main__":
    main()
