"""The driver's side of a run: the one store writer, the report, and the plumbing.

Shared by the local and the cluster run: ``open_driver`` checks the library and
opens the store, the cache and the report; ``StoreSink`` records outcomes
(store batches, report rows, totals); ``iter_items`` reads the manifest;
``pipelined`` runs item workers over bounded queues, so memory stays bounded
by the queue sizes, never by the manifest size; ``make_executor`` builds the
save executor.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any

from artpipe.cache import Cache
from artpipe.errors import ArtpipeError, ManifestError
from artpipe.manifest import iter_manifest, parse_item
from artpipe.metrics import Metrics
from artpipe.models import Item, SlotStatus
from artpipe.pipeline.options import RunOptions
from artpipe.pipeline.runner import REPORT_KEYS, ItemOutcome, ItemRunner, SlotResult
from artpipe.redact import DEFAULT_SECRET_PARAMS, redact_text, redact_url
from artpipe.store import ArtworkRow, ItemRow, Store, default_db_path

Items = str | os.PathLike[str] | Iterable[Item | dict[str, Any]]
"""What a run reads: a manifest path, or Items / manifest-shaped dicts."""

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
    # host -> requests it may have in flight now (its adaptive window); set likewise
    host_windows: Callable[[], dict[str, int]] = field(default=dict, repr=False)

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



ProgressCallback = Callable[[RunStats, ItemOutcome | None], None]


def _ignore_sigint() -> None:
    """Render processes leave Ctrl-C and SIGTERM to the driver, which stops the run cleanly
    (``docker stop`` and systemd signal the whole process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class RestartingPool(Executor):
    """A process pool that replaces itself when one of its workers dies.

    A killed render worker (the OOM killer, a segfault) breaks a
    ``ProcessPoolExecutor`` for good: the renders it held fail with
    ``BrokenProcessPool`` — per slot, in the runner — and so would every
    later submit, ending the run. Here a submit to a broken pool starts a
    fresh one, so only the slots the dead pool held are lost.
    """

    def __init__(self, make: Callable[[], ProcessPoolExecutor]) -> None:
        self._make = make
        self._pool = make()
        self._lock = threading.Lock()
        self.restarts = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            try:
                return self._pool.submit(fn, *args, **kwargs)
            except BrokenProcessPool:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._make()
                self.restarts += 1
                return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            pool = self._pool
        pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def make_executor(spec: str | Executor, workers: int | None = None) -> tuple[Executor, bool]:
    """Build the save executor; returns (executor, owned) — owned ones are shut down."""
    if isinstance(spec, Executor):
        return spec, False
    n = workers or os.cpu_count() or 2
    if spec == "thread":
        return ThreadPoolExecutor(max_workers=n, thread_name_prefix="save"), True
    if spec == "process":
        return RestartingPool(lambda: ProcessPoolExecutor(
            max_workers=n, mp_context=get_context("spawn"), max_tasks_per_child=1000,
            initializer=_ignore_sigint)), True
    raise ValueError(
        f"unknown executor {spec!r}: use 'thread', 'process' or 'dask://HOST:PORT'"
    )


def check_outputs(items: Items, opts: RunOptions, *, html: Path | None = None) -> None:
    """Refuse a run whose output files alias its inputs or each other, before any is written.

    ``--report manifest.jsonl`` would truncate the manifest before its first
    line is read; ``--metrics`` on the database would replace it with JSON; two
    outputs on one file keep only the last. Paths are compared after following
    links (and by inode, for hard links).
    """
    library = Path(os.path.realpath(opts.library))
    inputs: dict[str, Path] = {"--db": opts.db or default_db_path(library)}
    if isinstance(items, str | os.PathLike):
        inputs["the manifest"] = Path(items)
    outputs = {f"--{name}": path for name, path in
               (("report", opts.report), ("metrics", opts.metrics), ("trace", opts.trace),
                ("html", html)) if path is not None}
    seen: dict[object, str] = {}
    for name, path in [*inputs.items(), *outputs.items()]:
        for key in _file_keys(Path(path)):
            other = seen.get(key)
            if other is not None and (name in outputs or other in outputs):
                raise ArtpipeError(
                    f"{name} {path} is the same file as {other}; writing it would destroy "
                    "that file — give each output its own path")
            seen.setdefault(key, name)


def _file_keys(path: Path) -> list[object]:
    """What identifies a file: its resolved path, and its inode when it exists."""
    keys: list[object] = [os.path.realpath(path)]
    try:
        st = os.stat(path)
    except OSError:
        return keys
    keys.append((st.st_dev, st.st_ino))
    return keys


def batched(items: Iterable[Item], size: int) -> Iterator[tuple[Item, ...]]:
    """``items`` in tuples of ``size`` (the last one shorter): itertools.batched, 3.12+."""
    it = iter(items)
    while chunk := tuple(itertools.islice(it, size)):
        yield chunk


def iter_items(
    items: Items,
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


def store_outcomes(store: Store, outcomes: list[ItemOutcome]) -> None:
    """Record a batch of outcomes; the common rows (items, saved files) in one call each."""
    items, saved = [], []
    for outcome in outcomes:
        item = outcome.item
        items.append(ItemRow(item.id, item.type.value, item.title, item.path))
        for r in outcome.results:
            if r.status is SlotStatus.SAVED:
                saved.append(ArtworkRow(
                    item=r.item, art=r.art, index=r.index, url=r.url, path=r.path or "",
                    width=r.width, height=r.height, bytes=r.bytes, sha256=r.sha256,
                    etag=r.etag, last_modified=r.last_modified, status=r.status.value,
                    mtime_ns=r.mtime_ns,
                ))
            elif r.status is SlotStatus.REMOVED:
                store.delete_artwork(r.item, r.art, r.index)
            elif r.status is SlotStatus.FAILED:
                store.mark_failed(r.item, r.art, r.index, r.path or "", r.error or "failed",
                                  refused_url=r.url if r.refused else None)
            elif r.status is SlotStatus.UNCHANGED:
                if r.etag or r.last_modified:
                    store.update_validators(r.item, r.art, r.index, r.etag, r.last_modified)
                if r.mtime_ns is not None:
                    store.update_mtime(r.item, r.art, r.index, r.mtime_ns)
    store.upsert_items(items)
    store.upsert_artworks(saved)


class StoreSink:
    """Driver-side consumer of outcomes: store batches, report rows, totals."""

    def __init__(self, store: Store, report: IO[str] | None, stats: RunStats,
                 metrics: Metrics, progress: ProgressCallback | None, batch_size: int,
                 secret_params: Iterable[str] = DEFAULT_SECRET_PARAMS) -> None:
        self.store = store
        self.secret_params = frozenset(secret_params)
        self.report = report
        self.stats = stats
        self.metrics = metrics
        self.progress = progress
        self.batch_size = batch_size
        self.pending: list[ItemOutcome] = []

    def bad_line(self, error: ManifestError) -> None:
        self.stats.bad_lines += 1
        message = redact_text(str(error), self.secret_params)
        _count_error(self.stats.errors, message)
        self.metrics.count("manifest.bad_lines")
        if self.report is not None:
            row = dict.fromkeys(REPORT_KEYS)  # a line rejected whole: no slot to describe
            row.update(item=error.item, status=SlotStatus.FAILED.value, error=message)
            self.report.write(json.dumps(row) + "\n")
        if self.progress is not None:
            self.progress(self.stats, None)

    def add(self, outcome: ItemOutcome) -> None:
        # secrets in URLs never reach the report, the store or the page (artpipe.redact)
        outcome = ItemOutcome(outcome.item, tuple(self._redacted(r) for r in outcome.results))
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

    def _redacted(self, r: SlotResult) -> SlotResult:
        secret = self.secret_params
        url = redact_url(r.url, secret) if r.url else r.url
        error = redact_text(r.error, secret) if r.error else r.error
        reason = redact_text(r.reason, secret) if r.reason else r.reason
        if (url, error, reason) == (r.url, r.error, r.reason):
            return r
        return replace(r, url=url, error=error, reason=reason)

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []  # a batch that failed is not retried
        with self.metrics.timer("db.save_item", track="driver"), self.store.batch():
            store_outcomes(self.store, batch)
        if self.report is not None:
            self.report.flush()


_ERROR_KINDS_KEPT = 200
# Manifest items the driver checks (and reads the store rows of) together, at most; a chunk
# also ends once gathering it took this long (a manifest streamed through a pipe).
_ITEMS_AHEAD = 128
_CHUNK_WAIT_S = 0.05


def _arriving(items: Iterable[Item], most: int, wait_s: float) -> Iterator[tuple[Item, ...]]:
    """``items`` in chunks of up to ``most``; a chunk is cut short as soon as its items took
    ``wait_s`` to arrive, so items a slow producer writes one by one start one by one."""
    it = iter(items)
    while True:
        chunk: list[Item] = []
        start = time.monotonic()
        for item in it:
            chunk.append(item)
            if len(chunk) >= most or time.monotonic() - start > wait_s:
                break
        if not chunk:
            return
        yield tuple(chunk)


def _count_error(errors: Counter[str], message: str) -> None:
    """Group errors for the summary by their first words, without URLs.

    At most ``_ERROR_KINDS_KEPT`` kinds are kept (then "other"), so a run with
    a million distinct failures does not hold a million strings.
    """
    kind = " ".join([w for w in message.split() if "://" not in w][:8])
    if kind not in errors and len(errors) >= _ERROR_KINDS_KEPT:
        kind = "other errors"
    errors[kind] += 1


@dataclass
class Driver:
    """What the driver process holds for a run: the only store writer, and totals."""

    library: Path
    db: Path
    store: Store
    cache: Cache
    metrics: Metrics
    stats: RunStats
    sink: StoreSink
    hosts: dict[str, Any] = field(default_factory=dict)
    _rows_ahead: dict[str, dict[tuple[str, int], ArtworkRow]] = field(
        default_factory=dict, repr=False)

    def unique(self, items: Iterator[Item], *, rows_ahead: bool = False) -> Iterator[Item]:
        """``items`` without the lines that repeat an earlier line's id.

        Two lines with one id share one set of store rows: with two paths
        they would rewrite each other's art on every run. The first line in
        the manifest wins; a later one is a bad line naming the first.

        Items are checked a chunk at a time (a few queries per chunk, not per item);
        with ``rows_ahead`` their store rows are read with them, for ``rows_for``.
        """
        for chunk in _arriving(items, _ITEMS_AHEAD, _CHUNK_WAIT_S):
            firsts = self.store.first_lines_of([(i.id, i.line, i.path) for i in chunk])
            fresh = [item for item, first in zip(chunk, firsts, strict=True) if first is None]
            if rows_ahead:
                self._rows_ahead.update(self.store.artwork_for_many([i.id for i in fresh]))
            for item, first in zip(chunk, firsts, strict=True):
                if first is None:
                    yield item
                    continue
                line, path = first
                where = f"line {line}" if line else "an earlier item"
                self.sink.bad_line(ManifestError(
                    f"id {item.id!r} was already given by {where} (path {path!r}); ids must "
                    "be unique — the first wins and this line is not run",
                    line=item.line or None, item=item.id))

    def rows_for(self, item_id: str) -> dict[tuple[str, int], ArtworkRow]:
        """The store rows of an item ``unique(rows_ahead=True)`` gave (read with its chunk:
        only the item itself writes them, after this)."""
        rows = self._rows_ahead.pop(item_id, None)
        return rows if rows is not None else self.store.artwork_for(item_id)

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
    cache_dir = opts.cache_root(library)
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
    for status in SlotStatus:  # every documented counter is present, even at zero
        metrics.count(f"images.{status.value}", 0)
    metrics.count("images.passthrough", 0)
    stats = RunStats()
    sink = StoreSink(store, report, stats, metrics, progress, opts.batch_size,
                     opts.secret_params)
    return Driver(library, db, store, cache, metrics, stats, sink)


async def pipelined(
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
