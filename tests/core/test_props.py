"""Properties of the image core (invariant 7 in docs/contracts.md and the "never crash" rule).

- resizing keeps the aspect ratio (±1 px), never upscales and never leaves the box;
- the pixel limit refuses exactly the images above it;
- random mutations and truncations of valid JPEG/PNG/WebP/GIF give a result or an artpipe
  error, never another exception, a crash or a hang;
- any bytes at all give a result or a DecodeError.
"""

from __future__ import annotations

import io

import artpipe
import numpy as np
import pytest
from artpipe.errors import ArtpipeError, DecodeError, ImageTooLargeError
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tests.support.images import gif_bytes, jpeg_bytes, png_bytes, webp_bytes

sizes = st.integers(min_value=1, max_value=400)


def gradient(width: int, height: int, format: str) -> bytes:
    """A cheap smooth image (Hypothesis makes many): a diagonal ramp."""
    ramp = (np.add.outer(np.arange(height), np.arange(width)) % 256).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(np.stack([ramp, ramp[::-1], 255 - ramp], axis=-1), "RGB").save(out, format)
    return out.getvalue()


def assert_fits(src: tuple[int, int], box: tuple[int, int], out: tuple[int, int]) -> None:
    (w, h), (mw, mh), (nw, nh) = src, box, out
    assert 1 <= nw <= mw and 1 <= nh <= mh, "outside the box"
    assert nw <= w and nh <= h, "upscaled"
    if w <= mw and h <= mh:
        assert (nw, nh) == (w, h), "resized although it fit"
    else:
        assert nw == mw or nh == mh, "not as large as the box allows"
        # ±1 px: the free side is the exact ratio, rounded.
        assert abs(nw * h - nh * w) <= max(w, h), "aspect ratio not kept"


@given(w=sizes, h=sizes, mw=sizes, mh=sizes, fmt=st.sampled_from(["PNG", "JPEG"]))
def test_resize_keeps_aspect_never_upscales_and_fits(
    w: int, h: int, mw: int, mh: int, fmt: str
) -> None:
    data = gradient(w, h, fmt)
    out = artpipe.render(data, max_size=(mw, mh))
    info = artpipe.probe(out)
    assert_fits((w, h), (mw, mh), (info.width, info.height))
    arr = artpipe.decode(data, max_size=(mw, mh))
    assert arr.shape[:2] == (info.height, info.width)


@given(w=sizes, h=sizes, limit=st.integers(min_value=1, max_value=200_000))
def test_pixel_limit_refuses_exactly_the_images_above_it(w: int, h: int, limit: int) -> None:
    data = gradient(w, h, "PNG")
    if w * h > limit:
        with pytest.raises(ImageTooLargeError):
            artpipe.render(data, max_pixels=limit)
    else:
        assert artpipe.render(data, max_pixels=limit) == data


VALID = {
    "jpeg": jpeg_bytes(64, 48, seed=1),
    "progressive": jpeg_bytes(64, 48, seed=2, progressive=True),
    "png": png_bytes(48, 32, seed=3, alpha=True),
    "webp": webp_bytes(48, 32, seed=4),
    "webp-lossless": webp_bytes(48, 32, seed=5, lossless=True),
    "gif": gif_bytes(32, 24, seed=6, frames=1),
}


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        pos = draw(st.integers(min_value=0, max_value=len(data) - 1))
        data[pos] = draw(st.integers(min_value=0, max_value=255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(min_value=0, max_value=len(data)))]
    return bytes(data)


def call_all(data: bytes) -> None:
    """Every entry point: each must succeed or raise an artpipe error, nothing else."""
    calls = (
        lambda: artpipe.probe(data),
        lambda: artpipe.render(data),
        lambda: artpipe.render(data, max_size=(17, 13), format="png"),
        lambda: artpipe.decode(data, max_size=(40, 40)),
    )
    for call in calls:
        try:
            call()
        except ArtpipeError:
            pass


@given(damaged())
def test_damaged_images_give_a_result_or_an_artpipe_error(data: bytes) -> None:
    call_all(data)


@given(st.binary(max_size=512))
def test_any_bytes_give_a_result_or_a_decode_error(data: bytes) -> None:
    for call in (artpipe.probe, artpipe.render):
        try:
            call(data)
        except DecodeError:
            pass


@given(st.sampled_from(sorted(VALID)), st.data())
def test_any_prefix_of_a_valid_image_is_handled(name: str, data: st.DataObject) -> None:
    valid = VALID[name]
    cut = data.draw(st.integers(min_value=0, max_value=len(valid) - 1))
    call_all(valid[:cut])
