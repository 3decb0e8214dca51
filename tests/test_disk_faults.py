"""Disk faults: a full disk, a read-only folder, odd things where a file should go.

Invariants 6 and 8 in docs/contracts.md: a failed write never deletes or damages an
existing good file, and no file is ever written outside the library root.
Each test fills a library with an *old* run, breaks one item's folder in one
way, runs again with *new* URLs for every item, and checks what a user would:
that slot is a ``failed`` row whose error names the path, its old file is
byte-for-byte intact (no temp file beside it), nothing appeared outside the
root, and the other items were saved.

ENOSPC and read-only need a filesystem of their own: the tests mount a small
tmpfs (CI runs as root). Root ignores permission bits, so "read-only" is a
read-only remount, not a chmod. Where mounting is impossible the test is
skipped and says why.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from artpipe import pipeline
from artpipe.fetch import FetchLimits

from tests.support.server import ImageServer, make_image

FAST_LIMITS = FetchLimits(max_attempts=1, connect_timeout=5, read_timeout=5, total_timeout=10)
TEMP_SUFFIX = ".artpipe-tmp"
ITEMS = ("Victim", "Bystander A", "Bystander B")


def movie(name: str, art: dict[str, Any]) -> dict[str, Any]:
    return {"id": name, "type": "movie", "title": name,
            "path": f"Movies/{name}/{name}.mkv", "art": art}


def poster_path(library: Path, name: str) -> Path:
    return library / "Movies" / name / f"{name}-poster.jpg"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
async def srv() -> AsyncIterator[ImageServer]:
    async with ImageServer(generate=False) as server:
        for n in range(len(ITEMS)):
            for version in ("old", "new"):
                seed = n * 2 + (version == "new")
                server.add_image(f"/{version}/{n}/poster.jpg",
                                 make_image(200 + 40 * seed, 300, seed=seed))
                server.add_image(f"/{version}/{n}/fanart.jpg",
                                 make_image(320, 180, seed=100 + seed))
        yield server


def manifest(srv: ImageServer, version: str) -> list[dict[str, Any]]:
    return [
        movie(name, {"poster": srv.url(f"/{version}/{n}/poster.jpg"),
                     "fanart": srv.url(f"/{version}/{n}/fanart.jpg")})
        for n, name in enumerate(ITEMS)
    ]


async def run(items: list[dict[str, Any]], library: Path, tmp: Path) -> dict[tuple[str, str], Any]:
    """Run the engine (bounded in time: a FIFO must not hang it); report rows by (item, art)."""
    report = tmp / "report.jsonl"
    async with asyncio.timeout(60):
        await pipeline.run(items, library, limits=FAST_LIMITS, report=report, workers=2,
                           db=tmp / "artpipe.db", cache_dir=tmp / "cache")
    rows = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
    return {(r["item"], r["art"]): r for r in rows}


def assert_bystanders_saved(rows: dict[tuple[str, str], Any], library: Path) -> None:
    for name in ITEMS[1:]:
        for art in ("poster", "fanart"):
            row = rows[(name, art)]
            assert row["status"] == "saved", row
            assert Path(row["path"]).is_file()
    assert poster_path(library, ITEMS[1]).is_file()


def assert_failed_naming(row: dict[str, Any], path: Path, *words: str) -> None:
    assert row["status"] == "failed", row
    error = row["error"] or ""
    assert str(path) in error, f"the error must name {path}: {error!r}"
    lowered = error.lower()
    assert any(w in lowered for w in words), f"expected one of {words} in {error!r}"


def no_temp_files(folder: Path) -> None:
    leftovers = [p for p in folder.rglob(f"*{TEMP_SUFFIX}")]
    assert not leftovers, f"temp files left beside the old file: {leftovers}"


# ------------------------------------------------------------------ mounts


@pytest.fixture
def mount() -> Iterator[Callable[..., Path]]:
    """``mount(where, size)`` puts a fresh tmpfs at ``where``; unmounted after the test."""
    mounted: list[Path] = []

    def do_mount(where: Path, size: str = "1m") -> Path:
        where.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "artpipe-test", str(where)],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs at {where} ({proc.stderr.strip() or 'mount failed'})"
                        "; this fault needs a filesystem of its own (run as root, as CI does)")
        mounted.append(where)
        return where

    yield do_mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def remount_read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True, check=True)


def fill(folder: Path) -> None:
    """Write zeros into ``folder`` until its filesystem reports ENOSPC."""
    block = b"\0" * 4096
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC
    probe = folder / "probe"
    with pytest.raises(OSError):
        probe.write_bytes(block)
    probe.unlink(missing_ok=True)


# ------------------------------------------------------------------- tests


async def test_full_disk_fails_the_slot_and_keeps_the_old_file(
    srv: ImageServer, tmp_path: Path, mount: Callable[..., Path]
) -> None:
    library = tmp_path / "lib"
    full = mount(library / "Movies" / ITEMS[0], "256k")
    await run(manifest(srv, "old"), library, tmp_path)
    target = poster_path(library, ITEMS[0])
    old = sha(target)
    fill(full)

    rows = await run(manifest(srv, "new"), library, tmp_path)

    assert_failed_naming(rows[(ITEMS[0], "poster")], target, "space", "enospc")
    assert sha(target) == old
    no_temp_files(full)
    assert_bystanders_saved(rows, library)
    # Once space is back, the next run saves the new poster.
    (full / "filler").unlink()
    rows = await run(manifest(srv, "new"), library, tmp_path)
    assert rows[(ITEMS[0], "poster")]["status"] == "saved"
    assert sha(target) != old


async def test_read_only_folder_fails_the_slot_and_keeps_the_old_file(
    srv: ImageServer, tmp_path: Path, mount: Callable[..., Path]
) -> None:
    library = tmp_path / "lib"
    folder = mount(library / "Movies" / ITEMS[0])
    await run(manifest(srv, "old"), library, tmp_path)
    target = poster_path(library, ITEMS[0])
    before = {p.name: sha(p) for p in folder.iterdir()}
    remount_read_only(folder)

    rows = await run(manifest(srv, "new"), library, tmp_path)

    assert_failed_naming(rows[(ITEMS[0], "poster")], target, "read-only", "erofs")
    assert rows[(ITEMS[0], "fanart")]["status"] == "failed"
    assert {p.name: sha(p) for p in folder.iterdir()} == before
    assert_bystanders_saved(rows, library)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
async def test_directory_or_fifo_where_the_file_goes_is_refused(
    srv: ImageServer, tmp_path: Path, kind: str
) -> None:
    library = tmp_path / "lib"
    target = poster_path(library, ITEMS[0])
    target.parent.mkdir(parents=True)
    if kind == "directory":
        target.mkdir()
        (target / "keep.txt").write_text("a user's file", encoding="utf-8")
    else:
        os.mkfifo(target)

    rows = await run(manifest(srv, "new"), library, tmp_path)  # would hang on a FIFO open

    assert_failed_naming(rows[(ITEMS[0], "poster")], target, kind, "named pipe", "not a file",
                         "regular file")
    if kind == "directory":
        assert (target / "keep.txt").read_text(encoding="utf-8") == "a user's file"
    else:
        assert stat.S_ISFIFO(os.lstat(target).st_mode)
    no_temp_files(target.parent)
    assert rows[(ITEMS[0], "fanart")]["status"] == "saved"  # the same item's other art
    assert_bystanders_saved(rows, library)


async def test_symlinked_folder_pointing_outside_the_library_is_refused(
    srv: ImageServer, tmp_path: Path
) -> None:
    library = tmp_path / "lib"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not yours", encoding="utf-8")
    (library / "Movies").mkdir(parents=True)
    (library / "Movies" / ITEMS[0]).symlink_to(outside, target_is_directory=True)

    rows = await run(manifest(srv, "new"), library, tmp_path)

    target = poster_path(library, ITEMS[0])
    assert_failed_naming(rows[(ITEMS[0], "poster")], target, "outside the library")
    assert rows[(ITEMS[0], "fanart")]["status"] == "failed"
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]
    assert (outside / "precious.txt").read_text(encoding="utf-8") == "not yours"
    assert_bystanders_saved(rows, library)


async def test_symlinked_file_pointing_outside_the_library_is_refused(
    srv: ImageServer, tmp_path: Path
) -> None:
    library = tmp_path / "lib"
    await run(manifest(srv, "old"), library_with_movies(library), tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.jpg"
    victim.write_bytes(b"a file outside the library")
    target = poster_path(library, ITEMS[0])
    target.unlink()
    target.symlink_to(victim)

    rows = await run(manifest(srv, "new"), library, tmp_path)

    assert_failed_naming(rows[(ITEMS[0], "poster")], target, "outside the library")
    assert victim.read_bytes() == b"a file outside the library"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.jpg"]
    assert target.is_symlink() and os.readlink(target) == str(victim)
    assert rows[(ITEMS[0], "fanart")]["status"] == "saved"
    assert_bystanders_saved(rows, library)


def library_with_movies(library: Path) -> Path:
    (library / "Movies").mkdir(parents=True, exist_ok=True)
    return library
