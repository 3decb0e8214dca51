"""Typed surface of the Rust extension ``artpipe._core`` (hand-written, checked by stubtest).

Private: call ``artpipe.probe/render/write_image/decode`` instead, which validate arguments
and wrap results in dataclasses.
"""

import os
from typing import final

__all__ = [
    "MAX_PIXELS",
    "TEMP_SUFFIX",
    "StagedWrite",
    "__version__",
    "_debug_panic",
    "build_info",
    "commit_writes",
    "decode",
    "encode",
    "probe",
    "render",
    "sniff",
    "write_blobs",
    "write_bytes",
    "write_image",
]

__version__: str
MAX_PIXELS: int
TEMP_SUFFIX: str

def build_info() -> list[tuple[str, str]]: ...

def probe(data: bytes) -> tuple[str, int, int, int]: ...
def sniff(data: bytes) -> str | None: ...
def render(
    data: bytes,
    *,
    max_size: tuple[int, int] | None = None,
    format: str | None = None,
    quality: int = 90,
    max_pixels: int = 100_000_000,
) -> bytes: ...
def write_image(
    data: bytes,
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    max_size: tuple[int, int] | None = None,
    format: str | None = None,
    quality: int = 90,
    max_pixels: int = 100_000_000,
    stage: bool = False,
) -> tuple[tuple[str, str, int, int, int, str, bool], StagedWrite | None]: ...
@final
class StagedWrite:
    @property
    def mtime_ns(self) -> int: ...

def write_bytes(
    data: bytes,
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    stage: bool = False,
) -> StagedWrite | None: ...
def commit_writes(writes: list[StagedWrite]) -> list[BaseException | None]: ...
def write_blobs(
    blobs: list[bytes], folder: str | os.PathLike[str], *, temp_prefix: str = ".tmp-"
) -> list[tuple[str | None, BaseException | None]]: ...
def decode(
    data: bytes,
    *,
    max_size: tuple[int, int] | None = None,
    max_pixels: int = 100_000_000,
) -> tuple[bytearray, int, int, int]: ...
def encode(
    data: bytes,
    width: int,
    height: int,
    channels: int,
    *,
    format: str = "jpeg",
    quality: int = 90,
) -> bytes: ...
def _debug_panic(message: str) -> None: ...
