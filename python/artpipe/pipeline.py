"""The run engine: manifest → plan → fetch → save → store, pipelined across items.

A fixed number of item workers pull items from a bounded queue; each plans
its item with the one resolver (``plan.resolve``), downloads exactly the
``Web`` set (the fetcher coalesces duplicates and enforces the limits), then
hands bytes to the save step in an executor. While item N renders on the
executor, item N+1's downloads are already in flight, and memory stays bounded
by the queue sizes, never by the manifest size.

The save step runs with ``fetch.SAVE_PHASE`` set, so any HTTP request made
while an item saves is counted in ``http.requests_in_save`` — the counter that
proves the seed's hidden re-download cannot come back. The driver alone writes
the SQLite store, one transaction per batch of finished items.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, aclosing
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any

from artpipe import plan as planner
from artpipe.cache import Cache, normalize_url
from artpipe.errors import ArtpipeError, DecodeError, FetchError, ManifestError
from artpipe.fetch import SAVE_PHASE, Fetcher, FetchLimits
from artpipe.manifest import iter_manifest, parse_item
from artpipe.metrics import Metrics
from artpipe.models import ArtSlot, ArtType, Item, SlotStatus
from artpipe.save import SaveJob, SaveOutcome, remove_file, save_one, sweep_temp_files
from artpipe.store import ArtworkRow, ItemRow, Store, default_db_path

DEFAULT_CACHE_BYTES = 2 * 1024**3
# Folders already swept for temp files; bounded so memory does not grow with
# the library (a folder forgotten and seen again is only listed once more).
_SWEPT_DIRS_REMEMBERED = 4096
# Conditional GETs answered this run, so items sharing a URL revalidate it once;
# bounded like the above (a forgotten one is only revalidated again).
_REVALIDATED_REMEMBERED = 4096


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

    def report_row(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "type": self.type,
            "art": self.art,
            "index": self.index,
            "url": self.url,
            "status": self.status.value,
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    item: Item
    results: tuple[SlotResult, ...]


@dataclass
class RunStats:
    """Running totals the CLI shows while a run goes on."""

    items_done: int = 0
    bad_lines: int = 0
    slots: Counter[str] = field(default_factory=Counter)
    bytes_written: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    # host -> requests per second so far; set by the driver once the fetcher exists
    host_rates: Callable[[], dict[str, float]] = field(default=dict, repr=False)

    @property
    def failed(self) -> int:
        return self.slots[SlotStatus.FAILED.value]


@dataclass
class RunReport:
    """What ``run`` returns: totals, the metrics, and the exit code they imply."""

    stats: RunStats
    metrics: Metrics
    library: Path
    db: Path
    report_path: Path | None = None
    metrics_path: Path | None = None
    trace_path: Path | None = None
    hosts: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 all slots ok; 1 some slots (or manifest lines) failed."""
        return 1 if (self.stats.failed or self.stats.bad_lines) else 0

    def summary(self) -> dict[str, int]:
        return {status.value: self.stats.slots[status.value] for status in SlotStatus}


@dataclass(frozen=True)
class RunOptions:
    library: Path
    cache_dir: Path | None = None
    db: Path | None = None
    concurrency: int = 32
    per_host: int = 8
    executor: str | Executor = "thread"
    workers: int | None = None
    originals: bool = False
    refresh: bool = False
    quality: int = 90
    report: Path | None = None
    metrics: Path | None = None
    trace: Path | None = None
    limits: FetchLimits | None = None
    item_workers: int | None = None
    batch_size: int = 64
    cache_bytes: int = DEFAULT_CACHE_BYTES
    resolve: Mapping[str, tuple[str, int]] | None = None
    shard_size: int = 2000
    shard_retries: int = 3

    def fetch_limits(self) -> FetchLimits:
        base = self.limits or FetchLimits()
        return FetchLimits(**{**asdict(base), "concurrency": self.concurrency,
                              "per_host": self.per_host})


_FetchKey = tuple[str, str | None, str | None]
ProgressCallback = Callable[[RunStats, ItemOutcome | None], None]


class _StoreFacts:
    """``plan.Facts`` over one item's store rows, the cache index and the disk.

    A file only counts as present when its size still matches the record: a
    file truncated or replaced behind artpipe's back is not trusted.
    """

    def __init__(self, rows: dict[tuple[str, int], ArtworkRow], cache: Cache) -> None:
        self._rows = rows
        self._cache = cache
        self._by_path = {row.path: row for row in rows.values() if row.url}

    def recorded(self, item: Item, art: ArtType, index: int) -> planner.Recorded | None:
        row = self._rows.get((art.value, index))
        if row is None or row.url is None:
            return None
        return planner.Recorded(row.url, row.sha256, row.etag, row.last_modified)

    def recorded_indexes(self, item: Item, art: ArtType) -> Iterable[int]:
        return [i for (a, i), row in self._rows.items() if a == art.value and row.url]

    def cache_state(self, url: str) -> planner.CacheState:
        if self._cache.contains(url):
            return planner.CacheState.ORIGINAL
        return planner.CacheState.NONE

    def memory(self, url: str) -> bytes | None:
        return None

    def file_exists(self, path: Path) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        row = self._by_path.get(str(path))
        if row is not None and row.bytes is not None and row.bytes != st.st_size:
            return False
        return os.path.isfile(path)


@dataclass(frozen=True, slots=True)
class _Loaded:
    """Bytes the download phase holds for one planned slot (or why it has none)."""

    planned: planner.PlannedSlot
    data: bytes | None = None
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False
    error: str | None = None


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
        rows_for: Callable[[str], dict[tuple[str, int], ArtworkRow]],
        originals: bool = False,
        refresh: bool = False,
        quality: int = 90,
    ) -> None:
        self.library = library
        self.fetcher = fetcher
        self.cache = cache
        self.executor = executor
        self.metrics = metrics
        self.rows_for = rows_for
        self.originals = originals
        self.refresh = refresh
        self.quality = quality
        self._inflight: dict[_FetchKey, asyncio.Future[_Loaded]] = {}
        self._swept: OrderedDict[str, None] = OrderedDict()
        self._revalidated: OrderedDict[_FetchKey, _Loaded] = OrderedDict()

    async def process(self, item: Item) -> ItemOutcome:
        with self.metrics.timer("item.save_all", track="items"):
            # rows on the loop (the store's connection lives here); the stat,
            # realpath and listdir calls of planning in a thread, so a slow NAS
            # does not stall the downloads in flight
            facts = _StoreFacts(self.rows_for(item.id), self.cache)
            try:
                item_plan = await asyncio.to_thread(
                    planner.plan_item, item, self.library, facts, refresh=self.refresh
                )
            except OSError as exc:
                reason = f"cannot read {exc.filename or 'its folder'}: {exc.strerror or exc}"
                return ItemOutcome(item, tuple(_failed(item, s, None, reason)
                                               for s in item.slots))
            results = [_failed(item, e.slot, None, str(e.error)) for e in item_plan.errors]
            with self.metrics.timer("item.download", track="items"):
                loaded = await asyncio.gather(
                    *(self._load(p, facts) for p in item_plan.slots)
                )
            token = SAVE_PHASE.set(True)
            try:
                with self.metrics.timer("item.save_to_disk", track="items"):
                    results.extend(await self._save(item, loaded))
            finally:
                SAVE_PHASE.reset(token)
        return ItemOutcome(item, tuple(results))

    # -- download phase -------------------------------------------------
    async def _load(self, planned: planner.PlannedSlot, facts: _StoreFacts) -> _Loaded:
        source = planned.source
        if isinstance(source, planner.Memory):
            return _Loaded(planned, data=source.data)
        if isinstance(source, planner.Cache):
            cached = await self._from_cache(planned, source.url)
            if cached is not None:
                return cached
            # Evicted or corrupt since planning: ask the one resolver again with
            # what is true now, rather than deciding "download it" here.
            state = planner.SlotState(target=planned.target,
                                      file_exists=facts.file_exists(planned.target))
            source = planner.resolve(planned.slot, state)
            planned = planner.PlannedSlot(planned.slot, planned.target, source)
        if isinstance(source, planner.Web):
            return await self._fetch(planned, source)
        return _Loaded(planned)

    async def _fetch(self, planned: planner.PlannedSlot, web: planner.Web) -> _Loaded:
        """Fetch an original once per run, however many items want it.

        Concurrent wants share one in-flight download; later wants read the
        bytes back from the cache (keeping them in memory would grow with the
        manifest).
        """
        key = (normalize_url(web.url), web.etag, web.last_modified)
        if web.etag is None and web.last_modified is None and self.cache.contains(web.url):
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
        shared = self._inflight.get(key)
        if shared is not None:
            return replace(await asyncio.shield(shared), planned=planned)
        future: asyncio.Future[_Loaded] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            loaded = await self._fetch_network(planned, web)
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._inflight[key]
        future.set_result(loaded)
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
        try:
            await asyncio.to_thread(self.cache.put, web.url, result.data, etag=result.etag,
                                    last_modified=result.last_modified)
        except Exception:  # a full or broken cache must not fail the slot:
            self.metrics.count("cache.errors")  # the bytes are in hand; only reuse is lost
        return _Loaded(planned, data=result.data, etag=result.etag,
                       last_modified=result.last_modified)

    async def _from_cache(self, planned: planner.PlannedSlot, url: str) -> _Loaded | None:
        """The cached original with its validators, or None (missing, corrupt, unreadable)."""

        def read() -> _Loaded | None:
            data = self.cache.read(url)
            if data is None:
                return None
            entry = self.cache.get(url)
            return _Loaded(planned, data=data, etag=entry.etag if entry else None,
                           last_modified=entry.last_modified if entry else None)

        try:
            return await asyncio.to_thread(read)
        except Exception:  # an unreadable cache is a cache miss, never a failure
            self.metrics.count("cache.errors")
            return None

    # -- save phase (bytes only; SAVE_PHASE is set) ---------------------
    async def _save(self, item: Item, loaded: list[_Loaded]) -> list[SlotResult]:
        loop = asyncio.get_running_loop()
        results: list[SlotResult] = []
        jobs: list[tuple[_Loaded, asyncio.Future[SaveOutcome]]] = []
        for entry in loaded:
            planned = entry.planned
            slot, target, source = planned.slot, str(planned.target), planned.source
            if entry.error is not None:
                results.append(_failed(item, slot, target, entry.error))
            elif isinstance(source, planner.Remove):
                try:  # counted once, as a removed slot, by the driver's sink
                    await asyncio.to_thread(remove_file, str(source.path))
                except OSError as exc:
                    results.append(_failed(item, slot, target,
                                           f"cannot remove {source.path}: {exc.strerror or exc}"))
                else:
                    results.append(_result(item, slot, SlotStatus.REMOVED, target))
            elif isinstance(source, planner.LocalFile) or entry.not_modified:
                results.append(_result(item, slot, SlotStatus.UNCHANGED, target,
                                       etag=entry.etag, last_modified=entry.last_modified))
            elif slot.url is None:  # removal asked, nothing on disk: the art is gone as wanted
                results.append(_result(item, slot, SlotStatus.REMOVED, target))
            elif isinstance(source, planner.Nothing) or entry.data is None:
                results.append(_result(item, slot, SlotStatus.SKIPPED, target))
            else:
                await self._sweep(os.path.dirname(target))
                job = SaveJob(
                    data=entry.data,
                    target=target,
                    format=slot.art.output_format,
                    max_size=None if self.originals else slot.art.default_max_size,
                    quality=self.quality,
                )
                jobs.append((entry, loop.run_in_executor(self.executor, save_one, job)))
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
                results.append(_failed(item, slot, target, str(error)))
                continue
            saved = outcome.saved
            self.metrics.count("images.passthrough", int(saved.passthrough))
            results.append(_result(
                item, slot, SlotStatus.SAVED, saved.path, width=saved.width,
                height=saved.height, size=saved.bytes, sha256=saved.sha256,
                etag=entry.etag, last_modified=entry.last_modified,
                passthrough=saved.passthrough,
            ))
        return results

    async def _sweep(self, directory: str) -> None:
        """Remove temp files a killed run left in a folder we are about to write."""
        if directory in self._swept:
            self._swept.move_to_end(directory)
            return
        self._swept[directory] = None
        if len(self._swept) > _SWEPT_DIRS_REMEMBERED:
            self._swept.popitem(last=False)
        removed = await asyncio.to_thread(sweep_temp_files, directory)
        self.metrics.count("files.temp_swept", removed)

    async def _evict(self, url: str) -> None:
        try:
            await asyncio.to_thread(self.cache.evict, url)
        except Exception:  # best effort; the row already says what failed
            self.metrics.count("cache.errors")


def _failed(item: Item, slot: ArtSlot, path: str | None, reason: str) -> SlotResult:
    """A failed row: the full message for the user, the bare reason for the summary."""
    return _result(item, slot, SlotStatus.FAILED, path, error=_slot_error(item, slot, reason),
                   reason=reason)


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
) -> SlotResult:
    return SlotResult(
        item=item.id, type=item.type.value, art=slot.art.value, index=slot.index,
        url=slot.url, status=status, path=path, width=width, height=height, bytes=size,
        error=error, sha256=sha256, etag=etag, last_modified=last_modified,
        passthrough=passthrough, reason=reason,
    )


# -- the driver -----------------------------------------------------------


def _ignore_sigint() -> None:
    """Render processes leave Ctrl-C to the driver, which stops the run cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_executor(spec: str | Executor, workers: int | None = None) -> tuple[Executor, bool]:
    """Build the save executor; returns (executor, owned) — owned ones are shut down."""
    if isinstance(spec, Executor):
        return spec, False
    n = workers or os.cpu_count() or 2
    if spec == "thread":
        return ThreadPoolExecutor(max_workers=n, thread_name_prefix="save"), True
    if spec == "process":
        return ProcessPoolExecutor(max_workers=n, mp_context=get_context("spawn"),
                                   max_tasks_per_child=1000,
                                   initializer=_ignore_sigint), True
    raise ValueError(
        f"unknown executor {spec!r}: use 'thread', 'process' or 'dask://HOST:PORT'"
    )


def _iter_items(
    items: str | os.PathLike[str] | Iterable[Item | dict[str, Any]],
    on_error: Callable[[ManifestError], None],
) -> Iterator[Item]:
    """Items from a manifest path (opened now: an unreadable one raises here) or objects."""
    if isinstance(items, str | os.PathLike):
        return iter_manifest(items, on_error=on_error)
    return _parse_objects(items, on_error)


def _parse_objects(
    items: Iterable[Item | dict[str, Any]], on_error: Callable[[ManifestError], None]
) -> Iterator[Item]:
    for n, obj in enumerate(items, start=1):
        if isinstance(obj, Item):
            yield obj
            continue
        try:
            yield parse_item(obj, n)
        except ManifestError as exc:
            on_error(exc)


def _store_outcome(store: Store, outcome: ItemOutcome) -> None:
    item = outcome.item
    store.upsert_item(ItemRow(item.id, item.type.value, item.title, item.path))
    for r in outcome.results:
        if r.status is SlotStatus.SAVED:
            store.upsert_artwork(ArtworkRow(
                item=r.item, art=r.art, index=r.index, url=r.url, path=r.path or "",
                width=r.width, height=r.height, bytes=r.bytes, sha256=r.sha256,
                etag=r.etag, last_modified=r.last_modified, status=r.status.value,
            ))
        elif r.status is SlotStatus.REMOVED:
            store.delete_artwork(r.item, r.art, r.index)
        elif r.status is SlotStatus.FAILED:
            store.mark_failed(r.item, r.art, r.index, r.path or "", r.error or "failed")
        elif r.status is SlotStatus.UNCHANGED and (r.etag or r.last_modified):
            store.update_validators(r.item, r.art, r.index, r.etag, r.last_modified)


class _Sink:
    """Driver-side consumer of outcomes: store batches, report rows, totals."""

    def __init__(self, store: Store, report: IO[str] | None, stats: RunStats,
                 metrics: Metrics, progress: ProgressCallback | None, batch_size: int) -> None:
        self.store = store
        self.report = report
        self.stats = stats
        self.metrics = metrics
        self.progress = progress
        self.batch_size = batch_size
        self.pending: list[ItemOutcome] = []

    def bad_line(self, error: ManifestError) -> None:
        self.stats.bad_lines += 1
        _count_error(self.stats.errors, str(error))
        self.metrics.count("manifest.bad_lines")
        if self.report is not None:
            row = {"item": None, "type": None, "art": None, "index": None, "url": None,
                   "status": SlotStatus.FAILED.value, "path": None, "width": None,
                   "height": None, "bytes": None, "error": str(error)}
            self.report.write(json.dumps(row) + "\n")
        if self.progress is not None:
            self.progress(self.stats, None)

    def add(self, outcome: ItemOutcome) -> None:
        self.pending.append(outcome)
        self.stats.items_done += 1
        for r in outcome.results:
            self.stats.slots[r.status.value] += 1
            self.metrics.count(f"images.{r.status.value}")
            if r.status is SlotStatus.SAVED:
                self.stats.bytes_written += r.bytes or 0
            if r.error:
                _count_error(self.stats.errors, r.reason or r.error)
            if self.report is not None:
                self.report.write(json.dumps(r.report_row()) + "\n")
        if self.progress is not None:
            self.progress(self.stats, outcome)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []  # a batch that failed is not retried
        with self.metrics.timer("db.save_item", track="driver"), self.store.batch():
            for outcome in batch:
                _store_outcome(self.store, outcome)
        if self.report is not None:
            self.report.flush()


_ERROR_KINDS_KEPT = 200


def _count_error(errors: Counter[str], message: str) -> None:
    """Group errors for the summary by their first words, without URLs.

    At most ``_ERROR_KINDS_KEPT`` kinds are kept (then "other"), so a run with
    a million distinct failures does not hold a million strings.
    """
    kind = " ".join([w for w in message.split() if "://" not in w][:8])
    if kind not in errors and len(errors) >= _ERROR_KINDS_KEPT:
        kind = "other errors"
    errors[kind] += 1


async def run(
    items: str | os.PathLike[str] | Iterable[Item | dict[str, Any]],
    library: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> RunReport:
    """Fill ``library`` with the art of ``items`` (a manifest path or Items/dicts).

    Options are the fields of ``RunOptions`` (cache_dir, db, concurrency,
    per_host, executor, workers, originals, refresh, quality, report, metrics,
    trace, limits, item_workers, batch_size, cache_bytes, shard_size, shard_retries).
    """
    opts = RunOptions(library=Path(library), **options)
    from artpipe import distributed

    if distributed.wants_cluster(opts.executor):
        return await distributed.run(items, opts, progress=progress)
    # Open the manifest before anything is created in the library: a missing
    # or unreadable manifest is a usage error (exit 2), not a half-made run.
    item_iter = _iter_items(items, lambda error: driver.sink.bad_line(error))
    with ExitStack() as stack:
        driver = open_driver(opts, progress, stack)
        executor, owned = make_executor(opts.executor, opts.workers)
        if owned:
            stack.callback(executor.shutdown, wait=True, cancel_futures=True)
        async with Fetcher(
            opts.fetch_limits(), metrics=driver.metrics, resolve=opts.resolve
        ) as fetcher:
            driver.stats.host_rates = lambda: {
                name: h.requests_per_s for name, h in fetcher.host_stats().items()
            }
            runner = ItemRunner(
                library=driver.library, fetcher=fetcher, cache=driver.cache,
                executor=executor, metrics=driver.metrics, rows_for=driver.store.artwork_for,
                originals=opts.originals, refresh=opts.refresh, quality=opts.quality,
            )
            workers = opts.item_workers or max(4, opts.concurrency // 4)
            try:
                async with aclosing(_pipelined(item_iter, runner, workers)) as outcomes:
                    async for outcome in outcomes:
                        driver.sink.add(outcome)
            finally:
                driver.sink.flush()
                driver.hosts.update(
                    {name: asdict(s) for name, s in fetcher.host_stats().items()}
                )
    return driver.finish(opts)


@dataclass
class Driver:
    """What the driver process holds for a run: the only store writer, and totals."""

    library: Path
    db: Path
    store: Store
    cache: Cache
    metrics: Metrics
    stats: RunStats
    sink: _Sink
    hosts: dict[str, Any] = field(default_factory=dict)

    def finish(self, opts: RunOptions) -> RunReport:
        """Write the metrics/trace files and build the report (after the stores closed)."""
        try:
            if opts.metrics:
                self.metrics.write_json(opts.metrics)
            if opts.trace:
                self.metrics.write_trace(opts.trace)
        except OSError as exc:
            raise ArtpipeError(
                f"the run finished (library and store are up to date) but {exc.filename} "
                f"could not be written: {exc.strerror or exc}"
            ) from exc
        return RunReport(stats=self.stats, metrics=self.metrics, library=self.library,
                         db=self.db, report_path=opts.report, metrics_path=opts.metrics,
                         trace_path=opts.trace, hosts=self.hosts)


def open_driver(opts: RunOptions, progress: ProgressCallback | None, stack: ExitStack) -> Driver:
    """Check the library, open store, cache and report; ``stack`` closes them.

    Synchronous on purpose: a handful of stat/open calls at start-up, before
    the event loop has anything else to do.
    """
    library = Path(os.path.realpath(opts.library))
    if not library.is_dir():
        raise ArtpipeError(
            f"library folder {opts.library} does not exist; create it or pass the right --library"
        )
    db = opts.db or default_db_path(library)
    store = stack.enter_context(Store(db))
    cache_dir = opts.cache_dir or (library / ".artpipe" / "cache")
    try:
        cache = stack.enter_context(Cache(cache_dir, max_bytes=opts.cache_bytes))
    except Exception as exc:  # OSError or the cache index's sqlite3.Error
        raise ArtpipeError(
            f"cannot open the download cache in {cache_dir}: {exc}; "
            "check the folder is writable, or pass --cache-dir to put it elsewhere"
        ) from exc
    report: IO[str] | None = None
    if opts.report:
        try:
            report = stack.enter_context(open(opts.report, "w", encoding="utf-8"))
        except OSError as exc:
            raise ArtpipeError(
                f"cannot write the report {opts.report}: {exc.strerror or exc}; "
                "pick a writable --report path"
            ) from exc
    metrics = Metrics(trace=opts.trace is not None)
    for status in SlotStatus:  # every DESIGN counter is present, even at zero
        metrics.count(f"images.{status.value}", 0)
    metrics.count("images.passthrough", 0)
    stats = RunStats()
    sink = _Sink(store, report, stats, metrics, progress, opts.batch_size)
    return Driver(library, db, store, cache, metrics, stats, sink)


async def _pipelined(
    items: Iterator[Item], runner: ItemRunner, workers: int
) -> AsyncGenerator[ItemOutcome, None]:
    """Run ``workers`` item tasks over a bounded queue; yield outcomes as they finish."""
    todo: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=workers * 2)
    done: asyncio.Queue[ItemOutcome | None] = asyncio.Queue(maxsize=workers * 2)

    async def produce() -> None:
        for item in items:
            await todo.put(item)
        for _ in range(workers):
            await todo.put(None)

    async def work() -> None:
        while (item := await todo.get()) is not None:
            await done.put(await runner.process(item))
        await done.put(None)

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(produce())
            for _ in range(workers):
                tg.create_task(work())
            finished = 0
            while finished < workers:
                outcome = await done.get()
                if outcome is None:
                    finished += 1
                else:
                    yield outcome
    except BaseExceptionGroup as group:
        # One failing task (a broken store, a bad manifest read) should reach
        # the caller as itself, so the CLI can print one line, not a group.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
