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

A library file artpipe wrote may have been edited, replaced or truncated by
someone else since. ``observe`` notices that cheaply (a stat against the
recorded size and mtime; a hash only when they disagree), the state carries
it, and ``resolve`` alone decides what it means: restore what the manifest
asks for, or — with ``keep_changed`` — leave the file alone. Either way the
source says so (``changed``), so the report can. docs/changed-files.md has
the rule.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, TypeAlias

from artpipe import naming, redact
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
    "OnDisk",
    "PlannedSlot",
    "Recorded",
    "Refused",
    "Remove",
    "SlotError",
    "SlotState",
    "Source",
    "Web",
    "needs_download",
    "observe",
    "plan_item",
    "resolve",
    "slot_state",
]


# --- Sources: where a slot's bytes come from ---------------------------------


# ``changed`` on a source means the library file was changed outside artpipe:
# on Memory, Cache and Web the new bytes replace it; on LocalFile it is kept.


@dataclass(frozen=True, slots=True)
class Memory:
    """Bytes already in hand (e.g. passed by an API caller); written as they are."""

    data: bytes = field(repr=False)
    changed: bool = False


@dataclass(frozen=True, slots=True)
class Cache:
    """The on-disk cache holds the *original* for ``url``."""

    url: str
    changed: bool = False


@dataclass(frozen=True, slots=True)
class LocalFile:
    """Keep the library file: the one recorded for the wanted URL, or a changed one
    that ``keep_changed`` protects (``changed``)."""

    path: Path
    changed: bool = False


@dataclass(frozen=True, slots=True)
class Web:
    """Download ``url`` (always the original). With validators it is a conditional GET."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    changed: bool = False


@dataclass(frozen=True, slots=True)
class Refused:
    """Fail again with the old error: this URL's image was refused by a work limit (too
    many pixels or JPEG scans) last run, and the same URL serves the same refusal; decoding
    it is what the limit exists to avoid. ``--refresh`` or a new URL tries again."""

    url: str
    error: str


@dataclass(frozen=True, slots=True)
class Remove:
    """Delete the library file (manifest null, or a list entry past the new end)."""

    path: Path


@dataclass(frozen=True, slots=True)
class Nothing:
    """Nothing to do (a removal whose file is already gone)."""

    reason: str


Source: TypeAlias = Memory | Cache | LocalFile | Web | Refused | Remove | Nothing


# --- What is known about one slot -----------------------------------------------


class CacheState(StrEnum):
    """What the on-disk cache holds for the wanted URL."""

    NONE = "none"
    THUMB = "thumb"  # a preview only: never a substitute for the original
    ORIGINAL = "original"


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the store remembers about the file it last wrote for a slot.

    ``size`` and ``mtime_ns`` are the file's stat right after artpipe wrote
    it; ``sha256`` its content. None where the store does not know (a row
    from before sizes and mtimes were recorded).
    """

    url: str
    sha256: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True, slots=True)
class OnDisk:
    """The library file as found: its stat, and its hash where the stat was not enough.

    ``sha256`` is only computed (by ``observe``) when the size is the
    recorded one but the mtime is not, so an untouched library costs one
    stat per slot.
    """

    size: int
    mtime_ns: int
    sha256: str | None = None

    def is_as_recorded(self, recorded: Recorded) -> bool:
        """The file still holds what artpipe wrote, as far as the facts can tell.

        Same size and mtime as recorded: yes (the cheap check). Otherwise only
        a matching hash says yes — a record with nothing to compare cannot
        vouch for the file.
        """
        if recorded.size is not None and recorded.mtime_ns is not None:
            if (self.size, self.mtime_ns) == (recorded.size, recorded.mtime_ns):
                return True
        return self.sha256 is not None and self.sha256 == recorded.sha256


@dataclass(frozen=True, slots=True)
class SlotState:
    """Everything ``resolve`` may look at, gathered before it is called."""

    target: Path
    on_disk: OnDisk | None = None
    recorded: Recorded | None = None
    cache: CacheState = CacheState.NONE
    memory: bytes | None = field(default=None, repr=False)
    refresh: bool = False
    keep_changed: bool = False
    refused: str | None = None  # the error this URL was refused with last run (a work limit)

    @property
    def file_exists(self) -> bool:
        return self.on_disk is not None

    @property
    def changed(self) -> bool:
        """artpipe wrote this file (the store has a record) and it is no longer what it wrote.

        A file the store does not know is not "changed": artpipe never vouched for it.
        """
        return (
            self.on_disk is not None
            and self.recorded is not None
            and not self.on_disk.is_as_recorded(self.recorded)
        )


def resolve(slot: ArtSlot, state: SlotState) -> Source:
    """Decide where ``slot``'s bytes come from. The only such decision in artpipe.

    - the file was changed outside artpipe and ``keep_changed`` is set: keep
      it, whatever the manifest asks (``LocalFile(changed=True)``);
    - ``url`` None: remove the file if it exists, else nothing.
    - the file exists, is still what artpipe wrote, *and* the store recorded
      it for this very URL: keep it (with ``refresh``: a conditional GET with
      the recorded validators);
    - the store remembers this very URL refused by a work limit (pixels, JPEG
      scans) and ``refresh`` is off: fail with that error, fetching nothing;
    - bytes in memory: use them (empty bytes are no bytes — a disposed stream);
    - the cache holds the original: use it (a cached thumb does not count);
    - otherwise download the original.
    A source that overwrites a changed file says ``changed=True``.

    A recorded file that is gone or changed, a file recorded for another URL
    and a file the store does not know are never kept by default: keeping
    them is how a save phase ends up either writing stale art or fetching on
    its own. A changed file is never revalidated: the recorded validators
    describe the bytes artpipe wrote, not the ones on disk.
    """
    changed = state.changed
    if changed and state.keep_changed:
        return LocalFile(state.target, changed=True)
    if slot.url is None:
        if state.file_exists:
            return Remove(state.target)
        return Nothing(f"{state.target} is already absent")
    recorded = state.recorded
    # the store keeps URLs with their secrets redacted (artpipe.redact); the manifest's is clear
    if (not changed and state.file_exists and recorded is not None
            and redact.matches(recorded.url, slot.url)):
        if state.refresh:
            return Web(slot.url, recorded.etag, recorded.last_modified)
        return LocalFile(state.target)
    if state.refused is not None and not state.refresh:
        return Refused(slot.url, state.refused)
    if state.memory:
        return Memory(state.memory, changed=changed)
    if state.cache is CacheState.ORIGINAL:
        return Cache(slot.url, changed=changed)
    return Web(slot.url, changed=changed)


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

    def refused(self, item: Item, art: ArtType, index: int, url: str) -> str | None:
        """The error the last run refused ``url`` with for this slot (a work limit), if any."""
        ...

    def on_disk(self, path: Path, recorded: Recorded | None) -> OnDisk | None:
        """The file at ``path`` as ``observe`` sees it (None: no regular file)."""
        ...


def observe(path: Path, recorded: Recorded | None) -> OnDisk | None:
    """Stat the library file; hash it only when the stat cannot settle it.

    The hash is needed only when the size is the recorded one but the mtime
    is not (or is unknown): a different size already means different bytes,
    and a matching size and mtime is taken as "untouched". A file that
    cannot be read is reported without a hash, so it does not pass as
    artpipe's own.
    """
    try:
        st = os.stat(path)
    except OSError:  # absent, or not reachable: a write there will say why
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    found = OnDisk(st.st_size, st.st_mtime_ns)
    if recorded is None or recorded.sha256 is None or found.is_as_recorded(recorded):
        return found
    if recorded.size is not None and recorded.size != st.st_size:
        return found
    try:
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return found
    return OnDisk(st.st_size, st.st_mtime_ns, digest)


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


def slot_state(
    item: Item,
    slot: ArtSlot,
    target: Path,
    facts: Facts,
    *,
    refresh: bool = False,
    keep_changed: bool = False,
) -> SlotState:
    """Gather what ``resolve`` needs for one slot from the facts."""
    url = slot.url
    recorded = facts.recorded(item, slot.art, slot.index)
    return SlotState(
        target=target,
        on_disk=facts.on_disk(target, recorded),
        recorded=recorded,
        cache=facts.cache_state(url) if url is not None else CacheState.NONE,
        memory=facts.memory(url) if url is not None else None,
        refresh=refresh,
        refused=facts.refused(item, slot.art, slot.index, url) if url is not None else None,
        keep_changed=keep_changed,
    )


def plan_item(
    item: Item,
    library: Path,
    facts: Facts,
    *,
    refresh: bool = False,
    layout: Layout | None = None,
    keep_changed: bool = False,
) -> ItemPlan:
    """Resolve every slot of ``item``, plus removals for list entries past the new end.

    Slots the manifest does not mention are left alone. For every list art the
    manifest gave (``item.lists``), numbered files beyond the new length that
    the store recorded get a removal slot; a numbered file artpipe never wrote
    (placed by hand, another tool's) is not artpipe's to delete, so it stays.
    An entry the manifest gave but could not use (``item.problems``) still
    counts, so its existing file is kept. Unsafe paths become ``SlotError``s; nothing here
    raises for a single bad slot. ``layout`` holds the run's naming choices;
    ``keep_changed`` keeps files changed outside artpipe (see ``resolve``).
    """
    planned: list[PlannedSlot] = []
    errors: list[SlotError] = []

    def add(slot: ArtSlot) -> None:
        try:
            target = naming.target_path(library, item, slot.art, slot.index, layout=layout)
        except ArtpipeError as exc:
            errors.append(SlotError(slot, exc))
            return
        state = slot_state(item, slot, target, facts, refresh=refresh, keep_changed=keep_changed)
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
        if not surplus and not any(e.slot.art is art for e in errors):
            try:  # a list on an unsafe path says so even when it has nothing to remove
                naming.target_path(library, item, art, keep + 1, layout=layout)
            except ArtpipeError as exc:
                errors.append(SlotError(ArtSlot(art, keep + 1, None), exc))
        for index in sorted(surplus):
            add(ArtSlot(art, index, None))

    return ItemPlan(item, tuple(planned), tuple(errors))
