"""Scale-out on Dask: shard the manifest, fetch + save on workers, record on the driver.

``--executor dask://HOST:PORT`` (or a Dask ``Client.get_executor()`` passed to
``artpipe.run``) turns the run into a sharded one:

- The driver streams the manifest, cuts it into shards of ``shard_size`` items,
  snapshots each shard's store rows (workers never open the SQLite store: one
  writer, and SQLite on shared storage cannot take writers from several
  machines) and submits the module-level ``run_shard`` with plain picklable
  values. At most about two shards per worker thread are in flight, so the
  driver's memory is bounded by the shard size, never by the manifest size.
- A worker runs the shard with the same ``ItemRunner`` as a local run, under
  its own event loop (``asyncio.run`` inside the task), its own ``Fetcher`` and
  its own render thread pool, and writes straight into the shared library.
  Every worker sees ``1/slots`` of the global and per-host limits (slots = the
  cluster's worker threads, each of which can run one shard; at least 1 each),
  so the whole cluster still respects a host's limit.
- It returns plain outcomes (``ItemOutcome``) and a metrics snapshot; the
  driver alone writes the store and the report (through the same
  ``StoreSink`` as a local run) and reports progress through the same
  callback, shard by shard.
- Dask retries a failed shard (``shard_retries``) and reschedules a lost one
  (a worker that died). A shard that still fails is recorded as failed slots,
  and the run goes on; since files are written atomically and recorded only
  after they exist, a rerun completes exactly what is missing.

Each worker keeps its cache of originals in ``<cache root>/workers/<host>-<worker
name>``: the cache's SQLite index must have one writer, and a shared folder
reached from several machines cannot give it that.

Dask is optional (``pip install 'artpipe[dask]'``); it is imported only when a
cluster run starts.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import os
import re
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from artpipe.cache import DEFAULT_MAX_BYTES, Cache
from artpipe.errors import ArtpipeError
from artpipe.fetch import FetchLimits
from artpipe.metrics import Metrics
from artpipe.models import Item
from artpipe.pipeline.driver import (
    Driver,
    Items,
    ProgressCallback,
    RunReport,
    batched,
    iter_items,
    open_driver,
    pipelined,
)
from artpipe.pipeline.options import RunOptions
from artpipe.pipeline.runner import ItemOutcome, ItemRunner, ItemSettings, failed_outcome
from artpipe.store import ArtworkRow

INSTALL_HINT = "pip install 'artpipe[dask]'"
SCHEME = "dask://"
_HOST_SUMS = ("requests", "bytes", "retries", "throttled", "latency_ms_total")


def wants_cluster(executor: object) -> bool:
    """True for ``dask://HOST:PORT`` and for a Dask ``Client.get_executor()``.

    Checked by class name, so deciding does not import Dask.
    """
    if isinstance(executor, str):
        return executor.startswith(SCHEME)
    cls = type(executor)
    return cls.__name__ == "ClientExecutor" and cls.__module__.startswith("distributed")


def scheduler_address(executor: object) -> str:
    """The scheduler address a ``dask://`` spec or a ``ClientExecutor`` points at."""
    if isinstance(executor, str):
        rest = executor[len(SCHEME):] if executor.startswith(SCHEME) else ""
        if not rest or rest.startswith("/"):
            raise ArtpipeError(
                f"--executor {executor!r} names no scheduler; use dask://HOST:PORT, "
                "e.g. dask://10.0.0.5:8786 (the address `dask scheduler` prints)"
            )
        return rest if "://" in rest else f"tcp://{rest}"
    client = getattr(executor, "_client", None)
    address = getattr(getattr(client, "scheduler", None), "address", None)
    if not isinstance(address, str):
        raise ArtpipeError(
            "this Dask executor's client is not connected to a scheduler; "
            "connect the Client first, or pass executor='dask://HOST:PORT'"
        )
    return address


def require_distributed() -> ModuleType:
    """Import ``dask.distributed`` or explain how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ArtpipeError(
            f"running on a Dask cluster needs dask.distributed, which is not installed "
            f"({exc}); install it with: {INSTALL_HINT}"
        ) from exc
    return distributed


# -- what crosses to a worker and back --------------------------------------------


@dataclass(frozen=True, slots=True)
class ShardTask:
    """One shard's work: items, their store rows, and the settings a worker needs."""

    shard: int
    items: tuple[Item, ...]
    rows: dict[str, dict[tuple[str, int], ArtworkRow]]
    library: str
    cache_root: str
    limits: FetchLimits
    item_workers: int
    host_slots: dict[str, int]
    workers: int | None = None
    settings: ItemSettings = field(default_factory=ItemSettings)
    cache_bytes: int = DEFAULT_MAX_BYTES
    resolve: dict[str, tuple[str, int]] | None = None


@dataclass(frozen=True, slots=True)
class ShardResult:
    """What a shard did: outcomes for the driver to record, metrics to merge."""

    shard: int
    outcomes: tuple[ItemOutcome, ...]
    metrics: dict[str, Any]
    hosts: dict[str, dict[str, Any]]
    worker: str


# -- the worker side --------------------------------------------------------------

_caches: dict[str, Cache] = {}
_caches_lock = threading.Lock()


def run_shard(task: ShardTask) -> ShardResult:
    """Fetch and save one shard (runs in a Dask worker thread, or anywhere else).

    Its own event loop, fetcher and render pool; the store is never opened here.
    """
    tune_malloc()
    return asyncio.run(_run_shard(task))


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_malloc_tuned: bool | None = None


def tune_malloc() -> bool:
    """Undo, for this worker process, what the nanny's ``MALLOC_TRIM_THRESHOLD_`` costs.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so freed
    memory goes back to the OS at once. Setting it also stops glibc from
    raising its mmap threshold, so every decode buffer of a 4K image (25 MB)
    becomes a fresh mmap whose pages fault in again: 13x the page faults, and
    renders about 1.5x slower (bench/bench_scale.py). Keep up to 256 MB of
    freed heap and serve buffers up to 32 MB (glibc's maximum) from it.
    True when the setting was changed; once per process; glibc only.
    """
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        if sys.platform == "linux" and "MALLOC_TRIM_THRESHOLD_" in os.environ:
            try:
                libc = ctypes.CDLL(None)
                _malloc_tuned = bool(libc.mallopt(_M_TRIM_THRESHOLD, 256 * 1024**2)
                                     and libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024**2))
            except (OSError, AttributeError):  # not glibc: nothing to undo
                pass
    return _malloc_tuned


async def _run_shard(task: ShardTask) -> ShardResult:
    metrics = Metrics(trace=False)
    cache = _worker_cache(task.cache_root, task.cache_bytes)
    rows = task.rows
    pool = ThreadPoolExecutor(max_workers=_render_threads(task), thread_name_prefix="save")
    try:
        async with ItemRunner.open(
            task.limits, library=Path(task.library), cache=cache, executor=pool,
            metrics=metrics, rows_for=lambda item_id: rows.get(item_id, {}),
            settings=task.settings, resolve=task.resolve,
        ) as runner:
            outcomes = [o async for o in pipelined(iter(task.items), runner,
                                                    task.item_workers)]
            hosts = runner.host_stats()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return ShardResult(task.shard, tuple(outcomes), metrics.raw(), hosts, _worker_name())


def _worker() -> Any | None:
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:  # not inside a Dask task
        return None


def _worker_name() -> str:
    """``<host>-<worker name>``: stable across a nanny's restarts, safe as a folder name."""
    worker = _worker()
    name = f"pid{os.getpid()}" if worker is None else str(worker.name)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{socket.gethostname()}-{name}")


def _worker_cache(root: str, max_bytes: int) -> Cache:
    """This worker process's cache: one per process, shared by its concurrent shards."""
    directory = os.path.join(root, "workers", _worker_name())
    with _caches_lock:
        cache = _caches.get(directory)
        if cache is None:
            cache = _caches[directory] = Cache(directory, max_bytes=max_bytes)
        return cache


def _render_threads(task: ShardTask) -> int:
    """Render threads for a shard: this machine's cores over the shards it can run at once."""
    if task.workers:
        return task.workers
    worker = _worker()
    slots = 1
    if worker is not None:
        slots = task.host_slots.get(_host_of(worker.address), 0) or worker.state.nthreads
    return max(1, (os.cpu_count() or 1) // max(1, slots))


def _host_of(address: str) -> str:
    hostport = address.split("://", 1)[-1]
    return hostport.rsplit(":", 1)[0]


# -- the driver side --------------------------------------------------------------


def shard_limits(limits: FetchLimits, slots: int) -> FetchLimits:
    """Each shard's share of the global and per-host limits (at least 1 each)."""
    slots = max(1, slots)
    return dataclasses.replace(limits, concurrency=max(1, limits.concurrency // slots),
                               per_host=max(1, limits.per_host // slots))


async def run(
    items: Items,
    opts: RunOptions,
    *,
    progress: ProgressCallback | None = None,
    shard_fn: Callable[[ShardTask], ShardResult] = run_shard,
) -> RunReport:
    """Run ``items`` on the Dask cluster ``opts.executor`` names; see the module docstring.

    ``shard_fn`` must be a module-level function a worker can import (tests
    wrap ``run_shard`` to kill a worker mid-shard).
    """
    dd = require_distributed()
    if opts.shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {opts.shard_size}")
    if opts.shard_retries < 0:
        raise ValueError(f"shard_retries must be >= 0, got {opts.shard_retries}")
    address = scheduler_address(opts.executor)
    with ExitStack() as stack:
        driver = open_driver(opts, progress, stack)
        client = await _connect(dd, address)
        try:
            await _drive(client, items, opts, driver, shard_fn)
        finally:
            await client.close()
    return driver.finish(opts)


async def _connect(dd: ModuleType, address: str) -> Any:
    try:
        return await dd.Client(address, asynchronous=True, set_as_default=False,
                               timeout=30)
    except (OSError, TimeoutError) as exc:
        raise ArtpipeError(
            f"cannot reach the Dask scheduler at {address} ({exc}); start one with "
            f"`dask scheduler` and workers with `dask worker {address}`, or check the address"
        ) from exc


async def _cluster_slots(client: Any, wait_s: float = 60.0) -> dict[str, int]:
    """Worker threads per host (each thread can run one shard at a time)."""
    info = await client.scheduler.identity()
    if not info.get("workers"):
        try:
            await client.wait_for_workers(1, timeout=wait_s)
        except TimeoutError as exc:
            raise ArtpipeError(
                f"the Dask scheduler at {client.scheduler.address} has no workers after "
                f"{wait_s:.0f} s; start some with `dask worker {client.scheduler.address}`"
            ) from exc
        info = await client.scheduler.identity()
    slots: dict[str, int] = {}
    for address, worker in info["workers"].items():
        host = str(worker.get("host") or _host_of(address))
        slots[host] = slots.get(host, 0) + int(worker.get("nthreads") or 1)
    return slots


async def _drive(
    client: Any,
    items: Items,
    opts: RunOptions,
    driver: Driver,
    shard_fn: Callable[[ShardTask], ShardResult],
) -> None:
    host_slots = await _cluster_slots(client)
    slots = sum(host_slots.values())
    limits = shard_limits(opts.fetch_limits(), slots)
    item_workers = opts.item_workers_for(limits)
    cache_root = str(opts.cache_root(driver.library))
    settings = opts.item_settings()
    max_in_flight = 2 * slots  # one running per slot, one queued behind it
    run_id = uuid.uuid4().hex[:8]
    pending: dict[asyncio.Task[ShardResult], tuple[int, tuple[Item, ...], Any]] = {}
    try:
        shards = batched(driver.unique(iter_items(items, driver.sink.bad_line)),
                         opts.shard_size)
        for n, shard in enumerate(shards):
            while len(pending) >= max_in_flight:
                await _collect(pending, driver, opts)
            task = ShardTask(
                shard=n, items=shard,
                rows=driver.store.artwork_for_many([item.id for item in shard]),
                library=str(driver.library), cache_root=cache_root, limits=limits,
                item_workers=item_workers, host_slots=host_slots, workers=opts.workers,
                settings=settings, cache_bytes=opts.cache_bytes,
                resolve=dict(opts.resolve) if opts.resolve else None,
            )
            future = client.submit(shard_fn, task, key=f"artpipe-shard-{run_id}-{n}",
                                   retries=opts.shard_retries, pure=False)
            pending[asyncio.ensure_future(_result(future))] = (n, shard, future)
        while pending:
            await _collect(pending, driver, opts)
    finally:
        driver.sink.flush()
        if pending:
            for waiter in pending:
                waiter.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await client.cancel([future for _, _, future in pending.values()])


async def _result(future: Any) -> ShardResult:
    result: ShardResult = await future
    return result


async def _collect(
    pending: dict[asyncio.Task[ShardResult], tuple[int, tuple[Item, ...], Any]],
    driver: Driver,
    opts: RunOptions,
) -> None:
    """Wait for at least one shard, and record what each finished one did."""
    done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    for waiter in done:
        n, shard, _future = pending.pop(waiter)
        try:
            result = waiter.result()
        # The task's own error, KilledWorker, or a shard cancelled on the cluster
        # (FutureCancelledError is an asyncio.CancelledError): this shard failed,
        # not the run. Our own cancellation arrives at the wait above, not here.
        except (Exception, asyncio.CancelledError) as exc:
            driver.metrics.count("shards.failed")
            reason = (f"shard {n} failed on the Dask cluster after {opts.shard_retries} "
                      f"retries ({type(exc).__name__}: {exc}); nothing was recorded for "
                      "it — rerun to finish it")
            for item in shard:
                driver.sink.add(failed_outcome(item, reason))
            continue
        driver.metrics.count("shards.done")
        driver.metrics.merge(result.metrics)
        _merge_hosts(driver.hosts, result.hosts)
        for outcome in result.outcomes:
            driver.sink.add(outcome)


def _merge_hosts(into: dict[str, Any], hosts: dict[str, dict[str, Any]]) -> None:
    """Sum per-host stats across shards. The span (first start, last end) compares
    monotonic clocks of different processes: exact on one machine, approximate
    across machines."""
    for name, stats in hosts.items():
        current = into.get(name)
        if current is None:
            into[name] = dict(stats)
            continue
        for key in _HOST_SUMS:
            current[key] = current.get(key, 0) + stats.get(key, 0)
        starts = [s for s in (current.get("first_start"), stats.get("first_start")) if s]
        ends = [e for e in (current.get("last_end"), stats.get("last_end")) if e]
        current["first_start"] = min(starts) if starts else None
        current["last_end"] = max(ends) if ends else None
