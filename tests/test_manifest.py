"""manifest.py: every value shape, every error with its line number, streaming.

Teeth (checked by hand on a copy of the package, 2026-11-25): reading lines
without a cap (``handle.readline()``) fails the huge-line tests and
``test_first_item_of_a_big_manifest_is_yielded_without_reading_it_all``;
dropping the ``len(raw) > max_line_bytes`` branch fails the huge-line tests;
dropping the ``..`` check in ``naming.path_problem`` fails the ``'..'`` cases here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from artpipe.errors import ManifestError
from artpipe.manifest import iter_manifest, parse_item, validate_url
from artpipe.models import ArtSlot, ArtType, ContentType, Item
from hypothesis import given
from hypothesis import strategies as st

LIST_ARTS = [a for a in ArtType if a.is_list]
SINGLE_ARTS = [a for a in ArtType if not a.is_list]


def movie(**extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "tt0078748",
        "type": "movie",
        "title": "Alien",
        "year": 1979,
        "path": "Movies/Alien (1979)/Alien (1979).mkv",
    }
    obj.update(extra)
    return obj


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    with open(path, "wb") as out:
        for line in lines:
            out.write(line if isinstance(line, bytes) else line.encode())
            out.write(b"\n")
    return path


def collect(path: Path, **kwargs: Any) -> tuple[list[Item], list[ManifestError]]:
    errors: list[ManifestError] = []
    items = list(iter_manifest(path, on_error=errors.append, **kwargs))
    return items, errors


# --- value shapes ---------------------------------------------------------------


def test_design_md_example_parses_into_slots_and_lists() -> None:
    item = parse_item(
        movie(
            art={
                "poster": "https://img.example/p.jpg",
                "fanart": {
                    "url": "https://img.example/f.jpg",
                    "thumb": "https://img.example/t.jpg",
                },
                "extrafanart": ["https://img.example/1.jpg", "https://img.example/2.jpg"],
                "banner": None,
            }
        ),
        line=7,
    )
    assert item.id == "tt0078748"
    assert item.type is ContentType.MOVIE
    assert item.title == "Alien" and item.year == 1979 and item.line == 7
    assert item.slots == (
        ArtSlot(ArtType.POSTER, 0, "https://img.example/p.jpg"),
        ArtSlot(ArtType.FANART, 0, "https://img.example/f.jpg", "https://img.example/t.jpg"),
        ArtSlot(ArtType.EXTRAFANART, 1, "https://img.example/1.jpg"),
        ArtSlot(ArtType.EXTRAFANART, 2, "https://img.example/2.jpg"),
        ArtSlot(ArtType.BANNER, 0, None),
    )
    assert item.lists == frozenset({ArtType.EXTRAFANART})


def test_absent_art_key_leaves_the_art_alone() -> None:
    item = parse_item(movie(art={"poster": "https://a.example/p.jpg"}))
    assert [s.art for s in item.slots] == [ArtType.POSTER]
    assert item.lists == frozenset()
    assert parse_item(movie()).slots == ()


@pytest.mark.parametrize("art", LIST_ARTS)
def test_null_list_art_removes_all_numbered_files(art: ArtType) -> None:
    item = parse_item(movie(art={art.value: None}))
    assert item.slots == ()
    assert item.lists == frozenset({art})


@pytest.mark.parametrize("art", LIST_ARTS)
def test_empty_list_is_given_so_surplus_files_go(art: ArtType) -> None:
    item = parse_item(movie(art={art.value: []}))
    assert item.slots == () and item.lists == frozenset({art})


@pytest.mark.parametrize("art", LIST_ARTS)
def test_single_string_for_list_art_is_a_one_element_list(art: ArtType) -> None:
    item = parse_item(movie(art={art.value: "https://a.example/1.jpg"}))
    assert item.slots == (ArtSlot(art, 1, "https://a.example/1.jpg"),)
    assert item.lists == frozenset({art})


def test_list_entries_may_carry_a_thumb() -> None:
    item = parse_item(
        movie(
            art={"extrathumb": [{"url": "https://a.example/1.jpg", "thumb": "http://a.example/t"}]}
        )
    )
    assert item.slots == (
        ArtSlot(ArtType.EXTRATHUMB, 1, "https://a.example/1.jpg", "http://a.example/t"),
    )


@pytest.mark.parametrize("art", SINGLE_ARTS)
def test_every_single_art_takes_string_object_and_null(art: ArtType) -> None:
    url = f"https://a.example/{art.value}"
    assert parse_item(movie(art={art.value: url})).slots == (ArtSlot(art, 0, url),)
    assert parse_item(movie(art={art.value: {"url": url}})).slots == (ArtSlot(art, 0, url),)
    assert parse_item(movie(art={art.value: {"url": url, "thumb": None}})).slots == (
        ArtSlot(art, 0, url),
    )
    assert parse_item(movie(art={art.value: None})).slots == (ArtSlot(art, 0, None),)


def test_season_items_carry_their_number() -> None:
    for number in (-1, 0, 1, 12, 100):
        item = parse_item({"id": "s", "type": "season", "path": "TV/Show", "season": number})
        assert item.season == number


def test_other_content_types_parse() -> None:
    for ctype in ("movieset", "tvshow"):
        assert parse_item({"id": "x", "type": ctype, "path": "Sets/Alien"}).type == ctype
    ep = parse_item({"id": "e", "type": "episode", "path": "TV/S/e.mkv", "art": {"thumb": None}})
    assert ep.slots == (ArtSlot(ArtType.THUMB, 0, None),)


def test_parse_item_without_line_has_no_line_in_errors() -> None:
    with pytest.raises(ManifestError) as info:
        parse_item({"id": "x"})
    assert info.value.line is None
    assert str(info.value).startswith('"type"')


# --- every error, with its field --------------------------------------------------------


BAD_ITEMS: list[tuple[Any, str]] = [
    ([], "must be a JSON object"),
    ("movie", "must be a JSON object"),
    (movie(id=""), '"id"'),
    (movie(id="   "), '"id"'),
    (movie(id=7), '"id"'),
    ({k: v for k, v in movie().items() if k != "id"}, '"id"'),
    (movie(type="film"), '"type" must be one of movie'),
    (movie(type=None), '"type"'),
    (movie(path=""), '"path"'),
    (movie(path=5), '"path"'),
    ({k: v for k, v in movie().items() if k != "path"}, '"path"'),
    (movie(path="/abs/Alien.mkv"), "relative"),
    (movie(path="\\\\server\\share\\a.mkv"), "relative"),
    (movie(path="C:\\Movies\\a.mkv"), "relative"),
    (movie(path="c:Movies/a.mkv"), "relative"),
    (movie(path="Movies/../../etc/a.mkv"), "'..'"),
    (movie(path="Movies\\..\\..\\a.mkv"), "'..'"),
    (movie(path=".."), "'..'"),
    (movie(path="Movies/a\x00.mkv"), "NUL"),
    (movie(title=3), '"title"'),
    (movie(year="1979"), '"year"'),
    (movie(year=True), '"year"'),
    ({"id": "s", "type": "season", "path": "TV/Show"}, 'needs "season"'),
    ({"id": "s", "type": "season", "path": "TV/Show", "season": -2}, '"season"'),
    ({"id": "s", "type": "season", "path": "TV/Show", "season": "1"}, '"season"'),
    ({"id": "s", "type": "season", "path": "TV/Show", "season": 1.5}, '"season"'),
    (movie(art=["https://a.example/p.jpg"]), '"art" must be an object'),
    (movie(type="movieset", path=None, title=None), "may leave it out"),
    (movie(type="movieset", path=None, title="  "), '"path"'),
    (movie(type="tvshow", path=None), '"path" must be a non-empty string relative'),
]

GOOD = "https://a.example/good.jpg"

# Art that cannot be used fails that slot only: (art, the failed slot's (art, index), fragment)
BAD_SLOTS: list[tuple[dict[str, Any], tuple[str, int], str]] = [
    ({"cover": "https://a.example/p.jpg"}, ("cover", 0), "unknown art type 'cover'"),
    ({"poster": ["https://a.example/p.jpg"]}, ("poster", 0), "art.poster takes one image"),
    ({"poster": 5}, ("poster", 0), "art.poster must be a URL string"),
    ({"poster": {"thumb": "https://a.example/t"}}, ("poster", 0), "art.poster.url"),
    ({"poster": {"url": "https://a.example/p", "x": 1}}, ("poster", 0), "unknown keys ['x']"),
    ({"poster": {"url": "https://a.example/p", "thumb": 3}}, ("poster", 0), ".thumb"),
    ({"poster": {"url": "https://a.example/p", "thumb": "ftp://a/t"}}, ("poster", 0), ".thumb"),
    ({"poster": "ftp://a.example/p.jpg"}, ("poster", 0), "only http and https"),
    ({"poster": "file:///etc/passwd"}, ("poster", 0), "only http and https"),
    ({"poster": "javascript:alert(1)"}, ("poster", 0), "only http and https"),
    ({"poster": "data:image/png;base64,AAAA"}, ("poster", 0), "only http and https"),
    ({"poster": "a.example/p.jpg"}, ("poster", 0), "only http and https"),
    ({"poster": "https:///p.jpg"}, ("poster", 0), "no host"),
    ({"poster": "https://a.example/p q.jpg"}, ("poster", 0), "whitespace"),
    ({"poster": ""}, ("poster", 0), "empty"),
    ({"poster": "http://[::1/p"}, ("poster", 0), "not a valid URL"),
    ({"poster": "http://a.example:99999/p"}, ("poster", 0), "not a valid URL"),
    (
        {"extrafanart": ["https://a.example/1", None]},
        ("extrafanart", 2),
        "art.extrafanart[1] is null",
    ),
    (
        {"extrafanart": ["https://a.example/1", "gopher://x/2"]},
        ("extrafanart", 2),
        "art.extrafanart[1]",
    ),
    ({"extrathumb": 4}, ("extrathumb", 0), "art.extrathumb"),
]


@pytest.mark.parametrize(("obj", "fragment"), BAD_ITEMS)
def test_bad_item_is_a_manifest_error_naming_the_field(obj: Any, fragment: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_item(obj, line=42)
    assert fragment in str(info.value)
    assert info.value.line == 42
    assert str(info.value).startswith("line 42: ")
    readable = obj.get("id") if isinstance(obj, dict) else None
    expected = readable if isinstance(readable, str) and readable.strip() else None
    assert info.value.item == expected  # the report row names the item when it can


@pytest.mark.parametrize(("art", "key", "fragment"), BAD_SLOTS)
def test_bad_art_fails_only_that_slot(
    art: dict[str, Any], key: tuple[str, int], fragment: str
) -> None:
    item = parse_item(movie(art={"fanart": GOOD, **art}), line=42)
    assert item.slots[0] == ArtSlot(ArtType.FANART, 0, GOOD)  # the rest of the item stays
    assert [(p.art, p.index) for p in item.problems] == [key]
    assert fragment in item.problems[0].error
    # a bad value is never planned: no slot carries it
    assert all(s.art.value != key[0] or s.index != key[1] for s in item.slots)


def test_a_bad_list_entry_keeps_its_number_and_its_siblings() -> None:
    urls = ["https://a.example/1.jpg", "javascript:alert(1)", "https://a.example/3.jpg"]
    item = parse_item(movie(art={"extrafanart": urls}))
    assert [(s.index, s.url) for s in item.slots] == [(1, urls[0]), (3, urls[2])]
    assert [(p.index, p.url) for p in item.problems] == [(2, urls[1])]
    assert item.lists == frozenset({ArtType.EXTRAFANART})


def test_a_list_value_that_is_no_list_leaves_the_files_alone() -> None:
    item = parse_item(movie(art={"extrathumb": 4}))
    assert item.slots == () and item.lists == frozenset()
    assert [(p.art, p.index, p.url) for p in item.problems] == [("extrathumb", 0, None)]


def test_art_the_type_cannot_have_fails_that_slot() -> None:
    episode = parse_item(
        {
            "id": "e",
            "type": "episode",
            "path": "e.mkv",
            "art": {"poster": "https://a.example/p.jpg", "thumb": GOOD, "fanart": GOOD},
        }
    )
    assert [s.art for s in episode.slots] == [ArtType.THUMB, ArtType.FANART]
    assert [(p.art, p.url) for p in episode.problems] == [("poster", "https://a.example/p.jpg")]
    assert "cannot have 'poster'" in episode.problems[0].error
    season = parse_item(
        {
            "id": "s",
            "type": "season",
            "path": "TV/S",
            "season": 1,
            "art": {"extrathumb": [], "extrafanart": [GOOD]},
        }
    )
    assert season.slots == (ArtSlot(ArtType.EXTRAFANART, 1, GOOD),)
    assert [p.art for p in season.problems] == ["extrathumb"]
    assert season.lists == frozenset({ArtType.EXTRAFANART})


def test_a_movie_set_may_leave_its_path_to_the_movie_sets_folder() -> None:
    item = parse_item({"id": "set", "type": "movieset", "title": "Alien Collection"})
    assert item.path == "" and item.title == "Alien Collection"


def test_a_bad_json_line_still_names_its_id_when_it_can(tmp_path: Path) -> None:
    manifest = write_lines(
        tmp_path / "m.jsonl",
        ['{"id": "tt1", "type": "movie", "path": "a.mkv", oops}', '{"nothing": 1', "[1]"],
    )
    items, errors = collect(manifest)
    assert items == []
    assert [e.item for e in errors] == ["tt1", None, None]


def test_every_bad_line_is_reported_with_its_number_and_the_rest_runs(tmp_path: Path) -> None:
    good = json.dumps(movie(art={"poster": "https://a.example/p.jpg"}))
    lines: list[str | bytes] = [good]
    expected_lines = []
    for obj, _ in BAD_ITEMS:
        lines.append(json.dumps(obj))
        expected_lines.append(len(lines))
    lines.append(good)
    manifest = write_lines(tmp_path / "m.jsonl", lines)
    items, errors = collect(manifest)
    assert [i.line for i in items] == [1, len(lines)]
    assert [e.line for e in errors] == expected_lines
    for error, (_, fragment) in zip(errors, BAD_ITEMS, strict=True):
        assert fragment in str(error)
        assert error.path == str(manifest)
        assert str(error).startswith(f"{manifest}, line {error.line}: ")


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    manifest = write_lines(tmp_path / "m.jsonl", [json.dumps(movie()), "{not json", "[1,"])
    items, errors = collect(manifest)
    assert len(items) == 1
    assert [e.line for e in errors] == [2, 3]
    assert all("invalid JSON" in str(e) for e in errors)


def test_deeply_nested_json_is_an_error_not_a_crash(tmp_path: Path) -> None:
    manifest = write_lines(
        tmp_path / "m.jsonl", ["[" * 100_000 + "]" * 100_000, json.dumps(movie())]
    )
    items, errors = collect(manifest)
    assert len(items) == 1 and [e.line for e in errors] == [1]


def test_invalid_utf8_is_reported_for_that_line_only(tmp_path: Path) -> None:
    bad = (
        json.dumps(movie(title="Amélie"), ensure_ascii=False)
        .encode()
        .replace("é".encode(), b"\xe9")
    )
    manifest = write_lines(tmp_path / "m.jsonl", [bad, json.dumps(movie(title="Amélie"))])
    items, errors = collect(manifest)
    assert [i.title for i in items] == ["Amélie"]
    assert [e.line for e in errors] == [1]
    assert "UTF-8" in str(errors[0])


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    manifest = write_lines(
        tmp_path / "m.jsonl", ["", "   ", json.dumps(movie()), "\t", "{bad", "\r"]
    )
    items, errors = collect(manifest)
    assert [i.line for i in items] == [3]
    assert [e.line for e in errors] == [5]


def test_crlf_bom_and_missing_final_newline(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    body = json.dumps(movie(id="a")) + "\r\n" + json.dumps(movie(id="b"))
    manifest.write_bytes(b"\xef\xbb\xbf" + body.encode())
    items, errors = collect(manifest)
    assert [i.id for i in items] == ["a", "b"] and errors == []


def test_errors_are_dropped_without_on_error(tmp_path: Path) -> None:
    manifest = write_lines(tmp_path / "m.jsonl", ["{bad", json.dumps(movie())])
    assert [i.line for i in iter_manifest(manifest)] == [2]


def test_huge_line_is_reported_and_skipped(tmp_path: Path) -> None:
    huge = json.dumps(movie(title="x" * 5000))
    manifest = write_lines(
        tmp_path / "m.jsonl", [json.dumps(movie(id="a")), huge, json.dumps(movie(id="b"))]
    )
    items, errors = collect(manifest, max_line_bytes=1000)
    assert [i.id for i in items] == ["a", "b"]
    assert [e.line for e in errors] == [2]
    assert "longer than 1000 bytes" in str(errors[0])


def test_line_of_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    line = json.dumps(movie(id="a"))
    manifest = write_lines(tmp_path / "m.jsonl", [line, line + " "])
    items, errors = collect(manifest, max_line_bytes=len(line))
    assert [i.line for i in items] == [1] and [e.line for e in errors] == [2]


class CountingHandle:
    """Wraps the manifest's file: counts every byte handed out, and the largest read.

    Only the methods a streaming reader needs exist, so a reader that calls
    ``read()``/``readlines()`` or iterates without a cap fails here.
    """

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.total = 0
        self.largest = 0

    def readline(self, size: int = -1) -> bytes:
        assert size > 0, "manifest lines must be read with a size cap"
        data: bytes = self.handle.readline(size)
        self.total += len(data)
        self.largest = max(self.largest, len(data))
        return data

    def close(self) -> None:
        self.handle.close()

    @property
    def closed(self) -> bool:
        return bool(self.handle.closed)

    def __enter__(self) -> CountingHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[CountingHandle]:
    """Every file iter_manifest opens, wrapped in a CountingHandle."""
    import artpipe.manifest as mod

    opened: list[CountingHandle] = []
    real_open = open

    def fake_open(path: Any, mode: str) -> CountingHandle:
        opened.append(CountingHandle(real_open(path, mode)))
        return opened[-1]

    monkeypatch.setattr(mod, "open", fake_open, raising=False)
    return opened


def test_huge_line_is_not_buffered_whole(tmp_path: Path, counted: list[CountingHandle]) -> None:
    """A 64 MB line with a 1 KB limit is skipped while reading in bounded chunks."""
    manifest = tmp_path / "m.jsonl"
    with open(manifest, "wb") as out:
        out.write(b'{"id": "')
        chunk = b"x" * (1 << 20)
        for _ in range(64):
            out.write(chunk)
        out.write(b'"}\n')
        out.write(json.dumps(movie()).encode() + b"\n")
    items, errors = collect(manifest, max_line_bytes=1024)
    assert len(items) == 1 and [e.line for e in errors] == [1]
    assert counted[0].largest <= 1 << 16


def test_first_item_of_a_big_manifest_is_yielded_without_reading_it_all(
    tmp_path: Path, counted: list[CountingHandle]
) -> None:
    manifest = tmp_path / "big.jsonl"
    line = json.dumps(movie(art={"poster": "https://a.example/p.jpg"})).encode() + b"\n"
    with open(manifest, "wb") as out:
        out.write(line * 200_000)  # ~30 MB
    assert manifest.stat().st_size > 20 << 20
    it = iter_manifest(manifest)
    first = next(it)
    assert first.line == 1
    assert counted[0].total < 1 << 20, "the whole file was read for one item"
    second = next(it)
    assert second.line == 2 and counted[0].total == 2 * len(line)
    it.close()  # type: ignore[attr-defined]
    assert counted[0].closed


@pytest.mark.parametrize("setup", ["missing", "directory", "unreadable", "other"])
def test_unusable_manifest_raises_at_once_with_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: str
) -> None:
    import artpipe.manifest as mod

    target = tmp_path / "m.jsonl"
    if setup == "directory":
        target.mkdir()
        advice = "is a directory; pass the .jsonl file"
    elif setup in ("unreadable", "other"):
        target.write_text("{}\n")
        error = (
            PermissionError(13, "Permission denied")
            if setup == "unreadable"
            else OSError(5, "Input/output error")
        )

        def refuse(*args: object) -> object:
            raise error

        monkeypatch.setattr(mod, "open", refuse, raising=False)
        advice = "permission denied" if setup == "unreadable" else "Input/output error"
    else:
        advice = "not found; check the path"
    with pytest.raises(ManifestError) as info:
        iter_manifest(target)  # no next(): the error must come now
    assert advice in str(info.value)
    assert info.value.path == str(target) and info.value.line is None


# --- properties ------------------------------------------------------------------------

urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){1,2}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_%./-]{0,30}", fullmatch=True),
)


@given(
    single=st.dictionaries(st.sampled_from(SINGLE_ARTS), st.none() | urls, max_size=4),
    lists=st.dictionaries(st.sampled_from(LIST_ARTS), st.none() | st.lists(urls, max_size=5)),
)
def test_round_trip_through_a_manifest_file(
    tmp_path_factory: pytest.TempPathFactory,
    single: dict[ArtType, str | None],
    lists: dict[ArtType, list[str] | None],
) -> None:
    art: dict[str, Any] = {a.value: u for a, u in single.items()}
    art.update({a.value: u for a, u in lists.items()})
    manifest = tmp_path_factory.mktemp("m") / "m.jsonl"
    write_lines(manifest, [json.dumps(movie(art=art))])
    items, errors = collect(manifest)
    assert errors == [] and len(items) == 1
    item = items[0]
    assert item.lists == frozenset(lists)
    for a, u in single.items():
        assert ArtSlot(a, 0, u) in item.slots
    for a, entries in lists.items():
        got = [s for s in item.slots if s.art is a]
        assert got == [ArtSlot(a, i, u) for i, u in enumerate(entries or [], start=1)]


@given(st.text(max_size=40))
def test_validate_url_accepts_only_http_with_host(text: str) -> None:
    problem = validate_url(text)
    if problem is None:
        assert text.lower().startswith(("http://", "https://"))


@given(st.binary(max_size=300))
def test_any_bytes_give_items_or_line_errors_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    manifest = tmp_path_factory.mktemp("m") / "m.jsonl"
    manifest.write_bytes(data)
    items, errors = collect(manifest, max_line_bytes=64)
    assert all(isinstance(e, ManifestError) and e.line for e in errors)
    assert len(items) + len(errors) <= data.count(b"\n") + 1


@given(st.text(max_size=40))
def test_the_space_and_control_check_is_the_character_rule(text: str) -> None:
    from artpipe.manifest import _SPACE_OR_CONTROL

    by_char = any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)
    assert bool(_SPACE_OR_CONTROL.search(text)) == by_char
