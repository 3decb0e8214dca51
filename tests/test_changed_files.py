"""A library file changed outside artpipe, through real runs (docs/changed-files.md).

The rule itself is proven on ``plan.resolve`` (tests/test_plan.py,
tests/test_plan_state.py); here the run engine and the CLI carry it out: the
store records each file's size and mtime, a later run notices an edited,
replaced or truncated file, restores it by default or keeps it with
``keep_changed`` / ``--keep-changed``, and says so in the report and the
counters. A file only touched costs one hash and then has its new mtime
recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from artpipe import pipeline
from artpipe.pipeline.runner import KEPT_CHANGED, REPLACED_CHANGED
from artpipe.store import Store, default_db_path

from tests.support.server import ImageServer
from tests.test_pipeline import FAST_LIMITS


def change_outside_artpipe(path: Path, data: bytes) -> None:
    """Another program rewrites ``path`` later than artpipe did.

    The mtime is moved on explicitly: two writes within one tick of the
    kernel's coarse clock can share an mtime, which no edit after a run does.
    """
    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def edited(data: bytes) -> bytes:
    """Same size, other bytes: only the hash can tell."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


async def run(items: Any, library: Path, report: Path, **options: Any) -> pipeline.RunReport:
    return await pipeline.run(items, library, limits=FAST_LIMITS, report=report, **options)


def rows(report: Path) -> dict[tuple[str, int], dict[str, Any]]:
    lines = report.read_text().splitlines()
    return {(r["art"], r["index"]): r for r in map(json.loads, lines)}


def library_item(srv: ImageServer) -> dict[str, Any]:
    return {"id": "m", "type": "movie", "path": "M/M.mkv",
            "art": {"poster": srv.url("/p.jpg"), "fanart": srv.url("/f.jpg"),
                    "extrafanart": [srv.url("/e1.jpg"), srv.url("/e2.jpg")]}}


async def test_each_saved_file_is_recorded_with_its_size_and_mtime(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        report = await run([library_item(srv)], library, tmp_path / "r.jsonl")
    assert report.exit_code == 0
    with Store(default_db_path(library)) as store:
        saved = store.all_artwork()
    assert len(saved) == 4
    for row in saved:
        st = Path(row.path).stat()
        assert (row.bytes, row.mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert all(r["note"] is None for r in rows(tmp_path / "r.jsonl").values())


@pytest.mark.parametrize("keep_changed", [False, True], ids=["restore", "keep"])
async def test_a_file_changed_outside_artpipe_is_restored_or_kept(
    tmp_path: Path, keep_changed: bool
) -> None:
    """Issue #18's case through the engine: store says "from URL U", disk holds other bytes."""
    library = tmp_path / "lib"
    library.mkdir()
    log = tmp_path / "r.jsonl"
    async with ImageServer() as srv:
        item = library_item(srv)
        await run([item], library, log)
        movie = library / "M"
        poster, fanart = movie / "M-poster.jpg", movie / "M-fanart.jpg"
        extra2 = movie / "M-fanart2.jpg"
        originals = {p: p.read_bytes() for p in (poster, fanart, extra2)}
        change_outside_artpipe(poster, edited(originals[poster]))  # same size
        change_outside_artpipe(fanart, originals[fanart][:100])  # truncated
        change_outside_artpipe(extra2, b"saved over by an image editor")
        changed = {p: p.read_bytes() for p in originals}
        item["art"]["extrafanart"] = [srv.url("/e1.jpg")]  # entry 2 leaves the manifest
        srv.reset_counters()

        report = await run([item], library, log, keep_changed=keep_changed)
        assert report.exit_code == 0
        assert srv.hits() == 0  # restored from the cache of originals
        counters = report.metrics.counters()
        by_slot = rows(log)
        if keep_changed:
            assert {p: p.read_bytes() for p in changed} == changed
            for key in [("poster", 0), ("fanart", 0), ("extrafanart", 2)]:
                assert (by_slot[key]["status"], by_slot[key]["note"]) == ("unchanged",
                                                                         KEPT_CHANGED)
            assert counters["images.changed_kept"] == 3
            assert counters.get("images.changed_replaced", 0) == 0
        else:
            assert poster.read_bytes() == originals[poster]
            assert fanart.read_bytes() == originals[fanart]
            assert not extra2.exists()  # removed as the manifest asks
            for key in [("poster", 0), ("fanart", 0)]:
                assert (by_slot[key]["status"], by_slot[key]["note"]) == ("saved",
                                                                         REPLACED_CHANGED)
            assert by_slot[("extrafanart", 2)]["status"] == "removed"
            assert counters["images.changed_replaced"] == 2
            assert counters.get("images.changed_kept", 0) == 0
        assert (by_slot[("extrafanart", 1)]["status"], by_slot[("extrafanart", 1)]["note"]) == (
            "unchanged", None)

        # the next run with the same setting has nothing to do, and says the same
        again = await run([item], library, log, keep_changed=keep_changed)
        assert srv.hits() == 0
        assert again.stats.slots["saved"] == again.stats.slots["removed"] == 0
        notes = [r["note"] for r in rows(log).values() if r["note"]]
        assert notes == ([KEPT_CHANGED] * 3 if keep_changed else [])

        # the option protects only while it is given
        if keep_changed:
            restored = await run([item], library, log)
            assert restored.metrics.counters()["images.changed_replaced"] == 2
            assert poster.read_bytes() == originals[poster] and not extra2.exists()


async def test_a_touched_file_is_hashed_once_and_its_new_mtime_recorded(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    log = tmp_path / "r.jsonl"
    async with ImageServer() as srv:
        item = library_item(srv)
        await run([item], library, log)
        poster = library / "M" / "M-poster.jpg"
        change_outside_artpipe(poster, poster.read_bytes())  # same bytes, new mtime
        srv.reset_counters()
        report = await run([item], library, log)
        assert srv.hits() == 0 and report.stats.slots["unchanged"] == 4
        assert rows(log)[("poster", 0)]["note"] is None
    with Store(default_db_path(library)) as store:
        row = store.artwork_for("m")[("poster", 0)]
    assert row.mtime_ns == poster.stat().st_mtime_ns


async def test_keep_changed_on_the_command_line(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    log = tmp_path / "r.jsonl"
    manifest = tmp_path / "m.jsonl"
    async with ImageServer() as srv:
        item = {"id": "m", "type": "movie", "path": "M/M.mkv",
                "art": {"poster": srv.url("/p.jpg")}}
        manifest.write_text(json.dumps(item) + "\n")

        async def artpipe(*flags: str) -> dict[str, Any]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "artpipe", "run", str(manifest), "--library", str(library),
                "--report", str(log), "--no-html", "--quiet", *flags)
            assert await asyncio.wait_for(proc.wait(), 120) == 0
            return rows(log)[("poster", 0)]

        await artpipe()
        poster = library / "M" / "M-poster.jpg"
        change_outside_artpipe(poster, b"edited by hand")
        kept = await artpipe("--keep-changed")
        assert (kept["status"], kept["note"]) == ("unchanged", KEPT_CHANGED)
        assert poster.read_bytes() == b"edited by hand"
        restored = await artpipe()
        assert (restored["status"], restored["note"]) == ("saved", REPLACED_CHANGED)
        assert poster.read_bytes() != b"edited by hand"
