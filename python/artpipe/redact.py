"""Secrets out of every URL artpipe writes or shows.

Scraper URLs carry credentials: ``user:password@`` and query parameters such
as ``api_key=`` or a signed URL's ``signature=``. The report, the store, the
cache index and the run page live inside the library, which is often shared
with every Kodi client on the network, so none of them may hold those values
in clear. ``redact_url`` replaces them with ``REDACTED`` (the parameter name
stays, so a reader sees what was there); ``redact_text`` does it to every URL
inside a message. The manifest supplies the full URL on every run, so nothing
needed to fetch is lost.

A redacted URL describes itself: ``matches`` compares a stored, redacted URL
with the manifest's clear one by redacting the clear one the same way, so the
store still knows "this file came from this URL" without the secret. A URL
whose only change is its secret (a rotated API key, a re-signed link) is the
same image; list a parameter that selects content with ``secret_params``
removed from the set if that is not true for a source.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["DEFAULT_SECRET_PARAMS", "REDACTED", "matches", "redact_text", "redact_url"]

REDACTED = "REDACTED"
DEFAULT_SECRET_PARAMS: frozenset[str] = frozenset({
    "access_token", "api_key", "api-key", "apikey", "auth", "client_secret", "credential",
    "id_token", "key", "pass", "passwd", "password", "refresh_token", "secret", "sessionid",
    "sig", "signature", "token", "x-amz-credential",
    "x-amz-security-token", "x-amz-signature", "x-goog-credential", "x-goog-signature",
})
"""Query parameter names (compared case-insensitively) whose values are never written."""

_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>`]+", re.IGNORECASE)


def redact_url(url: str, secret_params: Iterable[str] = DEFAULT_SECRET_PARAMS) -> str:
    """``url`` with its userinfo and the values of ``secret_params`` replaced by REDACTED.

    Everything else is kept byte for byte (the order of parameters too), so a
    URL without secrets comes back unchanged; one that does not parse is
    returned as it is (it was never fetched either).
    """
    if "@" not in url and "=" not in url:
        return url  # the common case: nothing that could be a secret
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if "=" in query:
        names = {name.lower() for name in secret_params}
        fields = []
        for field in query.split("&"):
            name, eq, _value = field.partition("=")
            fields.append(f"{name}={REDACTED}" if eq and name.lower() in names else field)
        query = "&".join(fields)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secret_params: Iterable[str] = DEFAULT_SECRET_PARAMS) -> str:
    """``text`` (an error message, a report field) with every URL in it redacted."""
    if "://" not in text:
        return text
    names = frozenset(secret_params)

    def one(match: re.Match[str]) -> str:
        url = match.group()
        core = url.rstrip(".,;:)]}")  # the sentence's punctuation, not the URL's
        return redact_url(core, names) + url[len(core):]

    return _URL_IN_TEXT.sub(one, text)


def matches(recorded: str, wanted: str) -> bool:
    """Whether a stored (possibly redacted) URL is the manifest's ``wanted`` URL.

    The redacted parameters are read from ``recorded`` itself, so a store
    written with one set of secret parameters is still understood by a run
    configured with another.
    """
    if recorded == wanted:
        return True
    if REDACTED not in recorded:
        return False
    try:
        query = urlsplit(recorded).query
    except ValueError:
        return False
    names = {field.partition("=")[0] for field in query.split("&")
             if field.partition("=")[2] == REDACTED}
    return redact_url(wanted, names) == recorded
