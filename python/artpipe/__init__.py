"""artpipe: fill a media library with artwork — plan, fetch, render, write atomically.

Public API: ``probe``, ``render``, ``write_image``, ``decode`` (Rust core) and
``run`` (the pipelined engine). ``_core`` is private; import errors from
``artpipe.errors`` or from here.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Any

from artpipe.errors import (
    ArtpipeError,
    DecodeError,
    EncodeError,
    FetchError,
    ImageTooLargeError,
    InternalError,
    ManifestError,
    SaveError,
    UnsafePathError,
    UnsupportedFormatError,
)
from artpipe.image import decode, probe, render, write_image
from artpipe.models import ImageInfo, SavedImage

try:
    __version__ = _dist_version("artpipe")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"


async def run(items: Any, library: Any, **options: Any) -> Any:
    """Run the pipeline over ``items`` into ``library``; see ``artpipe.pipeline.run``."""
    from artpipe import pipeline

    return await pipeline.run(items, library, **options)


__all__ = [
    "ArtpipeError",
    "DecodeError",
    "EncodeError",
    "FetchError",
    "ImageInfo",
    "ImageTooLargeError",
    "InternalError",
    "ManifestError",
    "SaveError",
    "SavedImage",
    "UnsafePathError",
    "UnsupportedFormatError",
    "__version__",
    "decode",
    "probe",
    "render",
    "run",
    "write_image",
]
