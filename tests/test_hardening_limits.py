"""Hardening against a library swapped under a download, CPU and memory bombs (issue #15).

Each test reproduces the attack against a loopback server and generated files:
a folder inside the library replaced by a link to outside while the body is in flight,
a progressive JPEG that repeats one scan thousands of times, a 3 GB file or a FIFO
given to ``artpipe probe``.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from artpipe import pipeline, render, write_image
from artpipe.errors import DecodeError, SaveError
from artpipe.fetch import FetchLimits
from artpipe.image import PROBE_READ_LIMIT, probe_file

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
