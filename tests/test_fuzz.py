"""Fuzzing the image core from Python: mutated real images, only artpipe errors.

A scraped image is whatever a server sends. Real JPEG, PNG, WebP and GIF files
(progressive, grayscale, CMYK, EXIF-rotated, palette, 16-bit, alpha, animated)
are mutated by hypothesis — bit flips, overwritten bytes, "interesting"
integers over header fields, truncation, insertions, deletions, duplicated
ranges — and fed to ``probe``, ``render``, ``decode`` and ``write_image``.
Each call must return a sane result or raise an ``ArtpipeError``; never
another exception, never ``InternalError`` (a caught Rust panic is a bug),
never a crash (that would take pytest down) and never a hang (a watchdog
dumps the stacks and exits after 60 s). ``write_image`` must also keep the
old file intact on failure and leave no temp file (invariants 5 and 6).

The cargo-fuzz target in ``fuzz/`` drives the same Rust decode path without
Python, for long coverage-guided runs (see README, "Fuzzing").
"""

from __future__ import annotations

import faulthandler
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import artpipe
from artpipe.errors import ArtpipeError, InternalError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.support.server import make_image

MAX_PIXELS = 4_000_000  # mutated headers may declare up to this much; keeps examples fast
BOX = (64, 64)
HANG_S = 60
EXAMPLES = max(settings.default.max_examples * 10, 30)  # CI: 1,000 mutated images


def _save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


@cache
def seeds() -> dict[str, bytes]:
    """Small real images in every shape the decoders branch on."""
    rgb = Image.open(io.BytesIO(make_image(48, 32, fmt="PNG", seed=1))).convert("RGB")
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° CW
    frames = [rgb.convert("P"), rgb.rotate(90).convert("P")]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return {
        "jpeg": _save(rgb, "JPEG", quality=80),
        "jpeg-progressive": _save(rgb, "JPEG", quality=80, progressive=True),
        "jpeg-gray": _save(rgb.convert("L"), "JPEG"),
        "jpeg-cmyk": _save(rgb.convert("CMYK"), "JPEG"),
        "jpeg-exif-rotated": _save(rgb, "JPEG", exif=exif.tobytes()),
        "png": _save(rgb, "PNG"),
        "png-rgba": _save(rgba, "PNG"),
        "png-palette": _save(rgb.convert("P"), "PNG"),
        "png-16bit": _save(rgb.convert("L").convert("I;16"), "PNG"),
        "webp": _save(rgb, "WEBP", quality=70),
        "webp-lossless-alpha": _save(rgba, "WEBP", lossless=True),
        "gif-animated": gif.getvalue(),
        "gif-transparent": _save(rgba.convert("P"), "GIF", transparency=0),
    }


INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]

_op = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("int"), st.integers(0, 1 << 16), st.sampled_from(INTERESTING),
              st.sampled_from([2, 4]), st.booleans()),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=32)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 64)),
    st.tuples(st.just("duplicate"), st.integers(0, 1 << 16), st.integers(1, 256)),
)


def mutate(data: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    """Apply ``ops`` (positions taken modulo the current length) to ``data``."""
    buf = bytearray(data)
    for op in ops:
        if not buf:
            break
        kind, pos = op[0], op[1] % len(buf)
        if kind == "flip":
            buf[pos] ^= 1 << op[2]
        elif kind == "set":
            buf[pos] = op[2]
        elif kind == "int":
            value, width, big = op[2], op[3], op[4]
            raw = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big" if big else "little")
            buf[pos : pos + width] = raw
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = op[2]
        elif kind == "delete":
            del buf[pos : pos + op[2]]
        elif kind == "duplicate":
            buf[pos:pos] = buf[pos : pos + op[2]]
    return bytes(buf)


@contextmanager
def watchdog() -> Iterator[None]:
    """A call that never returns fails the run with every thread's stack, not a CI timeout."""
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def only_artpipe_errors(call: Callable[[], Any]) -> Any:
    """The result of ``call``, or None when it raised an ArtpipeError (never InternalError)."""
    try:
        return call()
    except InternalError as exc:  # a Rust panic caught at the boundary: still a bug
        raise AssertionError(f"the core panicked: {exc}") from exc
    except ArtpipeError:
        return None


@cache
def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="artpipe-fuzz-"))


OLD = b"the old poster, which a failed write must keep"


def exercise(data: bytes) -> None:
    with watchdog():
        info = only_artpipe_errors(lambda: artpipe.probe(data))
        if info is not None:
            assert info.format in ("jpeg", "png", "webp", "gif")
            assert 1 <= info.orientation <= 8

        out = only_artpipe_errors(
            lambda: artpipe.render(data, max_size=BOX, max_pixels=MAX_PIXELS)
        )
        if out is not None:
            assert out[:3] == b"\xff\xd8\xff" or out[:8] == b"\x89PNG\r\n\x1a\n"

        pixels = only_artpipe_errors(
            lambda: artpipe.decode(data, max_size=BOX, max_pixels=MAX_PIXELS)
        )
        if pixels is not None:
            height, width, channels = pixels.shape
            assert 1 <= width <= BOX[0] and 1 <= height <= BOX[1] and channels in (3, 4)

        folder = workdir()
        target = folder / "poster.jpg"
        target.write_bytes(OLD)
        saved = only_artpipe_errors(
            lambda: artpipe.write_image(data, target, max_size=BOX, format="jpeg",
                                        max_pixels=MAX_PIXELS)
        )
        written = target.read_bytes()
        event("write_image: saved" if saved is not None else "write_image: artpipe error")
        if saved is None:
            assert written == OLD, "a failed write_image damaged the old file"
        else:
            assert hashlib.sha256(written).hexdigest() == saved.sha256
            assert written[:3] == b"\xff\xd8\xff"
        assert os.listdir(folder) == ["poster.jpg"], "a temp file was left behind"


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(sorted(seeds())), ops=st.lists(_op, min_size=1, max_size=8))
def test_mutated_real_images_raise_only_artpipe_errors(seed: str, ops: list[Any]) -> None:
    exercise(mutate(seeds()[seed], ops))


@given(data=st.binary(max_size=512))
def test_random_bytes_raise_only_artpipe_errors(data: bytes) -> None:
    exercise(data)


@given(seed=st.sampled_from(sorted(seeds())), magic=st.sampled_from(
    [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\0\0\0\0WEBPVP8 "]))
def test_a_foreign_body_behind_another_formats_magic_is_rejected_cleanly(
    seed: str, magic: bytes
) -> None:
    exercise(magic + seeds()[seed])


def test_every_seed_is_a_valid_image() -> None:
    # The mutations start from images the core accepts, or the fuzzing proves little.
    for name, data in seeds().items():
        assert artpipe.decode(data, max_size=BOX).ndim == 3, name
