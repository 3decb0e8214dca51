"""Hardening against a library swapped under a download, CPU and memory bombs (issue #15).

Each test reproduces the attack against a loopback server and generated files:
a folder inside the library replaced by a link to outside while the body is in flight,
a progressive JPEG that repeats one scan thousands of times, a 3 GB file or a FIFO
given to ``artpipe probe``, an item with a great many extrafanart URLs and many huge
16-bit PNGs rendering at once (scaled down; the budgets' high-water marks are asserted).
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from artpipe import pipeline, render, write_image
from artpipe.errors import DecodeError, SaveError
from artpipe.fetch import FetchLimits
from artpipe.image import PROBE_READ_LIMIT, decoded_bytes, probe_file
from artpipe.pipeline.budget import ByteBudget

from tests.support.server import ImageServer, make_image

FAST_LIMITS = FetchLimits(max_attempts=1, connect_timeout=5, read_timeout=30, total_timeout=50)


@dataclass
class GatedServer:
    """Serves one image whose body stops half-way until the test opens the gate."""

    body: bytes
    started: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.content_length = len(self.body)
        await response.prepare(request)
        half = len(self.body) // 2
        await response.write(self.body[:half])
        self.started.set()
        await self.gate.wait()
        await response.write(self.body[half:])
        await response.write_eof()
        return response


@pytest.fixture
async def gated() -> AsyncIterator[GatedServer]:
    server = GatedServer(make_image(320, 240, seed=7))
    app = web.Application()
    app.router.add_get("/poster.jpg", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/poster.jpg"
    try:
        yield server
    finally:
        server.gate.set()
        await runner.cleanup()


def rows_of(report: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- class 5: the write race


async def test_folder_swapped_for_a_link_during_the_download_receives_nothing(
    gated: GatedServer, tmp_path: Path
) -> None:
    library, outside = tmp_path / "lib", tmp_path / "outside"
    folder = library / "Movies" / "Victim"
    folder.mkdir(parents=True)
    outside.mkdir()
    items = [{"id": "v", "type": "movie", "title": "Victim", "path": "Movies/Victim/Victim.mkv",
              "art": {"poster": gated.url}}]
    report = tmp_path / "report.jsonl"

    async def swap_while_in_flight() -> None:
        await gated.started.wait()  # the path was checked; the body is half-way
        folder.rename(tmp_path / "moved-away")
        folder.symlink_to(outside, target_is_directory=True)
        gated.gate.set()

    async with asyncio.timeout(60):
        await asyncio.gather(
            pipeline.run(items, library, limits=FAST_LIMITS, report=report, workers=1,
                         db=tmp_path / "artpipe.db", cache_dir=tmp_path / "cache"),
            swap_while_in_flight(),
        )

    (row,) = rows_of(report)
    assert row["status"] == "failed", row
    assert "symbolic link" in row["error"] and "nothing was written" in row["error"], row
    assert list(outside.iterdir()) == []
    assert list((tmp_path / "moved-away").iterdir()) == []


def test_write_image_with_a_root_refuses_a_link_below_it_and_makes_missing_folders(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "lib", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "Shows").symlink_to(outside, target_is_directory=True)
    data = make_image(40, 30, seed=1)
    with pytest.raises(SaveError, match="symbolic link") as caught:
        write_image(data, root / "Shows" / "S" / "poster.jpg", root=root)
    assert caught.value.errno == errno.ELOOP
    assert list(outside.iterdir()) == []
    saved = write_image(data, root / "Movies" / "M" / "poster.jpg", root=root)
    assert Path(saved.path).is_file()
    with pytest.raises(SaveError, match="outside the library root"):
        write_image(data, tmp_path / "elsewhere.jpg", root=root)
    # API callers without a root keep the old behaviour: links are followed, nothing created
    write_image(data, root / "Shows" / "poster.jpg")
    assert os.listdir(outside) == ["poster.jpg"]
    with pytest.raises(SaveError, match="does not exist"):
        write_image(data, root / "New" / "poster.jpg")


# ---------------------------------------------------------------- class 2: probe reads a header


def test_probe_reads_a_bounded_prefix_of_a_huge_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = tmp_path / "huge.png"
    with huge.open("wb") as fh:
        fh.write(make_image(64, 32, fmt="PNG"))
        fh.truncate(3 * 1024**3)  # sparse: 3 GB on paper, nothing on disk
    read = 0
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        nonlocal read
        chunk = real_read(fd, n)
        read += len(chunk)
        return chunk

    monkeypatch.setattr(os, "read", counting_read)
    info = probe_file(huge)
    assert (info.format, info.width, info.height) == ("png", 64, 32)
    assert read <= PROBE_READ_LIMIT


def test_probe_refuses_a_fifo_instead_of_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "poster.jpg"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file") as caught:
        probe_file(fifo)
    assert caught.value.errno == errno.EINVAL
    cli = subprocess.run([sys.executable, "-m", "artpipe", "probe", str(fifo)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert cli.returncode != 0
    assert "not a regular file" in cli.stderr


# ---------------------------------------------------------------- class 3: scan bombs


def scan_bomb(repeats: int) -> bytes:
    """A real progressive JPEG whose last refinement scan is repeated ``repeats`` times."""
    from PIL import Image

    buf = io.BytesIO()
    Image.linear_gradient("L").resize((256, 256)).convert("RGB").save(
        buf, "JPEG", progressive=True, quality=90)
    jpeg = buf.getvalue()
    scan = jpeg[jpeg.rfind(b"\xff\xda"):-2]
    return jpeg[:-2] + scan * repeats + b"\xff\xd9"


def test_a_progressive_jpeg_with_thousands_of_scans_is_refused_before_decoding() -> None:
    with pytest.raises(DecodeError, match="more than 100 scans") as caught:
        render(scan_bomb(5000))
    assert "refused before decoding" in str(caught.value)
    assert render(scan_bomb(0), format="png")  # the same file with its own scans renders


async def test_a_scan_bomb_fails_only_its_slot(srv: ImageServer, tmp_path: Path) -> None:
    srv.add_image("/bomb.jpg", scan_bomb(5000))
    items = [{"id": "m", "type": "movie", "title": "M", "path": "Movies/M/M.mkv",
              "art": {"poster": srv.url("/bomb.jpg"), "fanart": srv.url("/fine.jpg")}}]
    report = tmp_path / "report.jsonl"
    (tmp_path / "lib").mkdir()
    async with asyncio.timeout(60):
        await pipeline.run(items, tmp_path / "lib", limits=FAST_LIMITS, report=report,
                           workers=1, db=tmp_path / "artpipe.db", cache_dir=tmp_path / "cache")
    rows = {r["art"]: r for r in rows_of(report)}
    assert rows["poster"]["status"] == "failed"
    assert "more than 100 scans" in rows["poster"]["error"]
    assert rows["fanart"]["status"] == "saved"


# ---------------------------------------------------------------- class 2: bytes in flight


def png16(width: int, height: int, seed: int) -> bytes:
    """A real 16-bit RGBA PNG (8 bytes a pixel decoded), written by hand: Pillow has none."""
    rows = b"".join(
        b"\x00" + bytes((x * 7 + y * 3 + seed + c) % 256 for x in range(width) for c in range(8))
        for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def declares_150_mp() -> bytes:
    """A small PNG whose header declares 12250x12250 (150 MP): refused from the header."""
    ihdr = struct.pack(">IIBBBBB", 12250, 12250, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))


def test_decoded_bytes_counts_channels_and_sample_size() -> None:
    assert decoded_bytes(png16(30, 20, seed=1)) == 30 * 20 * 8
    assert decoded_bytes(make_image(30, 20)) == 30 * 20 * 3
    assert decoded_bytes(make_image(30, 20, fmt="PNG")) == 30 * 20 * 3
    assert decoded_bytes(b"<!DOCTYPE html>") == 0


async def test_byte_budget_admits_within_capacity_and_an_oversize_request_alone() -> None:
    budget = ByteBudget(100)
    inside: list[int] = []

    async def hold(n: int) -> None:
        async with budget.hold(n):
            inside.append(budget.used)
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    await asyncio.gather(*(hold(n) for n in (40, 40, 40, 250, 10, 60, 30)))
    assert budget.used == 0
    assert budget.high_water == 250  # the oversize one, alone
    assert max(u for u in inside if u != 250) <= 100
    assert 250 in inside
    async with budget.hold(80) as held:
        held.resize(20)
        assert budget.used == 20
    assert budget.used == 0


async def test_a_waiter_cancelled_in_line_gives_its_place_up() -> None:
    budget = ByteBudget(10)
    async with budget.hold(10):
        stuck = asyncio.ensure_future(budget.acquire(5))
        await asyncio.sleep(0)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
    assert budget.used == 0
    async with budget.hold(10):
        assert budget.used == 10


async def test_a_holder_grows_to_a_size_learned_later() -> None:
    budget = ByteBudget(100)
    async with budget.hold(0) as held:
        await held.grow_to(30)
        assert (held.n, budget.used) == (30, 30)
        await held.grow_to(10)  # never shrinks by growing
        assert budget.used == 30
        await held.grow_to(250)  # larger than the whole budget: admitted, as it is alone
        assert (held.n, budget.used) == (250, 250)
    assert budget.used == 0
    async with budget.hold(0) as late:
        pass
    await late.grow_to(50)  # a holder that already ended keeps nothing
    assert budget.used == 0


async def test_downloads_are_not_capped_at_budget_over_max_bytes(srv: ImageServer,
                                                                 tmp_path: Path) -> None:
    """Bodies are reserved by their Content-Length once the headers are in, not by the cap
    before the request: a budget of 3 caps lets 12 small downloads wait on the server."""
    from tests.support.server import OK

    items = []
    for n in range(12):
        srv.add_image(f"/p{n}.jpg")
        srv.script(f"/p{n}.jpg", then=OK(delay=0.4))
        items.append({"id": f"m{n}", "type": "movie", "title": f"M{n}",
                      "path": f"Movies/M{n}/M{n}.mkv", "art": {"poster": srv.url(f"/p{n}.jpg")}})
    (tmp_path / "lib").mkdir()
    cap = 64 * 1024
    async with asyncio.timeout(60):
        report = await pipeline.run(
            items, tmp_path / "lib", limits=replace(FAST_LIMITS, max_bytes=cap, concurrency=12,
                                                    per_host=12),
            body_budget=3 * cap, item_workers=12, db=tmp_path / "artpipe.db",
            cache_dir=tmp_path / "cache")
    assert report.stats.slots["saved"] == 12
    assert srv.max_in_flight > 3, "downloads waited for whole caps of budget"
    assert 0 < report.metrics.counter("memory.bodies_peak_bytes") <= 3 * cap


async def test_an_item_with_many_extrafanart_urls_holds_bodies_within_the_budget(
    srv: ImageServer, tmp_path: Path
) -> None:
    """The 1,500-URL item, scaled down: 150 bodies of ~20 KB, a 64 KB cap, 256 KB budget."""
    urls = []
    for n in range(150):
        srv.add_image(f"/x{n}.jpg", make_image(320, 200, seed=n, quality=95))
        urls.append(srv.url(f"/x{n}.jpg"))
    items = [{"id": "m", "type": "movie", "title": "M", "path": "Movies/M/M.mkv",
              "art": {"extrafanart": urls}}]
    (tmp_path / "lib").mkdir()
    budget = 256 * 1024
    async with asyncio.timeout(60):
        report = await pipeline.run(
            items, tmp_path / "lib", limits=replace(FAST_LIMITS, max_bytes=64 * 1024),
            workers=4, body_budget=budget, db=tmp_path / "artpipe.db",
            cache_dir=tmp_path / "cache", report=tmp_path / "report.jsonl")
    assert report.stats.slots["saved"] == 150
    peak = report.metrics.counter("memory.bodies_peak_bytes")
    assert 0 < peak <= budget


async def test_huge_16_bit_pngs_render_within_the_decoded_bytes_budget(
    srv: ImageServer, tmp_path: Path
) -> None:
    """24 16-bit RGBA PNGs with 8 render workers, scaled down: 500 KB decoded each, a 1.2 MB
    budget (two at a time), and one over the whole budget that must run alone."""
    items = []
    for n in range(24):
        srv.add_image(f"/p{n}.png", png16(250, 250, seed=n), content_type="image/png")
        items.append({"id": f"m{n}", "type": "movie", "title": f"M{n}",
                      "path": f"Movies/M{n}/M{n}.mkv", "art": {"poster": srv.url(f"/p{n}.png")}})
    srv.add_image("/big.png", png16(450, 450, seed=99), content_type="image/png")
    items.append({"id": "big", "type": "movie", "title": "Big", "path": "Movies/B/B.mkv",
                  "art": {"poster": srv.url("/big.png")}})
    (tmp_path / "lib").mkdir()
    budget = 1_200_000
    async with asyncio.timeout(60):
        report = await pipeline.run(
            items, tmp_path / "lib", limits=FAST_LIMITS, workers=8, item_workers=25,
            pixel_budget=budget, db=tmp_path / "artpipe.db", cache_dir=tmp_path / "cache",
            report=tmp_path / "report.jsonl")
    assert report.stats.slots["saved"] == 25
    peak = report.metrics.counter("memory.pixels_peak_bytes")
    big = 450 * 450 * 8
    assert peak == big, f"the oversize render ran alone; otherwise at most {budget}: {peak}"


async def test_a_refused_url_is_not_fetched_again_until_it_changes_or_refresh(
    srv: ImageServer, tmp_path: Path
) -> None:
    srv.add_image("/bomb.jpg", scan_bomb(5000))
    srv.add_image("/big.png", declares_150_mp(), content_type="image/png")
    library = tmp_path / "lib"
    library.mkdir()

    async def run(poster: str, **options: Any) -> dict[str, dict[str, Any]]:
        items = [{"id": "m", "type": "movie", "title": "M", "path": "Movies/M/M.mkv",
                  "art": {"poster": srv.url(poster), "fanart": srv.url("/big.png")}}]
        report = tmp_path / "report.jsonl"
        async with asyncio.timeout(60):
            await pipeline.run(items, library, limits=FAST_LIMITS, report=report, workers=1,
                               db=tmp_path / "artpipe.db", cache_dir=tmp_path / "cache",
                               **options)
        return {r["art"]: r for r in rows_of(report)}

    first = await run("/bomb.jpg")
    assert first["poster"]["status"] == first["fanart"]["status"] == "failed"
    assert "more than 100 scans" in first["poster"]["error"]
    assert "over the limit" in first["fanart"]["error"]
    assert (srv.hits("/bomb.jpg"), srv.hits("/big.png")) == (1, 1)

    again = await run("/bomb.jpg")
    assert again["poster"]["error"] == first["poster"]["error"]
    assert "earlier run" in (again["poster"]["note"] or "")
    assert again["fanart"]["status"] == "failed"
    assert (srv.hits("/bomb.jpg"), srv.hits("/big.png")) == (1, 1), "nothing fetched again"

    await run("/bomb.jpg", refresh=True)
    assert srv.hits("/bomb.jpg") == 2
    srv.add_image("/fixed.jpg", make_image(60, 40, seed=5))
    fixed = await run("/fixed.jpg")
    assert fixed["poster"]["status"] == "saved"
    assert fixed["fanart"]["status"] == "failed"  # the same URL: refused until --refresh


async def test_a_body_read_from_the_cache_is_reserved_before_it_is_read(
    srv: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rerun restoring deleted files reads bodies from the cache: each read waits for
    room in the body budget first, as a download does, so 1,500 cached extrafanarts are
    not all read into memory at once."""
    from artpipe.cache import Cache, CacheEntry
    from artpipe.pipeline import budget as budget_module

    budgets: list[ByteBudget] = []
    real_init = budget_module.ByteBudget.__init__

    def remember(self: ByteBudget, capacity: int, name: str = "bytes") -> None:
        real_init(self, capacity, name)
        budgets.append(self)

    monkeypatch.setattr(budget_module.ByteBudget, "__init__", remember)
    srv.add_image("/p.jpg")
    items = [{"id": "m", "type": "movie", "title": "M", "path": "Movies/M/M.mkv",
              "art": {"poster": srv.url("/p.jpg")}}]
    library = tmp_path / "lib"
    library.mkdir()
    cap = 64 * 1024
    options: dict[str, Any] = {"limits": replace(FAST_LIMITS, max_bytes=cap),
                               "body_budget": 4 * cap, "db": tmp_path / "artpipe.db",
                               "cache_dir": tmp_path / "cache"}
    assert (await pipeline.run(items, library, **options)).exit_code == 0
    (library / "Movies" / "M" / "M-poster.jpg").unlink()
    held_at_read: list[int] = []
    real_read = Cache.read_entry

    def read(self: Cache, url: str) -> tuple[bytes, CacheEntry] | None:
        bodies = [b for b in budgets if b.name == "downloaded bytes"][-1]  # the rerun's
        held_at_read.append(bodies.used)
        return real_read(self, url)

    monkeypatch.setattr(Cache, "read_entry", read)
    srv.reset_counters()
    report = await pipeline.run(items, library, **options)
    assert report.exit_code == 0 and srv.hits() == 0  # restored from the cache
    assert held_at_read and all(n >= cap for n in held_at_read), held_at_read


async def test_no_request_waits_for_a_connection_while_holding_body_memory(
    srv: ImageServer,
) -> None:
    """A slot holding memory (a cache read that missed) must let it go before it waits for
    a connection: else the request holding the only connection, waiting for that memory
    to read its body, and the slot, waiting for the connection, wait for each other."""
    from artpipe.fetch import BODY_RESERVE, Fetcher

    srv.add_image("/a.jpg")
    srv.add_image("/b.jpg")
    cap = 64 * 1024
    budget = ByteBudget(cap)
    limits = replace(FAST_LIMITS, max_bytes=cap, concurrency=1, per_host=1)

    async def fetch_holding(fetcher: Fetcher, url: str, held_bytes: int) -> bytes | None:
        async with budget.hold(held_bytes) as held:
            BODY_RESERVE.set(held)  # this task's context only
            if held_bytes:
                await b_waits.wait()
            result = await fetcher.fetch(url)
            return result.data

    b_waits = asyncio.Event()
    async with Fetcher(limits) as fetcher:
        real_grow = budget.acquire

        async def acquire(n: int) -> None:
            if budget.used:  # B, in the only connection, now waits for A's memory
                b_waits.set()
            await real_grow(n)

        budget.acquire = acquire  # type: ignore[method-assign]
        async with asyncio.timeout(20):
            a = asyncio.ensure_future(fetch_holding(fetcher, srv.url("/a.jpg"), cap))
            await asyncio.sleep(0)  # A holds the whole budget before B starts
            b = asyncio.ensure_future(fetch_holding(fetcher, srv.url("/b.jpg"), 0))
            assert (await a) == srv.image("/a.jpg")
            assert (await b) == srv.image("/b.jpg")
    assert budget.used == 0
