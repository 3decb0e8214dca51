"""One item at a time: plan it, download exactly what the plan says, save the bytes.

``ItemRunner`` is what every item worker runs, in a local run and in a Dask
shard alike. It plans with the one resolver (``plan.resolve``), downloads
exactly the ``Web`` set (the fetcher coalesces duplicates and enforces the
limits), then hands bytes to the save step in an executor.

The save step runs with ``fetch.SAVE_PHASE`` set, so any HTTP request made
while an item saves is counted in ``http.requests_in_save`` — the counter that
proves the seed's hidden re-download cannot come back. The runner holds no
store handle: it reads recorded rows through a callable and returns outcomes
(``ItemOutcome``) for the driver to record.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from artpipe import naming, redact
from artpipe import plan as planner
from artpipe.cache import Cache, CacheWriter, normalize_url
from artpipe.commit import GroupCommitter, settle_on_loop
from artpipe.errors import (
    ArtpipeError,
    DecodeError,
    FetchError,
    ImageTooComplexError,
    ImageTooLargeError,
)
from artpipe.fetch import BODY_RESERVE, SAVE_PHASE, Fetcher, FetchLimits, FetchResult
from artpipe.image import decoded_bytes
from artpipe.metrics import Metrics
from artpipe.models import ArtSlot, ArtType, Item, SlotProblem, SlotStatus
from artpipe.pipeline.budget import ByteBudget
from artpipe.pipeline.claims import Claims
from artpipe.pipeline.options import ItemSettings
from artpipe.save import (
    Rendered,
    SaveJob,
    SaveOutcome,
    remove_file,
    save_one,
    sweep_temp_files,
)
from artpipe.store import ArtworkRow

# Folders already swept for temp files; bounded so memory does not grow with
# the library (a folder forgotten and seen again is only listed once more).
_SWEPT_DIRS_REMEMBERED = 4096
# Conditional GETs answered this run, so items sharing a URL revalidate it once;
# bounded like the above (a forgotten one is only revalidated again).
_REVALIDATED_REMEMBERED = 4096
# Renders written this run, so a slot wanting the same output copies the file instead of
# rendering again; bounded like the above (a forgotten one is only rendered again).
_RENDERS_REMEMBERED = 4096
# Bytes waiting to be written into the cache, at most, before a download waits for them.
_PUTTING_BYTES = 64 * 1024 * 1024


REPORT_KEYS = ("item", "type", "art", "index", "url", "status", "path", "width", "height",
               "bytes", "error", "note", "warning")
"""The keys of every ``--report`` row, in order (docs/contracts.md, Outputs of a run)."""


@dataclass(frozen=True, slots=True)
class SlotResult:
    """One art slot's outcome: a report row, and what the store records."""

    item: str
    type: str
    art: str
    index: int
    url: str | None
    status: SlotStatus
    path: str | None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    error: str | None = None
    sha256: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    passthrough: bool = False
    reason: str | None = None  # the bare error, for grouping in the summary
    mtime_ns: int | None = None  # the file's mtime once written (or re-checked) by artpipe
    note: str | None = None  # a file changed outside artpipe: replaced, or kept
    warning: str | None = None  # e.g. a rival copy Kodi may show instead
    refused: bool = False  # a work limit refused the image: the store remembers the URL

    def report_row(self) -> dict[str, Any]:
        """This slot's line of ``--report`` (the keys are ``REPORT_KEYS``)."""
        row = {key: getattr(self, key) for key in REPORT_KEYS}
        row["status"] = self.status.value
        return row


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    item: Item
    results: tuple[SlotResult, ...]



_DEFAULT_SETTINGS = ItemSettings()
# The sources a slot may write a file from (the others keep, remove or skip it).
_WRITES = (planner.Web, planner.Cache, planner.Memory)
# Renders staged and not yet committed, at most: each holds a file and a folder descriptor
# (the usual limit is 1,024 per process), and a batch of 64 already flushes for ~0.2 ms/file.
_STAGED = 64
RowsFor = Callable[[str], dict[tuple[str, int], ArtworkRow]]
# The report's note on a slot whose file was changed outside artpipe (docs/changed-files.md).
REPLACED_CHANGED = "replaced a file changed outside artpipe"
KEPT_CHANGED = "kept, changed outside artpipe"
_FetchKey = tuple[str, str | None, str | None]
# One output: the source (URL, validators, size) and how it is rendered.
_RenderKey = tuple[str, str | None, str | None, int, tuple[int, int] | None, str, int]


class StoreFacts:
    """``plan.Facts`` over one item's store rows, the cache index and the disk.

    ``on_disk`` is ``plan.observe``: one stat per file, a hash only when the
    stat disagrees with the record, so a file edited, replaced or truncated
    behind artpipe's back is noticed and ``plan.resolve`` decides what to do.
    What it saw stays in ``seen``.
    """

    def __init__(self, rows: dict[tuple[str, int], ArtworkRow], cache: Cache) -> None:
        self._rows = rows
        self._cache = cache
        self.seen: dict[Path, planner.OnDisk] = {}
        # target -> the rival copies beside it (naming.rival_names), listed while planning
        self.rivals: dict[str, tuple[str, ...]] = {}
        self.swept: set[str] = set()  # folders swept for this item (FolderSweeps.release)

    def recorded(self, item: Item, art: ArtType, index: int) -> planner.Recorded | None:
        row = self._rows.get((art.value, index))
        if row is None or row.url is None:
            return None
        return planner.Recorded(row.url, row.sha256, row.etag, row.last_modified,
                                row.bytes, row.mtime_ns)

    def recorded_indexes(self, item: Item, art: ArtType) -> Iterable[int]:
        return [i for (a, i), row in self._rows.items() if a == art.value and row.url]

    def cache_state(self, url: str) -> planner.CacheState:
        if self._cache.contains(url):
            return planner.CacheState.ORIGINAL
        return planner.CacheState.NONE

    def memory(self, url: str) -> bytes | None:
        return None

    def refused(self, item: Item, art: ArtType, index: int, url: str) -> str | None:
        row = self._rows.get((art.value, index))
        if (row is None or row.status != SlotStatus.FAILED.value or not row.refused_url
                or not redact.matches(row.refused_url, url)):
            return None
        return row.error or "refused by a work limit"

    def recorded_path(self, art: str, index: int) -> str | None:
        """Where artpipe last saved this slot (None if it never did)."""
        row = self._rows.get((art, index))
        return row.path if row is not None and row.url and row.path else None

    def on_disk(self, path: Path, recorded: planner.Recorded | None) -> planner.OnDisk | None:
        found = planner.observe(path, recorded)
        if found is not None:
            self.seen[path] = found
        return found

    def moved_mtime(self, item: Item, slot: ArtSlot, path: Path) -> int | None:
        """The mtime to record for a file kept as artpipe's own whose mtime moved.

        Such a file was hashed to be kept (touched, restored from a backup, a
        row from before mtimes were recorded); recording its mtime makes the
        next run's check a stat again. None: nothing new to record.
        """
        seen = self.seen.get(path)
        recorded = self.recorded(item, slot.art, slot.index)
        if seen is None or recorded is None or seen.mtime_ns == recorded.mtime_ns:
            return None
        return seen.mtime_ns


@dataclass(frozen=True, slots=True)
class _Loaded:
    """Bytes the download phase holds for one planned slot (or why it has none)."""

    planned: planner.PlannedSlot
    data: bytes | None = None
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False
    error: str | None = None
    mtime_ns: int | None = None  # a kept file's new mtime, for the store


class _Folder:
    __slots__ = ("done", "users")

    def __init__(self) -> None:
        self.done = threading.Event()  # set once the sweep is over
        self.users = 0  # items that swept (or waited for) it and have not finished


class FolderSweeps:
    """Each folder swept for dead temp files once per run, before anything is written in it.

    Callable from any thread: planning sweeps the item's folders in the same trip to the
    I/O pool, and a caller that finds a sweep of its folder under way waits for it (a
    sweep still listing the folder must not meet this run's own temp files in it).
    Bounded: only folders no item is still writing in are forgotten (a folder forgotten
    and seen again is swept once more; one still in use never is, so a late write can
    never meet a second sweep).
    """

    def __init__(self, remembered: int = _SWEPT_DIRS_REMEMBERED) -> None:
        self._lock = threading.Lock()
        self._swept: OrderedDict[str, _Folder] = OrderedDict()
        self._remembered = remembered

    def swept(self, directory: str) -> bool:
        """Whether ``directory``'s sweep is done (no waiting, no disk: safe on the loop)."""
        folder = self._swept.get(directory)
        return folder is not None and folder.done.is_set()

    def sweep(self, directory: str) -> int:
        """Sweep ``directory`` unless done or under way (then wait); the files removed.

        The caller then uses the folder until it calls ``release``.
        """
        with self._lock:
            folder = self._swept.get(directory)
            mine = folder is None
            if folder is None:
                self._swept[directory] = folder = _Folder()
            else:
                self._swept.move_to_end(directory)
            folder.users += 1
            self._forget_idle()
        if not mine:
            folder.done.wait()
            return 0
        try:
            return sweep_temp_files(directory)
        finally:
            folder.done.set()

    def release(self, directory: str) -> None:
        """The caller of ``sweep`` has finished writing in ``directory``."""
        with self._lock:
            folder = self._swept.get(directory)
            if folder is not None and folder.users > 0:
                folder.users -= 1
            self._forget_idle()

    def _forget_idle(self) -> None:
        # Oldest first, skipping folders in use; when all are in use (at most the folders
        # of the items in flight), keep them all.
        while len(self._swept) > self._remembered:
            idle = next((name for name, f in self._swept.items()
                         if f.users == 0 and f.done.is_set()), None)
            if idle is None:
                return
            del self._swept[idle]


class ItemRunner:
    """Plans, downloads and saves one item at a time; shared by all item workers.

    Holds no store handle: it reads recorded rows through a callable and
    returns outcomes, so the same runner serves the local driver and a shard
    worker on another machine.
    """

    def __init__(
        self,
        *,
        library: Path,
        fetcher: Fetcher,
        cache: Cache,
        executor: Executor,
        metrics: Metrics,
        rows_for: RowsFor,
        settings: ItemSettings = _DEFAULT_SETTINGS,  # frozen, safe to share
    ) -> None:
        self.library = library
        self.fetcher = fetcher
        self.cache = cache
        self.executor = executor
        self.metrics = metrics
        self.rows_for = rows_for
        self.settings = settings
        self.sweeps = FolderSweeps()
        fetcher.keep = self._keep  # into the cache inside the fetcher's single flight
        # Cache puts under way (normalized URL -> (future, bytes)), oldest first.
        self._putting: OrderedDict[str, tuple[Future[Any], int]] = OrderedDict()
        self._putting_bytes = 0
        self._revalidated: OrderedDict[_FetchKey, _Loaded] = OrderedDict()
        self.claims = Claims()  # two items naming one file: the first line keeps it
        # Shared by all item workers: what bounds memory (pipeline/budget.py).
        self.bodies = ByteBudget(settings.body_budget, "downloaded bytes")
        self.pixels = ByteBudget(settings.pixel_budget, "decoded bytes")
        # Each distinct output is rendered once per run (pipeline/runner.py, _save).
        self._renders: OrderedDict[_RenderKey, asyncio.Future[Rendered | None]] = OrderedDict()
        # Blocking calls (stat, listdir, the cache) run here rather than on asyncio's default
        # executor: as many threads as cores, since more only contend on a small machine.
        self._io = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="io")
        # Cache puts on a thread of their own, in batches: planning and tidying never queue
        # behind them.
        self._cache_writer = CacheWriter(cache)
        # Renders in this process stage their files; one thread commits them in batches
        # (commit.py). A process pool's renders write durably on their own.
        self._committer = (GroupCommitter() if isinstance(executor, ThreadPoolExecutor)
                           else None)
        self._staged = asyncio.Semaphore(_STAGED)

    async def _blocking(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``asyncio.to_thread`` on the runner's own small pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Stop the runner's threads (waits for a blocking call in progress)."""
        self._io.shutdown(wait=True)
        self._cache_writer.close()
        if self._committer is not None:
            self._committer.close()

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        limits: FetchLimits,
        *,
        library: Path,
        cache: Cache,
        executor: Executor,
        metrics: Metrics,
        rows_for: RowsFor,
        settings: ItemSettings,
        resolve: Mapping[str, tuple[str, int]] | None = None,
    ) -> AsyncIterator[ItemRunner]:
        """A runner with its own ``Fetcher`` (the run's one HTTP session), closed on exit."""
        async with Fetcher(limits, metrics=metrics, resolve=resolve) as fetcher:
            runner = cls(library=library, fetcher=fetcher, cache=cache, executor=executor,
                         metrics=metrics, rows_for=rows_for, settings=settings)
            try:
                yield runner
            finally:
                runner.record_peaks()
                runner.close()

    def host_stats(self) -> dict[str, dict[str, Any]]:
        """Per-host fetch statistics as plain dicts (for the report and across processes)."""
        return {name: asdict(s) for name, s in self.fetcher.host_stats().items()}

    async def process(self, item: Item) -> ItemOutcome:
        ticket = self.claims.ticket()  # before any await: workers take items in manifest order
        facts: StoreFacts | None = None
        try:
            # rows on the loop (the store's connection lives here)
            facts = StoreFacts(self.rows_for(item.id), self.cache)
            return await self._process(item, ticket, facts)
        finally:
            self.claims.done(ticket)  # an item that failed before claiming holds no one up
            for folder in facts.swept if facts is not None else ():
                self.sweeps.release(folder)

    async def _process(self, item: Item, ticket: int, facts: StoreFacts) -> ItemOutcome:
        with self.metrics.timer("item.save_all", track="items"):
            # the stat, realpath and listdir calls of planning in a thread, so a slow
            # NAS does not stall the downloads in flight
            try:
                item_plan, swept = await self._blocking(self._plan_and_sweep, item, facts)
            except OSError as exc:
                return failed_outcome(
                    item, f"cannot read {exc.filename or 'its folder'}: {exc.strerror or exc}")
            self.metrics.count("files.temp_swept", swept)
            # slots the manifest gave but that failed validation: reported, never planned
            results = [_problem(item, p) for p in item.problems]
            results += [_failed(item, e.slot, None, str(e.error)) for e in item_plan.errors]
            item_plan, lost = await self.claims.claim(ticket, item, item_plan)
            results += [_failed(item, x.slot, str(x.target), x.error) for x in lost]
            # Each slot is loaded and saved on its own, holding its bytes only from
            # download to save (an item with 1,500 extrafanart URLs never holds them all).
            per_slot = await asyncio.gather(
                *(self._load_and_save(item, p, facts) for p in item_plan.slots))
            saved = [r for rs in per_slot for r in rs]
            with self.metrics.timer("item.save_to_disk", track="items"):
                targets = {str(p.target) for p in item_plan.slots}
                if any(self._tidy_reads_disk(r, facts, targets) for r in saved):
                    results.extend(await self._blocking(self._tidy, saved, facts, targets))
                else:  # planning listed every folder: nothing to do on disk
                    results.extend(self._tidy(saved, facts, targets))
        return ItemOutcome(item, tuple(results))

    def _plan_and_sweep(self, item: Item, facts: StoreFacts) -> tuple[planner.ItemPlan, int]:
        """Plan ``item``, sweep the folders it may write in, and list its folders for rival
        copies (``facts.rivals``): one trip to the I/O pool, one listing per folder."""
        item_plan = planner.plan_item(
            item, self.library, facts, refresh=self.settings.refresh,
            layout=self.settings.layout, keep_changed=self.settings.keep_changed)
        folders: dict[str, list[str]] = {}
        swept = 0
        for p in item_plan.slots:
            folder = str(p.target.parent)
            folders.setdefault(folder, []).append(p.target.name)
            if isinstance(p.source, _WRITES) and folder not in facts.swept:
                swept += self.sweeps.sweep(folder)
                facts.swept.add(folder)
        for folder, names in folders.items():
            try:
                listing = os.listdir(folder)
            except FileNotFoundError:
                listing = []  # a new folder: nothing in it to rival the files to come
            except OSError:
                continue  # unreadable now: tidying lists it again, and says so if it can
            for name in names:
                facts.rivals[os.path.join(folder, name)] = tuple(
                    os.path.join(folder, n) for n in naming.rival_names(name, listing))
        return item_plan, swept

    async def _load_and_save(self, item: Item, planned: planner.PlannedSlot,
                             facts: StoreFacts) -> list[SlotResult]:
        """One slot under the body budget: its bytes are reserved before they exist (by the
        declared size once the headers are in: ``fetch.BODY_RESERVE``), kept at their real
        size once loaded, and released when the slot is saved.

        Reserving the cap before every download would let only budget / cap downloads run
        at once (1 GiB / 50 MiB = 20, under the default 32) whatever their real sizes.
        """
        async with self.bodies.hold(0) as held:
            reserving = BODY_RESERVE.set(held)
            try:
                with self.metrics.timer("item.download", track="items"):
                    loaded = await self._load(item, planned, facts)
            finally:
                BODY_RESERVE.reset(reserving)
            size = len(loaded.data) if loaded.data is not None else 0
            if size > held.n:  # from the cache, or another item's download: count them now
                await held.grow_to(size)
            held.resize(size)
            token = SAVE_PHASE.set(True)  # this slot's task only: others may still fetch
            try:
                with self.metrics.timer("item.save_to_disk", track="items"):
                    return await self._save(item, [loaded], facts)
            finally:
                SAVE_PHASE.reset(token)

    @staticmethod
    def _old_copy(r: SlotResult, facts: StoreFacts, targets: set[str]) -> str | None:
        """The file artpipe recorded for this slot elsewhere, which the new one replaces."""
        old = facts.recorded_path(r.art, r.index)
        moved = r.status in (SlotStatus.SAVED, SlotStatus.REMOVED)
        return old if moved and old and old != r.path and old not in targets else None

    def _tidy_reads_disk(self, r: SlotResult, facts: StoreFacts, targets: set[str]) -> bool:
        """Whether tidying ``r`` removes a file or lists a folder planning did not."""
        unlisted = (r.status in (SlotStatus.SAVED, SlotStatus.UNCHANGED) and bool(r.path)
                    and r.path not in facts.rivals)
        return (unlisted or r.status is SlotStatus.REMOVED
                or self._old_copy(r, facts, targets) is not None)

    def _tidy(self, results: list[SlotResult], facts: StoreFacts,
              targets: set[str]) -> list[SlotResult]:
        """Leave one copy of each art where Kodi looks, and say so when we cannot.

        Kodi matches local art by name without extension, ignoring case
        (docs/kodi.md), so a second copy beside the one just written makes the
        image it shows depend on directory order. The copy artpipe itself
        recorded for the slot at another path (an older layout or format) is
        removed once the new file is in place; a file artpipe did not write is
        never deleted, but the row carries a warning naming it. Runs on the loop
        when ``_tidy_reads_disk`` says no result needs the disk (planning listed the
        folders: ``_plan_and_sweep``).
        """
        # Old copies first, then rival copies: a file removed for this item (an old copy,
        # or a slot the manifest dropped) is no rival, so its folder is listed again.
        warnings: list[list[str]] = [[] for _ in results]
        relist = {os.path.dirname(r.path) for r in results
                  if r.status is SlotStatus.REMOVED and r.path}
        for r, said in zip(results, warnings, strict=True):
            old = self._old_copy(r, facts, targets)
            if old and self._inside(old):
                try:
                    self.metrics.count("files.replaced_old_copy", int(remove_file(old)))
                    relist.add(os.path.dirname(old))
                except OSError as exc:
                    said.append(f"could not remove the old copy {old} ({exc.strerror or exc}); "
                                "remove it so Kodi shows the new one")
        out = []
        for r, said in zip(results, warnings, strict=True):
            if r.status in (SlotStatus.SAVED, SlotStatus.UNCHANGED) and r.path:
                listed = facts.rivals.get(r.path)
                if listed is None or os.path.dirname(r.path) in relist:
                    rivals = [str(p) for p in naming.leftover_copies(Path(r.path))]
                else:  # listed while planning
                    rivals = list(listed)
                if rivals:
                    names = ", ".join(os.path.basename(p) for p in rivals)
                    said.append(f"Kodi may show {names} instead: another copy of this art "
                                "in the same folder, not written by artpipe; remove it")
            self.metrics.count("images.warned", int(bool(said)))
            out.append(replace(r, warning="; ".join(said)) if said else r)
        return out

    def _inside(self, path: str) -> bool:
        """Only files under the library are ever removed (the store may predate a move)."""
        root = os.path.realpath(self.library)
        return os.path.realpath(path).startswith(root.rstrip(os.sep) + os.sep)

    # -- download phase -------------------------------------------------
    async def _load(self, item: Item, planned: planner.PlannedSlot,
                    facts: StoreFacts) -> _Loaded:
        source = planned.source
        if isinstance(source, planner.Memory):
            return _Loaded(planned, data=source.data)
        if isinstance(source, planner.Cache):
            cached = await self._from_cache(planned, source.url)
            if cached is not None:
                return cached
            # Evicted or corrupt since planning: ask the one resolver again with
            # what is true now, rather than deciding "download it" here.
            state = await self._blocking(
                planner.slot_state, item, planned.slot, planned.target, facts,
                refresh=self.settings.refresh, keep_changed=self.settings.keep_changed)
            source = planner.resolve(planned.slot, replace(state, cache=planner.CacheState.NONE))
            planned = planner.PlannedSlot(planned.slot, planned.target, source)
        if isinstance(source, planner.Web):
            return await self._fetch(planned, source)
        if isinstance(source, planner.LocalFile) and not source.changed:
            return _Loaded(planned, mtime_ns=facts.moved_mtime(item, planned.slot, planned.target))
        return _Loaded(planned)

    async def _fetch(self, planned: planner.PlannedSlot, web: planner.Web) -> _Loaded:
        """Fetch an original once per run, however many items want it.

        Concurrent wants share one in-flight download (the fetcher's single
        flight, keyed by the normalized URL: the one coalescing layer); later
        wants read the bytes back from the cache (keeping them in memory would
        grow with the manifest).
        """
        key = (normalize_url(web.url), web.etag, web.last_modified)
        if web.etag is None and web.last_modified is None and (
                key[0] in self._putting or self.cache.recently_put(web.url)):
            # Another item fetched it after this one was planned; the cache is
            # the run's memory of what was fetched, so nothing grows per URL.
            cached = await self._from_cache(planned, web.url)
            if cached is not None:
                return cached
        recent = self._revalidated.get(key)
        if recent is not None:  # --refresh: items sharing a URL (and its validators)
            self._revalidated.move_to_end(key)  # revalidate it once per run
            if recent.not_modified:
                return replace(recent, planned=planned)
            cached = await self._from_cache(planned, web.url)
            if cached is not None:
                return cached
        loaded = await self._fetch_network(planned, web)
        if web.etag is not None or web.last_modified is not None:
            if loaded.error is None:
                self._revalidated[key] = replace(loaded, data=None)
                if len(self._revalidated) > _REVALIDATED_REMEMBERED:
                    self._revalidated.popitem(last=False)
        return loaded

    async def _fetch_network(self, planned: planner.PlannedSlot, web: planner.Web) -> _Loaded:
        try:
            result = await self.fetcher.fetch(web.url, etag=web.etag,
                                              last_modified=web.last_modified)
        except FetchError as exc:
            return _Loaded(planned, error=str(exc))
        if result.not_modified or result.data is None:
            if web.etag is None and web.last_modified is None:
                return _Loaded(planned, error=(
                    f"{web.url} answered 304 Not Modified to a request without validators "
                    "(a misbehaving server or proxy); nothing to save — try again later"))
            return _Loaded(planned, etag=result.etag, last_modified=result.last_modified,
                           not_modified=True)
        return _Loaded(planned, data=result.data, etag=result.etag,
                       last_modified=result.last_modified)

    async def _keep(self, result: FetchResult) -> None:
        """Cache a downloaded original (once, however many items wanted it).

        The put runs on the cache's own thread while the slot goes on to its render:
        waiting for it would add a queue to every download. Until it is done it is in
        ``_putting``, so an item wanting the URL meanwhile reads it from the cache after
        it (never downloads it again); the bytes in pending puts are bounded.
        """
        if result.data is None:
            return
        key = normalize_url(result.url)
        self._prune_puts()
        while self._putting_bytes > _PUTTING_BYTES and self._putting:
            oldest = next(iter(self._putting.values()))
            await asyncio.wait([asyncio.wrap_future(oldest[0])])
            self._prune_puts()
        try:
            future = self._cache_writer.put(result.url, result.data, etag=result.etag,
                                            last_modified=result.last_modified)
        except RuntimeError:  # the writer is closed (the run is ending): only reuse is lost
            self.metrics.count("cache.errors")
            return
        future.add_done_callback(self._count_put_error)  # on that thread: Metrics locks
        earlier = self._putting.pop(key, None)
        if earlier is not None:  # the same URL again (--refresh, other validators): the
            self._putting_bytes -= earlier[1]  # writer stores in order, so wait for this one
        self._putting[key] = (future, len(result.data))
        self._putting_bytes += len(result.data)

    def _count_put_error(self, future: Future[Any]) -> None:
        # a full or broken cache must not fail the slot: the bytes are in hand; only
        # reuse is lost
        if not future.cancelled() and future.exception() is not None:
            self.metrics.count("cache.errors")

    def _prune_puts(self) -> None:
        """Forget the puts that are done, oldest first (on the loop, so no lock)."""
        while self._putting:
            future, size = next(iter(self._putting.values()))
            if not future.done():
                return
            self._putting.popitem(last=False)
            self._putting_bytes -= size

    async def _put_done(self, url: str) -> None:
        """Wait for a pending put of ``url`` (if any), so a read finds its bytes."""
        pending = self._putting.get(normalize_url(url))
        if pending is not None and not pending[0].done():
            await asyncio.wait([asyncio.wrap_future(pending[0])])

    async def _from_cache(self, planned: planner.PlannedSlot, url: str) -> _Loaded | None:
        """The cached original with its validators, or None (missing, corrupt, unreadable).

        The body cap is reserved before the read (its size is not known until then): an
        item with 1,500 cached extrafanarts must not read them all into memory at once.
        """
        reservation = BODY_RESERVE.get()
        if reservation is not None:
            await reservation.grow_to(self.fetcher.limits.max_bytes)
        await self._put_done(url)

        def read() -> _Loaded | None:
            found = self.cache.read_entry(url)
            if found is None:
                return None
            data, entry = found
            return _Loaded(planned, data=data, etag=entry.etag, last_modified=entry.last_modified)

        try:
            return await self._blocking(read)
        except Exception:  # an unreadable cache is a cache miss, never a failure
            self.metrics.count("cache.errors")
            return None

    # -- save phase (bytes only; SAVE_PHASE is set) ---------------------
    async def _save(self, item: Item, loaded: list[_Loaded],
                    facts: StoreFacts) -> list[SlotResult]:
        results: list[SlotResult] = []
        jobs: list[tuple[_Loaded, Awaitable[SaveOutcome]]] = []
        for entry in loaded:
            planned = entry.planned
            slot, target, source = planned.slot, str(planned.target), planned.source
            if isinstance(source, planner.Refused):  # remembered: nothing fetched, no decode
                self.metrics.count("images.refused_again")
                results.append(replace(_failed(item, slot, target, _bare(item, slot, source.error)),
                                       error=source.error, refused=True, note=REFUSED_AGAIN))
            elif entry.error is not None:
                results.append(_failed(item, slot, target, entry.error))
            elif isinstance(source, planner.Remove):
                try:  # counted once, as a removed slot, by the driver's sink
                    await self._blocking(remove_file, str(source.path))
                except OSError as exc:
                    results.append(_failed(item, slot, target,
                                           f"cannot remove {source.path}: {exc.strerror or exc}"))
                else:
                    results.append(_result(item, slot, SlotStatus.REMOVED, target))
            elif isinstance(source, planner.LocalFile) and source.changed:
                self.metrics.count("images.changed_kept")
                results.append(_result(item, slot, SlotStatus.UNCHANGED, target,
                                       note=KEPT_CHANGED))
            elif isinstance(source, planner.LocalFile) or entry.not_modified:
                results.append(_result(item, slot, SlotStatus.UNCHANGED, target,
                                       etag=entry.etag, last_modified=entry.last_modified,
                                       mtime_ns=entry.mtime_ns))
            elif slot.url is None:  # removal asked, nothing on disk: the art is gone as wanted
                results.append(_result(item, slot, SlotStatus.REMOVED, target))
            elif isinstance(source, planner.Nothing) or entry.data is None:
                results.append(_result(item, slot, SlotStatus.SKIPPED, target))
            else:
                await self._sweep(os.path.dirname(target), facts)
                job = SaveJob(
                    data=entry.data,
                    target=target,
                    format=slot.art.output_format,
                    max_size=None if self.settings.originals else slot.art.default_max_size,
                    quality=self.settings.quality,
                    root=str(self.library),
                )
                jobs.append((entry, self._render_once(entry, job)))
        if len(jobs) > 1:  # renders at once; one alone (a slot's save) needs no task of its own
            jobs = [(entry, asyncio.ensure_future(render)) for entry, render in jobs]
        for entry, future in jobs:
            slot, target = entry.planned.slot, str(entry.planned.target)
            try:
                outcome = await future
            except Exception as exc:  # BrokenProcessPool, pickling: per slot
                results.append(_failed(item, slot, target, (
                    f"the render worker failed ({type(exc).__name__}: {exc}); "
                    "rerun to retry this image")))
                continue
            self.metrics.record("render", outcome.ms, start_ns=outcome.start_ns,
                                track=outcome.worker)
            if outcome.saved is None:
                error = outcome.error or ArtpipeError("unknown save failure")
                if isinstance(error, DecodeError) and slot.url:
                    # never serve these bytes again from the cache: the next run
                    # downloads afresh (a truncated response is often transient)
                    await self._evict(slot.url)
                failed = _failed(item, slot, target, str(error))
                results.append(replace(failed, refused=is_refusal(error)))
                continue
            saved = outcome.saved
            self.metrics.count("images.passthrough", int(saved.passthrough))
            source = entry.planned.source
            replaced = isinstance(source, planner.Memory | planner.Cache | planner.Web) and (
                source.changed)
            self.metrics.count("images.changed_replaced", int(replaced))
            results.append(_result(
                item, slot, SlotStatus.SAVED, saved.path, width=saved.width,
                height=saved.height, size=saved.bytes, sha256=saved.sha256,
                etag=entry.etag, last_modified=entry.last_modified,
                passthrough=saved.passthrough,
                mtime_ns=outcome.mtime_ns,
                note=REPLACED_CHANGED if replaced else None,
            ))
        return results

    async def _render_once(self, entry: _Loaded, job: SaveJob) -> SaveOutcome:
        """Render each distinct output once per run; a later slot wanting it copies the file.

        The output is named by its source (URL, validators, size in bytes) and how it is
        rendered (size limit, format, quality). The first slot renders; the others wait for
        it, then write its file's bytes again (``save.Rendered``). If the first fails, each
        waiter renders on its own (the failure may be its target's, not the image's).
        """
        url = entry.planned.slot.url
        if url is None:
            return await self._render(job)
        key = (normalize_url(url), entry.etag, entry.last_modified, len(job.data),
               job.max_size, job.format, job.quality)
        first = self._renders.get(key)
        if first is not None:
            self._renders.move_to_end(key)
            done = await asyncio.shield(first)
            if done is not None:
                self.metrics.count("images.render_copied")
                return await self._render(replace(job, copy_of=done))
            return await self._render(job)
        mine: asyncio.Future[Rendered | None] = asyncio.get_running_loop().create_future()
        self._renders[key] = mine
        if len(self._renders) > _RENDERS_REMEMBERED:
            self._renders.popitem(last=False)
        result: Rendered | None = None
        try:
            outcome = await self._render(job)
            saved = outcome.saved
            if saved is not None:
                result = Rendered(saved.path, saved.sha256, saved.format, saved.passthrough,
                                  saved.width, saved.height)
            return outcome
        finally:
            mine.set_result(result)
            if result is None and self._renders.get(key) is mine:
                del self._renders[key]

    async def _render(self, job: SaveJob) -> SaveOutcome:
        """Render and write ``job``; in this process, staged and then group-committed.

        The render thread hands its staged file straight to the committer, and the
        committer wakes this task once its batch is durable: one hop from the loop and one
        back per file, where handing the file back to the loop first took two of each.
        """
        if self._committer is None:
            return await self._save_one(job)
        # A staged file holds two descriptors until its commit: at most _STAGED of them.
        async with self._staged, self.pixels.hold(decoded_bytes(job.data)):
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            rendered: list[SaveOutcome] = []
            work = self.executor.submit(_stage_and_commit, replace(job, stage=True),
                                        self._committer, done, rendered)
            work.add_done_callback(functools.partial(_settle_if_dropped, done))
            try:
                await done
            except ArtpipeError as exc:  # the commit failed: the target keeps its old file
                if not rendered:  # never rendered (dropped by the executor)
                    raise
                return replace(rendered[0], saved=None, error=exc, mtime_ns=None)
            return rendered[0]

    async def _save_one(self, job: SaveJob) -> SaveOutcome:
        """``save_one`` under the decoded-bytes budget: the pixels' size is known from the
        header, so huge images wait for room instead of all decoding at once."""
        async with self.pixels.hold(decoded_bytes(job.data)):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, save_one, job)

    def record_peaks(self) -> None:
        """The budgets' high-water marks, as counters (bytes; per process)."""
        self.metrics.count("memory.bodies_peak_bytes", self.bodies.high_water)
        self.metrics.count("memory.pixels_peak_bytes", self.pixels.high_water)

    async def _sweep(self, directory: str, facts: StoreFacts) -> None:
        """Make sure ``directory`` was swept before writing into it (planning sweeps the
        folders it names; this only goes to disk for one it did not)."""
        if directory not in facts.swept:
            removed = await self._blocking(self.sweeps.sweep, directory)
            facts.swept.add(directory)  # released with the item's other folders
            self.metrics.count("files.temp_swept", removed)

    async def _evict(self, url: str) -> None:
        await self._put_done(url)  # or the put would bring the bytes back after this
        try:
            await self._blocking(self.cache.evict, url)
        except Exception:  # best effort; the row already says what failed
            self.metrics.count("cache.errors")


def _stage_and_commit(job: SaveJob, committer: GroupCommitter, done: asyncio.Future[None],
                      rendered: list[SaveOutcome]) -> None:
    """On a render thread: render and stage ``job``, then hand the file to ``committer``.

    The outcome goes into ``rendered`` (without its staged file, which the committer now
    owns: the temp file goes as soon as the commit drops it) before ``done`` can resolve.
    """
    if done.cancelled():  # the run was cancelled while this waited for a thread
        return
    try:
        outcome = save_one(job)
        staged = outcome.staged
        rendered.append(replace(outcome, staged=None))
        if staged is not None:
            del outcome
            committer.commit_for(staged, done)
            return
        error = None
    except BaseException as exc:  # never expected (save_one returns its errors): no hang
        error = exc
    settle_on_loop(done.get_loop(), [(done, error)])


def _settle_if_dropped(done: asyncio.Future[None], work: Future[None]) -> None:
    """A render the executor dropped unrun (shut down with ``cancel_futures``) fails its
    slot instead of leaving its task waiting for ever."""
    if work.cancelled():
        error: BaseException | None = ArtpipeError(
            "the render was cancelled before it ran; rerun to retry this image")
        settle_on_loop(done.get_loop(), [(done, error)])


def is_refusal(error: ArtpipeError) -> bool:
    """A work limit refused the image: the same URL will be refused again, so remember it.

    A truncated or corrupt body is not one: it may be a transient failure, and is retried.
    """
    return isinstance(error, ImageTooLargeError | ImageTooComplexError)


REFUSED_AGAIN = "refused in an earlier run, not downloaded again (a new URL or --refresh retries)"


def _bare(item: Item, slot: ArtSlot, error: str) -> str:
    """The reason inside a stored slot error (``_slot_error``'s), for the summary's grouping."""
    head, tail = _slot_error(item, slot, "\0").split("\0")
    if error.startswith(head) and error.endswith(tail) and len(error) > len(head) + len(tail):
        return error[len(head):len(error) - len(tail)]
    return error


def _failed(item: Item, slot: ArtSlot, path: str | None, reason: str) -> SlotResult:
    """A failed row: the full message for the user, the bare reason for the summary."""
    return _result(item, slot, SlotStatus.FAILED, path, error=_slot_error(item, slot, reason),
                   reason=reason)


def _problem(item: Item, problem: SlotProblem) -> SlotResult:
    """A slot that failed manifest validation (bad URL, art the type cannot have)."""
    what = problem.art if not problem.index else f"{problem.art} #{problem.index}"
    return SlotResult(
        item=item.id, type=item.type.value, art=problem.art, index=problem.index,
        url=problem.url, status=SlotStatus.FAILED, path=None,
        error=f'"{item.label}" {what}: {problem.error}; any existing file was kept',
        reason=problem.error,
    )


def failed_outcome(item: Item, reason: str) -> ItemOutcome:
    """Every slot of ``item`` failed for one ``reason`` (an unreadable folder, a lost shard)."""
    return ItemOutcome(item, tuple(_failed(item, slot, None, reason) for slot in item.slots)
                       + tuple(_problem(item, p) for p in item.problems))


def _slot_error(item: Item, slot: ArtSlot, error: str) -> str:
    """Who failed, from where, and that the old file stayed.

    Rust knows the bytes and the path, the fetcher knows the URL; here the
    item and the URL join them, so every failed row says which image of
    which title failed and where it came from.
    """
    what = slot.art.value if not slot.index else f"{slot.art.value} #{slot.index}"
    source = f" from {slot.url}" if slot.url and slot.url not in error else ""
    return f'"{item.label}" {what}{source}: {error}; any existing file was kept'


def _result(
    item: Item,
    slot: ArtSlot,
    status: SlotStatus,
    path: str | None,
    *,
    width: int | None = None,
    height: int | None = None,
    size: int | None = None,
    error: str | None = None,
    sha256: str | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
    passthrough: bool = False,
    reason: str | None = None,
    mtime_ns: int | None = None,
    note: str | None = None,
) -> SlotResult:
    return SlotResult(
        item=item.id, type=item.type.value, art=slot.art.value, index=slot.index,
        url=slot.url, status=status, path=path, width=width, height=height, bytes=size,
        error=error, sha256=sha256, etag=etag, last_modified=last_modified,
        passthrough=passthrough, reason=reason, mtime_ns=mtime_ns, note=note,
    )
