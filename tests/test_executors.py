"""Executors from the Python API, and everything that crosses a process boundary.

Errors and dataclasses travel by pickle between the driver and a spawn process
pool or a Dask worker. An exception whose ``args`` miss a field, or a dataclass
a worker cannot import, fails only there — far from the code that broke it —
so every class is round-tripped here, through ``pickle`` and through a real
spawn process.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import pickle
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
from artpipe import errors, pipeline
from artpipe.errors import ArtpipeError, DecodeError, StoreError
from artpipe.fetch import FetchLimits
from artpipe.models import ArtSlot, ArtType, ContentType, ImageInfo, Item, SavedImage, SlotStatus
from artpipe.pipeline import ItemOutcome, ItemSettings, SlotResult, cluster
from artpipe.pipeline.cluster import ShardResult, ShardTask, run_shard
from artpipe.save import SaveJob, SaveOutcome, save_one
from artpipe.store import ArtworkRow

from tests.support.server import ImageServer, make_image

FAST_LIMITS = FetchLimits(max_attempts=2, backoff_base=0.01, backoff_cap=0.05,
                          connect_timeout=2, read_timeout=5, total_timeout=10)

# One instance of every exception class, built the way the code raises it.
ERROR_SAMPLES: dict[type[BaseException], BaseException] = {
    errors.ArtpipeError: errors.ArtpipeError("the run cannot continue"),
    errors.ManifestError: errors.ManifestError("unknown type 'film'", 7, "m.jsonl"),
    errors.UnsafePathError: errors.UnsafePathError("path escapes the library", "../x.mkv"),
    errors.FetchError: errors.FetchError("could not fetch", "http://h/p.jpg", None, 1),
    errors.FetchTimeoutError: errors.FetchTimeoutError("read timeout", "http://h/p.jpg",
                                                       None, 4),
    errors.ResponseTooLargeError: errors.ResponseTooLargeError("over 50 MB",
                                                               "http://h/p.jpg", 200, 1),
    errors.NotAnImageError: errors.NotAnImageError("an HTML page", "http://h/p.jpg", 200, 1),
    errors.RedirectError: errors.RedirectError("redirect loop", "http://h/p.jpg", 302, 1),
    errors.HTTPStatusError: errors.HTTPStatusError("HTTP 404", "http://h/p.jpg", 404, 1),
    errors.DecodeError: errors.DecodeError("truncated JPEG", "p.jpg"),
    errors.UnsupportedFormatError: errors.UnsupportedFormatError("TIFF is not read", None),
    errors.ImageTooLargeError: errors.ImageTooLargeError("120 MP > 100 MP", "p.jpg"),
    errors.ImageTooComplexError: errors.ImageTooComplexError("more than 100 scans", "p.jpg"),
    errors.EncodeError: errors.EncodeError("PNG encoder failed", "p.png"),
    errors.SaveError: errors.SaveError(28, "No space left on device", "/lib/p.jpg"),
    errors.InternalError: errors.InternalError("bug in write_image: index out of range"),
    StoreError: StoreError("the artpipe database is locked"),
}


def error_classes() -> list[type[BaseException]]:
    return [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, BaseException) and cls.__module__ == errors.__name__]


def error_facts(exc: BaseException) -> tuple[Any, ...]:
    """What must survive the trip: type, args, message, attributes, OSError fields."""
    os_fields = ((exc.errno, exc.strerror, exc.filename) if isinstance(exc, OSError)
                 else None)
    return type(exc), exc.args, str(exc), dict(vars(exc)), os_fields


def jpeg(width: int = 320, height: int = 200, seed: int = 1) -> bytes:
    return make_image(width, height, seed=seed)


def dataclass_samples(tmp: Path) -> list[Any]:
    """One instance of every dataclass that crosses a pool, nested the way it travels."""
    slot = ArtSlot(ArtType.EXTRAFANART, 2, "http://h/x2.jpg", "http://h/x2_w300.jpg")
    item = Item("tt1", ContentType.MOVIE, "Movies/A/A.mkv", "A", 1979, None,
                (ArtSlot(ArtType.POSTER, 0, "http://h/p.jpg"), slot),
                frozenset({ArtType.EXTRAFANART}), 3)
    saved = SavedImage(str(tmp / "p.jpg"), "jpeg", 1000, 1500, 12345, "ab" * 32, True)
    result = SlotResult("tt1", "movie", "poster", 0, "http://h/p.jpg", SlotStatus.SAVED,
                        saved.path, 1000, 1500, 12345, None, "ab" * 32, '"e"', None, True)
    row = ArtworkRow("tt1", "poster", 0, "http://h/p.jpg", saved.path, 1000, 1500, 12345,
                     "ab" * 32, '"e"', None, "saved", None, 1.5)
    outcome = ItemOutcome(item, (result,))
    task = ShardTask(3, (item,), {"tt1": {("poster", 0): row}}, str(tmp), str(tmp / "c"),
                     FAST_LIMITS, 4, {"127.0.0.1": 2}, None,
                     ItemSettings(originals=False, refresh=True, quality=85), 1024)
    return [
        slot, item, saved, result, row, outcome, task,
        ShardResult(3, (outcome,), {"counters": {"http.requests": 2}, "samples": {}},
                    {"h": {"host": "h", "requests": 2}}, "host-0"),
        SaveJob(b"\xff\xd8 bytes", saved.path, "jpeg", (1000, 1500), 85),
        SaveOutcome(saved, None, 1, 2.5, "1:save_0"),
        ImageInfo("jpeg", 10, 20, 6),
        FetchLimits(concurrency=3, per_host=1),
    ]


def same(a: Any, b: Any) -> bool:
    """Dataclass equality, with exceptions (compared by identity) compared by facts."""
    if isinstance(a, SaveOutcome) and isinstance(b, SaveOutcome):
        ea = error_facts(a.error) if a.error else None
        eb = error_facts(b.error) if b.error else None
        return (a.saved, a.start_ns, a.ms, a.worker, ea) == (b.saved, b.start_ns, b.ms,
                                                              b.worker, eb)
    return bool(a == b)


# -- module-level functions the spawn children import -----------------------------


def echo(value: Any) -> Any:
    return value


def raise_it(exc: BaseException) -> None:
    raise exc


@pytest.fixture(scope="module")
def spawn_pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        yield pool


# -- pickling ---------------------------------------------------------------------


def test_every_error_class_has_a_sample() -> None:
    assert set(error_classes()) <= set(ERROR_SAMPLES), "add the new class to ERROR_SAMPLES"


@pytest.mark.parametrize("cls", list(ERROR_SAMPLES), ids=lambda c: c.__name__)
def test_errors_pickle_round_trip(cls: type[BaseException]) -> None:
    exc = ERROR_SAMPLES[cls]
    back = pickle.loads(pickle.dumps(exc))
    assert error_facts(back) == error_facts(exc)


def test_errors_come_back_from_a_spawn_process(spawn_pool: ProcessPoolExecutor) -> None:
    futures = {cls: spawn_pool.submit(raise_it, exc) for cls, exc in ERROR_SAMPLES.items()}
    for cls, future in futures.items():
        back = future.exception(timeout=60)
        assert back is not None
        assert error_facts(back) == error_facts(ERROR_SAMPLES[cls])


def test_dataclasses_cross_pickle_and_a_spawn_process(
    spawn_pool: ProcessPoolExecutor, tmp_path: Path
) -> None:
    samples = dataclass_samples(tmp_path)
    failed = SaveOutcome(None, ERROR_SAMPLES[errors.DecodeError], 1, 2.0,  # type: ignore[arg-type]
                         "1:save_0")
    samples.append(failed)
    for sample in samples:
        assert same(pickle.loads(pickle.dumps(sample)), sample), sample
    for sample, back in zip(samples, spawn_pool.map(echo, samples, timeout=60), strict=True):
        assert same(back, sample), sample


# -- the save step in a spawn pool --------------------------------------------------


def test_save_one_runs_in_a_spawn_process(spawn_pool: ProcessPoolExecutor,
                                          tmp_path: Path) -> None:
    good = SaveJob(jpeg(640, 400), str(tmp_path / "a" / "fanart.jpg"), "jpeg", (320, 320))
    bad = SaveJob(b"<!DOCTYPE html><html>", str(tmp_path / "a" / "poster.jpg"), "jpeg")
    ok, broken = spawn_pool.map(save_one, [good, bad], timeout=60)
    assert ok.error is None and ok.saved is not None
    assert (ok.saved.width, ok.saved.height) == (320, 200)
    assert hashlib.sha256(Path(good.target).read_bytes()).hexdigest() == ok.saved.sha256
    assert broken.saved is None and isinstance(broken.error, DecodeError)
    assert not Path(bad.target).exists()


# -- executor instances from the Python API -----------------------------------------


def manifest(srv: ImageServer, movies: int = 4) -> list[dict[str, Any]]:
    for n in range(movies):
        srv.add_image(f"/m{n}/fanart.jpg", jpeg(800, 450, seed=n))
    return [{"id": f"tt{n}", "type": "movie", "title": f"M{n}",
             "path": f"Movies/M{n}/M{n}.mkv",
             "art": {"poster": srv.url(f"/m{n}/poster.jpg"),
                     "fanart": srv.url(f"/m{n}/fanart.jpg"),
                     "extrafanart": [srv.url(f"/m{n}/x1.jpg")]}} for n in range(movies)]


def digests(library: Path) -> dict[str, str]:
    return {str(p.relative_to(library)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in library.rglob("*") if p.is_file() and ".artpipe" not in p.parts}


async def run_into(items: Any, library: Path, executor: str | Executor) -> pipeline.RunReport:
    library.mkdir()
    return await pipeline.run(items, library, executor=executor, workers=2,
                              limits=FAST_LIMITS)


@pytest.mark.parametrize("kind", ["thread", "spawn"])
async def test_an_executor_instance_from_the_api_saves_and_stays_open(
    kind: str, tmp_path: Path
) -> None:
    executor: Executor = (ThreadPoolExecutor(max_workers=2) if kind == "thread" else
                          ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")))
    with executor:
        assert not cluster.wants_cluster(executor)
        async with ImageServer() as srv:
            items = manifest(srv)
            expected_report = await run_into(items, tmp_path / "ref", "thread")
            report = await run_into(items, tmp_path / "lib", executor)
        assert report.exit_code == 0
        assert report.summary() == expected_report.summary()
        assert report.metrics.counter("http.requests_in_save") == 0
        assert digests(tmp_path / "lib") == digests(tmp_path / "ref")
        # The caller owns the executor: the run must not have shut it down.
        assert executor.submit(echo, 7).result(timeout=60) == 7


async def test_a_shard_runs_in_a_plain_spawn_process(
    spawn_pool: ProcessPoolExecutor, tmp_path: Path
) -> None:
    """run_shard needs no Dask: plain values in, plain values out."""
    library = tmp_path / "lib"
    library.mkdir()
    async with ImageServer() as srv:
        items = tuple(pipeline.iter_items(manifest(srv, 3), lambda e: None))
        task = ShardTask(0, items, {}, str(library), str(tmp_path / "cache"), FAST_LIMITS,
                         4, {}, workers=1)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(spawn_pool, run_shard, task)
    assert isinstance(result, ShardResult) and result.shard == 0
    statuses = [r.status for o in result.outcomes for r in o.results]
    assert statuses == [SlotStatus.SAVED] * 9
    assert result.metrics["counters"]["http.requests"] == 9
    assert len(digests(library)) == 9
    assert (tmp_path / "cache" / "workers").is_dir()  # a per-process cache under the root


def test_an_unknown_executor_string_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown executor"):
        asyncio.run(pipeline.run([], tmp_path, executor="gpu"))
    with pytest.raises(ArtpipeError, match="dask://HOST:PORT"):
        asyncio.run(pipeline.run([], tmp_path, executor="dask://"))
