"""The save step: bytes in, a file in the library out — nothing else.

This module deliberately imports no HTTP client: the save phase receives bytes
that the download phase already holds, so it *cannot* fetch (the seed's bug was
a save phase that silently re-downloaded). ``save_one`` is a module-level
function taking and returning plain picklable values, so the same job runs on a
thread pool, a spawn process pool or a Dask worker.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from dataclasses import dataclass

from artpipe import _core
from artpipe.errors import ArtpipeError, SaveError
from artpipe.image import TEMP_SUFFIX, stage_image, write_image
from artpipe.models import SavedImage

__all__ = ["TEMP_SUFFIX", "Rendered", "SaveJob", "SaveOutcome", "remove_file", "save_one",
           "sweep_temp_files"]


@dataclass(frozen=True, slots=True)
class Rendered:
    """A render already written this run: the file, and what it was (to write it again)."""

    path: str
    sha256: str
    format: str
    passthrough: bool
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class SaveJob:
    data: bytes
    target: str
    format: str
    max_size: tuple[int, int] | None = None
    quality: int = 90
    root: str | None = None
    """The library root: the write creates the folders below it and follows no link there."""
    copy_of: Rendered | None = None
    """The same render, already written elsewhere: its bytes are written again, unrendered."""
    stage: bool = False
    """Leave the file staged beside the target for a ``commit.GroupCommitter`` (in-process
    executors only: a staged write cannot cross to another process)."""


@dataclass(frozen=True, slots=True)
class SaveOutcome:
    """What one save did; ``error`` set means the old file (if any) is untouched."""

    saved: SavedImage | None
    error: ArtpipeError | None
    start_ns: int
    ms: float
    worker: str
    mtime_ns: int | None = None  # the written file's mtime, for the store (None: hash next run)
    staged: _core.StagedWrite | None = None  # with ``SaveJob.stage``: not in place until committed


def save_one(job: SaveJob) -> SaveOutcome:
    """Render and atomically write one image (runs in an executor worker)."""
    start = time.perf_counter_ns()
    worker = f"{os.getpid()}:{threading.current_thread().name}"
    saved: SavedImage | None = None
    staged: _core.StagedWrite | None = None
    error: ArtpipeError | None = None
    try:
        if job.root is None:
            os.makedirs(os.path.dirname(job.target), exist_ok=True)
        # With a root, the folders are made by the write itself, descending from the root
        # without following links: a folder swapped for a link to elsewhere while the image
        # downloaded fails this slot instead of receiving the file.
        if job.copy_of is not None:
            saved, staged = _copy(job)
        if saved is None:
            saved, staged = _write(job, job.data, max_size=job.max_size, format=job.format)
    except ArtpipeError as exc:
        error = exc
    except OSError as exc:  # makedirs: a file where a folder should be, read-only, ENOSPC
        error = SaveError(exc.errno or 0, f"cannot create the folder for {job.target}: "
                          f"{exc.strerror or exc}", job.target)
    mtime_ns = None
    if staged is not None:
        mtime_ns = staged.mtime_ns  # the rename keeps it
    elif saved is not None:
        try:
            mtime_ns = os.stat(saved.path).st_mtime_ns
        except OSError:
            pass
    ms = (time.perf_counter_ns() - start) / 1e6
    return SaveOutcome(saved, error, start, ms, worker, mtime_ns, staged)


def _write(job: SaveJob, data: bytes, *, max_size: tuple[int, int] | None,
           format: str) -> tuple[SavedImage, _core.StagedWrite | None]:
    """Render and write (or, with ``job.stage``, stage) ``data`` to the job's target."""
    if job.stage:
        return stage_image(data, job.target, root=job.root, max_size=max_size, format=format,
                           quality=job.quality)
    return write_image(data, job.target, root=job.root, max_size=max_size, format=format,
                       quality=job.quality), None


def _copy(job: SaveJob) -> tuple[SavedImage | None, _core.StagedWrite | None]:
    """Write the render ``job.copy_of`` already holds to ``job.target``; None: render afresh.

    The file is read back and checked against the sha256 it was written with (it may have
    been changed or removed since); those are the bytes this run rendered and checked, so
    they are written as they are, through the same atomic, root-confined write, without
    decoding them again.
    """
    source = job.copy_of
    assert source is not None
    try:
        with open(source.path, "rb") as f:
            data = f.read()
    except OSError:
        return None, None
    if hashlib.sha256(data).hexdigest() != source.sha256:
        return None, None
    staged = _core.write_bytes(data, job.target, root=job.root, stage=job.stage)
    saved = SavedImage(path=job.target, format=source.format, width=source.width,
                       height=source.height, bytes=len(data), sha256=source.sha256,
                       passthrough=source.passthrough)
    return saved, staged


def remove_file(path: str) -> bool:
    """Delete a library file the manifest no longer wants; True if one was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def sweep_temp_files(directory: str) -> int:
    """Remove temp files an interrupted write left behind (only ours, by suffix).

    A live writer holds an flock on its temp file until the rename, so a file
    we can lock belongs to a writer that died (SIGKILL, power cut): remove it.
    One we cannot lock is another run's (or Dask shard's) write in progress.
    """
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if name.startswith(".") and name.endswith(TEMP_SUFFIX):
            removed += _remove_if_abandoned(os.path.join(directory, name))
    return removed


def _remove_if_abandoned(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return 0  # renamed or removed meanwhile, or not a file of ours
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return 0  # a live writer holds it: it renames or removes the file itself
    try:
        os.unlink(path)
    except OSError:
        return 0
    finally:
        os.close(fd)
    return 1
