"""artpipe: fill a media library with artwork — plan, fetch, render, write atomically.

Public API: ``probe``, ``render``, ``write_image``, ``decode`` (Rust core) and
``run`` (the pipelined engine). ``_core`` is private; import errors from
``artpipe.errors`` or from here.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import TYPE_CHECKING, Unpack

from artpipe import _core
from artpipe.errors import (
    ArtpipeError,
    DecodeError,
    EncodeError,
    FetchError,
    ImageTooComplexError,
    ImageTooLargeError,
    InternalError,
    ManifestError,
    SaveError,
    StoreError,
    UnsafePathError,
    UnsupportedFormatError,
)
from artpipe.image import decode, probe, render, write_image
from artpipe.models import ImageInfo, SavedImage

if TYPE_CHECKING:  # the engine (and aiohttp) load on the first run, not on import
    from artpipe.pipeline import Items, ProgressCallback, RunOptionsArgs, RunReport

try:
    __version__ = _dist_version("artpipe")
except PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = _core.__version__

if _core.__version__ != __version__:
    # A compiled module left over from another version would fail in odd ways
    # (missing functions, other argument names); say so at import instead.
    raise ImportError(
        f"stale artpipe._core build ({_core.__version__}, package is {__version__}); "
        "rebuild it: pip install . (or maturin develop --release)"
    )


async def run(
    items: Items,
    library: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    **options: Unpack[RunOptionsArgs],
) -> RunReport:
    """Run the pipeline over ``items`` into ``library``; see ``artpipe.pipeline.run``."""
    from artpipe import pipeline

    return await pipeline.run(items, library, progress=progress, **options)


__all__ = [
    "ArtpipeError",
    "DecodeError",
    "EncodeError",
    "FetchError",
    "ImageInfo",
    "ImageTooComplexError",
    "ImageTooLargeError",
    "InternalError",
    "ManifestError",
    "SaveError",
    "SavedImage",
    "StoreError",
    "UnsafePathError",
    "UnsupportedFormatError",
    "__version__",
    "decode",
    "probe",
    "render",
    "run",
    "write_image",
]
