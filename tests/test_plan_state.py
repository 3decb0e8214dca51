"""A state machine over what happens to a library between runs; invariants after every step.

Rules: set or change a URL (with or without a preview thumb), set a list,
shrink it, null an art, drop an art key, hand bytes in memory (or a disposed
empty stream), leave only a thumb in the cache, evict the cache, delete a
library file behind artpipe's back, edit, replace, truncate or touch one,
drop an unrecorded file on a target, switch ``keep_changed`` on or off, and
run. A run is simulated in memory (tests/test_plan.py: fetch exactly the Web
set, then a save step that only has the sources).

After every step: invariants 1 and 8 and the resolver's rules hold for the
whole item plan (``check_plan``). After every run: every wanted slot holds the
original of its URL, removed art is gone, no numbered file past a list's end
remains — except, with ``keep_changed``, files changed outside artpipe, which
hold exactly what they held (docs/changed-files.md) — each URL was requested
at most once, and a second plan fetches, removes and writes nothing
(invariant 4).

Teeth (checked by hand, 2026-11-25): with ``resolve`` letting a cached THUMB
count (``state.cache is not CacheState.NONE``) this machine fails within a
few examples (the save step finds no original; the file would hold a preview);
dropping the surplus loop in ``plan_item`` fails the shrink rule's check;
keeping a changed file recorded for the wanted URL, or ignoring
``keep_changed``, fails after an ``change_library_file_externally`` step.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from artpipe.manifest import parse_item
from artpipe.models import ArtType, ContentType, Item
from artpipe.naming import ALLOWED_ART, list_indexes_on_disk, target_path
from artpipe.plan import CacheState, LocalFile, Nothing, plan_item
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.test_plan import World, change_outside_artpipe, check_plan, original, simulate_run

URLS = [f"https://img.example/{n}.jpg" for n in "abcdef"]
PATHS = {
    ContentType.MOVIE: "Movies/Alien (1979)/Alien (1979).mkv",
    ContentType.TVSHOW: "TV/Firefly",
    ContentType.MOVIESET: "Sets/Alien",
    ContentType.SEASON: "TV/Firefly",
}
SINGLE = [ArtType.POSTER, ArtType.FANART, ArtType.CLEARLOGO, ArtType.THUMB]
LISTS = [ArtType.EXTRAFANART, ArtType.EXTRATHUMB]
urls = st.sampled_from(URLS)
CHANGES = {
    "edited": lambda data: bytes(b ^ 0x20 for b in data),  # same size: only a hash tells
    "replaced": lambda data: b"saved over by an image editor",
    "truncated": lambda data: data[: len(data) // 2],
    "touched": lambda data: data,  # same bytes, new mtime: not a change
}


class PlanMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="artpipe-plan-"))
        self.world = World(self.tmp / "lib")
        self.art: dict[str, Any] = {}
        self.ctype = ContentType.MOVIE
        self.keep_changed = False

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(ctype=st.sampled_from(list(PATHS)))
    def choose_item(self, ctype: ContentType) -> None:
        self.ctype = ctype

    def item(self) -> Item:
        obj = {"id": "x", "type": self.ctype.value, "path": PATHS[self.ctype], "art": self.art}
        if self.ctype is ContentType.SEASON:
            obj["season"] = 1
        return parse_item(obj, line=1)

    def lists_allowed(self) -> bool:
        return ArtType.EXTRAFANART in ALLOWED_ART[self.ctype]

    def files(self) -> list[Path]:
        return sorted(p for p in self.world.library.rglob("*") if p.is_file())

    # --- the manifest changes ---

    @rule(art=st.sampled_from(SINGLE), url=urls)
    def set_url(self, art: ArtType, url: str) -> None:
        self.art[art.value] = url

    @rule(art=st.sampled_from(SINGLE), url=urls, thumb=urls)
    def set_url_with_preview(self, art: ArtType, url: str, thumb: str) -> None:
        self.art[art.value] = {"url": url, "thumb": thumb}

    @precondition(lambda self: self.lists_allowed())
    @rule(art=st.sampled_from(LISTS), entries=st.lists(urls, max_size=5))
    def set_list(self, art: ArtType, entries: list[str]) -> None:
        self.art[art.value] = entries

    @precondition(lambda self: any(isinstance(self.art.get(a.value), list) for a in LISTS))
    @rule(art=st.sampled_from(LISTS), keep=st.integers(0, 4))
    def shrink_list(self, art: ArtType, keep: int) -> None:
        entries = self.art.get(art.value)
        if isinstance(entries, list):
            self.art[art.value] = entries[: min(keep, max(len(entries) - 1, 0))]

    @rule(art=st.sampled_from(SINGLE + LISTS))
    def set_null(self, art: ArtType) -> None:
        if art in ALLOWED_ART[self.ctype]:
            self.art[art.value] = None

    @rule(art=st.sampled_from(SINGLE + LISTS))
    def drop_key(self, art: ArtType) -> None:
        self.art.pop(art.value, None)

    # --- the world changes behind artpipe's back ---

    @rule(url=urls, alive=st.booleans())
    def hand_bytes_in_memory(self, url: str, alive: bool) -> None:
        self.world.mem[url] = original(url) if alive else b""

    @rule(url=urls)
    def drop_memory(self, url: str) -> None:
        self.world.mem.pop(url, None)

    @rule(url=urls)
    def thumb_only_in_cache(self, url: str) -> None:
        self.world.cache[url] = CacheState.THUMB

    @rule(url=urls)
    def evict_cache(self, url: str) -> None:
        self.world.cache.pop(url, None)

    @precondition(lambda self: self.world.library.exists())
    @rule(pick=st.integers(0, 30))
    def delete_library_file_externally(self, pick: int) -> None:
        files = self.files()
        if files:
            files[pick % len(files)].unlink()

    @precondition(lambda self: self.world.library.exists())
    @rule(pick=st.integers(0, 30), change=st.sampled_from(sorted(CHANGES)))
    def change_library_file_externally(self, pick: int, change: str) -> None:
        files = self.files()
        if files:
            path = files[pick % len(files)]
            change_outside_artpipe(path, CHANGES[change](path.read_bytes()))

    @rule(keep=st.booleans())
    def set_keep_changed(self, keep: bool) -> None:
        self.keep_changed = keep

    @rule(art=st.sampled_from(SINGLE + LISTS), index=st.integers(1, 6))
    def drop_unrecorded_file(self, art: ArtType, index: int) -> None:
        if art not in ALLOWED_ART[self.ctype]:
            return
        item = self.item()
        path = target_path(self.world.library, item, art, index if art.is_list else 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not ours")
        self.world.records.pop((item.id, art, index if art.is_list else 0), None)

    # --- run ---

    @rule()
    def run(self) -> None:
        item = self.item()
        keep_changed = self.keep_changed
        plan = plan_item(item, self.world.library, self.world, keep_changed=keep_changed)
        check_plan(plan, self.world, keep_changed=keep_changed)
        # what was changed outside artpipe, by the full hash (check_plan showed that
        # the plan's cheaper view agrees): with keep_changed, these must not move
        changed = {
            p.slot.key: p.target.read_bytes()
            for p in plan.slots
            if self.world.state(item, p).changed
        }
        kept = changed if keep_changed else {}
        # numbered files artpipe never recorded are not its to remove as surplus
        unowned = {
            art: set(list_indexes_on_disk(self.world.library, item, art))
            - set(self.world.recorded_indexes(item, art))
            for art in item.lists
        }
        stats = simulate_run(plan, self.world)
        assert all(n == 1 for n in stats.requests.values()), "a URL was fetched twice"
        assert set(stats.requests) == plan.urls
        assert stats.kept_changed == len(kept)
        wanted = {p.slot.key for p in plan.slots if p.slot.url is not None}
        replaced = 0 if keep_changed else len(wanted & set(changed))
        assert stats.replaced_changed == replaced
        for slot in item.slots:
            path = target_path(self.world.library, item, slot.art, slot.index)
            if slot.key in kept:
                assert path.read_bytes() == kept[slot.key], "a kept file was touched"
            elif slot.url is None:
                assert not path.exists()
            else:
                assert path.read_bytes() == original(slot.url), "not the original"
                assert self.world.recorded(item, slot.art, slot.index) is not None
        for art in item.lists:
            keep = sum(1 for s in item.slots if s.art is art)
            surplus = {i for (a, i) in kept if a == art.value and i > keep}
            surplus |= {i for i in unowned[art] if i > keep}
            on_disk = list_indexes_on_disk(self.world.library, item, art)
            assert on_disk == sorted(set(range(1, keep + 1)) | surplus)
            assert all(i <= keep or i in surplus for i in self.world.recorded_indexes(item, art))
        again = plan_item(item, self.world.library, self.world, keep_changed=keep_changed)
        check_plan(again, self.world, keep_changed=keep_changed)
        assert again.web == ()
        assert all(isinstance(p.source, LocalFile | Nothing) for p in again.slots)
        stats = simulate_run(again, self.world)
        assert (sum(stats.requests.values()), stats.writes, stats.removes) == (0, 0, 0)
        assert (stats.kept_changed, stats.replaced_changed) == (len(kept), 0)

    @invariant()
    def plan_is_consistent(self) -> None:
        """Invariants 1 and 8 for the plan the current state would produce, either setting."""
        for keep_changed in (False, True):
            plan = plan_item(
                self.item(), self.world.library, self.world, keep_changed=keep_changed
            )
            check_plan(plan, self.world, keep_changed=keep_changed)


TestPlanMachine = PlanMachine.TestCase
