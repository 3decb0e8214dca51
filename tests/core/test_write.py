"""write_image: atomic, durable, refuses bad targets, and its results and errors pickle."""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import artpipe
import pytest
from artpipe.errors import (
    DecodeError,
    EncodeError,
    ImageTooLargeError,
    InternalError,
    SaveError,
    UnsupportedFormatError,
)
from artpipe.models import SavedImage

from tests.support.images import huge_png_header, jpeg_bytes, png_bytes

TEMP_SUFFIX = ".artpipe-tmp"


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def test_write_image_reports_what_is_on_disk(tmp_path: Path) -> None:
    target = tmp_path / "poster.jpg"
    saved = artpipe.write_image(jpeg_bytes(400, 600), target, max_size=(100, 150))
    on_disk = target.read_bytes()
    assert saved == SavedImage(
        path=str(target),
        format="jpeg",
        width=100,
        height=150,
        bytes=len(on_disk),
        sha256=hashlib.sha256(on_disk).hexdigest(),
        passthrough=False,
    )
    assert artpipe.probe(on_disk).width == 100
    assert leftovers(tmp_path) == []


def test_passthrough_writes_the_original_bytes(tmp_path: Path) -> None:
    data = png_bytes(64, 32, alpha=True)
    saved = artpipe.write_image(data, str(tmp_path / "clearlogo.png"), max_size=(800, 310))
    assert saved.passthrough and saved.format == "png"
    assert (tmp_path / "clearlogo.png").read_bytes() == data


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "fanart.jpg"
    target.write_bytes(b"old")
    artpipe.write_image(jpeg_bytes(32, 32), target)
    assert target.read_bytes() != b"old"


@pytest.mark.parametrize(
    "data", [b"<!DOCTYPE html>", jpeg_bytes(200, 200)[:1500], huge_png_header(20_000, 20_000)]
)
def test_a_failed_render_leaves_the_old_file_intact(tmp_path: Path, data: bytes) -> None:
    target = tmp_path / "poster.jpg"
    target.write_bytes(b"the good old poster")
    with pytest.raises(DecodeError):
        artpipe.write_image(data, target)
    assert target.read_bytes() == b"the good old poster"
    assert leftovers(tmp_path) == []


def test_a_directory_at_the_target_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "poster.jpg"
    target.mkdir()
    (target / "inside").write_bytes(b"x")
    with pytest.raises(SaveError, match="is a directory") as info:
        artpipe.write_image(jpeg_bytes(16, 16), target)
    assert info.value.filename == str(target)
    assert info.value.errno == 21
    assert (target / "inside").read_bytes() == b"x"
    assert leftovers(tmp_path) == []


def test_a_fifo_at_the_target_is_refused_without_blocking(tmp_path: Path) -> None:
    target = tmp_path / "poster.jpg"
    os.mkfifo(target)
    with pytest.raises(SaveError, match="FIFO"):
        artpipe.write_image(jpeg_bytes(16, 16), target)
    assert target.exists() and not target.is_file()
    assert leftovers(tmp_path) == []


def test_a_missing_parent_is_a_save_error_naming_it(tmp_path: Path) -> None:
    target = tmp_path / "Movies" / "Alien (1979)" / "poster.jpg"
    with pytest.raises(SaveError, match="does not exist") as info:
        artpipe.write_image(jpeg_bytes(16, 16), target)
    assert str(target) in str(info.value)
    assert not (tmp_path / "Movies").exists()


def test_a_failed_write_is_a_save_error_and_leaves_no_temp_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permissions; /proc/self is a directory nobody can create files in.
        target = Path("/proc/self/poster.jpg")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "poster.jpg"
    try:
        with pytest.raises(SaveError, match="temporary file") as info:
            artpipe.write_image(jpeg_bytes(16, 16), target)
        assert info.value.errno and info.value.filename == str(target)
    finally:
        if os.geteuid() != 0:
            target.parent.chmod(0o700)
    assert leftovers(target.parent) == []


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.jpg"
    elsewhere.write_bytes(b"keep me")
    target = tmp_path / "poster.jpg"
    target.symlink_to(elsewhere)
    artpipe.write_image(jpeg_bytes(16, 16), target)
    assert not target.is_symlink()
    assert elsewhere.read_bytes() == b"keep me"


def test_concurrent_writers_leave_one_complete_file(tmp_path: Path) -> None:
    target = tmp_path / "fanart.jpg"
    inputs = [jpeg_bytes(96, 64, seed=i) for i in range(8)]
    barrier = threading.Barrier(8)

    def write(data: bytes) -> SavedImage:
        barrier.wait()
        return artpipe.write_image(data, target)

    for _ in range(3):
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(write, inputs))
        assert target.read_bytes() in inputs
        assert all(r.passthrough for r in results)
        assert leftovers(tmp_path) == []


def test_many_threads_render_at_once_with_the_same_results() -> None:
    data = jpeg_bytes(600, 400, seed=11)
    expected = artpipe.render(data, max_size=(150, 150))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: artpipe.render(data, max_size=(150, 150)), range(16)))
    assert all(r == expected for r in results)


def _save_in_child(data: bytes, path: str) -> SavedImage:
    return artpipe.write_image(data, path, max_size=(50, 50))


def _fail_in_child(data: bytes) -> bytes:
    return artpipe.render(data)


def test_results_and_errors_cross_a_spawn_process_pool(tmp_path: Path) -> None:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        saved = pool.submit(_save_in_child, jpeg_bytes(200, 100), str(tmp_path / "a.jpg")).result()
        assert (saved.width, saved.height, saved.format) == (50, 25, "jpeg")
        with pytest.raises(UnsupportedFormatError, match="error page"):
            pool.submit(_fail_in_child, b"<html><body>500</body></html>").result()
        with pytest.raises(ImageTooLargeError):
            pool.submit(_fail_in_child, huge_png_header(50_000, 50_000)).result()


@pytest.mark.parametrize(
    "error",
    [
        DecodeError("could not decode JPEG: truncated"),
        UnsupportedFormatError("not a supported image"),
        ImageTooLargeError("too large"),
        EncodeError("could not encode PNG"),
        SaveError(21, "the target is a directory", "/lib/poster.jpg"),
        InternalError("bug in render: boom"),
    ],
)
def test_core_errors_pickle_round_trip(error: Exception) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error)


def test_errors_raised_by_rust_pickle_round_trip(tmp_path: Path) -> None:
    (tmp_path / "dir.jpg").mkdir()
    raised: list[Exception] = []
    for call in (
        lambda: artpipe.render(b""),
        lambda: artpipe.render(huge_png_header(99_999, 99_999)),
        lambda: artpipe.write_image(jpeg_bytes(8, 8), tmp_path / "dir.jpg"),
    ):
        with pytest.raises(Exception) as info:
            call()
        raised.append(info.value)
    for error in raised:
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error)
    assert isinstance(raised[2], SaveError) and raised[2].filename == str(tmp_path / "dir.jpg")
