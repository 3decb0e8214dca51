"""JSONL manifest -> Items; every error names the line number.

The manifest can be millions of lines written by another program, so it is
streamed: one line at a time, in binary, with a per-line byte cap, so one
runaway line cannot make us buffer gigabytes. A bad line is handed to
``on_error`` and skipped; the rest of the manifest still runs. Only a manifest
that cannot be opened at all stops the run.

Validation is as narrow as the fault. A line is rejected whole only when the
item itself cannot be understood: not JSON, not an object, no usable
id/type/path, an unsafe path, a season without its number. A bad URL, an
unknown art key or art the content type cannot have fails only that slot: it
becomes a ``SlotProblem`` on the Item (a ``failed`` report row), and the item's
other art still runs. One ``javascript:`` URL must not cost a movie its poster.

``parse_item`` is the one validator: the CLI (through ``iter_manifest``) and the
Python API (users passing dicts) both go through it, so both accept exactly the
same items.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from typing import IO, Any
from urllib.parse import urlsplit

from artpipe.errors import ManifestError
from artpipe.models import ArtSlot, ArtType, ContentType, Item, SlotProblem
from artpipe.naming import ALLOWED_ART, path_problem

__all__ = ["clean_text", "iter_manifest", "parse_item", "validate_url"]

_TYPES = ", ".join(t.value for t in ContentType)
_ARTS = ", ".join(a.value for a in ArtType)
_CHUNK = 1 << 16
_URL_SHOWN = 2048  # a bad URL is echoed in the report up to this many characters
# The id of a line that is not valid JSON, best effort, for its report row.
_ID_IN_TEXT = re.compile(r'"id"\s*:\s*"((?:[^"\\]|\\.){1,200})"')


class _BadSlot(Exception):
    """One art value or entry that cannot be used; becomes a SlotProblem."""


def iter_manifest(
    path: str | os.PathLike[str],
    *,
    on_error: Callable[[ManifestError], None] | None = None,
    max_line_bytes: int = 1_000_000,
) -> Iterator[Item]:
    """Yield the valid items of a JSONL manifest, streaming it line by line.

    A missing, unreadable or directory ``path`` raises ``ManifestError`` now
    (not at the first ``next()``), because the run cannot go on without it.
    Each bad line becomes ``ManifestError(message, line=N, path=str(path))``
    passed to ``on_error`` (default: dropped) and is skipped.
    """
    where = str(path)
    try:
        handle = open(path, "rb")
    except FileNotFoundError as exc:
        raise ManifestError(
            "manifest file not found; check the path (it is read as JSON Lines, one item per line)",
            path=where,
        ) from exc
    except IsADirectoryError as exc:
        raise ManifestError(
            "manifest path is a directory; pass the .jsonl file inside it", path=where
        ) from exc
    except PermissionError as exc:
        raise ManifestError(
            "manifest is not readable (permission denied); fix its permissions or copy it",
            path=where,
        ) from exc
    except OSError as exc:
        raise ManifestError(
            f"cannot open manifest ({exc.strerror or exc}); check the path", path=where
        ) from exc
    if max_line_bytes < 1:
        handle.close()
        raise ValueError(f"max_line_bytes must be at least 1, got {max_line_bytes}")
    return _items(handle, where, on_error, max_line_bytes)


def _items(
    handle: IO[bytes],
    where: str,
    on_error: Callable[[ManifestError], None] | None,
    max_line_bytes: int,
) -> Iterator[Item]:
    def report(message: str, line: int, item: str | None = None) -> None:
        if on_error is not None:
            on_error(ManifestError(message, line=line, path=where, item=item))

    with handle:
        number = 0
        while True:
            try:
                raw = handle.readline(max_line_bytes + 1)
            except OSError as exc:
                raise ManifestError(
                    f"reading the manifest failed after line {number} ({exc.strerror or exc}); "
                    "check the disk and rerun",
                    path=where,
                ) from exc
            if not raw:
                return
            number += 1
            if not raw.endswith(b"\n") and len(raw) > max_line_bytes:
                skipped = len(raw) + _skip_rest_of_line(handle)
                report(
                    f"line is longer than {max_line_bytes} bytes ({skipped}+ bytes); "
                    "split the item or raise max_line_bytes",
                    number,
                )
                continue
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                report(
                    f"line is not valid UTF-8 (bad byte {raw[exc.start : exc.start + 1]!r} at "
                    f"offset {exc.start}); write the manifest as UTF-8",
                    number,
                )
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                report(f"invalid JSON ({exc.msg} at column {exc.colno}); fix the line", number,
                       _id_in_text(text))
                continue
            except RecursionError:
                report("JSON is nested too deeply; an item is one flat object", number)
                continue
            except ValueError as exc:  # e.g. an integer past Python's digit limit
                report(f"invalid JSON ({exc}); fix the line", number, _id_in_text(text))
                continue
            try:
                yield parse_item(obj, number)
            except ManifestError as exc:
                report(str(exc.args[0]), number, exc.item)
            except RecursionError:  # a value nested just under json's limit
                report("a value is nested too deeply; an item is one flat object", number,
                       _id_in_text(text))


def _skip_rest_of_line(handle: IO[bytes]) -> int:
    """Read past the end of an over-long line in bounded chunks; return bytes skipped."""
    skipped = 0
    while True:
        chunk = handle.readline(_CHUNK)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _id_in_text(text: str) -> str | None:
    match = _ID_IN_TEXT.search(text)
    if match is None:
        return None
    try:
        found = json.loads(f'"{match.group(1)}"')
    except json.JSONDecodeError:
        return None
    return clean_text(found) if isinstance(found, str) and found.strip() else None


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (``"\\ud800"``: half an emoji) written as escapes.

    JSON may escape them, Python decodes them, but UTF-8 cannot encode them:
    left in, the SQLite store, the report or the terminal raises on them.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _not_utf8(value: str) -> bool:
    return clean_text(value) is not value


def parse_item(obj: Any, line: int = 0) -> Item:
    """Validate one decoded manifest object and build its Item.

    Raises ``ManifestError`` (``line`` set when non-zero, ``item`` set when the
    id was readable) naming the field, the bad value and what to write instead,
    when the item itself cannot be understood. A bad art value does not raise:
    it becomes one of ``Item.problems``.
    """
    at = line or None
    readable_id = obj.get("id") if isinstance(obj, dict) else None
    known_id = (clean_text(readable_id) if isinstance(readable_id, str) and readable_id.strip()
                else None)

    def fail(message: str) -> ManifestError:
        return ManifestError(message, line=at, item=known_id)

    if not isinstance(obj, dict):
        raise fail(f"an item must be a JSON object, got {_kind(obj)}")

    item_id = obj.get("id")
    if not isinstance(item_id, str) or not item_id.strip():
        raise fail(f'"id" must be a non-empty string, got {_show(item_id)}')
    if _not_utf8(item_id):
        raise fail(f'"id" holds a lone UTF-16 surrogate (half a character): {known_id!r}; '
                   "write it as valid Unicode")

    raw_type = obj.get("type")
    try:
        ctype = ContentType(raw_type) if isinstance(raw_type, str) else None
    except ValueError:
        ctype = None
    if ctype is None:
        raise fail(f'"type" must be one of {_TYPES}, got {_show(raw_type)}')

    title = obj.get("title")
    if title is not None and not isinstance(title, str):
        raise fail(f'"title" must be a string or null, got {_show(title)}')
    if title is not None and _not_utf8(title):
        raise fail(f'"title" holds a lone UTF-16 surrogate (half a character): '
                   f"{clean_text(title)[:80]!r}; write it as valid Unicode")

    path = obj.get("path")
    if ctype is ContentType.MOVIESET and path is None and title and title.strip():
        path = ""  # placed in the run's --movie-sets-folder by its title
    elif not isinstance(path, str) or not path.strip():
        placed = (
            ' (a movieset may leave it out when it has a "title" and the run has '
            "--movie-sets-folder)"
            if ctype is ContentType.MOVIESET
            else ""
        )
        raise fail(
            f'"path" must be a non-empty string relative to the library root{placed}, '
            f"got {_show(path)}"
        )
    if _not_utf8(path):
        raise fail(f'"path" holds a lone UTF-16 surrogate (half a character): '
                   f"{clean_text(path)[:200]!r}; write it as valid Unicode")
    problem = path_problem(path)
    if problem:
        raise fail(f'"path" {problem}: {path!r}')
    year = obj.get("year")
    if year is not None and not _is_int(year):
        raise fail(f'"year" must be an integer or null, got {_show(year)}')

    season = obj.get("season")
    if season is not None and (not _is_int(season) or season < -1):
        raise fail(
            f'"season" must be an integer ≥ 0 (0 = specials) or -1 (all seasons), '
            f"got {_show(season)}"
        )
    if ctype is ContentType.SEASON and season is None:
        raise fail('a "season" item needs "season": N (0 = specials, -1 = all seasons)')

    art = obj.get("art")
    if art is None:
        art = {}
    if not isinstance(art, dict):
        raise fail(f'"art" must be an object mapping art type to URL, got {_show(art)}')

    slots: list[ArtSlot] = []
    lists: set[ArtType] = set()
    problems: list[SlotProblem] = []
    for key, value in art.items():
        try:
            kind = ArtType(key)
        except ValueError:
            shown = clean_text(str(key))[:80]
            problems.append(SlotProblem(
                shown, 0, _raw_url(value),
                f'unknown art type {shown!r} in "art"; use one of {_ARTS}',
            ))
            continue
        if kind not in ALLOWED_ART[ctype]:
            allowed = ", ".join(a.value for a in ArtType if a in ALLOWED_ART[ctype])
            problems.append(SlotProblem(
                kind.value, 0, _raw_url(value),
                f"{_a(ctype.value)} cannot have {kind.value!r} art; it takes {allowed}",
            ))
            continue
        field = f"art.{kind.value}"
        if kind.is_list:
            _list_art(kind, value, field, slots, lists, problems)
        elif value is None:
            slots.append(ArtSlot(kind, 0, None))
        else:
            try:
                if isinstance(value, list):
                    raise _BadSlot(f"{field} takes one image, got a list; only extrafanart and "
                                   "extrathumb take lists")
                url, thumb = _entry(value, field)
            except _BadSlot as exc:
                problems.append(SlotProblem(kind.value, 0, _raw_url(value), str(exc)))
            else:
                slots.append(ArtSlot(kind, 0, url, thumb))

    return Item(
        id=item_id,
        type=ctype,
        path=path,
        title=title,
        year=year,
        season=season,
        slots=tuple(slots),
        lists=frozenset(lists),
        line=line,
        problems=tuple(problems),
    )


def _list_art(
    kind: ArtType,
    value: Any,
    field: str,
    slots: list[ArtSlot],
    lists: set[ArtType],
    problems: list[SlotProblem],
) -> None:
    """A list art's value: null (remove all), one entry, or a list of entries.

    A bad entry fails that entry (its number keeps its place, so entry 3 is
    still ``fanart3``); a value that is no list at all fails the list as a whole
    (index 0) and leaves its files alone.
    """
    if value is None:
        lists.add(kind)
        return
    if not isinstance(value, list):
        try:
            url, thumb = _entry(value, field)
        except _BadSlot as exc:
            problems.append(SlotProblem(kind.value, 0, _raw_url(value), str(exc)))
            return
        lists.add(kind)
        slots.append(ArtSlot(kind, 1, url, thumb))
        return
    lists.add(kind)
    for position, entry in enumerate(value):
        index = position + 1
        try:
            if entry is None:
                raise _BadSlot(
                    f"{field}[{position}] is null; list entries are URLs (null for the whole "
                    "list removes all its files)"
                )
            url, thumb = _entry(entry, f"{field}[{position}]")
        except _BadSlot as exc:
            problems.append(SlotProblem(kind.value, index, _raw_url(entry), str(exc)))
        else:
            slots.append(ArtSlot(kind, index, url, thumb))


def _raw_url(value: Any) -> str | None:
    """The URL as written, for the failed row (never fetched)."""
    if isinstance(value, dict):
        value = value.get("url")
    return clean_text(value[:_URL_SHOWN]) if isinstance(value, str) else None


def _entry(value: Any, field: str) -> tuple[str, str | None]:
    """A URL string or {"url": ..., "thumb"?: ...}."""
    if isinstance(value, str):
        return _url(value, field), None
    if isinstance(value, dict):
        extra = sorted(set(value) - {"url", "thumb"})
        if extra:
            raise _BadSlot(f'{field} has unknown keys {extra}; it takes "url" and optional "thumb"')
        url = value.get("url")
        if not isinstance(url, str):
            raise _BadSlot(f"{field}.url must be a URL string, got {_show(url)}")
        thumb = value.get("thumb")
        if thumb is not None:
            if not isinstance(thumb, str):
                raise _BadSlot(f"{field}.thumb must be a URL string or null, got {_show(thumb)}")
            thumb = _url(thumb, f"{field}.thumb")
        return _url(url, f"{field}.url"), thumb
    raise _BadSlot(f'{field} must be a URL string, {{"url", "thumb"}} or null, got {_show(value)}')


def _url(url: str, field: str) -> str:
    problem = validate_url(url)
    if problem:
        raise _BadSlot(f"{field} {problem}: {clean_text(url[:200])!r}")
    return url


_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")  # \s: str.isspace's Unicode spaces


def validate_url(url: str) -> str | None:
    """Why ``url`` cannot be fetched (http/https with a host only), or None if it can."""
    if not url:
        return "is empty; give an http(s) URL"
    if _SPACE_OR_CONTROL.search(url):
        return "contains whitespace or control characters; percent-encode them"
    if _not_utf8(url):
        return "holds a lone UTF-16 surrogate (half a character); percent-encode the URL"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        shown = parts.scheme or "none"
        return f"has scheme {shown!r}; only http and https URLs are fetched"
    if not host:
        return "has no host; write it as https://host/path"
    try:
        host.encode("idna").decode("idna")  # "xn--zz-", "a..b": the HTTP client would raise
    except UnicodeError as exc:
        return f"has a host name that cannot be encoded ({exc}); fix the host"
    return None


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), "null" if value is None else type(value).__name__)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        text = repr(clean_text(value))
    elif isinstance(value, dict | list):
        text = _kind(value)  # never serialize a nested value: it may be thousands deep
    else:
        text = clean_text(json.dumps(value, ensure_ascii=False, default=repr))
    return text if len(text) <= 80 else text[:77] + "..."
