"""Which item owns a library file when two items' targets collide.

Two items can name the same file: two video files of one movie in one
folder (``A.mkv`` and ``A.avi`` both give ``A-poster.jpg``), or two movie sets
whose titles differ only in characters Kodi replaces. Left alone they fight on
every run — each rewrites or removes the other's art while the report says
"saved" — so the run settles it once, while planning: **the first in manifest
order wins**. A later slot whose target an earlier one holds fails, naming
both. (A line repeating an id is refused earlier, by the driver.)

Items are planned concurrently, so claims are made in turns: an item takes a
ticket when its worker picks it up (queue order is manifest order) and claims
its targets only after every earlier ticket has claimed or given up. Memory is
bounded: the most recent ``remembered`` targets are kept, so two
colliding lines further apart than that (in a manifest not sorted by folder)
are not caught. On a Dask cluster each shard settles its own items.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

from artpipe.models import ArtSlot, Item
from artpipe.plan import ItemPlan

__all__ = ["Claims", "Lost"]

REMEMBERED = 65_536


@dataclass(frozen=True, slots=True)
class _Holder:
    ticket: int
    item: str
    label: str
    line: int
    path: str
    what: str  # "poster", "fanart #2"

    def named(self) -> str:
        where = f"line {self.line}, " if self.line else ""
        return f'"{self.label}" {self.what} ({where}id {self.item!r})'


@dataclass(frozen=True, slots=True)
class Lost:
    """A slot that lost its file to an earlier item's (or an earlier slot's)."""

    slot: ArtSlot
    target: Path
    error: str


class Claims:
    """The run's (or shard's) record of who holds each target; one per ``ItemRunner``."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._tickets = itertools.count()
        self._turn = 0
        self._finished: set[int] = set()
        self._waiting: dict[int, asyncio.Event] = {}  # ticket -> set when its turn comes
        self._targets: OrderedDict[str, _Holder] = OrderedDict()
        self._remembered = remembered

    def ticket(self) -> int:
        """Take a place in line; call when the item is picked up, before any await."""
        return next(self._tickets)

    def done(self, ticket: int) -> None:
        """Give up (or end) ``ticket``'s turn, so later items do not wait for it."""
        if ticket < self._turn or ticket in self._finished:
            return
        self._finished.add(ticket)
        while self._turn in self._finished:
            self._finished.remove(self._turn)
            self._waiting.pop(self._turn, None)  # cancelled while it waited
            self._turn += 1
        waiting = self._waiting.pop(self._turn, None)
        if waiting is not None:
            waiting.set()

    async def claim(self, ticket: int, item: Item, plan: ItemPlan) -> tuple[ItemPlan, list[Lost]]:
        """Wait for ``ticket``'s turn, claim ``plan``'s targets, and return the plan
        without the slots an earlier item holds, plus what was lost and why."""
        if self._turn < ticket:
            turn = self._waiting[ticket] = asyncio.Event()
            await turn.wait()
        try:
            return self._settle(ticket, item, plan)
        finally:
            self.done(ticket)

    def _settle(self, ticket: int, item: Item, plan: ItemPlan) -> tuple[ItemPlan, list[Lost]]:
        me = _Holder(ticket, item.id, item.label, item.line, item.path, "")
        kept, lost = [], []
        for planned in plan.slots:
            target = str(planned.target)
            what = planned.slot.art.value if not planned.slot.index else (
                f"{planned.slot.art.value} #{planned.slot.index}")
            holder = self._targets.get(target)
            if holder is not None and (holder.ticket != ticket or holder.what != what):
                lost.append(Lost(planned.slot, planned.target, (
                    f"{target} is also the file of {holder.named()}, which comes first in "
                    "the manifest and keeps it; give the two items different paths")))
                continue
            self._remember(self._targets, target, replace(me, what=what))
            kept.append(planned)
        return replace(plan, slots=tuple(kept)), lost

    def _remember(self, table: OrderedDict[str, _Holder], key: str, holder: _Holder) -> None:
        table[key] = holder
        table.move_to_end(key)
        if len(table) > self._remembered:
            table.popitem(last=False)
