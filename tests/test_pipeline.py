"""End-to-end tests of the run engine against a real loopback server.

Each test builds a manifest, runs ``pipeline.run`` into a temp library, and
checks what a user would check: the files under their Kodi names, what the
server saw (hits per path — the invariant "each URL once per run"), the
``http.requests_in_save`` guard, the store rows against the files on disk,
and what a second run does (nothing).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from artpipe import pipeline
from artpipe.fetch import FetchLimits
from artpipe.models import ArtType
from artpipe.store import Store, default_db_path
from PIL import Image

from tests.support.server import ImageServer, Status, make_image

FAST_LIMITS = FetchLimits(max_attempts=2, backoff_base=0.01, backoff_cap=0.05,
                          connect_timeout=2, read_timeout=2, total_timeout=5)

SINGLE_ARTS = ["poster", "fanart", "banner", "clearart", "clearlogo", "discart",
               "landscape", "keyart", "characterart", "thumb"]


def png_bytes(width: int, height: int, seed: int) -> bytes:
    img = Image.new("RGBA", (width, height), (seed * 37 % 256, 80, 160, 128))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def serve_library_art(srv: ImageServer, movies: int) -> list[dict[str, Any]]:
    """A manifest of ``movies`` movies × 12 slots; posters are shared by pairs."""
    items = []
    for n in range(movies):
        art: dict[str, Any] = {}
        for name in SINGLE_ARTS:
            if ArtType(name).output_format == "png":
                path = f"/m{n}/{name}.png"
                srv.add_image(path, png_bytes(40, 30, n), content_type="image/png",
                              etag=f'"{name}{n}"')
            else:
                path = f"/m{n // 2}/poster.jpg" if name == "poster" else f"/m{n}/{name}.jpg"
                srv.add_image(path, etag=f'"{path}"')
            art[name] = srv.url(path)
        art["extrafanart"] = [srv.url("/shared/extra1.jpg"), srv.url(f"/m{n}/extra2.jpg")]
        items.append({"id": f"tt{n:07d}", "type": "movie", "title": f"Movie {n}",
                      "year": 2000 + n % 20,
                      "path": f"Movies/Movie {n}/Movie {n}.mkv", "art": art})
    return items


def library_files(library: Path) -> dict[str, tuple[int, int, str]]:
    """Every artwork file: relative path → (inode, mtime_ns, sha256)."""
    out = {}
    for path in library.rglob("*"):
        if path.is_file() and ".artpipe" not in path.parts:
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(library))] = (st.st_ino, st.st_mtime_ns, digest)
    return out


async def run(items: Any, library: Path, **options: Any) -> pipeline.RunReport:
    options.setdefault("limits", FAST_LIMITS)
    return await pipeline.run(items, library, **options)


async def test_49_movies_each_url_once_and_rerun_makes_no_requests(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        items = serve_library_art(srv, 49)
        report = await run(items, library, report=tmp_path / "r.jsonl")
        assert report.exit_code == 0, report.stats.errors
        slots = 49 * (len(SINGLE_ARTS) + 2)
        assert report.stats.slots["saved"] == slots
        # each distinct URL exactly once, although posters and extra1 are shared
        distinct = {u for it in items for v in it["art"].values()
                    for u in (v if isinstance(v, list) else [v])}
        assert all(srv.hits(urlsplit(u).path) == 1 for u in distinct)
        assert srv.hits() == len(distinct)
        counters = report.metrics.counters()
        assert counters["http.requests"] == len(distinct)
        assert counters.get("http.requests_in_save", 0) == 0
        movie = library / "Movies" / "Movie 3"
        for name in SINGLE_ARTS:
            ext = ".png" if ArtType(name).output_format == "png" else ".jpg"
            assert (movie / f"Movie 3-{name}{ext}").is_file()
        assert (movie / "Movie 3-fanart1.jpg").is_file()
        assert (movie / "Movie 3-fanart2.jpg").is_file()
        before = library_files(library)
        assert len(before) == slots

        srv.reset_counters()
        again = await run(items, library)
        assert srv.hits() == 0
        assert again.metrics.counters().get("http.requests", 0) == 0
        assert again.stats.slots["unchanged"] == slots
        assert library_files(library) == before  # same inode, mtime, bytes


async def test_store_rows_match_files(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        await run(serve_library_art(srv, 3), library)
    with Store(default_db_path(library)) as store:
        rows = store.all_artwork()
        assert len(rows) == 3 * 12
        for row in rows:
            data = Path(row.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row.sha256
            assert len(data) == row.bytes
            assert row.status == "saved" and row.url
        assert {i.id for i in store.items()} == {"tt0000000", "tt0000001", "tt0000002"}


async def test_failed_fetch_keeps_the_old_file(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        srv.add_image("/good.jpg")
        item = {"id": "a", "type": "movie", "path": "A/A.mkv",
                "art": {"poster": srv.url("/good.jpg"), "fanart": srv.url("/good.jpg")}}
        assert (await run([item], library)).exit_code == 0
        poster = library / "A" / "A-poster.jpg"
        old = poster.read_bytes()

        srv.script("/gone.jpg", then=Status(404))
        srv.add_image("/html.jpg", b"<!DOCTYPE html><html>error</html>", content_type="image/jpeg")
        srv.add_image("/corrupt.jpg", make_image(64, 48)[:200])
        for bad in ("/gone.jpg", "/html.jpg", "/corrupt.jpg"):
            item["art"] = {"poster": srv.url(bad)}
            report = await run([item], library, report=tmp_path / "r.jsonl")
            assert report.exit_code == 1
            assert report.stats.slots["failed"] == 1
            assert poster.read_bytes() == old, bad
            row = (tmp_path / "r.jsonl").read_text().splitlines()[0]
            assert '"failed"' in row and bad in row
            assert not list(poster.parent.glob("*.artpipe-tmp"))
        # the store still knows the file on disk came from the good URL
        with Store(default_db_path(library)) as store:
            rec = store.artwork_for("a")[("poster", 0)]
            assert rec.url == srv.url("/good.jpg") and rec.status == "failed"
            assert rec.sha256 == hashlib.sha256(old).hexdigest()


async def test_changed_url_replaces_file_and_null_removes(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        item: dict[str, Any] = {
            "id": "s", "type": "tvshow", "path": "Show",
            "art": {"poster": srv.url("/p1.jpg"), "banner": srv.url("/b.jpg"),
                    "extrafanart": [srv.url(f"/e{i}.jpg") for i in range(1, 5)]},
        }
        await run([item], library)
        show = library / "Show"
        assert sorted(p.name for p in show.iterdir()) == [
            "banner.jpg", "fanart1.jpg", "fanart2.jpg", "fanart3.jpg", "fanart4.jpg",
            "poster.jpg"]
        first = (show / "poster.jpg").read_bytes()

        item["art"] = {"poster": srv.url("/p2.jpg"), "banner": None,
                       "extrafanart": [srv.url("/e1.jpg"), srv.url("/e2.jpg")]}
        srv.reset_counters()
        report = await run([item], library)
        assert report.exit_code == 0
        assert srv.hits() == 1  # only the new poster
        assert (show / "poster.jpg").read_bytes() != first
        assert sorted(p.name for p in show.iterdir()) == ["fanart1.jpg", "fanart2.jpg",
                                                          "poster.jpg"]
        assert report.stats.slots["removed"] == 3
        assert report.metrics.counters()["images.removed"] == 3  # once per slot
        with Store(default_db_path(library)) as store:
            keys = set(store.artwork_for("s"))
        assert keys == {("poster", 0), ("extrafanart", 1), ("extrafanart", 2)}


async def test_refresh_revalidates_with_conditional_gets(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        srv.add_image("/p.jpg", etag='"v1"')
        srv.add_image("/f.jpg", last_modified=1_700_000_000.0)
        item = {"id": "m", "type": "movie", "path": "M/M.mkv",
                "art": {"poster": srv.url("/p.jpg"), "fanart": srv.url("/f.jpg")}}
        await run([item], library)
        before = library_files(library)
        srv.reset_counters()
        report = await run([item], library, refresh=True)
        assert srv.hits() == 2
        assert report.metrics.counters()["http.not_modified"] == 2
        assert report.stats.slots["unchanged"] == 2
        assert library_files(library) == before

        srv.add_image("/p.jpg", make_image(80, 60, seed=9), etag='"v2"')
        report = await run([item], library, refresh=True)
        assert report.stats.slots["saved"] == 1
        assert library_files(library) != before


async def test_deleted_file_is_restored_from_cache_without_a_request(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        item = {"id": "m", "type": "movie", "path": "M/M.mkv",
                "art": {"poster": srv.url("/p.jpg")}}
        await run([item], library)
        poster = library / "M" / "M-poster.jpg"
        poster.unlink()
        srv.reset_counters()
        report = await run([item], library)
        assert poster.is_file()
        assert srv.hits() == 0
        assert report.stats.slots["saved"] == 1


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
async def test_cache_blob_lost_after_planning_is_fetched_in_the_fetch_phase(
    tmp_path: Path, damage: str
) -> None:
    """The seed's bug, pinned: the plan says Cache, but the blob is gone at load.

    The cache index still lists the URL, so planning picks the cache; reading
    the blob then fails. The original must be fetched again in the download
    phase (one request), never by the save step.
    """
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        item = {"id": "m", "type": "movie", "path": "M/M.mkv",
                "art": {"poster": srv.url("/p.jpg")}}
        await run([item], library)
        poster = library / "M" / "M-poster.jpg"
        first = poster.read_bytes()
        poster.unlink()
        [blob] = [p for p in (library / ".artpipe" / "cache" / "blobs").rglob("*")
                  if p.is_file()]
        if damage == "missing":
            blob.unlink()
        else:
            blob.write_bytes(b"\xff\xd8\xff" + b"\0" * 100)
        srv.reset_counters()
        report = await run([item], library)
        assert report.exit_code == 0, report.stats.errors
        assert poster.read_bytes() == first
        assert srv.hits("/p.jpg") == 1
        counters = report.metrics.counters()
        assert counters["http.requests"] == 1
        assert counters["http.requests_in_save"] == 0


async def test_a_failed_download_is_requested_once_and_never_in_save(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        srv.script("/gone.jpg", then=Status(404))
        item = {"id": "m", "type": "movie", "path": "M/M.mkv",
                "art": {"poster": srv.url("/gone.jpg"), "fanart": srv.url("/f.jpg")}}
        report = await run([item], library)
        assert report.stats.slots["failed"] == 1 and report.stats.slots["saved"] == 1
        assert srv.hits("/gone.jpg") == 1
        counters = report.metrics.counters()
        assert counters["http.requests"] == 2
        assert counters["http.requests_in_save"] == 0


async def test_bad_manifest_lines_are_reported_and_the_rest_runs(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        manifest = tmp_path / "m.jsonl"
        url = srv.url("/a.jpg")
        good = f'{{"id": "a", "type": "movie", "path": "A/A.mkv", "art": {{"poster": "{url}"}}}}'
        manifest.write_text("\n".join([good, "{not json", '{"id": "b", "type": "film"}']) + "\n")
        report = await run(manifest, library, report=tmp_path / "r.jsonl")
        assert report.stats.bad_lines == 2
        assert report.stats.slots["saved"] == 1
        assert report.exit_code == 1
        rows = (tmp_path / "r.jsonl").read_text()
        assert "line 2" in rows and "line 3" in rows


async def test_unsafe_path_fails_its_slots_and_writes_nothing_outside(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (library / "Escape").symlink_to(outside)
    async with ImageServer() as srv:
        items = [
            {"id": "evil", "type": "movie", "path": "Escape/E.mkv",
             "art": {"poster": srv.url("/p.jpg")}},
            {"id": "ok", "type": "movie", "path": "OK/OK.mkv",
             "art": {"poster": srv.url("/q.jpg")}},
        ]
        report = await run(items, library)
    assert list(outside.iterdir()) == []
    assert report.stats.slots["failed"] == 1
    assert (library / "OK" / "OK-poster.jpg").is_file()


async def test_interrupted_run_is_finished_by_a_rerun(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer(latency=0.02) as srv:
        items = serve_library_art(srv, 12)
        task = asyncio.ensure_future(run(items, library, item_workers=2, batch_size=1))
        while not list(library.rglob("*-poster.jpg")):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(library_files(library)) < 12 * 12
        report = await run(items, library)
        assert report.exit_code == 0
        assert len(library_files(library)) == 12 * 12
        assert not [p for p in library.rglob("*") if p.name.endswith(".artpipe-tmp")]


async def test_metrics_and_trace_files(tmp_path: Path) -> None:
    import json

    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        await run(serve_library_art(srv, 2), library, metrics=tmp_path / "m.json",
                  trace=tmp_path / "t.json")
    metrics = json.loads((tmp_path / "m.json").read_text())
    for name in ("item.save_all", "item.download", "item.save_to_disk", "fetch.web", "render",
                 "db.save_item", f"host.127.0.0.1:{srv.port}.fetch"):
        timer = metrics["timers"][name]
        assert set(timer) == {"count", "total_ms", "avg_ms", "min_ms", "max_ms", "p50_ms",
                              "p95_ms"}
        assert timer["count"] >= 1
    for name in ("http.requests", "http.bytes", "images.saved"):
        assert metrics["counters"][name] > 0
    trace = json.loads((tmp_path / "t.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {"render", "item.save_all"} <= {e["name"] for e in spans}
    assert len({e["tid"] for e in spans}) >= 2  # one track per worker


async def test_process_executor_gives_the_same_library(tmp_path: Path) -> None:
    async with ImageServer() as srv:
        items = serve_library_art(srv, 2)
        libs = []
        for executor in ("thread", "process"):
            library = tmp_path / executor
            library.mkdir()
            report = await run(items, library, executor=executor, workers=2)
            assert report.exit_code == 0
            libs.append({k: v[2] for k, v in library_files(library).items()})
    assert libs[0] == libs[1]


def test_missing_library_is_an_artpipe_error(tmp_path: Path) -> None:
    from artpipe.errors import ArtpipeError

    with pytest.raises(ArtpipeError, match="does not exist"):
        asyncio.run(pipeline.run([], tmp_path / "nope"))


def test_unknown_executor_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown executor"):
        asyncio.run(pipeline.run([], tmp_path, executor="gpu"))


async def test_a_request_during_save_is_counted(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard has teeth: a save step that fetches (the seed's bug) shows up."""
    library = tmp_path / "lib"
    library.mkdir()
    original_save = pipeline.ItemRunner._save

    async def save_that_refetches(self: pipeline.ItemRunner, item: Any, loaded: Any,
                                  facts: Any) -> Any:
        for entry in loaded:  # what the media manager's LoadAndCache did inside SaveToDisk
            if entry.planned.slot.url:
                # one URL per slot and item: coalescing must not hide a request here
                await self.fetcher.fetch(f"{entry.planned.slot.url}?again-{item.id}")
        return await original_save(self, item, loaded, facts)

    monkeypatch.setattr(pipeline.ItemRunner, "_save", save_that_refetches)
    async with ImageServer() as srv:
        items = serve_library_art(srv, 2)
        report = await run(items, library)
    assert report.metrics.counters()["http.requests_in_save"] == 2 * 12


async def test_undecodable_bytes_are_not_served_from_the_cache_again(tmp_path: Path) -> None:
    """A truncated response fails its slot once; the next run downloads afresh."""
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        good = make_image(64, 48, seed=3)
        srv.add_image("/p.jpg", good[:300])  # passes the magic-byte sniff, cannot decode
        item = {"id": "m", "type": "movie", "path": "M/M.mkv",
                "art": {"poster": srv.url("/p.jpg")}}
        assert (await run([item], library)).exit_code == 1
        srv.add_image("/p.jpg", good)  # the CDN recovered
        srv.reset_counters()
        report = await run([item], library)
        assert report.exit_code == 0
        assert srv.hits("/p.jpg") == 1
        assert (library / "M" / "M-poster.jpg").is_file()


async def test_304_to_an_unconditional_request_is_a_failed_slot(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        srv.script("/p.jpg", then=Status(304))
        item = {"id": "m", "type": "movie", "path": "M/M.mkv",
                "art": {"poster": srv.url("/p.jpg")}}
        report = await run([item], library, report=tmp_path / "r.jsonl")
    assert report.exit_code == 1
    assert "304" in (tmp_path / "r.jsonl").read_text()


async def test_missing_manifest_raises_before_touching_the_library(tmp_path: Path) -> None:
    from artpipe.errors import ManifestError

    with pytest.raises(ManifestError, match=r"nope\.jsonl"):
        await run(tmp_path / "nope.jsonl", tmp_path)
    assert not (tmp_path / ".artpipe").exists()


async def test_null_for_absent_art_is_removed_and_every_counter_is_reported(
    tmp_path: Path,
) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    item = {"id": "m", "type": "movie", "path": "M/M.mkv", "art": {"banner": None}}
    report = await run([item], library)
    assert report.stats.slots["removed"] == 1 and report.exit_code == 0
    counters = report.metrics.counters()
    for name in ("images.saved", "images.unchanged", "images.failed", "images.removed",
                 "images.skipped", "images.passthrough", "http.requests",
                 "http.requests_in_save"):
        assert name in counters, name


async def test_refresh_revalidates_a_shared_url_once(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        srv.add_image("/shared.jpg", etag='"v1"')
        items = [{"id": f"m{n}", "type": "movie", "path": f"M{n}/M{n}.mkv",
                  "art": {"poster": srv.url("/shared.jpg")}} for n in range(5)]
        await run(items, library)
        srv.reset_counters()
        report = await run(items, library, refresh=True, item_workers=1)
        assert srv.hits("/shared.jpg") == 1
        assert report.stats.slots["unchanged"] == 5


def test_run_keywords_are_exactly_the_run_options() -> None:
    """``artpipe.run``'s typed keywords mirror ``RunOptions`` (all but the library)."""
    fields = {f.name for f in dataclasses.fields(pipeline.RunOptions)} - {"library"}
    assert set(pipeline.RunOptionsArgs.__annotations__) == fields


async def test_each_distinct_output_is_rendered_once_and_copied_to_every_slot(
        tmp_path: Path) -> None:
    """One URL as fanart, extrafanart and landscape of 4 movies: the same output (size
    limit, format) 12 times, rendered once; every file holds exactly that render."""
    from artpipe.image import render

    library = tmp_path / "lib"
    library.mkdir()
    big = make_image(2400, 1350, seed=7)  # over fanart's 1920x1080: a real render
    async with ImageServer() as srv:
        srv.add_image("/shared.jpg", big)
        url = srv.url("/shared.jpg")
        items = [{"id": f"m{n}", "type": "movie", "path": f"M{n}/M{n}.mkv",
                  "art": {"fanart": url, "landscape": url, "extrafanart": [url]}}
                 for n in range(4)]
        report = await run(items, library, report=tmp_path / "r.jsonl")
    assert report.exit_code == 0, report.stats.errors
    assert report.stats.slots["saved"] == 12
    counters = report.metrics.counters()
    assert counters["images.render_copied"] == 11
    assert counters.get("images.passthrough", 0) == 0
    expected = render(big, max_size=ArtType.FANART.default_max_size, format="jpeg")
    digest = hashlib.sha256(expected).hexdigest()
    with Store(default_db_path(library)) as store:
        rows = store.all_artwork()
    assert len(rows) == 12
    for row in rows:
        assert Path(row.path).read_bytes() == expected
        assert row.sha256 == digest
        assert row.mtime_ns == Path(row.path).stat().st_mtime_ns


def test_a_copy_whose_source_file_changed_is_rendered_afresh(tmp_path: Path) -> None:
    from artpipe.save import Rendered, SaveJob, save_one

    data = make_image(300, 200, seed=3)
    first = save_one(SaveJob(data=data, target=str(tmp_path / "a.jpg"), format="jpeg",
                             max_size=(100, 100), root=str(tmp_path)))
    assert first.saved is not None and first.mtime_ns is not None
    source = Rendered(first.saved.path, first.saved.sha256, "jpeg", False, 100, 67)
    (tmp_path / "a.jpg").write_bytes(make_image(50, 50, seed=9))  # changed behind our back
    copy = save_one(SaveJob(data=data, target=str(tmp_path / "b.jpg"), format="jpeg",
                            max_size=(100, 100), root=str(tmp_path), copy_of=source))
    assert copy.error is None and copy.saved is not None
    assert copy.saved.sha256 == first.saved.sha256  # rendered from the original again
    assert not copy.saved.passthrough


def test_a_copy_is_the_render_written_again_and_stays_in_the_root(tmp_path: Path) -> None:
    from artpipe.errors import SaveError
    from artpipe.save import Rendered, SaveJob, save_one

    data = make_image(300, 200, seed=3)
    first = save_one(SaveJob(data=data, target=str(tmp_path / "a.jpg"), format="jpeg",
                             max_size=(100, 100), root=str(tmp_path)))
    assert first.saved is not None
    source = Rendered(first.saved.path, first.saved.sha256, "jpeg", False,
                      first.saved.width, first.saved.height)
    copy = save_one(SaveJob(data=data, target=str(tmp_path / "Sub" / "b.jpg"), format="jpeg",
                            max_size=(100, 100), root=str(tmp_path), copy_of=source))
    assert copy.error is None and copy.saved is not None
    assert copy.saved == dataclasses.replace(first.saved, path=str(tmp_path / "Sub" / "b.jpg"))
    assert (tmp_path / "Sub" / "b.jpg").read_bytes() == (tmp_path / "a.jpg").read_bytes()
    assert copy.mtime_ns == (tmp_path / "Sub" / "b.jpg").stat().st_mtime_ns
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "Link").symlink_to(outside)  # a folder swapped for a link out of the library
    refused = save_one(SaveJob(data=data, target=str(tmp_path / "Link" / "c.jpg"),
                               format="jpeg", max_size=(100, 100), root=str(tmp_path),
                               copy_of=source))
    assert isinstance(refused.error, SaveError) and refused.saved is None
    assert list(outside.iterdir()) == []


async def test_a_cache_index_that_cannot_commit_fails_no_slot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from artpipe.cache import Cache

    def broken(self: Cache) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Cache, "flush", broken)
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        report = await run(serve_library_art(srv, 2), library)
    assert report.exit_code == 0, report.stats.errors
    assert report.stats.slots["saved"] == 2 * 12
    assert report.metrics.counters()["cache.errors"] >= 1  # counted, never a failed slot


async def test_no_write_into_a_folder_starts_before_its_sweep_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sweep removes temp files it can lock; this run's own staged files must never be
    # in a folder while its sweep still lists it, so every slot waits for that one sweep.
    import threading
    import time

    from artpipe import save
    from artpipe.pipeline import runner

    events: list[tuple[float, str, str]] = []
    lock = threading.Lock()

    def slow_sweep(directory: str) -> int:
        time.sleep(0.3)  # a slow NAS listing a big folder
        removed = save.sweep_temp_files(directory)
        with lock:
            events.append((time.monotonic(), "swept", directory))
        return removed

    def logged_save(job: save.SaveJob) -> save.SaveOutcome:
        with lock:
            events.append((time.monotonic(), "write", str(Path(job.target).parent)))
        return save.save_one(job)

    monkeypatch.setattr(runner, "sweep_temp_files", slow_sweep)
    monkeypatch.setattr(runner, "save_one", logged_save)
    async with ImageServer() as srv:
        items = [{"id": "tt1", "type": "movie", "path": "Movies/A/A.mkv",
                  "art": {name: srv.url(f"/{name}.jpg") for name in ("poster", "fanart",
                                                                      "landscape")}}]
        leftover = tmp_path / "Movies" / "A" / ".A-poster.jpg.dead.artpipe-tmp"
        leftover.parent.mkdir(parents=True)
        leftover.write_bytes(b"half an image from a killed run")
        report = await run(items, tmp_path)
    assert report.exit_code == 0
    assert not leftover.exists()
    swept = {d: t for t, what, d in events if what == "swept"}
    writes = [(t, d) for t, what, d in events if what == "write"]
    assert len(writes) == 3
    assert all(t > swept[d] for t, d in writes), events


async def test_staged_files_waiting_for_their_commit_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each staged file holds two descriptors until its commit; a slow disk must not let
    # thousands pile up (too many open files), so at most _STAGED wait at once.
    import threading
    import time

    from artpipe import _core, save
    from artpipe.pipeline import runner

    monkeypatch.setattr(runner, "_STAGED", 3)
    commit_writes = _core.commit_writes

    def slow_disk(writes: list[Any]) -> list[Any]:
        time.sleep(0.05)
        return commit_writes(writes)

    monkeypatch.setattr(_core, "commit_writes", slow_disk)
    most, lock = [0], threading.Lock()
    stage_image = save.stage_image

    def counted(*args: Any, **kwargs: Any) -> Any:
        out = stage_image(*args, **kwargs)
        with lock:
            most[0] = max(most[0], len(list(tmp_path.rglob("*.artpipe-tmp"))))
        return out

    monkeypatch.setattr(save, "stage_image", counted)
    async with ImageServer() as srv:
        items = [{"id": f"tt{n}", "type": "movie", "path": f"Movies/M{n}/M{n}.mkv",
                  "art": {"extrafanart": [srv.url(f"/m{n}/x{i}.jpg") for i in range(6)]}}
                 for n in range(4)]
        report = await run(items, tmp_path)
    assert report.exit_code == 0 and report.summary()["saved"] == 24
    assert 0 < most[0] <= 3, most[0]


async def test_a_file_whose_commit_fails_is_recorded_failed_and_never_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store records a file only once it is durable: a render whose commit fails (the
    # disk refused the flush) is a failed slot, its target untouched, no temp file left.
    from artpipe import _core
    from artpipe.errors import SaveError

    def disk_refuses(writes: list[Any]) -> list[Any]:
        return [SaveError(5, "cannot flush the temporary file to disk: I/O error", "x")
                for _ in writes]

    monkeypatch.setattr(_core, "commit_writes", disk_refuses)
    async with ImageServer() as srv:
        items = [{"id": "tt1", "type": "movie", "path": "Movies/A/A.mkv",
                  "art": {"poster": srv.url("/p.jpg"), "fanart": srv.url("/f.jpg")}}]
        report = await run(items, tmp_path)
    assert report.exit_code == 1 and report.summary()["failed"] == 2
    with Store(default_db_path(tmp_path)) as store:
        rows = store.all_artwork()
    assert {r.status for r in rows} == {"failed"}
    assert all("I/O error" in (r.error or "") for r in rows)
    folder = tmp_path / "Movies" / "A"
    assert not folder.exists() or not any(folder.iterdir())


def test_a_folder_is_swept_once_and_every_caller_waits_for_that_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Planning sweeps from the I/O pool's threads: two items sharing a folder (a TV show)
    # must not sweep it twice, and neither may write before the one sweep is over.
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from artpipe.pipeline import runner

    sweeps_run: list[tuple[float, float]] = []

    def slow_sweep(directory: str) -> int:
        start = time.monotonic()
        time.sleep(0.2)
        sweeps_run.append((start, time.monotonic()))
        return 1

    monkeypatch.setattr(runner, "sweep_temp_files", slow_sweep)
    sweeps = runner.FolderSweeps()
    folder = str(tmp_path / "Show")
    assert not sweeps.swept(folder)
    barrier = threading.Barrier(4)

    def caller(_: int) -> tuple[int, float]:
        barrier.wait()
        removed = sweeps.sweep(folder)
        return removed, time.monotonic()

    with ThreadPoolExecutor(4) as pool:
        returned = list(pool.map(caller, range(4)))
    assert len(sweeps_run) == 1
    assert sum(removed for removed, _ in returned) == 1  # counted once
    assert all(t >= sweeps_run[0][1] for _, t in returned)
    assert sweeps.swept(folder)
    assert sweeps.sweep(folder) == 0 and len(sweeps_run) == 1


def test_a_folder_still_written_in_is_never_forgotten_so_never_swept_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slot may download for minutes after its folder was swept; forgetting the folder
    # meanwhile would let a second sweep meet a sibling's fresh temp file.
    from artpipe.pipeline import runner

    swept: list[str] = []
    monkeypatch.setattr(runner, "sweep_temp_files", lambda d: swept.append(d) or 0)
    sweeps = runner.FolderSweeps(remembered=2)
    sweeps.sweep("busy")  # in use until released
    for n in range(5):
        sweeps.sweep(f"done{n}")
        sweeps.release(f"done{n}")
    assert sweeps.swept("busy")
    sweeps.sweep("busy")
    assert swept.count("busy") == 1
    sweeps.release("busy")
    sweeps.release("busy")
    for n in range(5, 8):
        sweeps.sweep(f"done{n}")
        sweeps.release(f"done{n}")
    assert not sweeps.swept("busy")  # idle now: forgotten like any other
    sweeps.sweep("busy")
    assert swept.count("busy") == 2


async def test_pending_cache_puts_of_one_url_are_counted_once(tmp_path: Path) -> None:
    # The bytes waiting for the cache writer bound a run's memory; a URL put twice (another
    # item's validators under --refresh) must not leave its first size counted for ever.
    from concurrent.futures import ThreadPoolExecutor

    from artpipe.cache import Cache
    from artpipe.fetch import FetchLimits, FetchResult
    from artpipe.metrics import Metrics
    from artpipe.pipeline.options import ItemSettings
    from artpipe.pipeline.runner import ItemRunner

    executor = ThreadPoolExecutor(1)
    with Cache(tmp_path / "cache") as cache:
        async with ItemRunner.open(FetchLimits(), library=tmp_path, cache=cache,
                                   executor=executor, metrics=Metrics(), rows_for=lambda _: {},
                                   settings=ItemSettings()) as runner:
            for etag in ('"1"', '"2"', '"3"'):
                await runner._keep(FetchResult("http://h/p.jpg", b"x" * 1000, 200, etag, None,
                                               False, 1, "http://h/p.jpg"))
            assert runner._putting_bytes == 1000
            await runner._put_done("http://h/p.jpg")
            runner._prune_puts()
            assert runner._putting_bytes == 0 and not runner._putting
        assert cache.get("http://h/p.jpg").etag == '"3"'  # the last put wins
    executor.shutdown()


def test_items_a_slow_producer_writes_one_by_one_start_one_by_one() -> None:
    # The driver reads the manifest in chunks (a few store queries per chunk); a manifest
    # streamed through a pipe by a slow scraper must not wait for 128 lines to start.
    import time

    from artpipe.pipeline.driver import _arriving

    def slow() -> Any:
        for n in range(4):
            if n:
                time.sleep(0.12)
            yield n

    assert [len(c) for c in _arriving(slow(), 128, 0.05)] == [2, 1, 1]
    assert [len(c) for c in _arriving(iter(range(300)), 128, 0.05)] == [128, 128, 44]
    assert list(_arriving(iter([]), 128, 0.05)) == []
