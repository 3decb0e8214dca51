"""Kodi's library layouts end to end: ``artpipe run`` writes the file Kodi reads.

Each case of ``LAYOUTS`` is one real layout (docs/kodi.md has the table and
the Kodi source behind each name): a manifest goes through the real CLI
against a loopback image server into a temp library, and the test compares
the files on disk with the names Kodi looks for — no more, no fewer — then
runs again and expects zero requests. The properties check the naming rules on
generated names: every target stays inside the library root, and no two slots
of one item land on the same file or on names Kodi would take for the same
art. The last tests pin slot-level validation: one bad URL fails one slot and
the item's other art is saved.

Teeth (checked by hand on a copy of the package, 2026-11-30): dropping the
disc rule in ``naming._file_base`` fails the DVD and Blu-ray cases; dropping
the stacked-title rule fails the stacked case; reverting extrathumbs to
``<stem>-thumbN`` fails the extrathumbs case; making ``parse_item`` raise for a
bad URL again fails ``test_one_bad_url_fails_one_slot_and_the_other_nine_save``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from artpipe.cli import main
from artpipe.errors import ManifestError, UnsafePathError
from artpipe.models import ArtType, ContentType, ExtrafanartStyle, Item, Layout
from artpipe.naming import ALLOWED_ART, path_problem, target_path
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from tests.support.server import ImageServer, ThreadedImageServer

JPEG_ART = ["poster", "fanart", "banner", "landscape", "keyart", "thumb"]


@dataclass(frozen=True)
class Case:
    """One layout: a manifest line (art URLs filled in), run options, the files Kodi reads."""

    name: str
    item: dict[str, Any]
    art: dict[str, Any]
    expected: list[str]
    options: list[str] = field(default_factory=list)
    failed: int = 0
    videos: list[str] = field(default_factory=list)  # other files already in the library


def jpegs(*names: str) -> dict[str, Any]:
    return {name: f"/{name}.jpg" for name in names}


LAYOUTS = [
    Case(
        "plain movie",
        {"type": "movie", "path": "Movies/Alien (1979)/Alien (1979).mkv"},
        jpegs("poster", "fanart"),
        [
            "Movies/Alien (1979)/Alien (1979)-poster.jpg",
            "Movies/Alien (1979)/Alien (1979)-fanart.jpg",
        ],
    ),
    Case(
        "DVD folder",
        {"type": "movie", "path": "Movies/Heat (1995)/VIDEO_TS/VIDEO_TS.IFO"},
        {**jpegs("poster", "fanart"), "extrafanart": ["/x1.jpg"], "extrathumb": ["/t1.jpg"]},
        [
            "Movies/Heat (1995)/poster.jpg",
            "Movies/Heat (1995)/fanart.jpg",
            "Movies/Heat (1995)/fanart1.jpg",
            "Movies/Heat (1995)/extrathumbs/thumb1.jpg",
        ],
    ),
    Case(
        "Blu-ray folder",
        {"type": "movie", "path": "Movies/Heat (1995)/BDMV/index.bdmv"},
        jpegs("poster", "landscape"),
        ["Movies/Heat (1995)/poster.jpg", "Movies/Heat (1995)/landscape.jpg"],
    ),
    Case(
        "stacked movie",
        {"type": "movie", "path": "Movies/Solaris (1972)/Solaris (1972)-cd1.avi"},
        {**jpegs("poster", "fanart"), "extrafanart": ["/x1.jpg", "/x2.jpg"]},
        [
            "Movies/Solaris (1972)/Solaris (1972)-poster.jpg",
            "Movies/Solaris (1972)/Solaris (1972)-fanart.jpg",
            "Movies/Solaris (1972)/Solaris (1972)-fanart1.jpg",
            "Movies/Solaris (1972)/Solaris (1972)-fanart2.jpg",
        ],
        videos=[
            "Movies/Solaris (1972)/Solaris (1972)-cd1.avi",
            "Movies/Solaris (1972)/Solaris (1972)-cd2.avi",
        ],
    ),
    Case(
        "stacked movie, part with a dot separator",
        {"type": "movie", "path": "Movies/Solaris/Solaris.Part.2.mkv"},
        jpegs("poster"),
        ["Movies/Solaris/Solaris-poster.jpg"],
        videos=["Movies/Solaris/Solaris.Part.1.mkv"],
    ),
    Case(
        "one part alone is no stack",
        {"type": "movie", "path": "Movies/Hallows/Deathly Hallows Part 1 (2010).mkv"},
        jpegs("poster"),
        ["Movies/Hallows/Deathly Hallows Part 1 (2010)-poster.jpg"],
        videos=["Movies/Hallows/Deathly Hallows Part 1 (2010).mkv"],
    ),
    Case(
        "extrathumbs",
        {"type": "movie", "path": "Movies/Alien (1979)/Alien (1979).mkv"},
        {"extrathumb": ["/t1.jpg", "/t2.jpg", "/t3.jpg"]},
        [
            "Movies/Alien (1979)/extrathumbs/thumb1.jpg",
            "Movies/Alien (1979)/extrathumbs/thumb2.jpg",
            "Movies/Alien (1979)/extrathumbs/thumb3.jpg",
        ],
    ),
    Case(
        "extrafanart, Kodi style (default)",
        {"type": "movie", "path": "Movies/Alien (1979)/Alien (1979).mkv"},
        {"extrafanart": ["/x1.jpg", "/x2.jpg"]},
        [
            "Movies/Alien (1979)/Alien (1979)-fanart1.jpg",
            "Movies/Alien (1979)/Alien (1979)-fanart2.jpg",
        ],
    ),
    Case(
        "extrafanart, folder style",
        {"type": "movie", "path": "Movies/Alien (1979)/Alien (1979).mkv"},
        {"extrafanart": ["/x1.jpg", "/x2.jpg"]},
        [
            "Movies/Alien (1979)/extrafanart/fanart1.jpg",
            "Movies/Alien (1979)/extrafanart/fanart2.jpg",
        ],
        ["--extrafanart-style", "folder"],
    ),
    Case(
        "show with extrafanart and extrathumbs",
        {"type": "tvshow", "path": "TV/Firefly"},
        {**jpegs("poster", "banner"), "extrafanart": ["/x1.jpg"], "extrathumb": ["/t1.jpg"]},
        [
            "TV/Firefly/poster.jpg",
            "TV/Firefly/banner.jpg",
            "TV/Firefly/fanart1.jpg",
            "TV/Firefly/extrathumbs/thumb1.jpg",
        ],
    ),
    Case(
        "season fanart",
        {"type": "season", "season": 2, "path": "TV/Firefly"},
        {**jpegs("poster", "fanart"), "extrafanart": ["/x1.jpg", "/x2.jpg"]},
        [
            "TV/Firefly/season02-poster.jpg",
            "TV/Firefly/season02-fanart.jpg",
            "TV/Firefly/season02-fanart1.jpg",
            "TV/Firefly/season02-fanart2.jpg",
        ],
    ),
    Case(
        "specials and all-seasons art",
        {"type": "season", "season": 0, "path": "TV/Firefly"},
        jpegs("poster"),
        ["TV/Firefly/season-specials-poster.jpg"],
    ),
    Case(
        "episode thumb and fanart",
        {"type": "episode", "path": "TV/Firefly/Season 1/Firefly S01E01.mkv"},
        jpegs("thumb", "fanart"),
        [
            "TV/Firefly/Season 1/Firefly S01E01-thumb.jpg",
            "TV/Firefly/Season 1/Firefly S01E01-fanart.jpg",
        ],
    ),
    Case(
        "movie set in the movie sets folder, Kodi-legal title",
        {"type": "movieset", "title": "Mission: Impossible Collection"},
        jpegs("poster", "fanart"),
        [
            "Movie Sets/Mission_ Impossible Collection/poster.jpg",
            "Movie Sets/Mission_ Impossible Collection/fanart.jpg",
        ],
        ["--movie-sets-folder", "Movie Sets"],
    ),
    Case(
        "season pointed at a season folder is refused",
        {"type": "season", "season": 1, "path": "TV/Firefly/Season 1"},
        jpegs("poster", "banner"),
        [],
        failed=2,
    ),
]


def serve(srv: ImageServer, art: dict[str, Any]) -> dict[str, Any]:
    """The case's art with every path turned into a URL on the loopback server."""
    out: dict[str, Any] = {}
    for key, value in art.items():
        if isinstance(value, list):
            out[key] = [srv.url(path) for path in value]
        else:
            out[key] = srv.url(value)
    return out


def artpipe(*args: str) -> Result:
    """The real ``artpipe`` command line, in this process (the server runs in a thread)."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def art_files(library: Path) -> list[str]:
    """Every image in the library (video files and artpipe's own state left out)."""
    return sorted(
        str(p.relative_to(library))
        for p in library.rglob("*")
        if p.is_file() and ".artpipe" not in p.parts and p.suffix in (".jpg", ".png")
    )


@pytest.mark.parametrize("case", LAYOUTS, ids=[c.name for c in LAYOUTS])
def test_every_layout_through_artpipe_run(tmp_path: Path, case: Case) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    for video in case.videos:
        (library / video).parent.mkdir(parents=True, exist_ok=True)
        (library / video).write_bytes(b"")
    manifest = tmp_path / "m.jsonl"
    report = tmp_path / "r.jsonl"
    with ThreadedImageServer(generate=True) as srv:
        line = {"id": "x1", "title": "X", **case.item, "art": serve(srv, case.art)}
        manifest.write_text(json.dumps(line) + "\n")
        run = [
            str(manifest),
            "--library",
            str(library),
            "--report",
            str(report),
            "--quiet",
            "--no-html",
        ]
        first = artpipe("run", *run, *case.options)
        assert first.exit_code == (1 if case.failed else 0), first.output
        assert art_files(library) == sorted(case.expected)
        rows = [json.loads(r) for r in report.read_text().splitlines()]
        assert sorted(r["path"] for r in rows if r["status"] == "saved") == sorted(
            str(library / p) for p in case.expected
        )
        failed = [r for r in rows if r["status"] == "failed"]
        assert len(failed) == case.failed
        for row in failed:
            assert "show folder" in row["error"] and "'TV/Firefly'" in row["error"]
        hits = srv.hits()
        assert hits == len(case.expected)

        again = artpipe("run", *run, *case.options)
        assert again.exit_code == first.exit_code
        assert srv.hits() == hits  # the second run makes no requests
        assert art_files(library) == sorted(case.expected)


# --- properties: inside the root, no two slots of one item on one name ------------------

_WORD = st.text(alphabet="abcXYZ09 ._-()'&", min_size=1, max_size=12)
_VOLUME = st.sampled_from(
    ["-cd1", " CD2", ".part1", " part 2", "_pt3", "-dvd1", ".disc.b", " disk-a", " Part.4"]
)
_EXT = st.sampled_from([".mkv", ".avi", ".mp4", ".iso"])


@st.composite
def file_paths(draw: st.DrawFn) -> tuple[str, str | None]:
    """A video path, and for a stack part the next part (so Kodi would stack them)."""
    folder = f"Movies/{draw(_WORD)}"
    kind = draw(st.sampled_from(["plain", "stacked", "dvd", "bluray"]))
    if kind == "dvd":
        disc = ["VIDEO_TS/VIDEO_TS.IFO", "VIDEO_TS/VTS_01_0.IFO", "VIDEO_TS.IFO"]
        return f"{folder}/{draw(st.sampled_from(disc))}", None
    if kind == "bluray":
        disc = ["BDMV/index.bdmv", "BDMV/MovieObject.bdmv"]
        return f"{folder}/{draw(st.sampled_from(disc))}", None
    stem, ext = draw(_WORD), draw(_EXT)
    if kind == "plain":
        return f"{folder}/{stem}{ext}", None
    volume = draw(_VOLUME)
    other = volume[:-1] + ("b" if volume[-1] in "abcd" else "7")
    return f"{folder}/{stem}{volume}{ext}", f"{folder}/{stem}{other}{ext}"


items = st.one_of(
    st.builds(lambda p: (Item("m", ContentType.MOVIE, p[0]), p[1]), file_paths()),
    st.builds(lambda p: (Item("e", ContentType.EPISODE, p[0]), p[1]), file_paths()),
    st.builds(
        lambda s, n: (Item("s", ContentType.SEASON, f"TV/{s}", season=n), None),
        _WORD,
        st.integers(-1, 120),
    ),
    st.builds(lambda s: (Item("t", ContentType.TVSHOW, f"TV/{s}"), None), _WORD),
    st.builds(lambda t: (Item("c", ContentType.MOVIESET, "", title=t), None), st.text(max_size=20)),
)
layouts = st.builds(
    Layout,
    extrafanart=st.sampled_from(list(ExtrafanartStyle)),
    movie_sets_folder=st.sampled_from(["Movie Sets", "Sets/Kodi"]),
)


@given(drawn=items, layout=layouts)
def test_layout_names_stay_inside_the_root_and_never_collide(
    tmp_path_factory: pytest.TempPathFactory, drawn: tuple[Item, str | None], layout: Layout
) -> None:
    item, sibling = drawn
    library = tmp_path_factory.mktemp("lib")
    root = os.path.realpath(library)
    if sibling is not None and path_problem(sibling) is None:
        # the next part on disk, so the stacked title is in play
        (library / sibling).parent.mkdir(parents=True, exist_ok=True)
        (library / sibling).write_bytes(b"")
    targets: dict[tuple[str, str], tuple[ArtType, int]] = {}
    for art in ALLOWED_ART[item.type]:
        for index in (1, 2, 11) if art.is_list else (0,):
            try:
                target = target_path(library, item, art, index, layout=layout)
            except (UnsafePathError, ManifestError) as exc:
                # only what the rules refuse: a season folder, a set title that
                # makes no folder name, a name that escapes or is malformed
                assert (
                    isinstance(exc, UnsafePathError)
                    or "season folder" in str(exc)
                    or (item.type is ContentType.MOVIESET)
                ), exc
                return
            assert os.path.realpath(target).startswith(root + os.sep), target
            # Kodi matches art by name without extension, ignoring case: two
            # slots that share that key in one folder would hide one another
            key = (str(target.parent).casefold(), target.stem.casefold())
            assert key not in targets, (targets[key], (art, index), target)
            targets[key] = (art, index)


# --- slot-level validation -----------------------------------------------------------------

TEN_SLOTS = ["poster", "fanart", "banner", "landscape", "keyart", "thumb", "clearlogo"]


@pytest.mark.parametrize(
    "bad",
    [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "ftp://h/p.jpg",
        "data:image/png;base64,AA",
        "",
        "http:///nohost.jpg",
    ],
)
def test_one_bad_url_fails_one_slot_and_the_other_nine_save(tmp_path: Path, bad: str) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    manifest = tmp_path / "m.jsonl"
    report = tmp_path / "r.jsonl"
    with ThreadedImageServer(generate=True) as srv:
        art: dict[str, Any] = {name: srv.url(f"/{name}.jpg") for name in JPEG_ART}
        art["extrafanart"] = [srv.url("/x1.jpg"), bad, srv.url("/x3.jpg")]
        art["extrathumb"] = [srv.url("/t1.jpg")]
        art["clearlogo"] = bad
        line = {"id": "tt1", "type": "movie", "title": "A", "path": "Movies/A/A.mkv", "art": art}
        manifest.write_text(json.dumps(line) + "\n")
        proc = artpipe(
            "run",
            str(manifest),
            "--library",
            str(library),
            "--report",
            str(report),
            "--quiet",
            "--no-html",
        )
    assert proc.exit_code == 1, proc.output
    rows = [json.loads(r) for r in report.read_text().splitlines()]
    saved = sorted((r["art"], r["index"]) for r in rows if r["status"] == "saved")
    failed = sorted((r["art"], r["index"]) for r in rows if r["status"] == "failed")
    assert saved == sorted(
        [(a, 0) for a in JPEG_ART] + [("extrafanart", 1), ("extrafanart", 3), ("extrathumb", 1)]
    )
    assert failed == [("clearlogo", 0), ("extrafanart", 2)]
    for row in rows:
        assert row["item"] == "tt1"
        if row["status"] == "failed":
            assert row["error"] and ("http" in row["error"] or "empty" in row["error"])
            assert not (library / "Movies/A/A-clearlogo.png").exists()
    assert len(art_files(library)) == 9


def test_unsupported_art_fails_its_slot_and_a_rejected_line_keeps_its_id(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    manifest = tmp_path / "m.jsonl"
    report = tmp_path / "r.jsonl"
    with ThreadedImageServer(generate=True) as srv:
        episode = {
            "id": "ep1",
            "type": "episode",
            "path": "TV/S/Season 1/S S01E01.mkv",
            "art": {
                "thumb": srv.url("/t.jpg"),
                "poster": srv.url("/p.jpg"),
                "cover": srv.url("/c.jpg"),
            },
        }
        unsafe = {
            "id": "tt9",
            "type": "movie",
            "path": "../outside.mkv",
            "art": {"poster": srv.url("/p.jpg")},
        }
        manifest.write_text(json.dumps(episode) + "\n" + json.dumps(unsafe) + "\n")
        proc = artpipe(
            "run",
            str(manifest),
            "--library",
            str(library),
            "--report",
            str(report),
            "--quiet",
            "--no-html",
        )
        assert srv.hits("/p.jpg") == 0 and srv.hits("/c.jpg") == 0
    assert proc.exit_code == 1
    rows = [json.loads(r) for r in report.read_text().splitlines()]
    by = {(r["item"], r["art"]): r for r in rows}
    assert by[("ep1", "thumb")]["status"] == "saved"
    assert by[("ep1", "poster")]["status"] == "failed"
    assert "cannot have 'poster'" in by[("ep1", "poster")]["error"]
    assert by[("ep1", "cover")]["status"] == "failed"
    rejected = [r for r in rows if r["item"] == "tt9"]
    assert len(rejected) == 1 and rejected[0]["art"] is None
    assert "line 2" in rejected[0]["error"] and "'..'" in rejected[0]["error"]


def test_a_failed_list_entry_keeps_its_existing_file(tmp_path: Path) -> None:
    """Entry 2 of 2 has a bad URL: its old file is kept, not removed as surplus."""
    from artpipe.manifest import parse_item
    from artpipe.models import ArtType
    from artpipe.plan import Recorded, Remove, plan_item

    from tests.test_plan import World

    world = World(tmp_path / "lib")
    old = world.library / "Movies/A/A-fanart2.jpg"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old")  # artpipe's own (recorded): only such a file is ever surplus
    world.records[("a", ArtType.EXTRAFANART, 2)] = Recorded("https://img.example/2.jpg")
    urls = ["https://img.example/1.jpg", "javascript:alert(1)"]
    line = {"id": "a", "type": "movie", "path": "Movies/A/A.mkv", "art": {"extrafanart": urls}}
    plan = plan_item(parse_item(line), world.library, world)
    assert [
        (p.slot.index, type(p.source)) for p in plan.slots if isinstance(p.source, Remove)
    ] == []
    shorter = {**line, "art": {"extrafanart": urls[:1]}}
    plan = plan_item(parse_item(shorter), world.library, world)
    assert [p.slot.index for p in plan.slots if isinstance(p.source, Remove)] == [2]


# --- leftover copies: Kodi would pick either ------------------------------------------------


def run_line(library: Path, tmp: Path, line: dict[str, Any], *options: str) -> list[dict[str, Any]]:
    manifest = tmp / "m.jsonl"
    report = tmp / "r.jsonl"
    manifest.write_text(json.dumps(line) + "\n")
    result = artpipe(
        "run",
        str(manifest),
        "--library",
        str(library),
        "--report",
        str(report),
        "--quiet",
        "--no-html",
        *options,
    )
    assert result.exit_code == 0, result.output
    return [json.loads(r) for r in report.read_text().splitlines()]


def test_a_copy_artpipe_did_not_write_is_kept_and_named_in_a_warning(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    folder = library / "Movies/A"
    folder.mkdir(parents=True)
    (folder / "A-poster.png").write_bytes(b"the user's own poster")
    (folder / "A-Fanart.JPEG").write_bytes(b"the user's own fanart")
    with ThreadedImageServer(generate=True) as srv:
        art = {
            "poster": srv.url("/p.jpg"),
            "fanart": srv.url("/f.jpg"),
            "banner": srv.url("/b.jpg"),
        }
        line = {"id": "a", "type": "movie", "path": "Movies/A/A.mkv", "art": art}
        for status in ("saved", "unchanged"):  # the warning stays until the copy is gone
            rows = {r["art"]: r for r in run_line(library, tmp_path, line)}
            assert {r["status"] for r in rows.values()} == {status}
            assert "A-poster.png" in rows["poster"]["warning"]
            assert "A-Fanart.JPEG" in rows["fanart"]["warning"]
            assert rows["banner"]["warning"] is None
    assert (folder / "A-poster.png").read_bytes() == b"the user's own poster"
    assert (folder / "A-Fanart.JPEG").read_bytes() == b"the user's own fanart"
    assert (folder / "A-poster.jpg").is_file()


def test_a_copy_artpipe_recorded_elsewhere_is_replaced_cleanly(tmp_path: Path) -> None:
    """The store says artpipe wrote this slot as A-poster.png: the new .jpg replaces it."""
    from artpipe.store import Store, default_db_path

    library = tmp_path / "lib"
    library.mkdir()
    with ThreadedImageServer(generate=True) as srv:
        line = {
            "id": "a",
            "type": "movie",
            "path": "Movies/A/A.mkv",
            "art": {"poster": srv.url("/p.jpg")},
        }
        run_line(library, tmp_path, line)
        jpg = library / "Movies/A/A-poster.jpg"
        png = jpg.with_suffix(".png")
        jpg.rename(png)  # as an older artpipe (or format) would have left it
        with Store(default_db_path(library)) as store, store.batch():
            (row,) = store.all_artwork()
            store.upsert_artwork(replace(row, path=str(png)))
        hits = srv.hits()
        (row,) = run_line(library, tmp_path, line)
        assert srv.hits() == hits  # the original came from the cache
    assert row["status"] == "saved" and row["warning"] is None
    assert jpg.is_file() and not png.exists()


def test_switching_the_extrafanart_style_moves_the_files(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    movie = library / "Movies/A"
    with ThreadedImageServer(generate=True) as srv:
        line = {
            "id": "a",
            "type": "movie",
            "path": "Movies/A/A.mkv",
            "art": {"extrafanart": [srv.url("/1.jpg"), srv.url("/2.jpg")]},
        }
        run_line(library, tmp_path, line)
        assert art_files(library) == ["Movies/A/A-fanart1.jpg", "Movies/A/A-fanart2.jpg"]
        hits = srv.hits()
        rows = run_line(library, tmp_path, line, "--extrafanart-style", "folder")
        assert srv.hits() == hits
        assert {r["status"] for r in rows} == {"saved"}
        assert art_files(library) == [
            "Movies/A/extrafanart/fanart1.jpg",
            "Movies/A/extrafanart/fanart2.jpg",
        ]
        # null removes the list wherever artpipe last put it
        rows = run_line(library, tmp_path, {**line, "art": {"extrafanart": None}})
        assert {r["status"] for r in rows} == {"removed"}
    assert art_files(library) == []
    assert movie.is_dir()


def test_the_demo_covers_a_disc_folder_a_stacked_movie_and_extrathumbs(tmp_path: Path) -> None:
    from artpipe.demo import demo_manifest, make_library
    from artpipe.manifest import parse_item

    library = tmp_path / "demo"
    objs = demo_manifest("http://demo.test/art")
    make_library(library, objs)
    names = set()
    for number, obj in enumerate(objs, start=1):
        item = parse_item(obj, number)
        assert item.problems == ()
        for slot in item.slots:
            names.add(str(target_path(library, item, slot.art, slot.index).relative_to(library)))
    assert "Movies/Heat (1995)/poster.jpg" in names  # VIDEO_TS/VIDEO_TS.IFO
    assert "Movies/Solaris (1972)/Solaris (1972)-poster.jpg" in names  # -cd1.avi
    assert "Movies/Alien (1979)/extrathumbs/thumb1.jpg" in names
    assert "TV Shows/Orbit Station/season01-fanart1.jpg" in names
    assert "TV Shows/Orbit Station/Season 1/Orbit Station S01E01-fanart.jpg" in names


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--movie-sets-folder", "../Sets"], "'..'"),
        (["--movie-sets-folder", "/abs/Sets"], "relative"),
        (["--extrafanart-style", "fan"], "fan"),
    ],
)
def test_a_bad_naming_option_is_a_usage_error_before_the_run(
    tmp_path: Path, options: list[str], fragment: str
) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    library = tmp_path / "lib"
    library.mkdir()
    result = artpipe("run", str(manifest), "--library", str(library), "--no-html", *options)
    assert result.exit_code == 2
    assert fragment in result.output
    assert list(library.iterdir()) == []  # nothing created in the library
