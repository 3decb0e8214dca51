"""The save step's housekeeping: sweeping temp files of dead writers only."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from artpipe.save import sweep_temp_files


def test_sweep_removes_abandoned_temp_files_and_spares_live_ones(tmp_path: Path) -> None:
    dead = tmp_path / ".poster.jpg.1a2b.artpipe-tmp"
    live = tmp_path / ".fanart.jpg.3c4d.artpipe-tmp"
    other = tmp_path / "notes.artpipe-tmp"  # not ours: no leading dot
    keep = tmp_path / "poster.jpg"
    for path in (dead, live, other, keep):
        path.write_bytes(b"x")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a writer in another process holds
        assert sweep_temp_files(str(tmp_path)) == 1
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other.name, keep.name]
    )
    assert sweep_temp_files(str(tmp_path)) == 1  # the writer died: now it goes
    assert not live.exists()


def test_sweep_of_a_missing_folder_is_a_no_op(tmp_path: Path) -> None:
    assert sweep_temp_files(str(tmp_path / "nope")) == 0
