"""Distributed mode on a real Dask LocalCluster (2 worker processes) on loopback.

One cluster serves the whole module. Each test runs a manifest against a real
``ImageServer`` and checks what a user would: the library is byte-identical to
the local thread run, the store rows agree, a killed worker leaves no partial
file, and a rerun after an interruption fetches only what is missing.

Functions passed as ``shard_fn`` live at module level so the workers can import
them (the fixture puts the repository root on the workers' ``PYTHONPATH``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed as dd  # installed with the test extra: never skip these
import pytest
from artpipe import pipeline
from artpipe.errors import ArtpipeError
from artpipe.fetch import FetchLimits
from artpipe.pipeline import cluster as pipeline_cluster
from artpipe.pipeline.cluster import ShardResult, ShardTask, run_shard
from artpipe.save import TEMP_SUFFIX
from artpipe.store import Store, default_db_path
from PIL import Image

from tests.support.server import ImageServer, make_image

ROOT = Path(__file__).resolve().parent.parent
FAST_LIMITS = FetchLimits(max_attempts=3, backoff_base=0.01, backoff_cap=0.05,
                          connect_timeout=2, read_timeout=5, total_timeout=10)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    old = os.environ.get("PYTHONPATH")
    # Workers import artpipe and this module (for the shard_fn wrappers below).
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "python"), *([old] if old else [])])
    try:
        with dd.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                             host="127.0.0.1", dashboard_address=None,
                             worker_dashboard_address=None) as local:
            yield local
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    with dd.Client(cluster, set_as_default=False) as c:
        yield c


def dask_spec(cluster: Any) -> str:
    return "dask://" + cluster.scheduler_address.split("://", 1)[1]


# -- a manifest that touches every naming rule ------------------------------------


def serve_manifest(srv: ImageServer, movies: int = 12) -> list[dict[str, Any]]:
    """Movies with jpeg and png art (posters shared by pairs), a show and a season."""
    logo = make_image(80, 31, fmt="PNG", seed=3)
    items: list[dict[str, Any]] = []
    for n in range(movies):
        srv.add_image(f"/m{n}/logo.png", logo if n % 3 else make_image(90, 35, fmt="PNG",
                                                                      seed=n),
                      content_type="image/png")
        art = {
            "poster": srv.url(f"/shared/poster{n // 2}.jpg"),
            "fanart": srv.url(f"/m{n}/fanart.jpg"),
            "clearlogo": srv.url(f"/m{n}/logo.png"),
            "extrafanart": [srv.url(f"/m{n}/x1.jpg"), srv.url(f"/m{n}/x2.jpg")],
        }
        items.append({"id": f"tt{n:07d}", "type": "movie", "title": f"Movie {n}",
                      "year": 2000 + n, "path": f"Movies/Movie {n}/Movie {n}.mkv",
                      "art": art})
    items.append({"id": "show1", "type": "tvshow", "title": "Show", "path": "TV/Show",
                  "art": {"poster": srv.url("/show/poster.jpg"),
                          "banner": srv.url("/show/banner.jpg")}})
    items.append({"id": "show1-s1", "type": "season", "title": "Show", "season": 1,
                  "path": "TV/Show", "art": {"poster": srv.url("/show/s1.jpg")}})
    return items


def library_digests(library: Path) -> dict[str, str]:
    """Relative path → sha256 of every file outside .artpipe."""
    return {
        str(p.relative_to(library)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in library.rglob("*")
        if p.is_file() and ".artpipe" not in p.parts
    }


def store_rows(library: Path) -> list[tuple[Any, ...]]:
    """(item, art, index, url, sha256, bytes, relative path, status) of every row."""
    with Store(default_db_path(library)) as store:
        return sorted(
            (r.item, r.art, r.index, r.url, r.sha256, r.bytes,
             str(Path(r.path).relative_to(library)) if r.path else "", r.status)
            for r in store.all_artwork()
        )


def temp_files(library: Path) -> list[Path]:
    return [p for p in library.rglob(f"*{TEMP_SUFFIX}")]


def assert_complete_images(library: Path) -> None:
    for path in library.rglob("*"):
        if path.is_file() and ".artpipe" not in path.parts:
            with Image.open(path) as img:
                img.load()  # a truncated file raises here


async def run(items: Any, library: Path, **options: Any) -> pipeline.RunReport:
    options.setdefault("limits", FAST_LIMITS)
    library.mkdir(exist_ok=True)
    return await pipeline.run(items, library, **options)


async def local_reference(items: Any, library: Path) -> dict[str, str]:
    report = await run(items, library, executor="thread", workers=2)
    assert report.exit_code == 0, failed_slots(library)
    return library_digests(library)


def failed_slots(library: Path) -> list[tuple[str, str, int, str | None]]:
    """(item, art, index, error) of every failed row: what a failing assert should show."""
    with Store(default_db_path(library)) as store:
        return [(r.item, r.art, r.index, r.error) for r in store.all_artwork()
                if r.status == "failed"]


# -- shard functions the workers import ------------------------------------------


def crash_mid_shard(task: ShardTask) -> ShardResult:
    """First attempt at shard 1: save half of it, leave a half-written temp file, die.

    ``os._exit`` kills the worker process the way an OOM kill or a lost machine
    would: no cleanup, no result. The nanny restarts it and the scheduler runs
    the shard again; the marker file makes the second attempt a normal one.
    """
    marker = Path(task.library).parent / f"crashed-{task.shard}"
    if task.shard == 1 and not marker.exists():
        marker.write_text(str(os.getpid()))
        half = len(task.items) // 2
        run_shard(dataclasses.replace(task, items=task.items[:half]))
        victim = Path(task.library) / Path(task.items[half].path).parent
        victim.mkdir(parents=True, exist_ok=True)
        (victim / f".{victim.name}-fanart.jpg.{os.getpid()}{TEMP_SUFFIX}").write_bytes(
            b"\xff\xd8\xff\xe0 half an image")
        os._exit(1)
    return run_shard(task)


def fail_shard_2(task: ShardTask) -> ShardResult:
    """Shard 2 raises on every attempt (a poisoned shard); the others run."""
    if task.shard == 2:
        raise RuntimeError(f"shard 2 cannot run on {os.getpid()}")
    return run_shard(task)


def slow_shard(task: ShardTask) -> ShardResult:
    """A shard that takes a while, so the driver can be interrupted mid-run."""
    if task.shard:
        time.sleep(0.3)
    return run_shard(task)


def wait_idle(client: Any, timeout: float = 30.0) -> None:
    """Wait until no task runs on the cluster (cancelled shards finish on their own)."""
    deadline = time.monotonic() + timeout
    while any(client.processing().values()):
        assert time.monotonic() < deadline, "cluster still busy"
        time.sleep(0.05)


# -- tests ------------------------------------------------------------------------


async def test_cluster_run_matches_the_local_thread_run(cluster: Any, tmp_path: Path) -> None:
    async with ImageServer() as srv:
        items = serve_manifest(srv)
        expected = await local_reference(items, tmp_path / "local")
        local_rows = store_rows(tmp_path / "local")
        srv.reset_counters()
        seen: list[int] = []
        report = await run(items, tmp_path / "dask", executor=dask_spec(cluster),
                           shard_size=3, report=tmp_path / "report.jsonl",
                           progress=lambda stats, _o: seen.append(stats.items_done))
        hits = srv.hits()
    assert report.exit_code == 0
    assert library_digests(tmp_path / "dask") == expected
    assert store_rows(tmp_path / "dask") == local_rows
    assert report.summary()["saved"] == len(local_rows)
    assert len((tmp_path / "report.jsonl").read_text().splitlines()) == len(local_rows)
    counters = report.metrics.counters()
    assert counters["shards.done"] == 5  # 14 items in shards of 3
    assert counters.get("http.requests_in_save", 0) == 0
    assert counters["http.requests"] == hits  # merged from the workers' snapshots
    assert report.hosts[f"127.0.0.1:{srv.port}"]["requests"] == counters["http.requests"]
    assert seen[-1] == len(items) and seen == sorted(seen)  # cluster-wide, monotonic
    assert not temp_files(tmp_path / "dask")


async def test_the_per_host_limit_holds_across_the_whole_cluster(
    cluster: Any, tmp_path: Path
) -> None:
    async with ImageServer(latency=0.05) as srv:
        items = serve_manifest(srv, movies=8)
        report = await run(items, tmp_path / "lib", executor=dask_spec(cluster),
                           shard_size=2, per_host=2, concurrency=8)
        assert report.exit_code == 0
        # Two shards run at once (2 workers x 1 thread), each with 1 of the 2 slots.
        assert 1 <= srv.max_in_flight_host("127.0.0.1") <= 2


async def test_client_executor_runs_sharded_and_a_rerun_is_a_no_op(
    client: Any, tmp_path: Path
) -> None:
    library = tmp_path / "lib"
    async with ImageServer() as srv:
        items = serve_manifest(srv, movies=6)
        first = await run(items, library, executor=client.get_executor(), shard_size=4)
        assert first.exit_code == 0 and first.metrics.counter("shards.done") == 2
        before = {p: p.stat().st_mtime_ns for p in library.rglob("*.*")
                  if ".artpipe" not in p.parts}
        srv.reset_counters()
        second = await run(items, library, executor=client.get_executor(), shard_size=4)
        assert srv.hits() == 0
    assert second.summary()["unchanged"] == first.summary()["saved"]
    assert {p: p.stat().st_mtime_ns for p in before} == before


async def test_a_worker_killed_mid_shard_leaves_no_partial_file(
    cluster: Any, client: Any, tmp_path: Path
) -> None:
    async with ImageServer() as srv:
        items = serve_manifest(srv, movies=8)
        expected = await local_reference(items, tmp_path / "local")
        library = tmp_path / "dask"
        opts = pipeline.RunOptions(library=library, executor=dask_spec(cluster),
                                   shard_size=4, limits=FAST_LIMITS)
        library.mkdir()
        report = await pipeline_cluster.run(items, opts, shard_fn=crash_mid_shard)
        assert (tmp_path / "crashed-1").exists()  # the worker really died mid-shard
        assert report.exit_code == 0
        srv.reset_counters()
        rerun = await run(items, library, executor=dask_spec(cluster), shard_size=4)
        assert srv.hits() == 0
    assert rerun.exit_code == 0
    assert not temp_files(library)
    assert_complete_images(library)
    assert library_digests(library) == expected
    await asyncio.to_thread(client.wait_for_workers, 2, 30)  # the nanny brings it back


async def test_a_poisoned_shard_fails_its_slots_and_a_rerun_finishes_it(
    cluster: Any, tmp_path: Path
) -> None:
    async with ImageServer() as srv:
        items = serve_manifest(srv, movies=10)  # 12 items, shards of 3: shard 2 = tt6..tt8
        expected = await local_reference(items, tmp_path / "local")
        library = tmp_path / "dask"
        library.mkdir()
        opts = pipeline.RunOptions(library=library, executor=dask_spec(cluster),
                                   shard_size=3, shard_retries=1, limits=FAST_LIMITS)
        first = await pipeline_cluster.run(items, opts, shard_fn=fail_shard_2)
        assert first.exit_code == 1
        assert first.metrics.counter("shards.failed") == 1
        failed = {r[0] for r in store_rows(library) if r[7] == "failed"}
        assert failed == {"tt0000006", "tt0000007", "tt0000008"}
        srv.reset_counters()
        second = await run(items, library, executor=dask_spec(cluster), shard_size=3)
        fetched = {h.path for h in srv.log}
    assert second.exit_code == 0
    assert fetched and all(p.startswith(("/m6/", "/m7/", "/m8/", "/shared/poster3",
                                         "/shared/poster4")) for p in fetched)
    assert library_digests(library) == expected


async def test_an_interrupted_driver_is_finished_by_a_rerun(
    cluster: Any, client: Any, tmp_path: Path
) -> None:
    library = tmp_path / "dask"
    library.mkdir()
    async with ImageServer() as srv:
        items = serve_manifest(srv, movies=12)
        expected = await local_reference(items, tmp_path / "local")
        opts = pipeline.RunOptions(library=library, executor=dask_spec(cluster),
                                   shard_size=2, limits=FAST_LIMITS)
        first_shard = asyncio.Event()
        driver = asyncio.create_task(pipeline_cluster.run(
            items, opts, shard_fn=slow_shard, progress=lambda *_: first_shard.set()))
        await asyncio.wait_for(first_shard.wait(), 30)
        driver.cancel()
        with pytest.raises(asyncio.CancelledError):
            await driver
        await asyncio.to_thread(wait_idle, client)
        recorded = {r[0] for r in store_rows(library) if r[7] == "saved"}
        assert 0 < len({i["id"] for i in items} - recorded)  # really interrupted
        srv.reset_counters()
        rerun = await run(items, library, executor=dask_spec(cluster), shard_size=2)
        assert rerun.summary()["unchanged"] >= 1
        refetched_items = {h.path.split("/")[1] for h in srv.log}
    assert rerun.exit_code == 0
    done_movies = {f"m{int(i[2:])}" for i in recorded if i.startswith("tt")}
    assert not refetched_items & done_movies  # recorded items cost no request
    assert library_digests(library) == expected
    assert not temp_files(library)


def test_without_dask_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ArtpipeError, match=r"pip install 'artpipe\[dask\]'"):
        asyncio.run(pipeline.run([], tmp_path, executor="dask://127.0.0.1:8786"))


def test_executor_specs_and_limits() -> None:
    assert pipeline_cluster.wants_cluster("dask://10.0.0.5:8786")
    assert not pipeline_cluster.wants_cluster("thread")
    assert not pipeline_cluster.wants_cluster("process")
    assert pipeline_cluster.scheduler_address("dask://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert pipeline_cluster.scheduler_address("dask://tls://h:8786") == "tls://h:8786"
    with pytest.raises(ArtpipeError, match="dask://HOST:PORT"):
        pipeline_cluster.scheduler_address("dask://")
    limits = pipeline_cluster.shard_limits(FetchLimits(concurrency=32, per_host=8), 3)
    assert (limits.concurrency, limits.per_host) == (10, 2)
    tiny = pipeline_cluster.shard_limits(FetchLimits(concurrency=32, per_host=8), 64)
    assert (tiny.concurrency, tiny.per_host) == (1, 1)  # never below one request
    assert [len(s) for s in pipeline_cluster.batched(iter(range(7)), 3)] == [3, 3, 1]  # type: ignore[arg-type]


def test_workers_undo_the_nannys_malloc_trim_setting(client: Any) -> None:
    """The nanny's MALLOC_TRIM_THRESHOLD_ made every 4K render fault its buffers in."""
    envs = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert set(envs.values()) == {"65536"}  # the premise: Dask sets it
    if sys.platform == "linux":
        assert set(client.run(pipeline_cluster.tune_malloc).values()) == {True}


def test_client_executor_is_routed_to_the_cluster(client: Any) -> None:
    executor = client.get_executor()
    assert pipeline_cluster.wants_cluster(executor)
    assert pipeline_cluster.scheduler_address(executor) == client.scheduler.address


def test_bad_shard_size_is_a_value_error(cluster: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shard_size"):
        asyncio.run(pipeline.run([], tmp_path, executor=dask_spec(cluster), shard_size=0))
