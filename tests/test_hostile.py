"""Hostile inputs: bombs, lies, broken images and poisoned manifest lines.

Scraped URLs point at anything and manifests come from other programs, so
every input here is an attack or an accident a user will meet: decompression
bombs (a tiny PNG and WebP declaring or decoding to > 100 MP, a 1 GiB gzip
body), truncated and corrupt images, HTML served as ``image/jpeg``, absurd
declared sizes, path traversal and NUL bytes in manifest paths, non-http
schemes, a 20 MB manifest line and invalid UTF-8. Each must become one clear
``failed`` row (the manifest line number or the URL, and what was wrong), the
run must go on and save the good items, nothing may appear outside the
library, and the process must stay within a bounded peak RSS — all in one
run of the real CLI (``python -m artpipe run``) whose peak RSS is read from
``os.wait4``. The bombs are crafted by hand (a few KB each); the test never
allocates the pixels they claim.

The API-level tests at the end feed the same bombs straight to probe,
render, decode and write_image.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import artpipe
import pytest
from artpipe.errors import ImageTooLargeError

from tests.support import server as server_module
from tests.support.server import (
    Body,
    GzipBomb,
    ImageServer,
    Redirect,
    ThreadedImageServer,
    make_image,
)

PEAK_RSS_LIMIT_MB = 300  # a whole run's bound (docs/contracts.md, Limits); the bombs alone need GBs
HUGE_LINE_BYTES = 20 * 1024 * 1024
GIB = 1 << 30

# ----------------------------------------------------------------- crafted bombs


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, *, bit_depth: int = 1, rows: int | None = None) -> bytes:
    """Grayscale PNG of ``width``x``height`` whose IDAT holds ``rows`` rows of zeros.

    ``rows=None`` makes a complete, valid image: at 1 bit per pixel a 10240x10240
    picture (105 MP, 300+ MB decoded) is 13 KB. A few rows make a header-only bomb.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    count = height if rows is None else rows
    co = zlib.compressobj(9)
    parts = []
    if count:
        row = b"\0" * (1 + (width * bit_depth + 7) // 8)  # filter byte + packed samples
        parts += [co.compress(row * 64) for _ in range(count // 64)]
        parts.append(co.compress(row * (count % 64)))
    parts.append(co.flush())
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))


def _riff(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"WEBP"
    for kind, data in chunks:
        body += kind + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)  # alpha 0, version 0
    return b"\x2f" + struct.pack("<I", bits) + b"\0" * 64


def webp_bomb_vp8l(width: int = 16384, height: int = 16384) -> bytes:
    """Lossless WebP declaring 16384x16384 (268 MP, the format's maximum) in 90 bytes."""
    return _riff((b"VP8L", _vp8l(width, height)))


def webp_bomb_vp8x(width: int = 16384, height: int = 16384) -> bytes:
    """Extended WebP: VP8X canvas and VP8L bitstream both declaring 268 MP."""
    vp8x = b"\0" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return _riff((b"VP8X", vp8x), (b"VP8L", _vp8l(width, height)))


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real baseline JPEG whose SOF0 is patched to declare ``width``x``height``."""
    data = bytearray(make_image(64, 48, seed=7))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_with_screen(width: int, height: int) -> bytes:
    """A real GIF whose logical screen declares ``width``x``height``."""
    data = bytearray(make_image(16, 16, fmt="GIF", seed=3))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def gzip_gibibyte() -> bytes:
    """A valid gzip body (JPEG magic first) that inflates to exactly 1 GiB; ~1 MB, 0.4 s.

    Built from one full-flushed deflate block of 1 MiB of zeros repeated 1023 times
    (a full flush resets the window, so the blocks are byte-identical), which is
    20x faster than compressing the gibibyte.
    """
    head = b"\xff\xd8\xff\xe0" + b"\0" * 12
    block = bytes(1 << 20)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = co.compress(head + block[len(head) :]) + co.flush(zlib.Z_FULL_FLUSH)
    unit = co.compress(block) + co.flush(zlib.Z_FULL_FLUSH)
    assert co.compress(block) + co.flush(zlib.Z_FULL_FLUSH) == unit
    last = co.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head + block[len(head) :])
    for _ in range(GIB // len(block) - 1):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\0\0\0\0\x00\x03"
    trailer = struct.pack("<II", crc, GIB & 0xFFFFFFFF)
    return header + first + unit * (GIB // len(block) - 1) + last + trailer


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def corrupt_jpeg_huffman() -> bytes:
    """A JPEG whose Huffman tables are zeroed: a decoder cannot even start the scan."""
    data = bytearray(make_image(64, 48, seed=11))
    pos = 0
    while (pos := data.find(b"\xff\xc4", pos)) != -1:
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        data[pos + 4 : pos + 2 + length] = b"\xff" * (length - 2)
        pos += 2 + length
    return bytes(data)


def corrupt_png_idat() -> bytes:
    """A PNG whose IDAT is replaced by bytes that are not a zlib stream (CRC recomputed)."""
    data = make_image(64, 48, fmt="PNG", seed=12)
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    garbage = bytes((i * 97 + 13) % 256 for i in range(length))
    return data[:start] + _chunk(b"IDAT", garbage) + data[start + 12 + length :]


def corrupt_webp() -> bytes:
    data = bytearray(make_image(64, 48, fmt="WEBP", seed=13))
    for i in range(30, len(data)):
        data[i] = (i * 131 + 7) % 256
    return bytes(data)


# ----------------------------------------------------------------- the hostile run


@dataclass(frozen=True)
class Case:
    """One hostile image URL: what is served, and words its error must contain."""

    name: str
    words: tuple[str, ...]


BODY_CASES = [
    Case("png-bomb-complete", ("pixels", "limit")),
    Case("png-bomb-header", ("pixels", "limit")),
    Case("webp-bomb-vp8l", ("pixels", "limit")),
    Case("webp-bomb-vp8x", ("pixels", "limit")),
    Case("jpeg-65500x65500", ("pixels", "limit")),
    Case("png-2147483647x1", ("pixels", "limit")),
    Case("png-0x0", ("png",)),
    Case("gif-65535x65535-screen", ("pixels", "limit")),
    Case("gzip-1gib", ("cap", "decompression")),
    Case("jpeg-truncated", ("jpeg", "decode")),
    Case("png-truncated", ("png", "decode")),
    Case("webp-truncated", ("webp", "decode")),
    Case("gif-truncated", ("gif", "decode")),
    Case("jpeg-corrupt-huffman", ("jpeg", "decode")),
    Case("png-corrupt-idat", ("png", "decode")),
    Case("webp-corrupt", ("webp", "decode")),
    Case("html-as-jpeg", ("<!doctype html", "not a jpeg")),
    Case("json-as-png", ("not a jpeg",)),
    Case("empty-body", ("empty",)),
    Case("redirect-to-file-scheme", ("file:", "only http and https")),
]


def serve_case(srv: ImageServer, name: str) -> str:
    """Register what case ``name`` serves; return its URL."""
    path = f"/hostile/{name}.jpg"
    bodies = {
        "png-bomb-complete": lambda: png_bomb(10240, 10240),
        "png-bomb-header": lambda: png_bomb(20000, 20000, bit_depth=8, rows=4),
        "webp-bomb-vp8l": webp_bomb_vp8l,
        "webp-bomb-vp8x": webp_bomb_vp8x,
        "jpeg-65500x65500": lambda: jpeg_with_size(65500, 65500),
        "png-2147483647x1": lambda: png_bomb(2**31 - 1, 1, rows=0),
        "png-0x0": lambda: png_bomb(0, 0, rows=0),
        "gif-65535x65535-screen": lambda: gif_with_screen(65535, 65535),
        "jpeg-truncated": lambda: truncated(make_image(300, 200, seed=1)),
        "png-truncated": lambda: truncated(make_image(120, 90, fmt="PNG", seed=2)),
        "webp-truncated": lambda: truncated(make_image(120, 90, fmt="WEBP", seed=3)),
        "gif-truncated": lambda: truncated(make_image(120, 90, fmt="GIF", seed=4)),
        "jpeg-corrupt-huffman": corrupt_jpeg_huffman,
        "png-corrupt-idat": corrupt_png_idat,
        "webp-corrupt": corrupt_webp,
        "html-as-jpeg": lambda: b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "json-as-png": lambda: b'{"error": "rate limited", "status": 429}',
        "empty-body": lambda: b"",
    }
    if name == "gzip-1gib":
        # The server caches bomb bodies by size; seed it with the fast-built one.
        server_module._BOMB_CACHE[GIB] = gzip_gibibyte()
        srv.add_image(path)
        srv.script(path, then=GzipBomb(expanded=GIB))
    elif name == "redirect-to-file-scheme":
        srv.add_image(path)
        srv.script(path, then=Redirect("file:///etc/passwd"))
    else:
        data = bodies[name]()
        srv.add_image(path, data)
        srv.script(path, then=Body(data, content_type="image/jpeg"))
    return srv.url(path)


@dataclass(frozen=True)
class BadLine:
    name: str
    line: bytes  # raw manifest line, without the newline
    words: tuple[str, ...]
    item: str | None = None  # the id its report row carries
    slot: bool = False  # True: only the poster slot fails, the line itself is fine


def _movie_line(item: str, path: str, url: str) -> bytes:
    obj = {"id": item, "type": "movie", "title": item, "path": path, "art": {"poster": url}}
    return json.dumps(obj).encode()


def bad_lines(good_url: str, outside: Path) -> list[BadLine]:
    def line(name: str, path: str = "Movies/X/X.mkv", url: str = good_url) -> bytes:
        return _movie_line(name, path, url)

    huge = b'{"id": "huge", "type": "movie", "title": "' + b"A" * HUGE_LINE_BYTES + b'"}'
    return [
        BadLine("traversal", line("traversal", "../outside/Evil/Evil.mkv"), ("..",), "traversal"),
        BadLine("deep-traversal", line("deep", "Movies/../../../../../../etc/Evil.mkv"), ("..",),
                "deep"),
        BadLine("backslash-traversal", line("bs", "Movies\\..\\..\\Evil.mkv"), ("..",), "bs"),
        BadLine("absolute", line("absolute", f"{outside}/Evil/Evil.mkv"), ("absolute",),
                "absolute"),
        BadLine("nul-byte", line("nul", "Movies/Evil\u0000/Evil.mkv"), ("nul",), "nul"),
        # a bad URL fails that slot, not the line (the item's other art would still run)
        BadLine("file-scheme", line("file", url="file:///etc/passwd"), ("scheme", "file"),
                "file", slot=True),
        BadLine("ftp-scheme", line("ftp", url="ftp://127.0.0.1/p.jpg"), ("scheme", "ftp"),
                "ftp", slot=True),
        BadLine("data-scheme", line("data", url="data:image/png;base64,iVBORw0KGgo="),
                ("scheme", "data"), "data", slot=True),
        BadLine("javascript-scheme", line("js", url="javascript:alert(1)"), ("scheme",), "js",
                slot=True),
        BadLine("no-host", line("nohost", url="http:///p.jpg"), ("host",), "nohost", slot=True),
        BadLine("huge-line", huge, ("longer than",)),
        BadLine("invalid-utf8", b'{"id": "bad\xff\xfe", "type": "movie"}', ("utf-8",)),
    ]


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float


# Runs ``argv`` and writes the child's peak RSS (KiB) to ``rss_file``. A fresh, small
# launcher matters: Linux carries the RSS high-water mark across fork+exec, so a child
# spawned straight from a big pytest process would report pytest's peak, not its own.
_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_measured(args: list[str], out_dir: Path, timeout: float = 180) -> Measured:
    """Run ``args``; return its exit code, output and its own peak RSS."""
    out, err, rss = out_dir / "stdout.txt", out_dir / "stderr.txt", out_dir / "rss.txt"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(rss), *args],
                                stdout=fo, stderr=fe, start_new_session=True)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"{args} did not finish in {timeout} s (a hang?)")
    return Measured(proc.returncode, out.read_text(errors="replace"),
                    err.read_text(errors="replace"), int(rss.read_text()) / 1024)


@dataclass
class HostileRun:
    measured: Measured
    rows_by_item: dict[str, dict[str, Any]]
    bad_rows: list[dict[str, Any]]
    line_of: dict[str, int]
    library: Path
    outside: Path

    def row(self, item: str) -> dict[str, Any]:
        if item not in self.rows_by_item:
            m = self.measured
            pytest.fail(f"no report row for {item}; the run exited {m.returncode}: "
                        f"{m.stderr[-3000:]}")
        return self.rows_by_item[item]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileRun]:
    tmp = tmp_path_factory.mktemp("hostile")
    library, outside = tmp / "lib", tmp / "outside"
    library.mkdir()
    outside.mkdir()
    with ThreadedImageServer() as srv:
        good_url = srv.url("/good/poster.jpg")
        srv.add_image("/good/poster.jpg", make_image(200, 300, seed=5))
        lines = [_movie_line("good-first", "Movies/Good First/Good First.mkv", good_url)]
        line_of: dict[str, int] = {}
        for case in BODY_CASES:
            url = serve_case(srv, case.name)
            lines.append(_movie_line(case.name, f"Movies/{case.name}/{case.name}.mkv", url))
        for bad in bad_lines(good_url, outside):
            lines.append(bad.line)
            line_of[bad.name] = len(lines)
        lines.append(_movie_line("good-last", "Movies/Good Last/Good Last.mkv", good_url))
        manifest = tmp / "manifest.jsonl"
        manifest.write_bytes(b"\n".join(lines) + b"\n")
        report = tmp / "report.jsonl"
        measured = run_measured(
            [sys.executable, "-m", "artpipe", "run", str(manifest), "--library", str(library),
             "--report", str(report), "--quiet"],
            tmp,
        )
    rows = [json.loads(x) for x in report.read_text(encoding="utf-8").splitlines()]
    yield HostileRun(
        measured=measured,
        rows_by_item={r["item"]: r for r in rows if r["art"] is not None},
        bad_rows=[r for r in rows if r["art"] is None],  # a rejected line has no art
        line_of=line_of,
        library=library,
        outside=outside,
    )


def test_the_run_survives_every_hostile_input(hostile: HostileRun) -> None:
    m = hostile.measured
    assert m.returncode == 1, (m.returncode, m.stderr[-2000:])  # some slots failed, no crash
    assert "Traceback" not in m.stderr and "panicked" not in m.stderr, m.stderr[-2000:]
    for item in ("good-first", "good-last"):
        row = hostile.row(item)
        assert row["status"] == "saved", row
        assert Path(row["path"]).is_file()


@pytest.mark.parametrize("case", BODY_CASES, ids=lambda c: c.name)
def test_hostile_body_is_one_failed_slot_with_a_clear_error(
    hostile: HostileRun, case: Case
) -> None:
    row = hostile.row(case.name)
    assert row["status"] == "failed", row
    error = row["error"].lower()
    for word in case.words:
        assert word in error, f"{case.name}: expected {word!r} in {row['error']!r}"
    assert row["url"].endswith(f"/hostile/{case.name}.jpg")
    assert row["error"].startswith(f'"{case.name}" poster'), "the error must name the slot"
    assert row["url"] in row["error"], "the error must name the URL"
    assert not list((hostile.library / "Movies" / case.name).glob("*")), "nothing saved"


@pytest.mark.parametrize("bad", bad_lines("http://127.0.0.1:1/p.jpg", Path("/x")),
                         ids=lambda b: b.name)
def test_bad_manifest_line_is_reported_with_its_line_number(
    hostile: HostileRun, bad: BadLine
) -> None:
    number = hostile.line_of[bad.name]
    matches = [r for r in hostile.bad_rows if f"line {number}:" in r["error"]]
    if bad.slot:
        assert matches == [], "a bad URL must not reject the whole line"
        matches = [hostile.row(bad.item or "")]
        assert matches[0]["art"] == "poster"
    assert len(matches) == 1, (number, hostile.bad_rows)
    error = matches[0]["error"].lower()
    assert matches[0]["status"] == "failed"
    assert matches[0]["item"] == bad.item  # the id, whenever it could be read
    for word in bad.words:
        assert word in error, f"{bad.name}: expected {word!r} in {matches[0]['error']!r}"


def test_nothing_is_written_outside_the_library(hostile: HostileRun) -> None:
    assert list(hostile.outside.iterdir()) == []
    assert not (hostile.library.parent / "Evil").exists()
    root = hostile.library.resolve()
    for path in hostile.library.rglob("*"):
        assert path.resolve().is_relative_to(root), path


def test_peak_memory_stays_bounded(hostile: HostileRun) -> None:
    # One 105 MP bomb decoded would be 300+ MB, the gzip body 1 GiB, the long line 20 MB.
    peak = hostile.measured.peak_rss_mb
    assert peak < PEAK_RSS_LIMIT_MB, f"peak RSS {peak:.0f} MB"


# ------------------------------------------------------------- the API, directly

BOMBS = {
    "png-complete-105mp": lambda: png_bomb(10240, 10240),
    "png-header-400mp": lambda: png_bomb(20000, 20000, bit_depth=8, rows=4),
    "webp-vp8l-268mp": webp_bomb_vp8l,
    "webp-vp8x-268mp": webp_bomb_vp8x,
    "jpeg-4gp": lambda: jpeg_with_size(65500, 65500),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_are_refused_from_the_header_by_every_api(name: str, tmp_path: Path) -> None:
    data = BOMBS[name]()
    assert len(data) < 64 * 1024
    info = artpipe.probe(data)  # probing reads the header and is allowed
    assert info.width * info.height > 100_000_000
    target = tmp_path / "poster.jpg"
    for call in (
        lambda: artpipe.render(data, max_size=(100, 100)),
        lambda: artpipe.decode(data, max_size=(100, 100)),
        lambda: artpipe.write_image(data, target, max_size=(100, 100)),
    ):
        with pytest.raises(ImageTooLargeError, match="pixels"):
            call()
    assert list(tmp_path.iterdir()) == []

