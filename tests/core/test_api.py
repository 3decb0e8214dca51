"""The image API's contract: probe, render, decode and their arguments, formats and errors."""

from __future__ import annotations

import io

import artpipe
import numpy as np
import pytest
from artpipe import _core
from artpipe.errors import (
    ArtpipeError,
    DecodeError,
    ImageTooLargeError,
    InternalError,
    UnsupportedFormatError,
)
from PIL import Image

from tests.support.images import (
    encode,
    gif_bytes,
    huge_png_header,
    jpeg_bytes,
    logo,
    photo,
    png_bytes,
    webp_bytes,
)


def test_core_version_matches_the_package() -> None:
    assert _core.__version__ == "0.1.0"


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (jpeg_bytes(120, 80), "jpeg"),
        (png_bytes(120, 80), "png"),
        (webp_bytes(120, 80), "webp"),
        (gif_bytes(120, 80), "gif"),
    ],
)
def test_probe_reads_format_and_size_from_the_header(data: bytes, fmt: str) -> None:
    info = artpipe.probe(data)
    assert (info.format, info.width, info.height, info.orientation) == (fmt, 120, 80, 1)


def test_probe_does_not_need_the_pixel_data() -> None:
    data = jpeg_bytes(300, 200)
    info = artpipe.probe(data[:2000])
    assert (info.width, info.height) == (300, 200)


def test_render_shrinks_into_the_box_and_keeps_jpeg() -> None:
    out = artpipe.render(jpeg_bytes(800, 600), max_size=(200, 200))
    info = artpipe.probe(out)
    assert (info.format, info.width, info.height) == ("jpeg", 200, 150)


def test_render_never_upscales() -> None:
    out = artpipe.render(jpeg_bytes(80, 60), max_size=(2000, 2000), format="png")
    assert (artpipe.probe(out).width, artpipe.probe(out).height) == (80, 60)


def test_passthrough_returns_the_original_bytes() -> None:
    data = jpeg_bytes(200, 100)
    assert artpipe.render(data, max_size=(200, 100)) == data
    png = png_bytes(50, 40, alpha=True)
    assert artpipe.render(png, max_size=(1000, 1000)) == png


def test_format_none_turns_webp_into_jpeg_and_transparent_gif_into_png() -> None:
    assert artpipe.probe(artpipe.render(webp_bytes(64, 64))).format == "jpeg"
    transparent = encode(logo(64, 64), "WEBP", lossless=True)
    assert artpipe.probe(artpipe.render(transparent)).format == "png"


def test_explicit_format_converts() -> None:
    out = artpipe.render(png_bytes(64, 48), format="jpeg")
    assert artpipe.probe(out).format == "jpeg"
    out = artpipe.render(jpeg_bytes(64, 48), format="png")
    assert artpipe.probe(out).format == "png"


def test_rgba_to_jpeg_is_flattened_on_white() -> None:
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    out = artpipe.decode(artpipe.render(encode(clear, "PNG"), format="jpeg"))
    assert out.shape == (16, 16, 3)
    assert out.min() >= 250


def test_decode_returns_a_writable_uint8_array() -> None:
    arr = artpipe.decode(png_bytes(30, 20))
    assert arr.dtype == np.uint8 and arr.shape == (20, 30, 3)
    arr[0, 0, 0] = 7
    rgba = artpipe.decode(png_bytes(30, 20, alpha=True), max_size=(15, 15))
    assert rgba.shape == (10, 15, 4)


def test_grayscale_decodes_as_three_equal_channels() -> None:
    gray = photo(40, 30).convert("L")
    arr = artpipe.decode(encode(gray, "PNG"))
    assert arr.shape == (30, 40, 3)
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])
    assert np.array_equal(arr[..., 0], np.asarray(gray))


def test_render_accepts_bytearray_and_memoryview() -> None:
    data = jpeg_bytes(40, 30)
    assert artpipe.render(bytearray(data)) == data
    assert artpipe.probe(memoryview(data)).width == 40


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_size": (0, 10)}, "max_size"),
        ({"max_size": (10,)}, "max_size"),
        ({"max_size": (10.5, 10)}, "max_size"),
        ({"format": "gif"}, "'gif'"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"max_pixels": 0}, "max_pixels"),
    ],
)
def test_bad_arguments_are_value_errors_naming_the_value(
    kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        artpipe.render(jpeg_bytes(10, 10), **kwargs)  # type: ignore[arg-type]


def test_non_bytes_data_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="str"):
        artpipe.render("not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", DecodeError, "empty"),
        (
            b"<!DOCTYPE html><html><body>Not Found</body></html>",
            UnsupportedFormatError,
            '"<!DOCTYPE html',
        ),
        (b"<html><head>", UnsupportedFormatError, "error page"),
        (b'{"error": "rate limited"}', UnsupportedFormatError, "JSON"),
        (b"BM" + bytes(60), UnsupportedFormatError, "BMP"),
        (bytes(range(7, 64)), UnsupportedFormatError, "07 08 09"),
        (b"\xff\xd8", DecodeError, "truncated"),
    ],
)
def test_bad_bodies_raise_errors_that_say_what_was_wrong(
    data: bytes, error: type[Exception], message: str
) -> None:
    for call in (artpipe.probe, artpipe.render, artpipe.decode):
        with pytest.raises(error, match=message) as info:
            call(data)
        assert isinstance(info.value, DecodeError)


@pytest.mark.parametrize(
    "data",
    [jpeg_bytes(200, 150), png_bytes(200, 150), webp_bytes(200, 150)],
    ids=["jpeg", "png", "webp"],
)
def test_truncated_images_are_decode_errors(data: bytes) -> None:
    cut = data[: len(data) * 2 // 3]
    with pytest.raises(DecodeError):
        artpipe.render(cut)
    with pytest.raises(DecodeError):
        artpipe.decode(cut)


def test_truncated_jpeg_is_caught_even_on_the_passthrough_path() -> None:
    data = jpeg_bytes(640, 480)
    with pytest.raises(DecodeError, match="truncated"):
        artpipe.render(data[: len(data) - 300], max_size=(640, 480))


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = jpeg_bytes(100, 100)
    with pytest.raises(ImageTooLargeError, match="10000 pixels"):
        artpipe.render(data, max_pixels=9_999)
    assert artpipe.render(data, max_pixels=10_000) == data


def test_tiny_png_declaring_huge_dimensions_is_refused() -> None:
    bomb = huge_png_header(100_000, 100_000)
    assert len(bomb) < 200
    assert artpipe.probe(bomb).width == 100_000
    for call in (artpipe.render, artpipe.decode):
        with pytest.raises(ImageTooLargeError, match="100000x100000"):
            call(bomb)


def test_panics_become_internal_errors_not_panic_exceptions() -> None:
    with pytest.raises(InternalError, match="bug in _debug_panic: boom"):
        _core._debug_panic("boom")


def test_all_errors_are_artpipe_errors() -> None:
    for err in (DecodeError, UnsupportedFormatError, ImageTooLargeError, InternalError):
        assert issubclass(err, ArtpipeError)


def test_icc_free_output_is_readable_by_pillow() -> None:
    out = artpipe.render(jpeg_bytes(300, 200), max_size=(150, 150))
    with Image.open(io.BytesIO(out)) as im:
        im.load()
        assert im.size == (150, 100)


def test_encode_writes_jpeg_and_png_from_arrays() -> None:
    from artpipe.image import encode as encode_pixels

    pixels = np.asarray(photo(120, 80, seed=8))
    jpeg = encode_pixels(pixels, format="jpeg", quality=95)
    assert artpipe.probe(jpeg).format == "jpeg"
    back = artpipe.decode(jpeg)
    assert back.shape == pixels.shape
    assert float(np.mean(np.abs(back.astype(int) - pixels.astype(int)))) < 3
    rgba = np.asarray(logo(40, 30, seed=2))
    assert np.array_equal(artpipe.decode(encode_pixels(rgba, format="png")), rgba)
    gray = np.full((5, 7), 200, dtype=np.uint8)
    assert artpipe.decode(encode_pixels(gray, format="png")).shape == (5, 7, 3)


@pytest.mark.parametrize(
    ("pixels", "kwargs", "named"),
    [
        (np.zeros((4, 4, 2), np.uint8), {}, "shape"),
        (np.zeros((4, 4, 3), np.float32), {}, "uint8"),
        (np.zeros((0, 4, 3), np.uint8), {}, "shape"),
        (np.zeros((4, 4, 3), np.uint8), {"format": "webp"}, "'webp'"),
        (np.zeros((4, 4, 3), np.uint8), {"quality": 0}, "quality"),
    ],
)
def test_encode_rejects_bad_arrays_naming_the_problem(
    pixels: np.ndarray, kwargs: dict[str, object], named: str
) -> None:
    from artpipe.image import encode as encode_pixels

    with pytest.raises(ValueError, match=named):
        encode_pixels(pixels, **kwargs)  # type: ignore[arg-type]


def test_core_encode_checks_the_buffer_length() -> None:
    with pytest.raises(ValueError, match="bytes"):
        _core.encode(b"\x00" * 10, 2, 2, 3)
