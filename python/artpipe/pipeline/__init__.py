"""The run engine: manifest → plan → fetch → save → store, pipelined across items.

Dependencies point one way, and a manifest line travels through the modules
in this order:

- ``options``: ``RunOptions``, the defaults the CLI shows, and the rules
  derived from them (cache folder, item workers, fetch limits);
- ``runner``: ``ItemRunner`` plans one item (``artpipe.plan``), downloads
  exactly what the plan says (``artpipe.fetch``) and saves the bytes
  (``artpipe.save``), returning an ``ItemOutcome``;
- ``driver``: the one store writer and the report (``StoreSink``), manifest
  iteration, the bounded queues between item workers, the save executor;
- ``local``: a run on this machine; ``cluster``: a run sharded over Dask.

``run`` below is the one place that chooses between ``local`` and ``cluster``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from artpipe.pipeline.options import RunOptions, RunOptionsArgs

if TYPE_CHECKING:
    from artpipe.pipeline.driver import (
        Driver,
        Items,
        ProgressCallback,
        RunReport,
        RunStats,
        StoreSink,
        check_outputs,
        iter_items,
        make_executor,
        open_driver,
        pipelined,
    )
    from artpipe.pipeline.runner import ItemOutcome, ItemRunner, ItemSettings, SlotResult

# The engine (and aiohttp with it) loads on first use: the CLI reads its defaults from
# ``options`` on every start, and ``artpipe --help`` should not wait for an HTTP client.
_HOME = {
    **dict.fromkeys(["Driver", "Items", "ProgressCallback", "RunReport", "RunStats",
                     "StoreSink", "check_outputs", "iter_items", "make_executor",
                     "open_driver", "pipelined"], "driver"),
    **dict.fromkeys(["ItemOutcome", "ItemRunner", "ItemSettings", "SlotResult"], "runner"),
    **dict.fromkeys(["budget", "claims", "cluster", "driver", "local", "options", "runner"]),
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'artpipe.pipeline' has no attribute {name!r}")
    home = _HOME[name]
    if home is None:  # a submodule
        value: Any = importlib.import_module(f"artpipe.pipeline.{name}")
    else:
        value = getattr(importlib.import_module(f"artpipe.pipeline.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


async def run(
    items: Items,
    library: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    **options: Unpack[RunOptionsArgs],
) -> RunReport:
    """Fill ``library`` with the art of ``items`` (a manifest path or Items/dicts).

    Options are the fields of ``RunOptions`` (cache_dir, db, concurrency,
    per_host, executor, workers, originals, refresh, keep_changed, quality, report, metrics,
    trace, limits, item_workers, batch_size, cache_bytes, resolve, shard_size,
    shard_retries, extrafanart, movie_sets_folder). ``executor="dask://HOST:PORT"``
    (or a Dask client's executor) runs on that cluster; anything else runs here.
    """
    from artpipe.pipeline import cluster, local
    from artpipe.pipeline.driver import check_outputs

    opts = RunOptions(library=Path(library), **options)
    check_outputs(items, opts)
    if cluster.wants_cluster(opts.executor):
        return await cluster.run(items, opts, progress=progress)
    return await local.run(items, opts, progress=progress)


__all__ = [
    "Driver",
    "ItemOutcome",
    "ItemRunner",
    "ItemSettings",
    "Items",
    "ProgressCallback",
    "RunOptions",
    "RunOptionsArgs",
    "RunReport",
    "RunStats",
    "SlotResult",
    "StoreSink",
    "check_outputs",
    "iter_items",
    "make_executor",
    "open_driver",
    "pipelined",
    "run",
]
