"""naming.py: the Kodi file for every content/art type, and invariant 8 (no escape).

Invariant 7's planning side lives here too: the extension, output format and
default size box of every art type (the box the pipeline hands to render).

Teeth (checked by hand on a copy of the package, 2026-11-25): resolving with
``os.path.abspath`` instead of ``os.path.realpath`` in ``naming._checked`` fails
``test_symlink_escapes_are_refused``, ``test_symlinked_library_root_is_resolved_first``
and the hostile-path property; dropping the ``..`` check in ``path_problem``
fails ``test_lexical_escapes_are_refused`` (the realpath check still keeps the
property green: two layers, each tested on its own).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from artpipe.errors import ManifestError, UnsafePathError
from artpipe.models import ArtType, ContentType, ExtrafanartStyle, Item, Layout
from artpipe.naming import (
    ALLOWED_ART,
    item_dir,
    kodi_legal_filename,
    leftover_copies,
    list_indexes_on_disk,
    target_path,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LIB = Path("/srv/media")


def item(ctype: ContentType, path: str, season: int | None = None) -> Item:
    return Item(id="x", type=ctype, path=path, season=season)


MOVIE = item(ContentType.MOVIE, "Movies/Alien (1979)/Alien (1979).mkv")
SHOW = item(ContentType.TVSHOW, "TV/Firefly")
MOVIESET = item(ContentType.MOVIESET, "Sets/Alien Collection")
EPISODE = item(ContentType.EPISODE, "TV/Firefly/Season 1/Firefly S01E01.mkv")


@pytest.mark.parametrize(
    ("it", "art", "index", "expected"),
    [
        (MOVIE, ArtType.POSTER, 0, "Movies/Alien (1979)/Alien (1979)-poster.jpg"),
        (MOVIE, ArtType.FANART, 0, "Movies/Alien (1979)/Alien (1979)-fanart.jpg"),
        (MOVIE, ArtType.CLEARLOGO, 0, "Movies/Alien (1979)/Alien (1979)-clearlogo.png"),
        (MOVIE, ArtType.DISCART, 0, "Movies/Alien (1979)/Alien (1979)-discart.png"),
        (MOVIE, ArtType.THUMB, 0, "Movies/Alien (1979)/Alien (1979)-thumb.jpg"),
        (MOVIE, ArtType.EXTRAFANART, 1, "Movies/Alien (1979)/Alien (1979)-fanart1.jpg"),
        (MOVIE, ArtType.EXTRAFANART, 12, "Movies/Alien (1979)/Alien (1979)-fanart12.jpg"),
        (MOVIE, ArtType.EXTRATHUMB, 3, "Movies/Alien (1979)/extrathumbs/thumb3.jpg"),
        (SHOW, ArtType.POSTER, 0, "TV/Firefly/poster.jpg"),
        (SHOW, ArtType.CHARACTERART, 0, "TV/Firefly/characterart.png"),
        (SHOW, ArtType.EXTRAFANART, 2, "TV/Firefly/fanart2.jpg"),
        (SHOW, ArtType.EXTRATHUMB, 1, "TV/Firefly/extrathumbs/thumb1.jpg"),
        (MOVIESET, ArtType.BANNER, 0, "Sets/Alien Collection/banner.jpg"),
        (MOVIESET, ArtType.EXTRAFANART, 1, "Sets/Alien Collection/fanart1.jpg"),
        (
            item(ContentType.SEASON, "TV/Firefly", 1),
            ArtType.POSTER,
            0,
            "TV/Firefly/season01-poster.jpg",
        ),
        (
            item(ContentType.SEASON, "TV/Firefly", 9),
            ArtType.BANNER,
            0,
            "TV/Firefly/season09-banner.jpg",
        ),
        (
            item(ContentType.SEASON, "TV/Firefly", 10),
            ArtType.FANART,
            0,
            "TV/Firefly/season10-fanart.jpg",
        ),
        (
            item(ContentType.SEASON, "TV/Show", 123),
            ArtType.POSTER,
            0,
            "TV/Show/season123-poster.jpg",
        ),
        (
            item(ContentType.SEASON, "TV/Firefly", 0),
            ArtType.POSTER,
            0,
            "TV/Firefly/season-specials-poster.jpg",
        ),
        (
            item(ContentType.SEASON, "TV/Firefly", -1),
            ArtType.CLEARART,
            0,
            "TV/Firefly/season-all-clearart.png",
        ),
        (EPISODE, ArtType.THUMB, 0, "TV/Firefly/Season 1/Firefly S01E01-thumb.jpg"),
        (EPISODE, ArtType.FANART, 0, "TV/Firefly/Season 1/Firefly S01E01-fanart.jpg"),
        (
            item(ContentType.SEASON, "TV/Firefly", 2),
            ArtType.EXTRAFANART,
            3,
            "TV/Firefly/season02-fanart3.jpg",
        ),
        (
            item(ContentType.SEASON, "TV/Firefly", 0),
            ArtType.EXTRAFANART,
            1,
            "TV/Firefly/season-specials-fanart1.jpg",
        ),
        (item(ContentType.MOVIE, "Alien.mkv"), ArtType.POSTER, 0, "Alien-poster.jpg"),
        (item(ContentType.TVSHOW, "."), ArtType.POSTER, 0, "poster.jpg"),
    ],
)
def test_kodi_file_names(it: Item, art: ArtType, index: int, expected: str) -> None:
    assert target_path(LIB, it, art, index) == LIB / expected


def test_item_dir_is_the_video_folder_or_the_item_folder() -> None:
    assert item_dir(LIB, MOVIE) == LIB / "Movies/Alien (1979)"
    assert item_dir(LIB, EPISODE) == LIB / "TV/Firefly/Season 1"
    assert item_dir(LIB, SHOW) == LIB / "TV/Firefly"
    assert item_dir(LIB, item(ContentType.MOVIE, "Alien.mkv")) == LIB


def test_relative_library_gives_absolute_paths() -> None:
    assert target_path(Path("lib"), SHOW, ArtType.POSTER).is_absolute()


@pytest.mark.parametrize(
    ("it", "art"),
    [
        (EPISODE, ArtType.POSTER),
        (EPISODE, ArtType.BANNER),
        (EPISODE, ArtType.EXTRAFANART),
        (EPISODE, ArtType.EXTRATHUMB),
        (item(ContentType.SEASON, "TV/S", 1), ArtType.EXTRATHUMB),
    ],
)
def test_art_a_content_type_cannot_have_is_a_manifest_error(it: Item, art: ArtType) -> None:
    assert art not in ALLOWED_ART[it.type]
    with pytest.raises(ManifestError, match="cannot have"):
        target_path(LIB, it, art, 1 if art.is_list else 0)


def test_season_without_number_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="season"):
        target_path(LIB, item(ContentType.SEASON, "TV/S"), ArtType.POSTER)


def test_index_must_match_the_art_kind() -> None:
    with pytest.raises(ValueError, match="numbered from 1"):
        target_path(LIB, MOVIE, ArtType.EXTRAFANART, 0)
    with pytest.raises(ValueError, match="single art"):
        target_path(LIB, MOVIE, ArtType.POSTER, 1)


# --- invariant 7, planning side: format, extension, size box ----------------------------

DOCUMENTED_BOXES = {
    ArtType.POSTER: (1000, 1500),
    ArtType.FANART: (1920, 1080),
    ArtType.LANDSCAPE: (1920, 1080),
    ArtType.KEYART: (1920, 1080),
    ArtType.THUMB: (1920, 1080),
    ArtType.BANNER: (1000, 185),
    ArtType.CLEARLOGO: (800, 310),
    ArtType.CLEARART: (1000, 562),
    ArtType.DISCART: (1000, 1000),
    ArtType.CHARACTERART: (512, 512),
}
ALPHA = {ArtType.CLEARART, ArtType.CLEARLOGO, ArtType.DISCART, ArtType.CHARACTERART}


@pytest.mark.parametrize("art", list(ArtType))
def test_every_art_type_has_its_documented_format_extension_and_box(art: ArtType) -> None:
    if art in ALPHA:
        assert (art.output_format, art.extension) == ("png", ".png")
    else:
        assert (art.output_format, art.extension) == ("jpeg", ".jpg")
    # extra* are photo art saved like fanart: docs/contracts.md gives them fanart's box
    expected = DOCUMENTED_BOXES.get(art, DOCUMENTED_BOXES[ArtType.FANART])
    assert art.default_max_size == expected
    width, height = art.default_max_size
    assert width > 0 and height > 0


@pytest.mark.parametrize("ctype", list(ContentType))
def test_target_extension_is_the_art_types_extension(ctype: ContentType) -> None:
    it = item(ctype, "A/b.mkv" if ctype in (ContentType.MOVIE, ContentType.EPISODE) else "A", 2)
    for art in ALLOWED_ART[ctype]:
        target = target_path(LIB, it, art, 1 if art.is_list else 0)
        assert target.suffix == art.extension


# --- list indexes on disk ------------------------------------------------------------


def test_list_indexes_on_disk_finds_canonical_numbered_files(tmp_path: Path) -> None:
    folder = tmp_path / "Movies/Alien (1979)"
    folder.mkdir(parents=True)
    for name in [
        "Alien (1979)-fanart1.jpg",
        "Alien (1979)-fanart3.jpg",
        "Alien (1979)-fanart12.jpg",
        "Alien (1979)-fanart03.jpg",  # not a name artpipe writes
        "Alien (1979)-fanart.jpg",  # the single fanart
        "Alien (1979)-fanart2.png",
        "Other-fanart2.jpg",
        "Alien (1979)-thumb2.jpg",  # not an extrathumb: those live in extrathumbs/
        "extrathumbs/thumb2.jpg",
        "extrathumbs/thumb02.jpg",
        "extrathumbs/Alien (1979)-thumb4.jpg",
    ]:
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(b"x")
    assert list_indexes_on_disk(tmp_path, MOVIE, ArtType.EXTRAFANART) == [1, 3, 12]
    assert list_indexes_on_disk(tmp_path, MOVIE, ArtType.EXTRATHUMB) == [2]
    assert list_indexes_on_disk(tmp_path, SHOW, ArtType.EXTRAFANART) == []  # no folder


def test_list_indexes_on_disk_for_a_show_folder(tmp_path: Path) -> None:
    (tmp_path / "TV/Firefly").mkdir(parents=True)
    (tmp_path / "TV/Firefly/extrathumbs").mkdir()
    for name in [
        "fanart2.jpg",
        "extrathumbs/thumb1.jpg",
        "thumb3.jpg",
        "poster.jpg",
        "season01-fanart.jpg",
    ]:
        (tmp_path / "TV/Firefly" / name).write_bytes(b"x")
    assert list_indexes_on_disk(tmp_path, SHOW, ArtType.EXTRAFANART) == [2]
    assert list_indexes_on_disk(tmp_path, SHOW, ArtType.EXTRATHUMB) == [1]
    with pytest.raises(ValueError):
        list_indexes_on_disk(tmp_path, SHOW, ArtType.POSTER)


# --- invariant 8: nothing resolves outside the library root -----------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd.mkv",
        "//server/share/a.mkv",
        "\\\\server\\share\\a.mkv",
        "C:/Movies/a.mkv",
        "../a.mkv",
        "Movies/../../a.mkv",
        "Movies/..",
        "Movies\\..\\..\\a.mkv",
        "Movies/a\x00.mkv",
    ],
)
def test_lexical_escapes_are_refused(path: str) -> None:
    for ctype in ContentType:
        with pytest.raises(UnsafePathError) as info:
            target_path(LIB, item(ctype, path, 1), ArtType.THUMB)
        assert info.value.path == path
        with pytest.raises(UnsafePathError):
            item_dir(LIB, item(ctype, path, 1))


@pytest.fixture
def hostile_library(tmp_path: Path) -> Path:
    """A library with symlinks pointing out of it (and some harmless ones)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    lib = tmp_path / "lib"
    (lib / "Movies/Alien").mkdir(parents=True)
    (lib / "escape").symlink_to(outside)
    (lib / "Movies/up").symlink_to("../..")
    (lib / "Movies/abs").symlink_to("/")
    (lib / "Movies/inside").symlink_to("Alien")
    (lib / "Movies/Alien/Alien-poster.jpg").symlink_to(outside / "stolen.jpg")
    (lib / "loop").symlink_to("loop")
    return lib


def test_symlink_escapes_are_refused(hostile_library: Path) -> None:
    lib = hostile_library
    with pytest.raises(UnsafePathError) as info:
        target_path(lib, item(ContentType.TVSHOW, "escape/Show"), ArtType.POSTER)
    assert str(lib) in str(info.value) and "outside the library" in str(info.value)
    with pytest.raises(UnsafePathError):
        target_path(lib, item(ContentType.MOVIE, "Movies/up/x.mkv"), ArtType.POSTER)
    with pytest.raises(UnsafePathError):
        target_path(lib, item(ContentType.MOVIE, "Movies/abs/tmp/x.mkv"), ArtType.POSTER)
    # the target file itself is a symlink out of the library
    with pytest.raises(UnsafePathError):
        target_path(lib, item(ContentType.MOVIE, "Movies/Alien/Alien.mkv"), ArtType.POSTER)
    # a symlink that stays inside is fine
    ok = target_path(lib, item(ContentType.MOVIE, "Movies/inside/Alien.mkv"), ArtType.FANART)
    assert ok == lib / "Movies/inside/Alien-fanart.jpg"


def test_symlinked_library_root_is_resolved_first(hostile_library: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(hostile_library)
    got = target_path(alias, item(ContentType.TVSHOW, "TV/Show"), ArtType.POSTER)
    assert got == alias / "TV/Show/poster.jpg"
    with pytest.raises(UnsafePathError):
        target_path(alias, item(ContentType.TVSHOW, "escape"), ArtType.POSTER)


SEGMENTS = st.sampled_from(
    ["Movies", "Alien", "escape", "up", "abs", "inside", "loop", "..", ".", "", "a\x00b", "x.mkv"]
)
hostile_paths = st.one_of(
    st.lists(SEGMENTS, min_size=1, max_size=6).map("/".join),
    st.lists(SEGMENTS, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
    st.text(max_size=20),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=hostile_paths, ctype=st.sampled_from(list(ContentType)), art=st.sampled_from(list(ArtType))
)
def test_no_target_escapes_the_library_root(
    hostile_library: Path, path: str, ctype: ContentType, art: ArtType
) -> None:
    it = item(ctype, path, 1)
    root = os.path.realpath(hostile_library)
    try:
        target = target_path(hostile_library, it, art, 1 if art.is_list else 0)
    except UnsafePathError:
        return
    except ManifestError as exc:
        # art the type cannot have, a season pointed at a season folder, or a
        # movie set with no path and no movie sets folder
        assert (
            art not in ALLOWED_ART[ctype]
            or (ctype is ContentType.SEASON and "not the season folder" in str(exc))
            or (ctype is ContentType.MOVIESET and not path)
        ), (path, ctype, art, exc)
        return
    real = os.path.realpath(target)
    assert real.startswith(root + os.sep), (path, target, real)
    assert "\x00" not in str(target)
    assert os.path.isabs(target)


# --- Kodi's special layouts: disc folders, stacks, extra* folders, sets, seasons ---------


@pytest.mark.parametrize(
    ("path", "art", "index", "expected"),
    [
        (
            "Movies/Heat (1995)/VIDEO_TS/VIDEO_TS.IFO",
            ArtType.POSTER,
            0,
            "Movies/Heat (1995)/poster.jpg",
        ),
        (
            "Movies/Heat (1995)/video_ts/video_ts.ifo",
            ArtType.CLEARLOGO,
            0,
            "Movies/Heat (1995)/clearlogo.png",
        ),
        (
            "Movies/Heat (1995)/VIDEO_TS/VTS_01_0.IFO",
            ArtType.FANART,
            0,
            "Movies/Heat (1995)/fanart.jpg",
        ),
        ("Movies/Heat (1995)/VIDEO_TS.IFO", ArtType.POSTER, 0, "Movies/Heat (1995)/poster.jpg"),
        ("Movies/Heat (1995)/BDMV/index.bdmv", ArtType.POSTER, 0, "Movies/Heat (1995)/poster.jpg"),
        (
            "Movies/Heat (1995)/BDMV/MovieObject.bdmv",
            ArtType.BANNER,
            0,
            "Movies/Heat (1995)/banner.jpg",
        ),
        (
            "Movies/Heat (1995)/BDMV/index.bdmv",
            ArtType.EXTRAFANART,
            2,
            "Movies/Heat (1995)/fanart2.jpg",
        ),
        (
            "Movies/Heat (1995)/BDMV/index.bdmv",
            ArtType.EXTRATHUMB,
            1,
            "Movies/Heat (1995)/extrathumbs/thumb1.jpg",
        ),
        ("VIDEO_TS/VIDEO_TS.IFO", ArtType.POSTER, 0, "poster.jpg"),
    ],
)
def test_disc_folders_put_plain_names_above_video_ts_and_bdmv(
    path: str, art: ArtType, index: int, expected: str
) -> None:
    assert target_path(LIB, item(ContentType.MOVIE, path), art, index) == LIB / expected


def test_extrafanart_folder_style_is_an_option() -> None:
    folder = Layout(extrafanart=ExtrafanartStyle.FOLDER)
    assert target_path(LIB, MOVIE, ArtType.EXTRAFANART, 2, layout=folder) == (
        LIB / "Movies/Alien (1979)/extrafanart/fanart2.jpg"
    )
    assert target_path(LIB, SHOW, ArtType.EXTRAFANART, 1, layout=folder) == (
        LIB / "TV/Firefly/extrafanart/fanart1.jpg"
    )
    # season fanart has no folder convention: seasonNN-fanartN either way
    season = item(ContentType.SEASON, "TV/Firefly", 3)
    assert target_path(LIB, season, ArtType.EXTRAFANART, 1, layout=folder) == (
        LIB / "TV/Firefly/season03-fanart1.jpg"
    )
    # the default is what Kodi itself reads
    assert target_path(LIB, MOVIE, ArtType.EXTRAFANART, 2) == (
        LIB / "Movies/Alien (1979)/Alien (1979)-fanart2.jpg"
    )


def test_list_indexes_follow_the_extrafanart_style(tmp_path: Path) -> None:
    folder = tmp_path / "Movies/Alien (1979)/extrafanart"
    folder.mkdir(parents=True)
    (folder / "fanart4.jpg").write_bytes(b"x")
    layout = Layout(extrafanart=ExtrafanartStyle.FOLDER)
    assert list_indexes_on_disk(tmp_path, MOVIE, ArtType.EXTRAFANART, layout=layout) == [4]
    assert list_indexes_on_disk(tmp_path, MOVIE, ArtType.EXTRAFANART) == []


@pytest.mark.parametrize(
    ("title", "folder"),
    [
        ("Alien Collection", "Alien Collection"),
        ("Mission: Impossible", "Mission_ Impossible"),
        ('What? "Now"/Then <a|b> *x*', "What_ _Now__Then _a_b_ _x_"),
        ("Back\\Slash", "Back_Slash"),
        ("Trailing dots...", "Trailing dots"),
        ("Trailing . . ", "Trailing"),
        ("  Leading kept", "  Leading kept"),
    ],
)
def test_movie_set_folder_uses_kodis_legal_title(title: str, folder: str) -> None:
    assert kodi_legal_filename(title) == folder
    movie_set = Item(id="s", type=ContentType.MOVIESET, path="", title=title)
    layout = Layout(movie_sets_folder="Movie Sets")
    assert target_path(LIB, movie_set, ArtType.POSTER, layout=layout) == (
        LIB / "Movie Sets" / folder / "poster.jpg"
    )


def test_movie_set_with_a_path_keeps_it_and_one_without_needs_the_folder() -> None:
    layout = Layout(movie_sets_folder="Movie Sets")
    assert target_path(LIB, MOVIESET, ArtType.BANNER, layout=layout) == (
        LIB / "Sets/Alien Collection/banner.jpg"
    )
    placed = Item(id="s", type=ContentType.MOVIESET, path="", title="Alien Collection")
    with pytest.raises(ManifestError, match="--movie-sets-folder"):
        target_path(LIB, placed, ArtType.POSTER)
    for bad in ("..", ". .", ""):
        nameless = Item(id="s", type=ContentType.MOVIESET, path="", title=bad)
        with pytest.raises(ManifestError, match="folder name"):
            target_path(LIB, nameless, ArtType.POSTER, layout=layout)
    with pytest.raises(UnsafePathError):
        target_path(LIB, placed, ArtType.POSTER, layout=Layout(movie_sets_folder="../Sets"))


@pytest.mark.parametrize(
    "folder", ["Season 1", "season 01", "Season.2", "S01", "s3", "Specials", "Series 4"]
)
def test_season_item_pointed_at_a_season_folder_is_refused_with_the_show_folder(
    folder: str,
) -> None:
    season = item(ContentType.SEASON, f"TV/Firefly/{folder}", 1)
    with pytest.raises(ManifestError) as info:
        target_path(LIB, season, ArtType.POSTER)
    assert "'TV/Firefly'" in str(info.value) and "show folder" in str(info.value)


STACKS = [
    # (the manifest's part, another file in the folder, the art's base name)
    ("Solaris (1972)-cd1.avi", "Solaris (1972)-cd2.avi", "Solaris (1972)"),
    ("Solaris (1972) CD2.avi", "Solaris (1972) cd1.avi", "Solaris (1972)"),
    ("Solaris (1972).part1.mkv", "Solaris (1972).part2.mkv", "Solaris (1972)"),
    ("Solaris (1972)_pt 2.mkv", "Solaris (1972)_pt 1.mkv", "Solaris (1972)"),
    ("Solaris (1972) dvd1.mkv", "Solaris (1972) dvd2.mkv", "Solaris (1972)"),
    ("Solaris (1972)-disc-a.mkv", "Solaris (1972)-disc-b.mkv", "Solaris (1972)"),
    ("Solaris (1972) disk d.mkv", "Solaris (1972) disk c.mkv", "Solaris (1972)"),
    # what follows the volume stays in the stacked title (StackDirectory.cpp: title + ignore)
    ("Solaris part1 1080p.mkv", "Solaris part2 1080p.mkv", "Solaris 1080p"),
    # not a stack: a lone part, another extension, another ignored part, no title
    ("Deathly Hallows Part 1 (2010).mkv", "Deathly Hallows (2010).nfo", None),
    ("Solaris-cd1.avi", "Solaris-cd2.mkv", None),
    ("Solaris-cd1 x264.avi", "Solaris-cd2 xvid.avi", None),
    ("cd1.avi", "cd2.avi", None),
    ("Party 2.mkv", "Party 3.mkv", None),
]


@pytest.mark.parametrize(("part", "sibling", "base"), STACKS)
def test_stacked_parts_share_the_stacked_title_when_kodi_would_stack(
    tmp_path: Path, part: str, sibling: str, base: str | None
) -> None:
    folder = tmp_path / "Movies/S"
    folder.mkdir(parents=True)
    (folder / sibling).write_bytes(b"")
    movie = item(ContentType.MOVIE, f"Movies/S/{part}")
    expected = base if base is not None else part.rsplit(".", 1)[0]
    assert target_path(tmp_path, movie, ArtType.POSTER) == folder / f"{expected}-poster.jpg"
    assert target_path(tmp_path, movie, ArtType.EXTRAFANART, 2) == (
        folder / f"{expected}-fanart2.jpg"
    )


def test_a_part_alone_keeps_its_own_name(tmp_path: Path) -> None:
    movie = item(ContentType.MOVIE, "Movies/S/Solaris (1972)-cd1.avi")
    assert target_path(tmp_path, movie, ArtType.POSTER) == (
        tmp_path / "Movies/S/Solaris (1972)-cd1-poster.jpg"
    )


def test_episode_stack_parts_share_one_base_name(tmp_path: Path) -> None:
    (tmp_path / "TV/F/Season 1").mkdir(parents=True)
    (tmp_path / "TV/F/Season 1/F S01E01 part2.mkv").write_bytes(b"")
    part = item(ContentType.EPISODE, "TV/F/Season 1/F S01E01 part1.mkv")
    assert target_path(tmp_path, part, ArtType.THUMB) == (
        tmp_path / "TV/F/Season 1/F S01E01-thumb.jpg"
    )


def test_leftover_copies_are_other_extensions_of_the_same_name(tmp_path: Path) -> None:
    for name in [
        "X-poster.jpg",
        "X-poster.png",
        "X-Poster.JPEG",
        "X-poster.webp",
        "X-poster.nfo",
        "X-poster1.jpg",
        "Y-poster.png",
    ]:
        (tmp_path / name).write_bytes(b"x")
    assert leftover_copies(tmp_path / "X-poster.jpg") == [
        tmp_path / "X-Poster.JPEG",
        tmp_path / "X-poster.png",
        tmp_path / "X-poster.webp",
    ]
    assert leftover_copies(tmp_path / "missing" / "X-poster.jpg") == []


@pytest.fixture(scope="module")
def linked_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library with plain folders, a link inside it, links out of it, and a dangling one."""
    base = tmp_path_factory.mktemp("tree")
    root, outside = base / "lib", base / "outside"
    for folder in ("a/b", "c", "inner"):
        (root / folder).mkdir(parents=True)
    (outside / "x").mkdir(parents=True)
    (root / "a" / "file").write_bytes(b"")
    (root / "in").symlink_to(root / "inner")
    (root / "out").symlink_to(outside)
    (root / "a" / "up").symlink_to("../../outside/x")
    (root / "dangling").symlink_to(base / "nowhere")
    return root


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(st.lists(st.sampled_from(["a", "b", "c", "in", "out", "up", "x", "dangling", "file",
                                 "new", "poster.jpg"]), min_size=1, max_size=5))
def test_the_walk_below_the_root_resolves_as_realpath_does(
    linked_tree: Path, parts: list[str]
) -> None:
    from artpipe.naming import _real_below

    expected = os.path.realpath(os.path.join(linked_tree, *parts))
    assert _real_below(str(linked_tree), tuple(parts)) == expected
