"""Which failures are retried, and how long to wait before the next attempt.

Only what can succeed later is retried: connection errors, timeouts, bodies
cut short, 5xx, 408 and 429. The wait is capped exponential backoff with full
jitter, unless the server said how long (Retry-After on 429/503, capped too).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Final

from artpipe.errors import FetchError, HTTPStatusError
from artpipe.fetch.limits import FetchLimits
from artpipe.fetch.messages import fetch_failure

REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES: Final = frozenset({408, 429})
THROTTLE_STATUSES: Final = frozenset({429, 503})


class Retryable(Exception):
    """This attempt failed in a way a later attempt may not."""

    def __init__(
        self,
        error: FetchError,
        retry_after: float | None = None,
        throttle: bool = False,
        host: str | None = None,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.throttle = throttle
        self.host = host  # the host that answered (a redirect target, maybe)

    def delay(self, attempt: int, limits: FetchLimits) -> float:
        """Seconds before the next attempt: the server's Retry-After, else backoff."""
        if self.retry_after is not None:
            return min(self.retry_after, limits.retry_after_cap)
        return backoff(attempt, limits)


def backoff(attempt: int, limits: FetchLimits) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    ceiling = min(limits.backoff_cap, limits.backoff_base * 2 ** (attempt - 1))
    return random.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, float(value))  # lenient: "1.5"
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def status_failure(
    url: str, status: int, headers: Mapping[str, str], attempt: int, host: str
) -> Exception:
    """The failure for a non-success status: ``Retryable`` or a final ``HTTPStatusError``."""
    if status in RETRY_STATUSES or 500 <= status <= 599:
        retry_after = None
        if status in THROTTLE_STATUSES:
            retry_after = parse_retry_after(headers.get("Retry-After"))
        if status == 429:
            hint = "the server rate-limits us; lower the concurrency or retry later"
        else:
            hint = "the server is failing or overloaded; retry later"
        error = fetch_failure(HTTPStatusError, url, _answered(status), hint,
                              status=status, attempt=attempt)
        return Retryable(error, retry_after=retry_after,
                         throttle=status in THROTTLE_STATUSES, host=host)
    if status == 404 or status == 410:
        hint = "the image is gone; update or remove the URL in the manifest"
    elif status in (401, 403):
        hint = "access is denied; check the URL or the site's API key"
    else:
        hint = "check the URL"
    return fetch_failure(HTTPStatusError, url, _answered(status), hint,
                         status=status, attempt=attempt, note="not retried")


def _answered(status: int) -> str:
    try:
        return f"the server answered {HTTPStatus(status).phrase}"
    except ValueError:
        return "the server answered an unknown status"
