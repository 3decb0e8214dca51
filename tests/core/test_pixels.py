"""Pixels match Pillow (the oracle): resize quality, orientation, alpha and every input kind."""

from __future__ import annotations

import io

import artpipe
import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.support.images import encode, gif_bytes, logo, photo, psnr, with_orientation


def pillow_fit(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Pillow's LANCZOS resize of ``image`` to exactly ``size``, as an array."""
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS))


@pytest.mark.parametrize(
    ("src", "box", "expect"),
    [
        ((1200, 1800), (400, 600), (400, 600)),  # 1/3: DCT 1/2 then Lanczos
        ((1600, 900), (400, 400), (400, 225)),  # 1/4: DCT 1/4 exactly
        ((900, 600), (600, 600), (600, 400)),  # 2/3: full decode
    ],
)
def test_jpeg_resize_matches_pillow_lanczos(
    src: tuple[int, int], box: tuple[int, int], expect: tuple[int, int]
) -> None:
    data = encode(photo(*src, seed=3), "JPEG", quality=95)
    ours = artpipe.decode(data, max_size=box)
    assert ours.shape[:2] == (expect[1], expect[0])
    with Image.open(io.BytesIO(data)) as im:
        theirs = pillow_fit(im.convert("RGB"), expect)
    assert psnr(ours, theirs) >= 35


def test_rendered_jpeg_matches_pillow_after_encoding() -> None:
    data = encode(photo(1000, 1500, seed=5), "JPEG", quality=95)
    out = artpipe.render(data, max_size=(500, 750))
    with Image.open(io.BytesIO(out)) as im:
        assert im.size == (500, 750)
        ours = np.asarray(im.convert("RGB"))
    with Image.open(io.BytesIO(data)) as im:
        theirs = pillow_fit(im.convert("RGB"), (500, 750))
    assert psnr(ours, theirs) >= 35


@pytest.mark.parametrize(
    ("src", "box", "subsampling"),
    [
        ((1001, 667), (500, 500), 2),  # odd sizes, 4:2:0, DCT 1/2 then Lanczos
        ((900, 601), (640, 640), 0),  # 4:4:4 source, full decode, Lanczos on every plane
        ((800, 600), (400, 300), 1),  # 4:2:2 source, DCT 1/2 exactly
    ],
)
def test_rendered_jpeg_matches_pillow_for_any_subsampling(
    src: tuple[int, int], box: tuple[int, int], subsampling: int
) -> None:
    data = encode(photo(*src, seed=7), "JPEG", quality=95, subsampling=subsampling)
    out = artpipe.render(data, max_size=box)
    with Image.open(io.BytesIO(out)) as im:
        ours = np.asarray(im.convert("RGB"))
        size = im.size
    with Image.open(io.BytesIO(data)) as im:
        theirs = pillow_fit(im.convert("RGB"), size)
    assert size[0] <= box[0] and size[1] <= box[1]
    assert psnr(ours, theirs) >= 35


def test_png_resize_matches_pillow_lanczos() -> None:
    image = photo(640, 480, seed=4)
    ours = artpipe.decode(encode(image, "PNG"), max_size=(320, 320))
    assert psnr(ours, pillow_fit(image, (320, 240))) >= 40


def test_rgba_resize_premultiplies_like_pillow() -> None:
    image = logo(1000, 562, seed=2)
    ours = artpipe.decode(encode(image, "PNG"), max_size=(500, 500))
    theirs = pillow_fit(image, (500, 281))
    assert ours.shape == (281, 500, 4)
    assert psnr(ours[..., 3], theirs[..., 3]) >= 40
    # Colour only matters where it is visible; Pillow premultiplies too.
    visible = theirs[..., 3] > 32
    assert psnr(ours[..., :3][visible], theirs[..., :3][visible]) >= 35


def test_rgba_png_round_trips_alpha_exactly() -> None:
    image = logo(120, 80, seed=1)
    out = artpipe.render(encode(image, "PNG"), format="png")
    with Image.open(io.BytesIO(out)) as im:
        assert im.mode == "RGBA"
        assert np.array_equal(np.asarray(im), np.asarray(image))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(orientation: int) -> None:
    image = photo(96, 64, seed=orientation)
    data = with_orientation(image, orientation)
    assert artpipe.probe(data).orientation == orientation
    assert (artpipe.probe(data).width, artpipe.probe(data).height) == (96, 64)
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    ours = artpipe.decode(data)
    assert ours.shape == expected.shape
    assert psnr(ours, expected) >= 40
    out = artpipe.render(data, max_size=(48, 48))
    info = artpipe.probe(out)
    assert info.orientation == 1
    assert (info.width, info.height) == ((48, 32) if orientation < 5 else (32, 48))
    assert (artpipe.render(data) == data) == (orientation == 1)


def test_png_exif_orientation_is_applied() -> None:
    image = photo(40, 20)
    data = with_orientation(image, 6, format="PNG")
    assert artpipe.probe(data).orientation == 6
    assert artpipe.decode(data).shape == (40, 20, 3)


def test_sixteen_bit_png_is_scaled_to_eight_bits() -> None:
    base = np.asarray(photo(64, 48).convert("L"), dtype=np.uint16) * 257
    data = encode(Image.fromarray(base.astype(np.uint16)), "PNG")
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode.startswith("I")
    ours = artpipe.decode(data)
    assert ours.shape == (48, 64, 3)
    assert np.abs(ours[..., 0].astype(int) - (base >> 8)).max() <= 1


def test_sixteen_bit_rgba_png() -> None:
    rgba = np.zeros((8, 8, 4), dtype=">u2")
    rgba[..., 0] = 65535
    rgba[..., 3] = 32896  # 128 * 257
    import struct
    import zlib

    raw = b"".join(b"\x00" + row.tobytes() for row in rgba)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 16, 6, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    ours = artpipe.decode(data)
    assert ours.shape == (8, 8, 4)
    assert (ours[..., 0] == 255).all() and (ours[..., 3] == 128).all()


def test_palette_png_with_transparency_keeps_alpha() -> None:
    image = Image.new("P", (20, 10), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (10, 0, 20, 10))
    data = encode(image, "PNG", transparency=0)
    ours = artpipe.decode(data)
    assert ours.shape == (10, 20, 4)
    assert (ours[:, :10, 3] == 0).all()
    assert (ours[:, 10:] == [0, 0, 255, 255]).all()
    assert artpipe.probe(artpipe.render(data, format=None)).format == "png"


@pytest.mark.parametrize("mode", ["CMYK", "L"])
def test_cmyk_and_grayscale_jpeg_match_pillow(mode: str) -> None:
    image = photo(80, 60, seed=9).convert(mode)
    data = encode(image, "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(im.convert("RGB"))
    ours = artpipe.decode(data)
    assert ours.shape == (60, 80, 3)
    assert psnr(ours, expected) >= 40


def test_progressive_jpeg_matches_baseline() -> None:
    image = photo(300, 200, seed=2)
    progressive = encode(image, "JPEG", quality=95, progressive=True)
    with Image.open(io.BytesIO(progressive)) as im:
        assert im.info.get("progressive") or im.info.get("progression")
        expected = np.asarray(im.convert("RGB"))
    assert psnr(artpipe.decode(progressive), expected) >= 40
    small = artpipe.decode(progressive, max_size=(75, 75))
    assert small.shape == (50, 75, 3)


@pytest.mark.parametrize("lossless", [False, True])
def test_webp_decodes_like_pillow(lossless: bool) -> None:
    image = photo(120, 90, seed=6)
    data = encode(image, "WEBP", lossless=lossless, quality=90)
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(im.convert("RGB"))
    ours = artpipe.decode(data)
    assert ours.shape[:2] == (90, 120)
    assert psnr(ours[..., :3], expected) >= (60 if lossless else 35)


def test_webp_with_alpha_keeps_it() -> None:
    image = logo(60, 40, seed=3)
    ours = artpipe.decode(encode(image, "WEBP", lossless=True))
    assert ours.shape == (40, 60, 4)
    assert np.array_equal(ours[..., 3], np.asarray(image)[..., 3])


def test_gif_first_frame_is_decoded() -> None:
    data = gif_bytes(50, 30, seed=4, frames=3)
    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        expected = np.asarray(im.convert("RGB"))
    ours = artpipe.decode(data)
    assert ours.shape[:2] == (30, 50)
    assert psnr(ours[..., :3], expected) >= 40
    out = artpipe.render(data)
    assert artpipe.probe(out).format == "jpeg"
