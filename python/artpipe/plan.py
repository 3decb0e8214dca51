"""resolve(slot, state) -> Source: the only "does this need a download?".

In the reference failure (Ember's async image regression) "does this image
need a download?" and "load this image" were two functions with different
rules: an image whose recorded local path no longer existed, or whose memory
stream was gone, or which was only cached as a preview thumbnail, was skipped
by the parallel download phase and then silently downloaded again,
synchronously, inside the save phase. artpipe has one decision, ``resolve``.
``needs_download`` is *defined* as "resolve returned Web", the fetch phase
downloads exactly ``ItemPlan.web``, and every other Source carries what the
save step needs (bytes, a cache key, a path) so it never has a reason — or a
way — to fetch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, TypeAlias

from artpipe import naming
from artpipe.errors import ArtpipeError
from artpipe.models import ArtSlot, ArtType, Item, Layout

__all__ = [
    "Cache",
    "CacheState",
    "Facts",
    "ItemPlan",
    "LocalFile",
    "Memory",
    "Nothing",
    "PlannedSlot",
    "Recorded",
    "Remove",
    "SlotError",
    "SlotState",
    "Source",
    "Web",
    "needs_download",
    "plan_item",
    "resolve",
]


# --- Sources: where a slot's bytes come from ---------------------------------


@dataclass(frozen=True, slots=True)
class Memory:
    """Bytes already in hand (e.g. passed by an API caller); written as they are."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Cache:
    """The on-disk cache holds the *original* for ``url``."""

    url: str


@dataclass(frozen=True, slots=True)
class LocalFile:
    """The library file is the one recorded for the wanted URL: keep it."""

    path: Path


@dataclass(frozen=True, slots=True)
class Web:
    """Download ``url`` (always the original). With validators it is a conditional GET."""

    url: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class Remove:
    """Delete the library file (manifest null, or a list entry past the new end)."""

    path: Path


@dataclass(frozen=True, slots=True)
class Nothing:
    """Nothing to do (a removal whose file is already gone)."""

    reason: str


Source: TypeAlias = Memory | Cache | LocalFile | Web | Remove | Nothing


# --- What is known about one slot -----------------------------------------------


class CacheState(StrEnum):
    """What the on-disk cache holds for the wanted URL."""

    NONE = "none"
    THUMB = "thumb"  # a preview only: never a substitute for the original
    ORIGINAL = "original"


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the store remembers about the file it last wrote for a slot."""

    url: str
    sha256: str | None = None
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class SlotState:
    """Everything ``resolve`` may look at, gathered before it is called."""

    target: Path
    file_exists: bool = False
    recorded: Recorded | None = None
    cache: CacheState = CacheState.NONE
    memory: bytes | None = field(default=None, repr=False)
    refresh: bool = False


def resolve(slot: ArtSlot, state: SlotState) -> Source:
    """Decide where ``slot``'s bytes come from. The only such decision in artpipe.

    - ``url`` None: remove the file if it exists, else nothing.
    - the file exists *and* the store recorded it for this very URL: keep it
      (with ``refresh``: a conditional GET with the recorded validators);
    - bytes in memory: use them (empty bytes are no bytes — a disposed stream);
    - the cache holds the original: use it (a cached thumb does not count);
    - otherwise download the original.

    A recorded file that is gone, a file recorded for another URL and a file
    the store does not know are never kept: keeping them is how a save phase
    ends up either writing stale art or fetching on its own.
    """
    if slot.url is None:
        if state.file_exists:
            return Remove(state.target)
        return Nothing(f"{state.target} is already absent")
    recorded = state.recorded
    if state.file_exists and recorded is not None and recorded.url == slot.url:
        if state.refresh:
            return Web(slot.url, recorded.etag, recorded.last_modified)
        return LocalFile(state.target)
    if state.memory:
        return Memory(state.memory)
    if state.cache is CacheState.ORIGINAL:
        return Cache(slot.url)
    return Web(slot.url)


def needs_download(slot: ArtSlot, state: SlotState) -> bool:
    """True exactly when ``resolve`` says Web; deliberately no rule of its own."""
    return isinstance(resolve(slot, state), Web)


# --- Planning a whole item ----------------------------------------------------------


class Facts(Protocol):
    """Read-only view of the store, the cache and the filesystem for planning."""

    def recorded(self, item: Item, art: ArtType, index: int) -> Recorded | None: ...

    def recorded_indexes(self, item: Item, art: ArtType) -> Iterable[int]: ...

    def cache_state(self, url: str) -> CacheState: ...

    def memory(self, url: str) -> bytes | None: ...

    def file_exists(self, path: Path) -> bool: ...


@dataclass(frozen=True, slots=True)
class PlannedSlot:
    slot: ArtSlot
    target: Path
    source: Source


@dataclass(frozen=True, slots=True)
class SlotError:
    """A slot that cannot be planned (an unsafe path, art its type cannot have)."""

    slot: ArtSlot
    error: ArtpipeError


@dataclass(frozen=True, slots=True)
class ItemPlan:
    item: Item
    slots: tuple[PlannedSlot, ...]
    errors: tuple[SlotError, ...] = ()

    @property
    def web(self) -> tuple[PlannedSlot, ...]:
        """Exactly the slots whose source is Web: the fetch set."""
        return tuple(p for p in self.slots if isinstance(p.source, Web))

    @property
    def urls(self) -> frozenset[str]:
        """The distinct URLs of the fetch set (two slots may share one download)."""
        return frozenset(p.source.url for p in self.slots if isinstance(p.source, Web))


def plan_item(
    item: Item,
    library: Path,
    facts: Facts,
    *,
    refresh: bool = False,
    layout: Layout | None = None,
) -> ItemPlan:
    """Resolve every slot of ``item``, plus removals for list entries past the new end.

    Slots the manifest does not mention are left alone. For every list art the
    manifest gave (``item.lists``), numbered files beyond the new length that
    the store recorded or that exist on disk get a removal slot; an entry the
    manifest gave but could not use (``item.problems``) still counts, so its
    existing file is kept. Unsafe paths become ``SlotError``s; nothing here
    raises for a single bad slot. ``layout`` holds the run's naming choices.
    """
    planned: list[PlannedSlot] = []
    errors: list[SlotError] = []

    def add(slot: ArtSlot) -> None:
        try:
            target = naming.target_path(library, item, slot.art, slot.index, layout=layout)
        except ArtpipeError as exc:
            errors.append(SlotError(slot, exc))
            return
        url = slot.url
        state = SlotState(
            target=target,
            file_exists=facts.file_exists(target),
            recorded=facts.recorded(item, slot.art, slot.index),
            cache=facts.cache_state(url) if url is not None else CacheState.NONE,
            memory=facts.memory(url) if url is not None else None,
            refresh=refresh,
        )
        planned.append(PlannedSlot(slot, target, resolve(slot, state)))

    for slot in item.slots:
        add(slot)

    for art in sorted(item.lists):
        keep = max(
            [s.index for s in item.slots if s.art is art]
            + [p.index for p in item.problems if p.art == art.value],
            default=0,
        )
        surplus = {n for n in facts.recorded_indexes(item, art) if n > keep}
        try:
            on_disk = naming.list_indexes_on_disk(library, item, art, layout=layout)
            surplus.update(n for n in on_disk if n > keep)
        except ArtpipeError as exc:
            # already reported on the list's own entries when it has any
            if not any(e.slot.art is art for e in errors):
                errors.append(SlotError(ArtSlot(art, keep + 1, None), exc))
        for index in sorted(surplus):
            add(ArtSlot(art, index, None))

    return ItemPlan(item, tuple(planned), tuple(errors))
