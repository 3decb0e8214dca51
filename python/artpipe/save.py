"""The save step: bytes in, a file in the library out — nothing else.

This module deliberately imports no HTTP client: the save phase receives bytes
that the download phase already holds, so it *cannot* fetch (the seed's bug was
a save phase that silently re-downloaded). ``save_one`` is a module-level
function taking and returning plain picklable values, so the same job runs on a
thread pool, a spawn process pool or a Dask worker.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from dataclasses import dataclass

from artpipe.errors import ArtpipeError, SaveError
from artpipe.image import TEMP_SUFFIX, write_image
from artpipe.models import SavedImage

__all__ = ["TEMP_SUFFIX", "SaveJob", "SaveOutcome", "remove_file", "save_one", "sweep_temp_files"]


@dataclass(frozen=True, slots=True)
class SaveJob:
    data: bytes
    target: str
    format: str
    max_size: tuple[int, int] | None = None
    quality: int = 90
    root: str | None = None
    """The library root: the write creates the folders below it and follows no link there."""


@dataclass(frozen=True, slots=True)
class SaveOutcome:
    """What one save did; ``error`` set means the old file (if any) is untouched."""

    saved: SavedImage | None
    error: ArtpipeError | None
    start_ns: int
    ms: float
    worker: str


def save_one(job: SaveJob) -> SaveOutcome:
    """Render and atomically write one image (runs in an executor worker)."""
    start = time.perf_counter_ns()
    worker = f"{os.getpid()}:{threading.current_thread().name}"
    saved: SavedImage | None = None
    error: ArtpipeError | None = None
    try:
        if job.root is None:
            os.makedirs(os.path.dirname(job.target), exist_ok=True)
        # With a root, the folders are made by the write itself, descending from the root
        # without following links: a folder swapped for a link to elsewhere while the image
        # downloaded fails this slot instead of receiving the file.
        saved = write_image(job.data, job.target, root=job.root, max_size=job.max_size,
                            format=job.format, quality=job.quality)
    except ArtpipeError as exc:
        error = exc
    except OSError as exc:  # makedirs: a file where a folder should be, read-only, ENOSPC
        error = SaveError(exc.errno or 0, f"cannot create the folder for {job.target}: "
                          f"{exc.strerror or exc}", job.target)
    ms = (time.perf_counter_ns() - start) / 1e6
    return SaveOutcome(saved, error, start, ms, worker)


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
