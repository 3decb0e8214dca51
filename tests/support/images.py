"""Deterministic test images, generated (never downloaded), that look enough like photos for
PSNR comparisons to mean something: smooth gradients, a few hard-edged shapes, mild noise.

Other test modules may import these helpers; everything is seeded, so the same call gives
the same bytes on every machine.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "encode",
    "gif_bytes",
    "huge_png_header",
    "jpeg_bytes",
    "logo",
    "photo",
    "png_bytes",
    "psnr",
    "webp_bytes",
    "with_orientation",
]


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB 'photo': low-frequency colour field + shapes + gentle blur + mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x /= max(width - 1, 1)
    y /= max(height - 1, 1)
    channels = []
    for c in range(3):
        fx, fy, phase = rng.uniform(0.5, 2.5), rng.uniform(0.5, 2.5), rng.uniform(0, 6.28)
        field = 0.5 + 0.35 * np.sin(6.28 * fx * x + phase) * np.cos(6.28 * fy * y + c)
        channels.append(field * 255)
    base = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    image = Image.fromarray(base, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        colour = tuple(int(v) for v in rng.integers(20, 235, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    radius = max(1.0, min(width, height) / 400)
    image = image.filter(ImageFilter.GaussianBlur(radius))
    noise = rng.normal(0, 2.0, (height, width, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def logo(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGBA 'clearlogo': coloured shapes with soft edges on a transparent background."""
    rng = np.random.default_rng(seed)
    colour = photo(width, height, seed)
    alpha = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(alpha)
    for _ in range(5):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        draw.ellipse((x0, y0, x1 + 1, y1 + 1), fill=int(rng.integers(128, 256)))
    alpha = alpha.filter(ImageFilter.GaussianBlur(max(1.0, min(width, height) / 200)))
    colour.putalpha(alpha)
    return colour


def encode(image: Image.Image, format: str, **options: Any) -> bytes:
    """Pillow-encode ``image`` (format as Pillow names it: JPEG, PNG, WEBP, GIF)."""
    out = io.BytesIO()
    image.save(out, format, **options)
    return out.getvalue()


def jpeg_bytes(width: int, height: int, seed: int = 0, quality: int = 92, **options: Any) -> bytes:
    return encode(photo(width, height, seed), "JPEG", quality=quality, **options)


def png_bytes(width: int, height: int, seed: int = 0, alpha: bool = False) -> bytes:
    image = logo(width, height, seed) if alpha else photo(width, height, seed)
    return encode(image, "PNG", compress_level=1)


def webp_bytes(width: int, height: int, seed: int = 0, lossless: bool = False) -> bytes:
    return encode(photo(width, height, seed), "WEBP", lossless=lossless, quality=90)


def gif_bytes(width: int, height: int, seed: int = 0, frames: int = 2) -> bytes:
    images = [photo(width, height, seed + i).convert("P") for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=100)
    return out.getvalue()


def with_orientation(image: Image.Image, orientation: int, format: str = "JPEG") -> bytes:
    """Encode ``image`` with an EXIF Orientation tag (1..8)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    options: dict[str, Any] = {"exif": exif.tobytes()}
    if format == "JPEG":
        options["quality"] = 95
    return encode(image, format, **options)


def huge_png_header(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose IHDR declares ``width``x``height`` (a pixel bomb)."""
    real = encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG")
    ihdr = struct.pack(">II", width, height) + real[24:29]
    chunk = b"IHDR" + ihdr
    return (
        real[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + real[33:]
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two same-shaped uint8 arrays."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
