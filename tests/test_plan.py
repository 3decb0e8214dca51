"""plan.py: one resolver, proven by properties and by the seed's three scenarios.

Invariants checked here (docs/contracts.md): 1 (needs_download ⇔ resolve is Web) and 4
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
- trusting the record without ``is_as_recorded`` (the file changed outside
  artpipe) fails ``test_a_file_changed_outside_artpipe_*``, invariant 4 and
  the state machine; ignoring ``keep_changed`` fails the same tests' kept
  variants;
- skipping the surplus removals in ``plan_item`` fails ``test_scenario3_*``,
  ``test_surplus_only_in_the_store_is_removed_never_a_file_artpipe_did_not_write``,
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
    OnDisk,
    PlannedSlot,
    Recorded,
    Remove,
    SlotError,
    SlotState,
    Source,
    Web,
    needs_download,
    observe,
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


def written(url: str, path: Path) -> Recorded:
    """The record artpipe keeps after writing ``path`` from ``url``: hash, size, mtime."""
    data = path.read_bytes()
    return Recorded(
        url, hashlib.sha256(data).hexdigest(), etag(data), None, len(data), path.stat().st_mtime_ns
    )


def change_outside_artpipe(path: Path, data: bytes) -> None:
    """Another program rewrites ``path``, later than artpipe did.

    The mtime is set past the old one explicitly: two writes within one tick
    of the kernel's coarse clock can share an mtime, which no real edit
    after a run does.
    """
    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(before + 10**9, before + 10**9))


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

    def refused(self, item: Item, art: ArtType, index: int, url: str) -> str | None:
        return None

    def on_disk(self, path: Path, recorded: Recorded | None) -> OnDisk | None:
        return observe(path, recorded)

    # helpers
    def state(
        self, item: Item, planned: PlannedSlot, refresh: bool = False, keep_changed: bool = False
    ) -> SlotState:
        """The SlotState plan_item must have built, rebuilt independently (always hashing)."""
        url = planned.slot.url
        path = planned.target
        on_disk = None
        if path.is_file():
            data = path.read_bytes()
            on_disk = OnDisk(len(data), path.stat().st_mtime_ns, hashlib.sha256(data).hexdigest())
        return SlotState(
            target=path,
            on_disk=on_disk,
            recorded=self.recorded(item, planned.slot.art, planned.slot.index),
            cache=self.cache_state(url) if url else CacheState.NONE,
            memory=self.memory(url) if url else None,
            refresh=refresh,
            keep_changed=keep_changed,
        )


@dataclass
class RunStats:
    requests: Counter[str] = field(default_factory=Counter)
    writes: int = 0
    removes: int = 0
    not_modified: int = 0
    replaced_changed: int = 0
    kept_changed: int = 0


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
        case LocalFile(path=path, changed=changed):
            if not path.is_file():
                raise SaveWouldFetch(f"{slot}: kept file {path} is gone")
            stats.kept_changed += changed
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
    stats.replaced_changed += source.changed
    world.records[key] = written(slot.url, target)


def check_plan(
    plan: ItemPlan, world: World, refresh: bool = False, keep_changed: bool = False
) -> None:
    """Invariants 1 and 8 and the resolver's safety rules, for a whole item plan."""
    item = plan.item
    root = os.path.realpath(world.library)
    assert plan.web == tuple(p for p in plan.slots if isinstance(p.source, Web))
    assert plan.urls == frozenset(p.source.url for p in plan.web if isinstance(p.source, Web))
    for planned in plan.slots:
        state = world.state(item, planned, refresh, keep_changed)
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
    # changed outside artpipe, by the definition docs/changed-files.md gives:
    # artpipe recorded the slot and the file holds other bytes than it wrote
    # (a file whose stat still matches the record counts as unchanged unhashed)
    disk = state.on_disk
    vouched = (
        disk is not None
        and rec is not None
        and (
            (rec.size, rec.mtime_ns) == (disk.size, disk.mtime_ns)
            or (disk.sha256 is not None and disk.sha256 == rec.sha256)
        )
    )
    changed = disk is not None and rec is not None and not vouched
    assert state.changed == changed
    matches = vouched and rec is not None and rec.url == slot.url
    if changed and state.keep_changed:
        assert source == LocalFile(state.target, changed=True)
        return
    match source:
        case Web(url=url, etag=tag, last_modified=lm, changed=flag):
            assert url == slot.url and flag == changed
            if tag is not None or lm is not None:
                assert state.refresh and matches and rec is not None
                assert (tag, lm) == (rec.etag, rec.last_modified)
        case Memory(data=data, changed=flag):
            assert slot.url is not None and data and data == state.memory and not matches
            assert flag == changed
        case Cache(url=url, changed=flag):
            assert url == slot.url and state.cache is CacheState.ORIGINAL and not matches
            assert not state.memory and flag == changed
        case LocalFile(path=path, changed=flag):
            assert matches and not state.refresh and path == state.target and not flag
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
# few sizes, mtimes and hashes, so the file and the record often agree (or half agree)
SHAS = ["ab" * 32, "cd" * 32]
states = st.builds(
    SlotState,
    target=st.just(TARGET),
    on_disk=st.none()
    | st.builds(
        OnDisk,
        size=st.sampled_from([3, 5]),
        mtime_ns=st.sampled_from([1, 2]),
        sha256=st.none() | st.sampled_from(SHAS),
    ),
    recorded=st.none()
    | st.builds(
        Recorded,
        url=st.sampled_from(URLS),
        sha256=st.none() | st.sampled_from(SHAS),
        etag=st.none() | st.just('"e1"'),
        last_modified=st.none() | st.just("Wed, 21 Oct 2015 07:28:00 GMT"),
        size=st.none() | st.sampled_from([3, 5]),
        mtime_ns=st.none() | st.sampled_from([1, 2]),
    ),
    cache=st.sampled_from(list(CacheState)),
    memory=st.none() | st.just(b"") | st.binary(min_size=1, max_size=8),
    refresh=st.booleans(),
    keep_changed=st.booleans(),
)
EXISTS = OnDisk(3, 1, "ab" * 32)  # a file that holds what Recorded(..., "ab" * 32) says


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
    """A protected changed file, else the recorded file, else memory, cache, download."""
    source = resolve(slot, state)
    rec = state.recorded
    if state.changed and state.keep_changed:
        assert source == LocalFile(TARGET, changed=True)
    elif slot.url is None:
        assert isinstance(source, Remove if state.file_exists else Nothing)
    elif not state.changed and state.file_exists and rec is not None and rec.url == slot.url:
        assert isinstance(source, Web if state.refresh else LocalFile)
    elif state.memory:
        assert isinstance(source, Memory)
    elif state.cache is CacheState.ORIGINAL:
        assert isinstance(source, Cache)
    else:
        assert source == Web(slot.url, changed=state.changed)


def test_thumb_in_cache_never_satisfies_an_original() -> None:
    slot = ArtSlot(ArtType.FANART, 0, URLS[0], thumb=URLS[1])
    assert resolve(slot, SlotState(TARGET, cache=CacheState.THUMB)) == Web(URLS[0])
    assert resolve(slot, SlotState(TARGET, cache=CacheState.ORIGINAL)) == Cache(URLS[0])


def test_file_recorded_for_a_different_url_is_stale() -> None:
    slot = ArtSlot(ArtType.POSTER, 0, URLS[0])
    state = SlotState(TARGET, EXISTS, recorded=Recorded(URLS[1], "ab" * 32, etag='"e"'))
    assert resolve(slot, state) == Web(URLS[0])  # no validators of another URL's file
    assert resolve(slot, SlotState(TARGET, EXISTS, Recorded(URLS[0], "ab" * 32))) == LocalFile(
        TARGET
    )


def test_unrecorded_file_is_not_trusted() -> None:
    slot = ArtSlot(ArtType.POSTER, 0, URLS[0])
    assert resolve(slot, SlotState(TARGET, EXISTS)) == Web(URLS[0])
    cached = SlotState(TARGET, EXISTS, cache=CacheState.ORIGINAL, keep_changed=True)
    assert resolve(slot, cached) == Cache(URLS[0])  # not artpipe's: not "changed" either


def test_refresh_is_a_conditional_get_with_the_recorded_validators() -> None:
    slot = ArtSlot(ArtType.POSTER, 0, URLS[0])
    rec = Recorded(URLS[0], "ab" * 32, '"e1"', "Wed, 21 Oct 2015 07:28:00 GMT")
    state = SlotState(TARGET, EXISTS, rec, CacheState.ORIGINAL, b"bytes", refresh=True)
    assert resolve(slot, state) == Web(URLS[0], '"e1"', "Wed, 21 Oct 2015 07:28:00 GMT")
    # refresh without a matching file is a plain download (or a cheaper source)
    assert resolve(slot, SlotState(TARGET, refresh=True)) == Web(URLS[0])


def test_null_removes_only_what_exists() -> None:
    slot = ArtSlot(ArtType.BANNER, 0, None)
    assert resolve(slot, SlotState(TARGET, EXISTS)) == Remove(TARGET)
    gone = resolve(slot, SlotState(TARGET, recorded=Recorded(URLS[0])))
    assert isinstance(gone, Nothing) and str(TARGET) in gone.reason


def test_plans_survive_pickling(tmp_path: Path) -> None:
    """Plans and sources cross process pools and Dask workers."""
    item = movie({"poster": URLS[0]})
    sources: list[Source] = [
        Memory(b"x", changed=True),
        Cache(URLS[0], changed=True),
        LocalFile(TARGET, changed=True),
        Web(URLS[0], '"e"', "lm", changed=True),
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
    rec = Recorded(URLS[0], "ab", '"e"', None, 3, 1)
    state = SlotState(TARGET, EXISTS, rec, CacheState.THUMB, b"m", True, True)
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
        "hashlib",
        "os",
        "pathlib",
        "stat",
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
    world.records[(item.id, ArtType.POSTER, 0)] = written(URLS[0], poster)
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
            world.records[(item.id, ArtType.CLEARART, 0)] = written(URLS[1], target)
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


def test_surplus_only_in_the_store_is_removed_never_a_file_artpipe_did_not_write(
        world: World) -> None:
    item = movie({"extrafanart": [URLS[0]]})
    simulate_run(plan_item(item, world.library, world), world)
    on_disk_only = target_path(world.library, item, ArtType.EXTRAFANART, 4)
    on_disk_only.write_bytes(b"left by another tool")
    world.records[(item.id, ArtType.EXTRAFANART, 2)] = Recorded(URLS[1])  # file deleted by hand
    plan = plan_item(item, world.library, world)
    check_plan(plan, world)
    by_index = {p.slot.index: p.source for p in plan.slots}
    assert set(by_index) == {1, 2}  # 4 was never artpipe's: not surplus, not removed
    assert isinstance(by_index[1], LocalFile)
    assert isinstance(by_index[2], Nothing)  # recorded, file already gone: forget it
    simulate_run(plan, world)
    assert on_disk_only.read_bytes() == b"left by another tool"
    assert sorted(world.recorded_indexes(item, ArtType.EXTRAFANART)) == [1]


# --- a file changed outside artpipe (docs/changed-files.md) ------------------------------

CHANGES = {
    "edited": lambda data: bytes(b ^ 0x20 for b in data),  # same size: only a hash tells
    "replaced": lambda data: b"saved over by an image editor",
    "truncated": lambda data: data[: len(data) // 2],
}


@pytest.mark.parametrize("keep_changed", [False, True], ids=["restore", "keep"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_file_changed_outside_artpipe_is_restored_or_kept(
    world: World, change: str, keep_changed: bool
) -> None:
    """The store says "written from URL U", the disk holds other bytes (issue #18's case).

    By default the manifest wins: the original comes back, and the run says it
    replaced a changed file. With keep_changed the file stays as it is, on
    this run and every later one, and the run says so each time.
    """
    item = movie({"poster": URLS[0], "extrafanart": [URLS[1], URLS[2]]})
    simulate_run(plan_item(item, world.library, world), world)
    poster = target_path(world.library, item, ArtType.POSTER)
    fanart2 = target_path(world.library, item, ArtType.EXTRAFANART, 2)
    for path in (poster, fanart2):
        change_outside_artpipe(path, CHANGES[change](path.read_bytes()))
    edited = {path: path.read_bytes() for path in (poster, fanart2)}
    # the list shrinks: the changed surplus entry is removed, or kept with the option
    shorter = movie({"poster": URLS[0], "extrafanart": [URLS[1]]})
    plan = plan_item(shorter, world.library, world, keep_changed=keep_changed)
    check_plan(plan, world, keep_changed=keep_changed)
    by_key = {p.slot.key: p.source for p in plan.slots}
    if keep_changed:
        assert by_key[("poster", 0)] == LocalFile(poster, changed=True)
        assert by_key[("extrafanart", 2)] == LocalFile(fanart2, changed=True)
        assert plan.web == ()
    else:
        assert by_key[("poster", 0)] == Cache(URLS[0], changed=True)  # the run cached it
        assert by_key[("extrafanart", 2)] == Remove(fanart2)
    assert by_key[("extrafanart", 1)] == LocalFile(
        target_path(world.library, item, ArtType.EXTRAFANART, 1)
    )
    stats = simulate_run(plan, world)
    assert (stats.replaced_changed, stats.kept_changed) == ((0, 2) if keep_changed else (1, 0))
    if keep_changed:
        assert {path: path.read_bytes() for path in edited} == edited
    else:
        assert poster.read_bytes() == original(URLS[0]) and not fanart2.exists()
    again = plan_item(shorter, world.library, world, keep_changed=keep_changed)
    check_plan(again, world, keep_changed=keep_changed)
    stats = simulate_run(again, world)
    assert (stats.writes, stats.removes, stats.replaced_changed) == (0, 0, 0)
    assert stats.kept_changed == (2 if keep_changed else 0)
    # the option only protects while it is given: without it the manifest wins again
    if keep_changed:
        stats = simulate_run(plan_item(shorter, world.library, world), world)
        assert (stats.replaced_changed, stats.removes) == (1, 1)
        assert poster.read_bytes() == original(URLS[0]) and not fanart2.exists()


@pytest.mark.parametrize("keep_changed", [False, True], ids=["restore", "keep"])
def test_a_touched_file_with_the_same_bytes_is_not_changed(
    world: World, keep_changed: bool
) -> None:
    """A new mtime alone (a backup restore, ``touch``) costs one hash, not a download."""
    item = movie({"poster": URLS[0]})
    simulate_run(plan_item(item, world.library, world), world)
    poster = target_path(world.library, item, ArtType.POSTER)
    change_outside_artpipe(poster, poster.read_bytes())
    plan = plan_item(item, world.library, world, keep_changed=keep_changed)
    check_plan(plan, world, keep_changed=keep_changed)
    assert [p.source for p in plan.slots] == [LocalFile(poster)]


def test_a_changed_file_is_downloaded_again_not_revalidated(world: World) -> None:
    """A 304 would keep the edited file: the recorded validators describe artpipe's bytes."""
    item = movie({"poster": URLS[0]})
    simulate_run(plan_item(item, world.library, world), world)
    poster = target_path(world.library, item, ArtType.POSTER)
    change_outside_artpipe(poster, b"edited")
    world.cache.clear()
    plan = plan_item(item, world.library, world, refresh=True)
    check_plan(plan, world, refresh=True)
    assert [p.source for p in plan.slots] == [Web(URLS[0], changed=True)]
    stats = simulate_run(plan, world)
    assert stats.not_modified == 0 and poster.read_bytes() == original(URLS[0])


def test_observe_hashes_only_when_the_stat_disagrees_in_mtime_alone(tmp_path: Path) -> None:
    """The cheap check: an untouched library costs a stat per slot, never a read."""
    path = tmp_path / "poster.jpg"
    path.write_bytes(b"artpipe wrote this")
    rec = written(URLS[0], path)
    assert observe(tmp_path / "absent.jpg", rec) is None
    assert observe(tmp_path, rec) is None  # a folder is not the file
    size, mtime = len(b"artpipe wrote this"), path.stat().st_mtime_ns
    assert observe(path, rec) == OnDisk(size, mtime)  # stat matches: no hash
    assert observe(path, None) == OnDisk(size, mtime)  # nothing to compare with
    change_outside_artpipe(path, b"someone else's")  # other size: no hash needed
    assert observe(path, rec) == OnDisk(len(b"someone else's"), path.stat().st_mtime_ns)
    change_outside_artpipe(path, b"artpipe wrote THIS")  # same size, new mtime: hashed
    found = observe(path, rec)
    assert found is not None and found.sha256 == hashlib.sha256(b"artpipe wrote THIS").hexdigest()
    assert not found.is_as_recorded(rec)
    change_outside_artpipe(path, b"artpipe wrote this")
    found = observe(path, rec)
    assert found is not None and found.is_as_recorded(rec)  # touched only


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
# what a library file holds: the original of a URL, or bytes no origin serves
CONTENTS = [*URLS, "junk"]


def content(key: str) -> bytes:
    return b"junk" if key == "junk" else original(key)


# a store row: the URL artpipe wrote the slot from, whether it knows what it wrote
# (False: a row that knows only its URL) and whether the file's mtime is still the
# recorded one. What artpipe wrote from a URL is that URL's original: the origins of
# this model never change (a changed origin is --refresh's business, not this test's)
records_of_writes = st.tuples(url_values, st.booleans(), st.booleans())


@given(
    art=art_values,
    files=st.dictionaries(slot_keys, st.sampled_from(CONTENTS), max_size=6),
    records=st.dictionaries(slot_keys, records_of_writes, max_size=6),
    cache=st.dictionaries(url_values, st.sampled_from(list(CacheState))),
    memory=st.dictionaries(url_values, st.booleans()),  # False: a disposed (empty) stream
    keep_changed=st.booleans(),
)
def test_second_plan_after_a_run_has_nothing_to_do(
    art: dict[str, Any],
    files: dict[tuple[ArtType, int], str],
    records: dict[tuple[ArtType, int], tuple[str, bool, bool]],
    cache: dict[str, CacheState],
    memory: dict[str, bool],
    keep_changed: bool,
) -> None:
    """Invariant 4, from any starting library, store, cache and memory, with either setting.

    A file the store recorded that holds other bytes than artpipe wrote (or a
    record that cannot tell) was changed outside artpipe: by default the run
    restores what the manifest asks; with keep_changed it stays as found.
    """
    with tempfile.TemporaryDirectory() as tmp:
        mem = {url: original(url) if alive else b"" for url, alive in memory.items()}
        world = World(Path(tmp) / "lib", cache=dict(cache), mem=mem)
        item = movie(art)
        for (a, i), key in files.items():
            path = target_path(world.library, item, a, i)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content(key))
        changed: dict[tuple[str, int], bytes] = {}
        for (a, i), (url, knows_bytes, same_mtime) in records.items():
            path = target_path(world.library, item, a, i)
            found = path.read_bytes() if path.is_file() else None
            data = original(url)
            if not knows_bytes:
                world.records[(item.id, a, i)] = Recorded(url)
            else:
                mtime = path.stat().st_mtime_ns if found is not None else None
                if mtime is not None and not (same_mtime and found == data):
                    mtime -= 10**9  # written before whatever changed it (or touched it)
                world.records[(item.id, a, i)] = Recorded(
                    url, hashlib.sha256(data).hexdigest(), etag(data), None, len(data), mtime
                )
            if found is not None and (not knows_bytes or found != data):
                changed[(a.value, i)] = found
        first = plan_item(item, world.library, world, keep_changed=keep_changed)
        check_plan(first, world, keep_changed=keep_changed)
        planned = {p.slot.key: p.slot.url for p in first.slots}
        kept = {k: v for k, v in changed.items() if k in planned} if keep_changed else {}
        stats = simulate_run(first, world)
        assert stats.kept_changed == len(kept)
        replaced = 0 if keep_changed else sum(planned.get(k) is not None for k in changed)
        assert stats.replaced_changed == replaced
        for slot in item.slots:
            path = target_path(world.library, item, slot.art, slot.index)
            if slot.key in kept:
                assert path.read_bytes() == kept[slot.key]
            elif slot.url is None:
                assert not path.exists()
            else:
                assert path.read_bytes() == original(slot.url)
        for a in item.lists:
            keep = sum(1 for s in item.slots if s.art is a)
            surplus = {i for (art_, i) in kept if art_ == a.value and i > keep}
            # a numbered file the store never recorded is not artpipe's to remove
            unowned = {i for (art_, i) in files if art_ is a and i > keep
                       and (art_, i) not in records}
            on_disk = list_indexes_on_disk(world.library, item, a)
            assert on_disk == sorted(set(range(1, keep + 1)) | surplus | unowned)
        second = plan_item(item, world.library, world, keep_changed=keep_changed)
        check_plan(second, world, keep_changed=keep_changed)
        assert second.web == ()
        assert all(isinstance(p.source, LocalFile | Nothing) for p in second.slots)
        stats = simulate_run(second, world)
        assert (sum(stats.requests.values()), stats.writes, stats.removes) == (0, 0, 0)
        assert (stats.kept_changed, stats.replaced_changed) == (len(kept), 0)
