"""The single-machine run: item workers on this event loop, renders on a local executor.

Reads like the data flow: open the driver (store, cache, report), build the
save executor, open one ``ItemRunner`` (and with it the run's one HTTP
session), then record each item's outcome as the pipelined workers finish it.
"""

from __future__ import annotations

from contextlib import ExitStack, aclosing

from artpipe.pipeline.driver import (
    Items,
    ProgressCallback,
    RunReport,
    iter_items,
    make_executor,
    open_driver,
    pipelined,
)
from artpipe.pipeline.options import RunOptions
from artpipe.pipeline.runner import ItemRunner


async def run(items: Items, opts: RunOptions, *, progress: ProgressCallback | None = None
              ) -> RunReport:
    """Fill ``opts.library`` with the art of ``items`` on this machine."""
    # Open the manifest before anything is created in the library: a missing
    # or unreadable manifest is a usage error (exit 2), not a half-made run.
    item_iter = iter_items(items, lambda error: driver.sink.bad_line(error))
    with ExitStack() as stack:
        driver = open_driver(opts, progress, stack)
        executor, owned = make_executor(opts.executor, opts.workers)
        if owned:
            stack.callback(executor.shutdown, wait=True, cancel_futures=True)
        limits = opts.fetch_limits()
        async with ItemRunner.open(
            limits, library=driver.library, cache=driver.cache, executor=executor,
            metrics=driver.metrics, rows_for=driver.rows_for,
            settings=opts.item_settings(), resolve=opts.resolve,
        ) as runner:
            fetcher = runner.fetcher
            driver.stats.host_rates = lambda: {
                name: h.requests_per_s for name, h in fetcher.host_stats().items()
            }
            driver.stats.host_windows = fetcher.host_windows
            try:
                async with aclosing(pipelined(driver.unique(item_iter, rows_ahead=True), runner,
                                              opts.item_workers_for(limits))) as outcomes:
                    async for outcome in outcomes:
                        driver.sink.add(outcome)
            finally:
                driver.sink.flush()
                driver.hosts.update(runner.host_stats())
    return driver.finish(opts)
