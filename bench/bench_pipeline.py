"""The seed's scenario, measured: 49 movies, 312 images, ~100 ms per request.

Compares in ONE run (same machine, same server, same images):

* ``sequential`` — the media manager's synchronous baseline: one image at a
  time, download then Pillow resize and save.
* ``ember-async`` — the media manager's *fixed* async design: per movie, 5
  concurrent downloads, then a save phase (Pillow), movie after movie.
* ``artpipe`` — ``pipeline.run`` with its defaults (threads).

The server runs in its own process (so its CPU is not the client's), serves
realistic sizes (2000×3000 poster JPEGs, 3840×2160 fanart JPEGs, 1600×620 RGBA
PNG logos, banners, landscapes) with a fixed per-request latency.

    python bench/bench_pipeline.py                 # full scenario, ~2 minutes
    python bench/bench_pipeline.py --movies 10     # quick look

Prints ms/movie and artpipe's phase timers; paste the table into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PNG_ARTS: tuple[str, ...] = ("clearlogo",)  # arts saved as PNG (bench_throughput adds more)
LIMITS = {"poster": (1000, 1500), "fanart": (1920, 1080), "extrafanart": (1920, 1080),
          "banner": (1000, 185), "landscape": (1920, 1080), "clearlogo": (800, 310)}


def make_art(folder: Path) -> None:
    """Photo-like sources at real sizes (Pillow, once per run)."""
    from PIL import Image, ImageDraw, ImageFilter

    def scene(w: int, h: int, seed: int) -> Image.Image:
        img = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        draw = ImageDraw.Draw(img)
        for i in range(40):
            x, y = (seed * 97 + i * 131) % w, (seed * 53 + i * 71) % h
            r = 20 + (i * 37) % (min(w, h) // 6)
            draw.ellipse((x - r, y - r, x + r, y + r),
                         fill=((i * 40) % 256, (seed * 60 + i * 20) % 256, (i * 90) % 256))
        noise = Image.effect_noise((w, h), 24).convert("RGB")
        return Image.blend(img.filter(ImageFilter.GaussianBlur(2)), noise, 0.06)

    def jpeg(img: Image.Image, q: int = 90) -> bytes:
        out = io.BytesIO()
        img.save(out, "JPEG", quality=q)
        return out.getvalue()

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (folder / f"poster{i}.jpg").write_bytes(jpeg(scene(2000, 3000, i)))
        (folder / f"fanart{i}.jpg").write_bytes(jpeg(scene(3840, 2160, 10 + i)))
    (folder / "banner0.jpg").write_bytes(jpeg(scene(1000, 185, 20)))
    (folder / "landscape0.jpg").write_bytes(jpeg(scene(1920, 1080, 30)))
    logo = Image.new("RGBA", (1600, 620), (0, 0, 0, 0))
    ImageDraw.Draw(logo).rounded_rectangle((40, 40, 1560, 580), radius=120,
                                           fill=(230, 120, 40, 230))
    out = io.BytesIO()
    logo.save(out, "PNG")
    (folder / "clearlogo0.png").write_bytes(out.getvalue())


def serve(folder: str, latency: float, port_queue: Any) -> None:
    """Server process: any path maps to the file in ``folder`` named by its last segment
    (``/<movie>/<name>`` and ``/<movie>/<art>/<name>`` alike)."""
    from aiohttp import web

    files = {p.name: p.read_bytes() for p in Path(folder).iterdir()}

    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        name = request.path.rsplit("/", 1)[-1]
        ctype = "image/png" if name.endswith(".png") else "image/jpeg"
        return web.Response(body=files[name], content_type=ctype)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


def scenario(base: str, movies: int) -> list[dict[str, Any]]:
    """312 images for 49 movies: 6 per movie + one extrafanart for 18 of them."""
    items = []
    for n in range(movies):
        k = n % 3
        art: dict[str, Any] = {
            "poster": f"{base}/m{n}/poster{k}.jpg",
            "fanart": f"{base}/m{n}/fanart{k}.jpg",
            "banner": f"{base}/m{n}/banner0.jpg",
            "landscape": f"{base}/m{n}/landscape0.jpg",
            "clearlogo": f"{base}/m{n}/clearlogo0.png",
            "extrafanart": [f"{base}/m{n}/fanart{(k + 1) % 3}.jpg"],
        }
        if n < 18:
            art["extrafanart"].append(f"{base}/m{n}/fanart{(k + 2) % 3}.jpg")
        items.append({"id": f"tt{n:07d}", "type": "movie", "title": f"Movie {n}",
                      "path": f"Movies/Movie {n}/Movie {n}.mkv", "art": art})
    return items


def jobs_of(item: dict[str, Any], library: Path) -> list[tuple[str, str, Path]]:
    """(art, URL, target) of every slot of ``item``, as the seed's designs name them."""
    stem = Path(item["path"]).stem
    folder = library / Path(item["path"]).parent
    out = []
    for art, value in item["art"].items():
        urls = value if isinstance(value, list) else [value]
        for i, url in enumerate(urls, start=1):
            name = f"{stem}-fanart{i}" if art == "extrafanart" else f"{stem}-{art}"
            ext = ".png" if art in PNG_ARTS else ".jpg"
            out.append((art, url, folder / (name + ext)))
    return out


def pillow_save(data: bytes, art: str, target: Path) -> None:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.thumbnail(LIMITS[art], Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".png":
        img.save(target, "PNG")
    else:
        img.convert("RGB").save(target, "JPEG", quality=90)


def run_sequential(items: list[dict[str, Any]], library: Path) -> dict[str, float]:
    for item in items:
        for art, url, target in jobs_of(item, library):
            with urllib.request.urlopen(url, timeout=30) as resp:
                data = resp.read()
            pillow_save(data, art, target)
    return {}


async def run_ember_async(items: list[dict[str, Any]], library: Path) -> dict[str, float]:
    import aiohttp

    download = save = 0.0
    async with aiohttp.ClientSession() as session:
        for item in items:
            jobs = jobs_of(item, library)
            sem = asyncio.Semaphore(5)

            async def get(url: str, sem: asyncio.Semaphore = sem) -> bytes:
                async with sem, session.get(url) as resp:
                    return await resp.read()

            t0 = time.perf_counter()
            bodies = await asyncio.gather(*(get(url) for _, url, _ in jobs))
            t1 = time.perf_counter()
            for (art, _, target), data in zip(jobs, bodies, strict=True):
                pillow_save(data, art, target)
            t2 = time.perf_counter()
            download += t1 - t0
            save += t2 - t1
    n = len(items)
    return {"download ms/movie": download * 1000 / n, "save ms/movie": save * 1000 / n}


async def run_artpipe(
    items: list[dict[str, Any]], library: Path, per_host: int = 8
) -> dict[str, float]:
    from artpipe import pipeline

    report = await pipeline.run(items, library, per_host=per_host)
    assert report.exit_code == 0, report.stats.errors
    counters = report.metrics.counters()
    assert counters.get("http.requests_in_save", 0) == 0
    timers = report.metrics.timers()
    return {
        "item.download avg ms": timers["item.download"]["avg_ms"],
        "item.save_to_disk avg ms": timers["item.save_to_disk"]["avg_ms"],
        "render avg ms": timers["render"]["avg_ms"],
        "requests": counters["http.requests"],
        "requests_in_save": counters.get("http.requests_in_save", 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, default=49)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--skip", nargs="*", default=[], help="sequential, ember-async, artpipe")
    parser.add_argument("--json", type=Path, help="also write results here")
    parser.add_argument("--per-host", type=int, default=8,
                        help="artpipe's per-host limit (default 8, as in the CLI)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="artpipe-bench-") as tmp:
        art = Path(tmp) / "art"
        make_art(art)
        ctx = multiprocessing.get_context("spawn")
        ports = ctx.Queue()
        server = ctx.Process(target=serve, args=(str(art), args.latency, ports), daemon=True)
        server.start()
        base = f"http://127.0.0.1:{ports.get(timeout=30)}"
        items = scenario(base, args.movies)
        images = sum(len(jobs_of(i, Path("."))) for i in items)
        print(f"{args.movies} movies, {images} images, {args.latency * 1000:.0f} ms latency, "
              f"{os.cpu_count()} cores")
        results: dict[str, Any] = {}
        runners = {
            "sequential": lambda lib: run_sequential(items, lib),
            "ember-async": lambda lib: asyncio.run(run_ember_async(items, lib)),
            "artpipe": lambda lib: asyncio.run(run_artpipe(items, lib, args.per_host)),
        }
        for name, fn in runners.items():
            if name in args.skip:
                continue
            library = Path(tmp) / name
            library.mkdir()
            t0 = time.perf_counter()
            extra = fn(library)
            wall = time.perf_counter() - t0
            results[name] = {"wall s": round(wall, 2),
                             "ms/movie": round(wall * 1000 / args.movies, 1), **extra}
            print(f"{name:12} {results[name]}")
        server.terminate()
    if "artpipe" in results:
        ours = results["artpipe"]["ms/movie"]
        for name in ("sequential", "ember-async"):
            if name in results:
                print(f"artpipe is {results[name]['ms/movie'] / ours:.1f}x faster than {name}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
