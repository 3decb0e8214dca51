"""Kodi file names for every content type and art type; refuses paths outside the root.

Invariant 8 (no file is ever written outside the library root) is enforced
here, once, for every target the planner hands to the save step: the manifest
path is checked lexically (absolute, ``..``, NUL) and then the target is
resolved with ``os.path.realpath`` (existing symlinks followed, the library
root itself included) and must lie strictly inside ``realpath(library)``.
Without the resolve step a ``Movies -> /etc`` symlink in the library would let
a harmless-looking manifest path write anywhere.

Returned paths are absolute but not resolved: they keep the library path the
user gave (a symlinked ``~/Media`` stays ``~/Media/...`` in reports and the store).

Art a content type cannot have (an episode's poster, a season's extrafanart —
see ``ALLOWED_ART``) has no Kodi file name: ``target_path`` raises
``ManifestError`` for it (the manifest validator already rejects such lines, so
only hand-built Items reach it; the planner reports it as a failed slot).
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from artpipe.errors import ManifestError, UnsafePathError
from artpipe.models import ArtType, ContentType, Item

__all__ = [
    "ALLOWED_ART",
    "item_dir",
    "list_indexes_on_disk",
    "path_problem",
    "target_path",
]

_FILE_TYPES = (ContentType.MOVIE, ContentType.EPISODE)
# Windows drive ("C:foo", "C:\\foo"): absolute somewhere, never under the root.
_DRIVE = re.compile(r"^[A-Za-z]:")
_SINGLE_ART = frozenset(a for a in ArtType if not a.is_list)

#: Which art each content type can have. Kodi has no file name for a season's
#: extrafanart/extrathumb, and an episode's only art is its ``thumb``; a manifest
#: line asking for anything else is rejected (like an unknown art key) instead of
#: inventing a file Kodi would never read.
ALLOWED_ART: dict[ContentType, frozenset[ArtType]] = {
    ContentType.MOVIE: frozenset(ArtType),
    ContentType.MOVIESET: frozenset(ArtType),
    ContentType.TVSHOW: frozenset(ArtType),
    ContentType.SEASON: _SINGLE_ART,
    ContentType.EPISODE: frozenset({ArtType.THUMB}),
}


def item_dir(library: Path, item: Item) -> Path:
    """Absolute folder that holds the item's art (the video's folder, or the item folder)."""
    rel = _relative(item)
    folder = rel.parent if item.type in _FILE_TYPES else rel
    return _checked(library, folder, f"{item.label}: folder", folder=True)


def target_path(library: Path, item: Item, art: ArtType, index: int = 0) -> Path:
    """Absolute path of the Kodi file for ``art`` (entry ``index`` of a list art).

    Raises ``UnsafePathError`` when the path would leave the library root and
    ``ManifestError`` for art the item's type cannot have. ``index`` is 0 for
    single art and 1..N for extrafanart/extrathumb entries.
    """
    prefix, suffix = _name_parts(item, art)
    if art.is_list:
        if index < 1:
            raise ValueError(f"{art.value} entries are numbered from 1, got index {index}")
        name = f"{prefix}{index}{suffix}"
    else:
        if index != 0:
            raise ValueError(f"{art.value} is single art; its index is 0, got {index}")
        name = f"{prefix}{suffix}"
    rel = _relative(item)
    folder = rel.parent if item.type in _FILE_TYPES else rel
    return _checked(library, folder / name, f"{item.label}: {art.value} target")


def list_indexes_on_disk(library: Path, item: Item, art: ArtType) -> list[int]:
    """The N of the numbered files of list art ``art`` that exist now, sorted.

    Only canonical numbers count (``fanart3.jpg``, not ``fanart03.jpg``), so a
    file artpipe did not name is never taken for one of its entries.
    """
    if not art.is_list:
        raise ValueError(f"{art.value} is not a list art (extrafanart, extrathumb)")
    prefix, suffix = _name_parts(item, art)
    folder = item_dir(library, item)
    pattern = re.compile(re.escape(prefix) + r"([1-9][0-9]*)" + re.escape(suffix))
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        match = pattern.fullmatch(name)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def _name_parts(item: Item, art: ArtType) -> tuple[str, str]:
    """(file name before the number, after it) for ``art`` of ``item``."""
    if art not in ALLOWED_ART[item.type]:
        allowed = ", ".join(a.value for a in ArtType if a in ALLOWED_ART[item.type])
        raise ManifestError(
            f"{item.label}: {_a(item.type.value)} cannot have {art.value!r} art; "
            f"it takes {allowed}",
            line=item.line or None,
        )
    # extrafanart N -> fanartN, extrathumb N -> thumbN (Kodi's names)
    base = {ArtType.EXTRAFANART: "fanart", ArtType.EXTRATHUMB: "thumb"}.get(art, art.value)
    if item.type in _FILE_TYPES:
        stem = _relative(item).stem
        if not stem:
            raise UnsafePathError(
                f"{item.label}: a {item.type.value}'s path must name its video file, "
                f"got {item.path!r}",
                path=item.path,
            )
        return f"{stem}-{base}", art.extension
    if item.type is ContentType.SEASON:
        if item.season is None or item.season < -1:
            raise ManifestError(
                f"{item.label}: a season item needs season ≥ 0 (0 = specials) or -1 (all), "
                f"got {item.season!r}",
                line=item.line or None,
            )
        label = {0: "specials", -1: "all"}.get(item.season, f"{item.season:02d}")
        sep = "-" if item.season in (0, -1) else ""
        return f"season{sep}{label}-{base}", art.extension
    return base, art.extension


def path_problem(path: str) -> str | None:
    """Why a manifest ``path`` can never lie under the library root, or None.

    Lexical checks only (naming.py also resolves symlinks against the real root).
    Both separators count, so a Windows-written ``..\\`` is caught too.
    """
    if "\x00" in path:
        return "contains a NUL byte"
    if path.startswith(("/", "\\")) or _DRIVE.match(path):
        return "must be relative to the library root, not absolute"
    if any(part == ".." for part in re.split(r"[/\\]", path)):
        return "must not contain '..' segments (it would leave the library root)"
    return None


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _relative(item: Item) -> PurePosixPath:
    problem = path_problem(item.path)
    if problem:
        raise UnsafePathError(
            f"{item.label}: path {problem}: {item.path!r}; fix the item's path",
            path=item.path,
        )
    return PurePosixPath(item.path)


def _checked(library: Path, rel: PurePosixPath, what: str, *, folder: bool = False) -> Path:
    """``library / rel`` as an absolute path, refusing anything that resolves outside.

    A file must resolve strictly inside the root; a folder may be the root itself
    (a movie file at the top of the library, a tvshow whose path is ".").
    """
    root = os.path.abspath(os.fspath(library))
    real_root = os.path.realpath(root)
    target = os.path.join(root, *rel.parts)
    real_target = os.path.realpath(target)
    inside = real_target.startswith(real_root.rstrip(os.sep) + os.sep)
    if not inside and not (folder and real_target == real_root):
        raise UnsafePathError(
            f"{what} {target} resolves to {real_target}, outside the library {real_root}; "
            "remove the symlink or fix the item's path",
            path=target,
        )
    return Path(target)
