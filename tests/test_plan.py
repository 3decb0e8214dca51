"""plan.py: one resolver, proven by properties and by the seed's three scenarios.

Invariants checked here (DESIGN.md): 1 (needs_download ⇔ resolve is Web) and 4
(after a successful run a second plan has nothing to fetch, remove or rewrite);
invariant 8 for planned targets (unsafe paths become SlotErrors); the
regression tests are named after the three scenarios of
reference/ember-async-image-regression.md.

``World`` is an in-memory ``Facts`` over a real temporary library, and
``simulate_run`` is a run without network or Rust: it "fetches" exactly
``plan.web`` from a fake origin, then a save step that is given only the
sources and the fetched bytes — it has no origin to call — writes, removes and
records. A save step that needed bytes nobody fetched (the seed's bug) raises
``SaveWouldFetch``.

Teeth (checked by hand on a copy of the package, 2026-11-25, ci profile):
- a cached THUMB satisfying an original (``if state.cache is not
  CacheState.NONE: return Cache(...)``) fails
  ``test_thumb_in_cache_never_satisfies_an_original``, ``test_resolve_safety_rules``,
  ``test_resolve_priority``, scenario 2 [thumb-only-cache], invariant 4 and the
  state machine (test_plan_state.py);
- keeping a file recorded for any URL (no ``recorded.url == slot.url``) fails
  ``test_file_recorded_for_a_different_url_is_stale``, scenario 2 [stale-file],
  invariant 4 and the state machine;
- trusting the record without ``file_exists`` fails ``test_scenario1_*``
  (the save step is handed a LocalFile that is gone) and the state machine;
- skipping the surplus removals in ``plan_item`` fails ``test_scenario3_*``,
  ``test_surplus_found_only_on_disk_or_only_in_the_store_is_removed``,
  invariant 4 and the state machine.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import pickle
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import artpipe.plan
import pytest
from artpipe.errors import UnsafePathError
from artpipe.manifest import parse_item
from artpipe.models import ArtSlot, ArtType, ContentType, Item
from artpipe.naming import list_indexes_on_disk, target_path
from artpipe.plan import (
    Cache,
    CacheState,
    ItemPlan,
    LocalFile,
    Memory,
    Nothing,
    PlannedSlot,
    Recorded,
    Remove,
    SlotError,
    SlotState,
    Source,
    Web,
    needs_download,
    plan_item,
    resolve,
)
from hypothesis import given
from hypothesis import strategies as st

# --- a fake origin, store, cache and memory -------------------------------------------


def original(url: str) -> bytes:
    return b"original:" + url.encode()


def preview(url: str) -> bytes:
    return b"thumb:" + url.encode()


def etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


class SaveWouldFetch(AssertionError):
    """The save step needed bytes the fetch phase did not fetch: the seed's bug."""


@dataclass
class World:
    """Facts over a real library folder plus in-memory store, cache and memory."""

    library: Path
    records: dict[tuple[str, ArtType, int], Recorded] = field(default_factory=dict)
    cache: dict[str, CacheState] = field(default_factory=dict)
    mem: dict[str, bytes] = field(default_factory=dict)

    # Facts
    def recorded(self, item: Item, art: ArtType, index: int) -> Recorded | None:
        return self.records.get((item.id, art, index))

    def recorded_indexes(self, item: Item, art: ArtType) -> Iterable[int]:
        return [i for (iid, a, i) in self.records if iid == item.id and a is art]

    def cache_state(self, url: str) -> CacheState:
        return self.cache.get(url, CacheState.NONE)

    def memory(self, url: str) -> bytes | None:
        return self.mem.get(url)

    def file_exists(self, path: Path) -> bool:
        return path.is_file()

    # helpers
    def state(self, item: Item, planned: PlannedSlot, refresh: bool = False) -> SlotState:
        """The SlotState plan_item must have built, rebuilt independently."""
        url = planned.slot.url
        return SlotState(
            target=planned.target,
            file_exists=planned.target.is_file(),
            recorded=self.recorded(item, planned.slot.art, planned.slot.index),
            cache=self.cache_state(url) if url else CacheState.NONE,
            memory=self.memory(url) if url else None,
            refresh=refresh,
        )


@dataclass
class RunStats:
    requests: Counter[str] = field(default_factory=Counter)
    writes: int = 0
    removes: int = 0
    not_modified: int = 0


def simulate_run(plan: ItemPlan, world: World) -> RunStats:
    """Fetch exactly plan.web (coalesced), then save from sources alone."""
    stats = RunStats()
    fetched: dict[str, bytes | None] = {}
    for planned in plan.web:  # the fetch phase: the only place with an origin
        source = planned.source
        assert isinstance(source, Web)
        if source.url in fetched:
            continue  # coalesced: one request per URL per run
        stats.requests[source.url] += 1
        body = original(source.url)
        if source.etag is not None and source.etag == etag(body):
            stats.not_modified += 1
            fetched[source.url] = None  # 304: keep the file
            continue
        fetched[source.url] = body
        world.cache[source.url] = CacheState.ORIGINAL  # cache.py keeps originals
    for planned in plan.slots:
        save(plan.item, planned, fetched, world, stats)
    return stats


def save(
    item: Item,
    planned: PlannedSlot,
    fetched: dict[str, bytes | None],
    world: World,
    stats: RunStats,
) -> None:
    """The save step: bytes from the source, never from an origin."""
    slot, target, source = planned.slot, planned.target, planned.source
    key = (item.id, slot.art, slot.index)
    data: bytes | None
    match source:
        case Web(url=url):
            if url not in fetched:
                raise SaveWouldFetch(f"{slot} needs {url}, which was not fetched")
            data = fetched[url]
            if data is None:  # not modified
                return
        case Memory(data=data):
            pass
        case Cache(url=url):
            if world.cache.get(url) is not CacheState.ORIGINAL:
                raise SaveWouldFetch(f"{slot}: cache has no original for {url}")
            data = original(url)
        case LocalFile(path=path):
            if not path.is_file():
                raise SaveWouldFetch(f"{slot}: kept file {path} is gone")
            return
        case Remove(path=path):
            path.unlink()
            world.records.pop(key, None)
            stats.removes += 1
            return
        case Nothing():
            if slot.url is None:
                world.records.pop(key, None)
            return
    assert slot.url is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    stats.writes += 1
    world.records[key] = Recorded(slot.url, hashlib.sha256(data).hexdigest(), etag(data))


def check_plan(plan: ItemPlan, world: World, refresh: bool = False) -> None:
    """Invariants 1 and 8 and the resolver's safety rules, for a whole item plan."""
    item = plan.item
    root = os.path.realpath(world.library)
    assert plan.web == tuple(p for p in plan.slots if isinstance(p.source, Web))
    assert plan.urls == frozenset(p.source.url for p in plan.web if isinstance(p.source, Web))
    for planned in plan.slots:
        state = world.state(item, planned, refresh)
        assert resolve(planned.slot, state) == planned.source
        assert needs_download(planned.slot, state) == isinstance(planned.source, Web)
        assert os.path.realpath(planned.target).startswith(root + os.sep)
        assert planned.target == target_path(
            world.library, item, planned.slot.art, planned.slot.index
        )
        check_source(planned.slot, state, planned.source)
    planned_keys = [p.slot.key for p in plan.slots] + [e.slot.key for e in plan.errors]
    assert len(planned_keys) == len(set(planned_keys)), "a slot was planned twice"
    assert {s.key for s in item.slots} <= set(planned_keys), "a manifest slot was not planned"


def check_source(slot: ArtSlot, state: SlotState, source: Source) -> None:
    """What each source may mean; none of them leaves the save step a reason to fetch."""
    rec = state.recorded
    matches = state.file_exists and rec is not None and rec.url == slot.url
    match source:
        case Web(url=url, etag=tag, last_modified=lm):
            assert url == slot.url
            if tag is not None or lm is not None:
                assert state.refresh and matches and rec is not None
                assert (tag, lm) == (rec.etag, rec.last_modified)
        case Memory(data=data):
            assert slot.url is not None and data and data == state.memory and not matches
        case Cache(url=url):
            assert url == slot.url and state.cache is CacheState.ORIGINAL and not matches
            assert not state.memory
        case LocalFile(path=path):
            assert matches and not state.refresh and path == state.target
        case Remove(path=path):
            assert slot.url is None and state.file_exists and path == state.target
        case Nothing():
            assert slot.url is None and not state.file_exists


# --- resolve: properties -------------------------------------------------------------

URLS = [f"https://img.example/{name}.jpg" for name in ("a", "b", "c")]
TARGET = Path("/lib/Movies/A/A-poster.jpg")

slots = st.builds(
    ArtSlot,
    art=st.sampled_from(list(ArtType)),
    index=st.integers(0, 3),
    url=st.none() | st.sampled_from(URLS),
    thumb=st.none() | st.sampled_from(URLS),
)
states = st.builds(
    SlotState,
    target=st.just(TARGET),
    file_exists=st.booleans(),
    recorded=st.none()
    | st.builds(
        Recorded,
        url=st.sampled_from(URLS),
        sha256=st.none() | st.just("ab" * 32),
        etag=st.none() | st.just('"e1"'),
        last_modified=st.none() | st.just("Wed, 21 Oct 2015 07:28:00 GMT"),
    ),
    cache=st.sampled_from(list(CacheState)),
    memory=st.none() | st.just(b"") | st.binary(min_size=1, max_size=8),
    refresh=st.booleans(),
)


@given(slots, states)
def test_needs_download_iff_resolve_is_web(slot: ArtSlot, state: SlotState) -> None:
    """Invariant 1."""
    assert needs_download(slot, state) == isinstance(resolve(slot, state), Web)


@given(slots, states)
def test_resolve_safety_rules(slot: ArtSlot, state: SlotState) -> None:
    source = resolve(slot, state)
    check_source(slot, state, source)
    if slot.url is not None:
        assert not isinstance(source, Remove | Nothing)
    assert resolve(slot, state) == source  # a pure function of its inputs


@given(slots, states)
def test_resolve_priority(slot: ArtSlot, state: SlotState) -> None:
    """Keep the recorded file, else memory, else cached original, else download."""
    if slot.url is None:
        return
    source = resolve(slot, state)
    rec = state.recorded
    if state.file_exists and rec is not None and rec.url == slot.url:
        assert isinstance(source, Web if state.refresh else LocalFile)
    elif state.memory:
        assert isinstance(source, Memory)
    elif state.cache is CacheState.ORIGINAL:
        assert isinstance(source, Cache)
    else:
        assert source == Web(slot.url)


def test_thumb_in_cache_never_satisfies_an_original() -> None:
    slot = ArtSlot(ArtType.FANART, 0, URLS[0], thumb=URLS[1])
    assert resolve(slot, SlotState(TARGET, cache=CacheState.THUMB)) == Web(URLS[0])
    assert resolve(slot, SlotState(TARGET, cache=CacheState.ORIGINAL)) == Cache(URLS[0])


def test_file_recorded_for_a_different_url_is_stale() -> None:
    slot = ArtSlot(ArtType.POSTER, 0, URLS[0])
    state = SlotState(TARGET, file_exists=True, recorded=Recorded(URLS[1], etag='"e"'))
    assert resolve(slot, state) == Web(URLS[0])  # no validators of another URL's file
    assert resolve(slot, SlotState(TARGET, True, Recorded(URLS[0]))) == LocalFile(TARGET)


def test_unrecorded_file_is_not_trusted() -> None:
    slot = ArtSlot(ArtType.POSTER, 0, URLS[0])
    assert resolve(slot, SlotState(TARGET, file_exists=True)) == Web(URLS[0])
    cached = SlotState(TARGET, file_exists=True, cache=CacheState.ORIGINAL)
    assert resolve(slot, cached) == Cache(URLS[0])


def test_refresh_is_a_conditional_get_with_the_recorded_validators() -> None:
    slot = ArtSlot(ArtType.POSTER, 0, URLS[0])
    rec = Recorded(URLS[0], "ab", '"e1"', "Wed, 21 Oct 2015 07:28:00 GMT")
    state = SlotState(TARGET, True, rec, CacheState.ORIGINAL, b"bytes", refresh=True)
    assert resolve(slot, state) == Web(URLS[0], '"e1"', "Wed, 21 Oct 2015 07:28:00 GMT")
    # refresh without a matching file is a plain download (or a cheaper source)
    assert resolve(slot, SlotState(TARGET, refresh=True)) == Web(URLS[0])


def test_null_removes_only_what_exists() -> None:
    slot = ArtSlot(ArtType.BANNER, 0, None)
    assert resolve(slot, SlotState(TARGET, file_exists=True)) == Remove(TARGET)
    gone = resolve(slot, SlotState(TARGET, recorded=Recorded(URLS[0])))
    assert isinstance(gone, Nothing) and str(TARGET) in gone.reason


def test_plans_survive_pickling(tmp_path: Path) -> None:
    """Plans and sources cross process pools and Dask workers."""
    item = movie({"poster": URLS[0]})
    sources: list[Source] = [
        Memory(b"x"),
        Cache(URLS[0]),
        LocalFile(TARGET),
        Web(URLS[0], '"e"', "lm"),
        Remove(TARGET),
        Nothing("gone"),
    ]
    slot = item.slots[0]
    plan = ItemPlan(
        item,
        tuple(PlannedSlot(slot, TARGET, s) for s in sources),
        (SlotError(slot, UnsafePathError("outside", "/x")),),
    )
    back = pickle.loads(pickle.dumps(plan))
    assert back.slots == plan.slots and back.item == item
    assert str(back.errors[0].error) == "outside" and back.errors[0].error.args == ("outside", "/x")
    state = SlotState(TARGET, True, Recorded(URLS[0], "ab", '"e"'), CacheState.THUMB, b"m", True)
    assert pickle.loads(pickle.dumps(state)) == state


def test_memory_source_does_not_print_its_bytes() -> None:
    assert "x" * 50 not in repr(Memory(b"x" * 1000))


def test_save_step_has_no_way_to_fetch() -> None:
    """plan.py imports nothing that speaks HTTP; every source but Web is self-sufficient."""
    tree = ast.parse(inspect.getsource(artpipe.plan))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {
        "__future__",
        "artpipe",
        "collections",
        "dataclasses",
        "enum",
        "pathlib",
        "typing",
    }


# --- plan_item -----------------------------------------------------------------------


MOVIE_PATH = "Movies/Alien (1979)/Alien (1979).mkv"


def movie(art: dict[str, Any], *, item_id: str = "tt0078748") -> Item:
    return parse_item({"id": item_id, "type": "movie", "path": MOVIE_PATH, "art": art}, line=1)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path / "lib")


def test_plan_item_builds_state_from_facts(world: World) -> None:
    item = movie({"poster": URLS[0], "fanart": URLS[1], "banner": None, "keyart": URLS[2]})
    poster = target_path(world.library, item, ArtType.POSTER)
    poster.parent.mkdir(parents=True)
    poster.write_bytes(original(URLS[0]))
    world.records[(item.id, ArtType.POSTER, 0)] = Recorded(URLS[0])
    world.cache[URLS[1]] = CacheState.ORIGINAL
    world.mem[URLS[2]] = b"png bytes"
    plan = plan_item(item, world.library, world)
    by_art = {p.slot.art: p.source for p in plan.slots}
    assert by_art == {
        ArtType.POSTER: LocalFile(poster),
        ArtType.FANART: Cache(URLS[1]),
        ArtType.BANNER: by_art[ArtType.BANNER],
        ArtType.KEYART: Memory(b"png bytes"),
    }
    assert isinstance(by_art[ArtType.BANNER], Nothing)
    assert plan.web == () and plan.urls == frozenset() and plan.errors == ()
    check_plan(plan, world)


def test_plan_urls_are_the_distinct_fetch_urls(world: World) -> None:
    item = movie({"poster": URLS[0], "keyart": URLS[0], "fanart": URLS[1]})
    world.cache[URLS[1]] = CacheState.ORIGINAL
    plan = plan_item(item, world.library, world)
    assert [p.slot.art for p in plan.web] == [ArtType.POSTER, ArtType.KEYART]
    assert plan.urls == frozenset({URLS[0]})
    stats = simulate_run(plan, world)
    assert stats.requests == Counter({URLS[0]: 1})


def test_unsafe_paths_become_slot_errors_not_exceptions(world: World) -> None:
    world.library.mkdir(parents=True)
    (world.library / "escape").symlink_to(world.library.parent)
    item = Item(
        "x", ContentType.TVSHOW, "escape/Show", slots=(ArtSlot(ArtType.POSTER, 0, URLS[0]),)
    )
    plan = plan_item(item, world.library, world)
    assert plan.slots == ()
    assert [type(e.error) for e in plan.errors] == [UnsafePathError]
    assert plan.errors[0].slot == item.slots[0]
    # a list on an unsafe path: one error per entry, or one for the list if it has none
    listed = Item(
        "x",
        ContentType.TVSHOW,
        "escape/Show",
        slots=(ArtSlot(ArtType.EXTRAFANART, 1, URLS[0]),),
        lists=frozenset({ArtType.EXTRAFANART, ArtType.EXTRATHUMB}),
    )
    plan = plan_item(listed, world.library, world)
    assert plan.slots == ()
    assert sorted(e.slot.key for e in plan.errors) == [("extrafanart", 1), ("extrathumb", 1)]
    assert all(isinstance(e.error, UnsafePathError) for e in plan.errors)


def test_art_the_type_cannot_have_is_a_slot_error(world: World) -> None:
    episode = Item(
        "e",
        ContentType.EPISODE,
        "TV/S/e.mkv",
        slots=(ArtSlot(ArtType.THUMB, 0, URLS[0]), ArtSlot(ArtType.POSTER, 0, URLS[1])),
    )
    plan = plan_item(episode, world.library, world)
    assert [p.slot.art for p in plan.slots] == [ArtType.THUMB]
    assert [e.slot.art for e in plan.errors] == [ArtType.POSTER]
    assert "cannot have" in str(plan.errors[0].error)


def test_refresh_turns_kept_files_into_conditional_gets(world: World) -> None:
    item = movie({"poster": URLS[0], "extrafanart": [URLS[1]]})
    simulate_run(plan_item(item, world.library, world), world)
    plan = plan_item(item, world.library, world, refresh=True)
    check_plan(plan, world, refresh=True)
    assert len(plan.web) == 2
    assert all(isinstance(p.source, Web) and p.source.etag for p in plan.web)
    stats = simulate_run(plan, world)
    assert stats.writes == 0 and stats.not_modified == 2


# --- the seed's three scenarios ------------------------------------------------------------


def test_scenario1_recorded_path_whose_file_is_gone_is_fetched_in_the_download_phase(
    world: World,
) -> None:
    """NeedsDownload said no (LocalFilePath set), LoadAndCache found no file and downloaded."""
    item = movie({"banner": URLS[0]})
    world.records[(item.id, ArtType.BANNER, 0)] = Recorded(URLS[0], "ab" * 32, '"e"')
    plan = plan_item(item, world.library, world)
    assert [p.source for p in plan.web] == [Web(URLS[0])]  # no validators for a missing file
    stats = simulate_run(plan, world)  # raises SaveWouldFetch if save had to download
    assert stats.requests == Counter({URLS[0]: 1}) and stats.writes == 1
    assert plan_item(item, world.library, world).web == ()


@pytest.mark.parametrize(
    "setup",
    ["memory-disposed", "thumb-only-cache", "cache-for-other-url", "stale-file", "unrecorded-file"],
)
def test_scenario2_disposed_memory_or_stale_cache_is_fetched_in_the_download_phase(
    world: World, setup: str
) -> None:
    """An image skipped by the download list because of memory or cache that did not hold up."""
    item = movie({"clearart": URLS[0]})
    target = target_path(world.library, item, ArtType.CLEARART)
    if setup == "memory-disposed":
        world.mem[URLS[0]] = b""
    elif setup == "thumb-only-cache":
        world.cache[URLS[0]] = CacheState.THUMB
    elif setup == "cache-for-other-url":
        world.cache[URLS[1]] = CacheState.ORIGINAL
    else:
        target.parent.mkdir(parents=True)
        target.write_bytes(b"old")
        if setup == "stale-file":
            world.records[(item.id, ArtType.CLEARART, 0)] = Recorded(URLS[1])
    plan = plan_item(item, world.library, world)
    check_plan(plan, world)
    assert [p.source for p in plan.web] == [Web(URLS[0])]
    simulate_run(plan, world)
    assert target.read_bytes() == original(URLS[0])
    assert plan_item(item, world.library, world).web == ()


@pytest.mark.parametrize("art", [ArtType.EXTRAFANART, ArtType.EXTRATHUMB])
def test_scenario3_extrafanart_and_extrathumb_are_planned_like_any_other_slot(
    world: World, art: ArtType
) -> None:
    """Extra* went through their own loader in the seed and downloaded inside the save."""
    item = movie({"poster": URLS[0], art.value: URLS})
    plan = plan_item(item, world.library, world)
    assert {(p.slot.art, p.slot.index) for p in plan.web} == {(ArtType.POSTER, 0)} | {
        (art, i) for i in (1, 2, 3)
    }
    stats = simulate_run(plan, world)
    assert sum(stats.requests.values()) == 3  # URLS[0] is shared by poster and entry 1
    assert list_indexes_on_disk(world.library, item, art) == [1, 2, 3]
    # the list shrinks: surplus numbered files are removed, the rest kept
    shorter = movie({art.value: URLS[:1]})
    plan = plan_item(shorter, world.library, world)
    check_plan(plan, world)
    assert {(p.slot.index, type(p.source)) for p in plan.slots} == {
        (1, LocalFile),
        (2, Remove),
        (3, Remove),
    }
    simulate_run(plan, world)
    assert list_indexes_on_disk(world.library, item, art) == [1]
    # null removes the rest; an absent key would have left them alone
    untouched = plan_item(movie({"poster": URLS[0]}), world.library, world)
    assert [p.slot.art for p in untouched.slots] == [ArtType.POSTER]
    simulate_run(plan_item(movie({art.value: None}), world.library, world), world)
    assert list_indexes_on_disk(world.library, item, art) == []
    assert not list(world.recorded_indexes(item, art))


def test_surplus_found_only_on_disk_or_only_in_the_store_is_removed(world: World) -> None:
    item = movie({"extrafanart": [URLS[0]]})
    simulate_run(plan_item(item, world.library, world), world)
    on_disk_only = target_path(world.library, item, ArtType.EXTRAFANART, 4)
    on_disk_only.write_bytes(b"left by another tool")
    world.records[(item.id, ArtType.EXTRAFANART, 2)] = Recorded(URLS[1])  # file deleted by hand
    plan = plan_item(item, world.library, world)
    check_plan(plan, world)
    by_index = {p.slot.index: p.source for p in plan.slots}
    assert set(by_index) == {1, 2, 4}
    assert isinstance(by_index[1], LocalFile)
    assert isinstance(by_index[2], Nothing)  # recorded, file already gone: forget it
    assert by_index[4] == Remove(on_disk_only)
    simulate_run(plan, world)
    assert not on_disk_only.exists()
    assert sorted(world.recorded_indexes(item, ArtType.EXTRAFANART)) == [1]


# --- invariant 4 as a property -----------------------------------------------------------

SINGLE = [ArtType.POSTER, ArtType.FANART, ArtType.CLEARLOGO, ArtType.BANNER]
LISTS = [ArtType.EXTRAFANART, ArtType.EXTRATHUMB]
url_values = st.sampled_from(URLS)
art_values = st.fixed_dictionaries(
    {},
    optional={
        **{a.value: st.none() | url_values for a in SINGLE},
        **{a.value: st.none() | st.lists(url_values, max_size=4) for a in LISTS},
    },
)
slot_keys = st.sampled_from([(a, 0) for a in SINGLE] + [(a, i) for a in LISTS for i in range(1, 6)])


@given(
    art=art_values,
    files=st.dictionaries(slot_keys, st.none() | url_values, max_size=6),
    records=st.dictionaries(slot_keys, url_values, max_size=6),
    cache=st.dictionaries(url_values, st.sampled_from(list(CacheState))),
    memory=st.dictionaries(url_values, st.booleans()),  # False: a disposed (empty) stream
)
def test_second_plan_after_a_run_has_nothing_to_do(
    art: dict[str, Any],
    files: dict[tuple[ArtType, int], str | None],
    records: dict[tuple[ArtType, int], str],
    cache: dict[str, CacheState],
    memory: dict[str, bool],
) -> None:
    """Invariant 4, from any starting library, store, cache and memory."""
    with tempfile.TemporaryDirectory() as tmp:
        mem = {url: original(url) if alive else b"" for url, alive in memory.items()}
        world = World(Path(tmp) / "lib", cache=dict(cache), mem=mem)
        item = movie(art)
        for (a, i), url in files.items():
            path = target_path(world.library, item, a, i)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(original(url) if url else b"junk")
        for (a, i), url in records.items():
            world.records[(item.id, a, i)] = Recorded(url)
        first = plan_item(item, world.library, world)
        check_plan(first, world)
        simulate_run(first, world)
        for slot in item.slots:
            path = target_path(world.library, item, slot.art, slot.index)
            if slot.url is None:
                assert not path.exists()
            else:
                assert path.read_bytes() == original(slot.url)
        for a in item.lists:
            keep = sum(1 for s in item.slots if s.art is a)
            assert list_indexes_on_disk(world.library, item, a) == list(range(1, keep + 1))
        second = plan_item(item, world.library, world)
        check_plan(second, world)
        assert second.web == ()
        assert all(isinstance(p.source, LocalFile | Nothing) for p in second.slots)
        stats = simulate_run(second, world)
        assert (sum(stats.requests.values()), stats.writes, stats.removes) == (0, 0, 0)
