"""Group commit: staged files are invisible until committed, then complete and in place.

What a user relies on: a staged write never touches the target before its
commit, a batch puts every file in place (across folders), one bad file fails
alone, a write whose waiter gave up leaves the old file and no temp file, and
the commit thread serves writers from many threads at once.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from artpipe import _core
from artpipe.commit import GroupCommitter
from artpipe.errors import SaveError
from artpipe.image import stage_image

from tests.support.images import jpeg_bytes, png_bytes

TEMP_SUFFIX = ".artpipe-tmp"


def temps(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(f"*{TEMP_SUFFIX}")]


def hold_commits(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make the commit thread wait on ``gate`` inside its first batch (``busy`` says it is
    there), so writes given meanwhile stay queued."""
    gate, busy = threading.Event(), threading.Event()
    commit_writes = _core.commit_writes

    def held(writes: list[_core.StagedWrite]) -> list[BaseException | None]:
        busy.set()
        gate.wait(10)
        return commit_writes(writes)

    monkeypatch.setattr(_core, "commit_writes", held)
    return gate, busy


def test_a_staged_file_is_invisible_until_committed(tmp_path: Path) -> None:
    target = tmp_path / "poster.jpg"
    target.write_bytes(b"old")
    saved, staged = stage_image(jpeg_bytes(64, 96), target)
    assert target.read_bytes() == b"old"  # nothing in place yet
    assert len(temps(tmp_path)) == 1
    assert _core.commit_writes([staged]) == [None]
    data = target.read_bytes()
    assert hashlib.sha256(data).hexdigest() == saved.sha256 and len(data) == saved.bytes
    assert os.stat(target).st_mtime_ns == staged.mtime_ns  # what the store records
    assert temps(tmp_path) == []


def test_a_batch_across_folders_puts_every_file_in_place(tmp_path: Path) -> None:
    images = {tmp_path / f"Movie {n}" / f"poster{n}.jpg": jpeg_bytes(32 + n, 48)
              for n in range(12)}
    staged = []
    for target, data in images.items():
        staged.append(stage_image(data, target, root=tmp_path))
    assert not any(t.exists() for t in images)
    assert _core.commit_writes([s for _, s in staged]) == [None] * len(images)
    for (saved, _), target in zip(staged, images, strict=True):
        assert hashlib.sha256(target.read_bytes()).hexdigest() == saved.sha256
    assert temps(tmp_path) == []


def test_one_bad_file_fails_alone_and_keeps_its_old_file(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    bad.write_bytes(b"old")
    _, staged_good = stage_image(png_bytes(8, 8), good)
    _, staged_bad = stage_image(png_bytes(9, 9), bad)
    bad.unlink()
    bad.mkdir()  # a folder appeared where the file goes: the rename must fail, only here
    results = _core.commit_writes([staged_good, staged_bad])
    assert results[0] is None
    assert isinstance(results[1], SaveError) and str(bad) in str(results[1])
    assert good.exists() and bad.is_dir()
    assert temps(tmp_path) == []


def test_a_write_is_committed_once(tmp_path: Path) -> None:
    _, staged = stage_image(png_bytes(8, 8), tmp_path / "logo.png")
    assert _core.commit_writes([staged]) == [None]
    again = _core.commit_writes([staged])
    assert isinstance(again[0], ValueError) and "already committed" in str(again[0])


def test_a_dropped_staged_write_removes_its_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "banner.jpg"
    target.write_bytes(b"old")
    _, staged = stage_image(jpeg_bytes(40, 20), target)
    assert len(temps(tmp_path)) == 1
    del staged
    assert temps(tmp_path) == []
    assert target.read_bytes() == b"old"


def test_a_cancelled_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "fanart.jpg"
    target.write_bytes(b"old")
    blocker = tmp_path / "first.png"
    gate, busy = hold_commits(monkeypatch)
    committer = GroupCommitter()
    try:
        first = committer.commit(stage_image(png_bytes(4, 4), blocker)[1])
        assert busy.wait(10)
        second = committer.commit(stage_image(jpeg_bytes(40, 20), target)[1])
        assert second.cancel()
        gate.set()
        assert first.result(10) is None
    finally:
        gate.set()
        committer.close()
    assert target.read_bytes() == b"old"
    assert blocker.exists()
    assert temps(tmp_path) == []


def test_writers_on_many_threads_share_batches(tmp_path: Path) -> None:
    committer = GroupCommitter()
    targets = [tmp_path / f"d{n % 7}" / f"thumb{n}.png" for n in range(200)]

    def write(n: int) -> str:
        saved, staged = stage_image(png_bytes(4 + n % 5, 4), targets[n], root=tmp_path)
        committer.commit(staged).result(30)
        return saved.sha256

    try:
        with ThreadPoolExecutor(8) as pool:
            digests = list(pool.map(write, range(200)))
    finally:
        committer.close()
    for target, digest in zip(targets, digests, strict=True):
        assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert temps(tmp_path) == []


def test_a_closed_committer_refuses_new_work(tmp_path: Path) -> None:
    committer = GroupCommitter()
    committer.close()
    committer.close()  # idempotent
    _, staged = stage_image(png_bytes(4, 4), tmp_path / "x.png")
    with pytest.raises(RuntimeError, match="closed"):
        committer.commit(staged)


async def test_tasks_waiting_on_a_loop_get_their_own_files_result(tmp_path: Path) -> None:
    # commit_for resolves asyncio futures on their loop: each with its own file's result,
    # one bad file failing alone, the same guarantees as commit's concurrent futures.
    import asyncio

    loop = asyncio.get_running_loop()
    good = [tmp_path / f"good{n}.png" for n in range(5)]
    bad = tmp_path / "bad.png"
    staged = [stage_image(png_bytes(4 + n, 4), t)[1] for n, t in enumerate(good)]
    _, staged_bad = stage_image(png_bytes(9, 9), bad)
    bad.mkdir()  # the rename must fail, only here
    committer = GroupCommitter()
    try:
        waiters = [loop.create_future() for _ in range(6)]
        for s, waiter in zip([*staged, staged_bad], waiters, strict=True):
            committer.commit_for(s, waiter)
        del staged, staged_bad
        results = await asyncio.wait_for(
            asyncio.gather(*waiters, return_exceptions=True), 30)
    finally:
        committer.close()
    assert results[:5] == [None] * 5
    assert isinstance(results[5], SaveError) and str(bad) in str(results[5])
    assert all(t.is_file() for t in good) and bad.is_dir()
    assert temps(tmp_path) == []


async def test_a_task_cancelled_before_its_batch_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    target = tmp_path / "fanart.jpg"
    target.write_bytes(b"old")
    gate, busy = hold_commits(monkeypatch)
    committer = GroupCommitter()
    try:
        first = loop.create_future()
        committer.commit_for(stage_image(png_bytes(4, 4), tmp_path / "first.png")[1], first)
        assert await asyncio.to_thread(busy.wait, 10)
        second = loop.create_future()
        committer.commit_for(stage_image(jpeg_bytes(40, 20), target)[1], second)
        second.cancel()
        gate.set()
        assert await asyncio.wait_for(first, 10) is None
    finally:
        gate.set()
        await asyncio.to_thread(committer.close)
    assert target.read_bytes() == b"old"
    assert temps(tmp_path) == []
