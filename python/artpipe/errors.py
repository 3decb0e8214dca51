"""The exception tree, defined once.

The Rust core imports these classes (``pyo3::import_exception!``) instead of
creating its own, so ``except artpipe.DecodeError`` catches a bad JPEG whether
Python or Rust noticed it. Every class keeps ``args`` equal to what
``__init__`` takes: errors cross process pools and Dask workers by pickle, and
a class whose extra field is not in ``args`` fails to unpickle.
"""

from __future__ import annotations


class ArtpipeError(Exception):
    """Root of everything artpipe raises on purpose."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class ManifestError(ArtpipeError):
    """A manifest line (or the whole file) cannot be used.

    ``item`` is the line's id when one could be read, so the report row of a
    rejected line still says which item it was.
    """

    def __init__(
        self,
        message: str,
        line: int | None = None,
        path: str | None = None,
        item: str | None = None,
    ) -> None:
        super().__init__(message, line, path, item)
        self.line = line
        self.path = path
        self.item = item

    def __str__(self) -> str:
        where = ""
        if self.path is not None and self.line is not None:
            where = f"{self.path}, line {self.line}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        elif self.path is not None:
            where = f"{self.path}: "
        return f"{where}{self.args[0]}"


class UnsafePathError(ArtpipeError, ValueError):
    """A path would be written outside the library root (or is malformed)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message, path)
        self.path = path


class FetchError(ArtpipeError):
    """A download failed; names the URL, the HTTP status and the attempt count."""

    def __init__(
        self,
        message: str,
        url: str | None = None,
        status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message, url, status, attempts)
        self.url = url
        self.status = status
        self.attempts = attempts


class FetchTimeoutError(FetchError):
    """Connect, read or total timeout expired."""


class ResponseTooLargeError(FetchError):
    """The body (on the wire or after decompression) passed the size cap."""


class NotAnImageError(FetchError):
    """The body's magic bytes are not an image (an HTML error page, say)."""


class RedirectError(FetchError):
    """Too many redirects, or a redirect to a scheme other than http/https."""


class HTTPStatusError(FetchError):
    """The server answered with a status that is not a success."""


class DecodeError(ArtpipeError, ValueError):
    """The bytes are not a decodable image (truncated, corrupt, not an image)."""

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__(message, source)
        self.source = source


class UnsupportedFormatError(DecodeError):
    """The bytes are an image format artpipe does not read (or not an image at all)."""


class ImageTooLargeError(DecodeError):
    """The header declares more pixels than the limit; refused before decoding."""


class ImageTooComplexError(DecodeError):
    """Decoding would take unbounded work (e.g. a JPEG with thousands of scans); refused
    before decoding. The same bytes are refused every time, so a run remembers the URL."""


class EncodeError(ArtpipeError):
    """Encoding the output image failed."""

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__(message, source)
        self.source = source


class SaveError(ArtpipeError, OSError):
    """Writing the file failed; the old file (if any) is untouched.

    Raise as ``SaveError(errno, message, path)``: OSError's 3-argument form fills
    ``.errno``, ``.strerror`` and ``.filename`` and pickles round-trip.
    """

    def __str__(self) -> str:
        if self.filename is not None:
            return f"{self.strerror}: {self.filename}"
        return str(self.strerror if self.strerror is not None else self.args[0])


class StoreError(ArtpipeError):
    """The database cannot be opened or written (locked, corrupt, unwritable)."""


class InternalError(ArtpipeError):
    """A bug in artpipe (a Rust panic caught at the boundary); please report it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


__all__ = [
    "ArtpipeError",
    "DecodeError",
    "EncodeError",
    "FetchError",
    "FetchTimeoutError",
    "HTTPStatusError",
    "ImageTooComplexError",
    "ImageTooLargeError",
    "InternalError",
    "ManifestError",
    "NotAnImageError",
    "RedirectError",
    "ResponseTooLargeError",
    "SaveError",
    "StoreError",
    "UnsafePathError",
    "UnsupportedFormatError",
]
