"""The one shape of a fetch failure's message.

Every ``FetchError`` says the same four things in the same order: which URL,
what went wrong, where in the exchange (the HTTP status when there was one, how
many attempts were made), and what to do — so a report grouped by message reads
like a list of causes, and a user never has to guess which request failed::

    could not fetch https://img.example/p.jpg: server answered HTTP 503
    (HTTP 503, after 4 attempts); the server is failing or overloaded — retry later
"""

from __future__ import annotations

from typing import TypeVar

from artpipe.errors import FetchError

E = TypeVar("E", bound=FetchError)


def attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def fetch_failure(
    kind: type[E],
    url: str,
    problem: str,
    hint: str,
    *,
    status: int | None = None,
    attempt: int = 0,
    note: str | None = None,
) -> E:
    """``kind("could not fetch URL: PROBLEM (HTTP S, after N attempts, NOTE); HINT")``.

    The parenthesis lists only what is known: no status before the server
    answered, no attempt count before the first request was made.
    """
    where = [f"HTTP {status}"] if status is not None else []
    if attempt:
        where.append(f"after {attempts(attempt)}")
    if note:
        where.append(note)
    context = f" ({', '.join(where)})" if where else ""
    return kind(f"could not fetch {url}: {problem}{context}; {hint}", url, status, attempt)
