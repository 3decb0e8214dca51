"""Reading a response body: a capped stream, bounded inflation, and a magic-byte check.

Size caps hold on the wire (Content-Length checked before reading, then a
running count) and after decompression: aiohttp's auto-decompression is off
and gzip/deflate are inflated here with a bounded output size, so a gzip bomb
costs at most ``max_bytes`` of memory instead of whatever it expands to.
Content is sniffed by magic bytes as soon as the first bytes arrive: an HTML
error page served as image/jpeg is rejected, whatever the Content-Type says.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from artpipe import _core
from artpipe.errors import FetchError, NotAnImageError, ResponseTooLargeError
from artpipe.fetch.messages import fetch_failure
from artpipe.fetch.retry import Retryable

if TYPE_CHECKING:
    from artpipe.fetch.client import BodyReservation

_SNIFF_BYTES = 12  # enough for every signature the sniff knows (WebP needs 12)


def sniff_image(data: bytes) -> str | None:
    """The image format named by ``data``'s magic bytes, or None.

    The Rust core's sniff, the same table the decoder trusts: what passes here
    is what ``probe`` will recognise.
    """
    return _core.sniff(bytes(data))


class TooLarge(Exception):
    """The body passed the cap (on the wire or after inflating)."""


@dataclass
class Inflater:
    """Bounded streaming decompression for gzip/deflate bodies."""

    limit: int
    encoding: str
    _obj: zlib._Decompress | None = field(default=None, init=False)
    total: int = field(default=0, init=False)

    def feed(self, chunk: bytes, out: list[bytes]) -> None:
        if self._obj is None:
            if self.encoding == "deflate":
                # "deflate" is zlib-wrapped by the RFC but raw in the wild.
                zlib_header = (
                    len(chunk) >= 2
                    and (chunk[0] & 0x0F) == 8
                    and ((chunk[0] << 8) | chunk[1]) % 31 == 0
                )
                self._obj = zlib.decompressobj(15 if zlib_header else -15)
            else:
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        data = chunk
        while data:
            # max_length keeps each step's output bounded, however well it compresses.
            piece = self._obj.decompress(data, self.limit - self.total + 1)
            self._take(piece, out)
            data = self._obj.unconsumed_tail

    def finish(self, out: list[bytes]) -> None:
        if self._obj is not None:
            self._take(self._obj.flush(), out)

    def _take(self, piece: bytes, out: list[bytes]) -> None:
        self.total += len(piece)
        if self.total > self.limit:
            raise TooLarge
        if piece:
            out.append(piece)


async def read_body(
    url: str, resp: aiohttp.ClientResponse, attempt: int, cap: int,
    reservation: BodyReservation | None = None,
) -> tuple[bytes, int]:
    """The body (inflated) and its size on the wire, stopping at ``cap`` bytes either way.

    ``reservation`` is grown to what the body may hold once the headers pass their checks
    and before any of it is read: its Content-Length, or the cap when none is declared or
    the body is compressed (it inflates to more than it declares).
    """
    status = resp.status
    declared = resp.content_length
    if declared is not None and declared > cap:
        raise fetch_failure(
            ResponseTooLargeError, url, f"Content-Length {declared} bytes is over the "
            f"{cap}-byte cap", "raise max_bytes if this image is legitimate",
            status=status, attempt=attempt, note="body not read")
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    inflater: Inflater | None = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflater = Inflater(cap, "deflate" if encoding == "deflate" else "gzip")
    elif encoding not in ("identity", ""):
        raise fetch_failure(FetchError, url, f"unsupported Content-Encoding {encoding!r}",
                            "ask the site to serve it plain", status=status, attempt=attempt)
    if reservation is not None:
        await reservation.grow_to(declared if inflater is None and declared is not None
                                  else cap)
    parts: list[bytes] = []
    wire = 0
    sniffed = False
    try:
        content = resp.content
        while True:
            # readany hands over what is buffered; aiohttp's flow control keeps that
            # to a few hundred KB, so each step's memory is bounded.
            chunk = await content.readany()
            if not chunk:
                break
            wire += len(chunk)
            if wire > cap:
                raise TooLarge
            if inflater is None:
                parts.append(chunk)
            else:
                inflater.feed(chunk, parts)
            if not sniffed:
                head = b"".join(parts[:4])[:32]
                if len(head) >= _SNIFF_BYTES:
                    check_image(url, head, status, attempt)
                    sniffed = True
        if inflater is not None:
            inflater.finish(parts)
    except TooLarge:
        where = "after decompression" if inflater is not None else "on the wire"
        raise fetch_failure(
            ResponseTooLargeError, url, f"the body passed the {cap}-byte cap {where}",
            "raise max_bytes if this image is legitimate", status=status, attempt=attempt,
        ) from None
    except zlib.error as exc:
        raise Retryable(fetch_failure(
            FetchError, url, f"the {encoding} body is corrupt ({exc})", "retry later",
            status=status, attempt=attempt)) from exc
    if declared is not None and wire < declared:
        raise Retryable(fetch_failure(
            FetchError, url, f"body is {wire} bytes, shorter than its Content-Length {declared}",
            "the connection is unreliable — retry later", status=status, attempt=attempt))
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    if not sniffed:
        check_image(url, data, status, attempt)
    return data, wire


def check_image(url: str, head: bytes, status: int, attempt: int) -> None:
    """Raise ``NotAnImageError`` unless ``head`` starts like a JPEG, PNG, GIF or WebP."""
    if sniff_image(head) is None:
        what = "an empty body" if not head else f"a body that {describe_body(head)}"
        raise fetch_failure(
            NotAnImageError, url, f"got {what}, not a JPEG, PNG, GIF or WebP image "
            "(an error page?)", "check the URL", status=status, attempt=attempt)


def describe_body(data: bytes) -> str:
    """'starts with "<!DOCTYPE html"', or the first bytes in hex when they are not text."""
    head = data[:24]
    text = head.decode("ascii", "replace").replace("\n", " ").replace("\r", " ")
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f'starts with "{text}"'
    return f"starts with bytes {head[:12].hex(' ')}"
