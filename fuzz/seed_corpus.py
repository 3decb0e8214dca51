"""Write a starting corpus for the cargo-fuzz `decode` target: real images of every shape.

    python fuzz/seed_corpus.py          # from the repository root; writes fuzz/corpus/decode/

Uses the same seed images as tests/test_fuzz.py (JPEG baseline/progressive/gray/CMYK/
EXIF-rotated, PNG RGB/RGBA/palette/16-bit, WebP lossy/lossless, GIF animated/transparent).
Each file starts with the target's selector byte (box size and output format), once per
selector shape, so libFuzzer starts from inputs that reach the decoders.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "python"))

from tests.test_fuzz import seeds  # noqa: E402


def main() -> None:
    out = ROOT / "fuzz" / "corpus" / "decode"
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, data in seeds().items():
        for selector in (0x00, 0x01, 0x06, 0x19):
            (out / f"{name}-{selector:02x}").write_bytes(bytes([selector]) + data)
            count += 1
    print(f"wrote {count} seed inputs to {out}")


if __name__ == "__main__":
    main()
