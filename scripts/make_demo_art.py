"""Generate the demo's bundled sample artwork (license-clean: drawn here).

Run once with Pillow installed; the output is committed under
python/artpipe/demo_art/ so `artpipe demo` needs nothing at run time.
Sizes are the real-world ones (2000×3000 posters, 3840×2160 fanart) at modest
JPEG quality so the whole set stays a few MB.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent.parent / "python" / "artpipe" / "demo_art"

PALETTES = [
    ((18, 24, 66), (230, 120, 40)),
    ((8, 60, 50), (240, 220, 120)),
    ((70, 10, 30), (250, 170, 190)),
    ((20, 20, 20), (120, 200, 255)),
    ((60, 40, 90), (250, 240, 200)),
    ((10, 50, 90), (255, 90, 60)),
]


def scene(w: int, h: int, seed: int) -> Image.Image:
    """A smooth sky gradient with hills and a sun: photo-like, compresses well."""
    rng = random.Random(seed)
    top, bottom = PALETTES[seed % len(PALETTES)]
    small = Image.new("RGB", (64, 64))
    px = small.load()
    for y in range(64):
        t = y / 63
        for x in range(64):
            wobble = 0.08 * math.sin(x / 9 + seed)
            k = min(1.0, max(0.0, t + wobble))
            px[x, y] = tuple(int(a + (b - a) * k) for a, b in zip(top, bottom, strict=True))
    img = small.resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    r = min(w, h) // 6
    cx, cy = rng.randint(r, w - r), rng.randint(r, h // 2)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 236, 180))
    for layer in range(3):
        base = h * (0.6 + 0.12 * layer)
        pts = [(0, h)]
        for i in range(13):
            x = w * i / 12
            pts.append((x, base - rng.random() * h * 0.15))
        pts.append((w, h))
        shade = 30 + 25 * layer
        draw.polygon(pts, fill=(shade // 2, shade, shade // 2 + 10))
    return img.filter(ImageFilter.GaussianBlur(radius=max(1, w // 800)))


def logo(w: int, h: int, seed: int) -> Image.Image:
    """Transparent clear-art: rounded shapes on a fully transparent canvas."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    _, color = PALETTES[seed % len(PALETTES)]
    pad = h // 8
    draw.rounded_rectangle((pad, pad, w - pad, h - pad), radius=h // 4, fill=(*color, 235),
                           outline=(255, 255, 255, 255), width=max(2, h // 40))
    for i in range(5):
        x = pad + (w - 2 * pad) * (i + 0.5) / 5
        draw.ellipse((x - h // 8, h / 2 - h // 8, x + h // 8, h / 2 + h // 8),
                     fill=(255, 255, 255, 200))
    return img


def disc(size: int, seed: int) -> Image.Image:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    _, color = PALETTES[seed % len(PALETTES)]
    draw.ellipse((4, 4, size - 4, size - 4), fill=(*color, 255))
    c = size // 2
    hole = size // 10
    draw.ellipse((c - hole, c - hole, c + hole, c + hole), fill=(0, 0, 0, 0))
    return img


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        scene(2000, 3000, i).save(OUT / f"poster{i + 1}.jpg", quality=70, optimize=True)
    for i in range(4):
        scene(3840, 2160, 10 + i).save(OUT / f"fanart{i + 1}.jpg", quality=60, optimize=True)
    for i in range(2):
        scene(1000, 185, 20 + i).save(OUT / f"banner{i + 1}.jpg", quality=85)
        scene(1000, 562, 30 + i).save(OUT / f"landscape{i + 1}.jpg", quality=80)
    scene(1280, 720, 40).save(OUT / "thumb1.jpg", quality=80)
    scene(1280, 720, 41).save(OUT / "thumb2.jpg", quality=80)
    for i in range(2):
        logo(1600, 620, 50 + i).save(OUT / f"clearlogo{i + 1}.png", optimize=True)
        logo(1000, 562, 60 + i).save(OUT / f"clearart{i + 1}.png", optimize=True)
    disc(1000, 70).save(OUT / "discart1.png", optimize=True)
    logo(512, 512, 80).save(OUT / "characterart1.png", optimize=True)
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1e6:.1f} MB to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
