"""The image API: probe, render, write_image, decode.

Thin wrappers over the Rust core (``artpipe._core``): they check arguments here, so a bad
value is a ``ValueError`` that names it, make exactly one call into Rust (which releases the
GIL for all the work), and wrap the plain tuples that come back in ``models`` dataclasses.
Errors are the classes of ``artpipe.errors`` (raised by Rust itself): ``DecodeError``,
``UnsupportedFormatError``, ``ImageTooLargeError``, ``EncodeError``, ``SaveError`` and,
for a bug in the core, ``InternalError``. Every function is safe to call from many threads
at once and from a spawn-context process pool; arguments and results pickle.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, Final, Literal

from artpipe import _core
from artpipe.errors import ArtpipeError
from artpipe.models import ImageInfo, SavedImage

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "PROBE_READ_LIMIT",
    "TEMP_SUFFIX",
    "BytesLike",
    "OutputFormat",
    "decode",
    "decoded_bytes",
    "encode",
    "probe",
    "probe_file",
    "render",
    "write_image",
]

OutputFormat = Literal["jpeg", "png"]
BytesLike = bytes | bytearray | memoryview
"""What the image functions accept as image data (anything else is a TypeError)."""

DEFAULT_MAX_PIXELS: Final = _core.MAX_PIXELS
"""Images whose header declares more pixels are refused before decoding (ImageTooLargeError)."""

TEMP_SUFFIX: Final = _core.TEMP_SUFFIX
"""``write_image`` writes ``.<name>.<random>`` + this suffix beside the target, then renames."""

_U32 = 2**32 - 1
_U64 = 2**64 - 1


def _data(data: BytesLike) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"data must be bytes, not {type(data).__name__}")


def _max_size(max_size: tuple[int, int] | None) -> tuple[int, int] | None:
    if max_size is None:
        return None
    try:
        width, height = max_size
    except (TypeError, ValueError):
        raise ValueError(
            f"max_size must be a (width, height) pair of positive ints or None, not {max_size!r}"
        ) from None
    for value in (width, height):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _U32:
            raise ValueError(
                f"max_size must be a (width, height) pair of positive ints, not {max_size!r}"
            )
    return (width, height)


def _format(format: str | None) -> str | None:
    if format is None or format in ("jpeg", "png"):
        return format
    raise ValueError(f"format must be 'jpeg', 'png' or None, not {format!r}")


def _quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int from 1 to 100, not {quality!r}")
    return quality


def _max_pixels(max_pixels: int) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or not 1 <= max_pixels:
        raise ValueError(f"max_pixels must be a positive int, not {max_pixels!r}")
    return min(max_pixels, _U64)


def _fs_path(name: str, path: str | os.PathLike[str]) -> str:
    fs_path = os.fspath(path)
    if not isinstance(fs_path, str):
        raise TypeError(f"{name} must be str or os.PathLike[str], not {type(fs_path).__name__}")
    return fs_path


def probe(data: BytesLike) -> ImageInfo:
    """Format ("jpeg", "png", "webp" or "gif"), size and EXIF orientation from the header only.

    No pixels are decoded, so a damaged body can still probe fine; width and height are as
    stored, before the orientation (1..8) is applied.
    """
    format, width, height, orientation = _core.probe(_data(data))
    return ImageInfo(format=format, width=width, height=height, orientation=orientation)


PROBE_READ_LIMIT: Final = 4 * 1024 * 1024
"""``probe_file`` reads at most this many bytes: every format's header lies well within it
(a JPEG's frame header follows at most a few 64 KB metadata segments)."""


def probe_file(path: str | os.PathLike[str], *, limit: int = PROBE_READ_LIMIT) -> ImageInfo:
    """``probe`` on the start of a file: reads at most ``limit`` bytes, whatever the size.

    Only regular files are read; a FIFO, socket or device is an ``OSError`` (EINVAL) at
    once, since reading one could block forever or never end. The file is opened
    non-blocking, so even a FIFO swapped in after the check cannot hang the caller.
    """
    fd = os.open(_fs_path("path", path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device); "
                          "only image files can be probed", os.fspath(path))
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    return probe(b"".join(chunks))


# PNG colour type -> channels once decoded (a palette expands to RGB or RGBA: count 4).
_PNG_CHANNELS: Final = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}


def decoded_bytes(data: BytesLike) -> int:
    """What the pixels of ``data`` take once decoded: width x height x channels x bytes per
    sample, from the header alone (0 for bytes that do not probe: they fail cheaply).

    The pipeline reserves this much of its decoded-bytes budget before a render, so a 16-bit
    RGBA PNG counts 8 bytes a pixel and many of them do not decode at once.
    """
    try:
        info = probe(data)
    except ArtpipeError:
        return 0
    channels, sample = 4, 1  # WebP, GIF: RGBA
    if info.format == "jpeg":
        channels = 3
    elif info.format == "png":
        head = bytes(data[24:26])  # IHDR: bit depth, colour type
        if len(head) == 2:
            channels = _PNG_CHANNELS.get(head[1], 4)
            sample = 2 if head[0] == 16 else 1
    return info.width * info.height * channels * sample


def render(
    data: BytesLike,
    *,
    max_size: tuple[int, int] | None = None,
    format: str | None = None,
    quality: int = 90,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> bytes:
    """Decode, apply EXIF orientation, shrink to fit ``max_size`` and encode.

    ``max_size`` is a (width, height) box: the aspect ratio is kept (±1 px) and images are
    never enlarged. ``format`` None keeps a JPEG or PNG source's format; other sources become
    JPEG, or PNG when they have transparency. A source that already is the target format,
    upright and within the box comes back unchanged (after it is checked to decode fully).
    """
    return _core.render(
        _data(data),
        max_size=_max_size(max_size),
        format=_format(format),
        quality=_quality(quality),
        max_pixels=_max_pixels(max_pixels),
    )


def write_image(
    data: BytesLike,
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    max_size: tuple[int, int] | None = None,
    format: str | None = None,
    quality: int = 90,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SavedImage:
    """``render`` and write the result to ``path`` atomically, in one call that releases the GIL.

    The file is written to ``.<name>.<random>.artpipe-tmp`` beside the target, flushed to disk,
    renamed over the target and the directory flushed: readers see the complete old file or the
    complete new one. On any error the old file is untouched and no temp file is left. A
    directory or FIFO at ``path``, or a missing parent directory, is a ``SaveError``; no
    directories are created.

    ``root`` (a library folder that ``path`` lies under) makes the write refuse to leave it:
    every folder from ``root`` down to the file is opened without following symbolic links,
    at write time, so a folder swapped for a link while the image downloaded is a
    ``SaveError`` and nothing is written outside ``root``. With ``root``, missing folders
    below it are created (none above it); ``root`` itself may be a link.
    """
    saved, _ = _write(data, path, root, max_size, format, quality, max_pixels, stage=False)
    return saved


def stage_image(
    data: BytesLike,
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    max_size: tuple[int, int] | None = None,
    format: str | None = None,
    quality: int = 90,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[SavedImage, _core.StagedWrite]:
    """``write_image`` up to the temp file beside ``path``: nothing is in place or durable yet.

    ``artpipe.commit.GroupCommitter`` puts staged files in place with one flush to disk for
    many files; until then the target is untouched, and a staged write that is dropped
    removes its temp file.
    """
    saved, staged = _write(data, path, root, max_size, format, quality, max_pixels, stage=True)
    assert staged is not None
    return saved, staged


def _write(
    data: BytesLike,
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None,
    max_size: tuple[int, int] | None,
    format: str | None,
    quality: int,
    max_pixels: int,
    *,
    stage: bool,
) -> tuple[SavedImage, _core.StagedWrite | None]:
    result, staged = _core.write_image(
        _data(data), _fs_path("path", path), root=None if root is None else _fs_path("root", root),
        max_size=_max_size(max_size), format=_format(format), quality=_quality(quality),
        max_pixels=_max_pixels(max_pixels), stage=stage)
    out_path, out_format, width, height, size, sha256, passthrough = result
    return SavedImage(path=out_path, format=out_format, width=width, height=height, bytes=size,
                      sha256=sha256, passthrough=passthrough), staged


def decode(
    data: BytesLike,
    *,
    max_size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> npt.NDArray[np.uint8]:
    """Upright pixels as a writable numpy array of shape (height, width, channels), uint8.

    Channels are 3 (RGB) or 4 (RGBA, straight alpha, when the source has an alpha channel or
    a palette with transparency). Grayscale sources come back as 3 identical channels, 16-bit
    PNGs are scaled to 8 bits, CMYK/YCCK JPEGs are converted to RGB, and a GIF gives its first
    frame (always RGBA).
    ``max_size`` shrinks the image to fit, as in ``render``.
    """
    import numpy as np

    buffer, height, width, channels = _core.decode(
        _data(data), max_size=_max_size(max_size), max_pixels=_max_pixels(max_pixels)
    )
    return np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, channels)


def encode(pixels: npt.NDArray[np.uint8], *, format: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an (height, width, 3 or 4) uint8 array as JPEG (4:2:0) or PNG (fast deflate).

    A (height, width) array is taken as grayscale and written as RGB. JPEG has no alpha, so
    RGBA is composited over white first.
    """
    import numpy as np

    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        raise ValueError(f"pixels must be a uint8 array, not {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or 0 in array.shape:
        raise ValueError(
            f"pixels must have shape (height, width, 3 or 4), not {tuple(array.shape)}"
        )
    if _format(format) is None:
        raise ValueError("format must be 'jpeg' or 'png', not None")
    height, width, channels = array.shape
    return _core.encode(
        np.ascontiguousarray(array).tobytes(),
        width,
        height,
        channels,
        format=format,
        quality=_quality(quality),
    )
