"""Which failures are retried, and how long to wait before the next attempt.

Only what can succeed later is retried: connection errors, timeouts, bodies
cut short, 5xx, 408 and 429. The wait is capped exponential backoff with full
jitter, unless the server said how long (Retry-After, capped too). A host that
asks us to wait (429, or any Retry-After) is not failing: such answers are
retried until a deadline rather than counted against the attempt limit.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Final

from artpipe.errors import FetchError, HTTPStatusError
from artpipe.fetch.limits import FetchLimits, Origin
from artpipe.fetch.messages import fetch_failure

REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES: Final = frozenset({408, 429})
THROTTLE_STATUSES: Final = frozenset({429, 503})


class Retryable(Exception):
    """This attempt failed in a way a later attempt may not.

    ``throttle``: the host pushed back (429, 503, or any answer with
    Retry-After): its window is cut and every request to it pauses.
    ``patient``: the host asked us to wait (429, or a Retry-After) — the
    request is retried until the throttle deadline, and the attempt limit for
    real failures does not count it.
    """

    def __init__(
        self,
        error: FetchError,
        retry_after: float | None = None,
        throttle: bool = False,
        host: Origin | None = None,
        patient: bool = False,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.throttle = throttle
        self.host = host  # the origin that answered (a redirect target, maybe)
        self.patient = patient

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
    url: str, status: int, headers: Mapping[str, str], attempt: int, host: Origin
) -> Exception:
    """The failure for a non-success status: ``Retryable`` or a final ``HTTPStatusError``."""
    if status in RETRY_STATUSES or 500 <= status <= 599:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if status == 429:
            hint = "the server rate-limits us; lower the concurrency or retry later"
        else:
            hint = "the server is failing or overloaded; retry later"
        error = fetch_failure(HTTPStatusError, url, _answered(status), hint,
                              status=status, attempt=attempt)
        return Retryable(error, retry_after=retry_after,
                         throttle=status in THROTTLE_STATUSES or retry_after is not None,
                         host=host, patient=status == 429 or retry_after is not None)
    if status == 404 or status == 410:
        hint = "the image is gone; update or remove the URL in the manifest"
    elif status in (401, 403):
        hint = "access is denied; check the URL or the site's API key"
    else:
        hint = "check the URL"
    return fetch_failure(HTTPStatusError, url, _answered(status), hint,
                         status=status, attempt=attempt, note="not retried")


def pushes_back(status: int, headers: Mapping[str, str]) -> bool:
    """Did the host ask us to slow down? (429, 503, or an error with Retry-After)."""
    return status in THROTTLE_STATUSES or (status >= 400 and "Retry-After" in headers)


def _answered(status: int) -> str:
    try:
        return f"the server answered {HTTPStatus(status).phrase}"
    except ValueError:
        return "the server answered an unknown status"
