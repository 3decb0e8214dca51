"""The async HTTP client: one aiohttp session per run, with limits that hold.

Media sites rate-limit (429/503 with Retry-After), CDNs stall, and scraped
URLs point at anything. ``Fetcher`` is the only code in artpipe that talks
HTTP, and it enforces every download limit of docs/contracts.md (invariants 2
and 9, and the limits). One module per layer, from the outside in:

- ``client``: ``Fetcher`` — the session's lifecycle, single-flight (concurrent
  fetches of one normalized URL with the same validators share one request;
  the run's only coalescing layer), the attempt loop, redirects followed by
  hand, ``FetchResult``; ``SAVE_PHASE`` counts any request made while the save
  step runs (``http.requests_in_save``); ``BODY_RESERVE`` lets the caller reserve
  memory for a body by its declared size before it is read.
- ``limits``: ``FetchLimits``; per-origin admission (``HostGate``: a place in
  the origin's adaptive window, its pause and pace, then a global slot, in
  front of aiohttp's connector, so waiting never counts against a request's
  timeouts), bounded per-origin tables, and ``HostStats``.
- ``retry``: which failures are retried (connection errors, timeouts, 5xx,
  408, 429), capped exponential backoff with full jitter, Retry-After — which
  slows the whole host down, not only the request that saw it; a throttled
  answer is waited for until a deadline instead of using up attempts.
- ``body``: the body read with a running byte cap, gzip/deflate inflated with
  a bounded output size (a gzip bomb costs at most ``max_bytes``), and the
  magic-byte check that rejects an HTML error page served as image/jpeg.
- ``messages``: the one shape of a "could not fetch …" message.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from artpipe.fetch.body import sniff_image
    from artpipe.fetch.client import (
        BODY_RESERVE,
        SAVE_PHASE,
        BodyReservation,
        Fetcher,
        FetchResult,
    )
    from artpipe.fetch.limits import DEFAULT_LIMITS, FetchLimits, HostStats
    from artpipe.fetch.retry import parse_retry_after

# Loaded on first use: the limits (all the CLI needs to parse its flags) come without
# aiohttp, which alone is a quarter of a second of every `artpipe --help`.
_HOME = {
    "sniff_image": "body", "BODY_RESERVE": "client", "SAVE_PHASE": "client",
    "Fetcher": "client", "FetchResult": "client", "BodyReservation": "client",
    "DEFAULT_LIMITS": "limits",
    "FetchLimits": "limits", "HostStats": "limits", "parse_retry_after": "retry",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'artpipe.fetch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"artpipe.fetch.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


__all__ = [
    "BODY_RESERVE",
    "DEFAULT_LIMITS",
    "SAVE_PHASE",
    "BodyReservation",
    "FetchLimits",
    "FetchResult",
    "Fetcher",
    "HostStats",
    "parse_retry_after",
    "sniff_image",
]
