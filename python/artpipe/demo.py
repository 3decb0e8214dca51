"""`artpipe demo`: the whole engine, offline, on bundled sample art.

Starts an aiohttp server on 127.0.0.1 (an ephemeral port) that serves the
images in ``demo_art/`` with a little latency and real ETag/Last-Modified
headers, writes a manifest that covers every content type and the Kodi layouts
that need care (movies with extrafanart and extrathumbs, a DVD folder, a
two-part stacked movie, a movie set, a show with seasons, season fanart,
specials and episodes with fanart, and URLs shared between items), and runs the
same ``pipeline.run`` a user's manifest gets. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

DEMO_LATENCY_S = 0.02

# The manifest names this host; the fetcher pins it to the loopback server's
# ephemeral port, so URLs (and so the store's records) are the same every run
# and a second `artpipe demo` makes no requests.
DEMO_HOST = "artpipe-demo.test"

MOVIES = [
    ("tt0078748", "Alien", 1979),
    ("tt0090605", "Aliens", 1986),
    ("tt0103644", "Alien 3", 1992),
    ("tt0083658", "Blade Runner", 1982),
    ("tt0062622", "2001 A Space Odyssey", 1968),
    ("tt0088247", "The Terminator", 1984),
]

# (id, title, year, the video path inside the movie's folder): the layouts
# docs/kodi.md lists — a DVD folder (art goes plain, beside VIDEO_TS) and
# the first part of a stacked movie (art takes the stacked title).
SPECIAL_MOVIES = [
    ("tt0113277", "Heat", 1995, "VIDEO_TS/VIDEO_TS.IFO"),
    ("tt0069293", "Solaris", 1972, "Solaris (1972)-cd1.avi"),
]
# Kodi stacks a part only when its other parts are in the folder too.
OTHER_PARTS = ["Movies/Solaris (1972)/Solaris (1972)-cd2.avi"]


def _art_files() -> dict[str, bytes]:
    folder = resources.files("artpipe") / "demo_art"
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name[0] != "."}


@asynccontextmanager
async def serve_demo_art(latency: float = DEMO_LATENCY_S) -> AsyncIterator[int]:
    """Serve the bundled art on 127.0.0.1; yields the port."""
    files = _art_files()
    etags = {name: '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
             for name, data in files.items()}
    modified = formatdate(1_700_000_000, usegmt=True)

    async def handle(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(latency)
        name = request.match_info["name"]
        data = files.get(name)
        if data is None:
            return web.Response(status=404, text="no such demo image")
        headers = {"ETag": etags[name], "Last-Modified": modified}
        if request.headers.get("If-None-Match") == etags[name]:
            return web.Response(status=304, headers=headers)
        ctype = "image/png" if name.endswith(".png") else "image/jpeg"
        return web.Response(body=data, content_type=ctype, headers=headers)

    app = web.Application()
    app.router.add_get("/art/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def demo_manifest(base: str) -> list[dict[str, Any]]:
    """Every content type, with URLs shared between items (each is fetched once)."""

    def u(name: str) -> str:
        return f"{base}/{name}"

    items: list[dict[str, Any]] = []
    for n, (imdb, title, year) in enumerate(MOVIES):
        k = n % 4 + 1
        art: dict[str, Any] = {
            "poster": u(f"poster{k}.jpg"),
            "fanart": {"url": u(f"fanart{k}.jpg"), "thumb": u(f"thumb{n % 2 + 1}.jpg")},
            "banner": u(f"banner{n % 2 + 1}.jpg"),
            "landscape": u(f"landscape{n % 2 + 1}.jpg"),
            "clearlogo": u(f"clearlogo{n % 2 + 1}.png"),
            "clearart": u(f"clearart{n % 2 + 1}.png"),
            "discart": u("discart1.png"),
            "extrafanart": [u(f"fanart{(k + j) % 4 + 1}.jpg") for j in range(3)],
        }
        if n < 2:
            art["extrathumb"] = [u(f"landscape{j}.jpg") for j in (1, 2)]
        folder = f"Movies/{title} ({year})"
        items.append({"id": imdb, "type": "movie", "title": title, "year": year,
                      "path": f"{folder}/{title} ({year}).mkv", "art": art})
    for n, (imdb, title, year, video) in enumerate(SPECIAL_MOVIES):
        items.append({"id": imdb, "type": "movie", "title": title, "year": year,
                      "path": f"Movies/{title} ({year})/{video}",
                      "art": {"poster": u(f"poster{n + 3}.jpg"), "fanart": u(f"fanart{n + 3}.jpg"),
                              "clearlogo": u("clearlogo1.png"),
                              "extrafanart": [u("fanart1.jpg")],
                              "extrathumb": [u(f"thumb{n + 1}.jpg")]}})
    items.append({"id": "set-alien", "type": "movieset", "title": "Alien Collection",
                  "path": "Movie Sets/Alien Collection",
                  "art": {"poster": u("poster1.jpg"), "fanart": u("fanart1.jpg"),
                          "clearlogo": u("clearlogo1.png")}})
    show = "TV Shows/Orbit Station"
    items.append({"id": "tvdb-900001", "type": "tvshow", "title": "Orbit Station",
                  "path": show,
                  "art": {"poster": u("poster2.jpg"), "fanart": u("fanart2.jpg"),
                          "banner": u("banner1.jpg"), "clearlogo": u("clearlogo2.png"),
                          "characterart": u("characterart1.png"),
                          "extrafanart": [u("fanart3.jpg"), u("fanart4.jpg")]}})
    for season in (-1, 0, 1, 2):
        items.append({"id": f"tvdb-900001-s{season}", "type": "season", "season": season,
                      "title": "Orbit Station", "path": show,
                      "art": {"poster": u(f"poster{season % 4 + 1}.jpg"),
                              "banner": u("banner2.jpg"),
                              "extrafanart": [u(f"fanart{season % 4 + 1}.jpg")]}})
    for season in (1, 2):
        for episode in (1, 2, 3):
            name = f"Orbit Station S{season:02d}E{episode:02d}"
            items.append({"id": f"tvdb-900001-s{season}e{episode}", "type": "episode",
                          "title": name, "path": f"{show}/Season {season}/{name}.mkv",
                          "art": {"thumb": u(f"thumb{episode % 2 + 1}.jpg"),
                                  "fanart": u(f"fanart{episode}.jpg")}})
    return items


def make_library(directory: Path, items: list[dict[str, Any]]) -> None:
    """Empty stand-ins for the videos, as a real library has them (kept if present).

    Naming reads the folder only to see whether a ``-cd1`` part has a ``-cd2``
    beside it; the stand-ins make the demo library look like one Kodi scans.
    """
    videos = [obj["path"] for obj in items if obj["type"] in ("movie", "episode")]
    for rel in videos + OTHER_PARTS:
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)


def write_manifest(items: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for obj in items:
            f.write(json.dumps(obj) + "\n")
