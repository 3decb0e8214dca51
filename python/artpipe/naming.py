"""Kodi file names for every content type and art type; refuses paths outside the root.

Every rule below follows Kodi's own reader, cited by file in xbmc/xbmc (the
Kodi source on GitHub): a file Kodi does not read is a file the user never sees.
docs/kodi.md has the same rules as a table.

Invariant 8 (no file is ever written outside the library root) is enforced
here, once, for every target the planner hands to the save step: the manifest
path is checked lexically (absolute, ``..``, NUL) and then the target is
resolved with ``os.path.realpath`` (existing symlinks followed, the library
root itself included) and must lie strictly inside ``realpath(library)``.
Without the resolve step a ``Movies -> /etc`` symlink in the library would let
a harmless-looking manifest path write anywhere.

Returned paths are absolute but not resolved: they keep the library path the
user gave (a symlinked ``~/Media`` stays ``~/Media/...`` in reports and the store).

Art a content type cannot have (an episode's poster, a season's extrathumbs —
see ``ALLOWED_ART``) has no Kodi file name: ``target_path`` raises
``ManifestError`` for it (the manifest validator already fails such slots, so
only hand-built Items reach it; the planner reports it as a failed slot).
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from artpipe.errors import ManifestError, UnsafePathError
from artpipe.models import ArtType, ContentType, ExtrafanartStyle, Item, Layout

__all__ = [
    "ALLOWED_ART",
    "PICTURE_EXTENSIONS",
    "is_disc_file",
    "item_dir",
    "kodi_legal_filename",
    "leftover_copies",
    "list_indexes_on_disk",
    "path_problem",
    "stacked_stem",
    "target_path",
]

_FILE_TYPES = (ContentType.MOVIE, ContentType.EPISODE)
# Windows drive ("C:foo", "C:\\foo"): absolute somewhere, never under the root.
_DRIVE = re.compile(r"^[A-Za-z]:")
_SINGLE_ART = frozenset(a for a in ArtType if not a.is_list)
_DEFAULT_LAYOUT = Layout()

#: Which art each content type can have. Kodi reads every art type it finds
#: next to a movie, set or show at its default artwork level "All"
#: (xbmc/xbmc xbmc/video/VideoInfoScanner.cpp AddLocalItemArtwork: ``addAll``
#: accepts any ``IsValidArtType`` name). A season's files are named
#: ``seasonNN-<art>`` in the show folder, so it has numbered fanart
#: (``seasonNN-fanartN``) but no extrathumbs folder of its own; an episode gets
#: its thumb and its fanart (``<stem>-fanart.jpg``). Anything else is failed as
#: a slot instead of inventing a file Kodi would never read.
ALLOWED_ART: dict[ContentType, frozenset[ArtType]] = {
    ContentType.MOVIE: frozenset(ArtType),
    ContentType.MOVIESET: frozenset(ArtType),
    ContentType.TVSHOW: frozenset(ArtType),
    ContentType.SEASON: _SINGLE_ART | {ArtType.EXTRAFANART},
    ContentType.EPISODE: frozenset({ArtType.THUMB, ArtType.FANART}),
}

#: Image extensions Kodi lists when it looks for local art (xbmc/xbmc
#: xbmc/settings/AdvancedSettings.cpp ``m_pictureExtensions``, archives and
#: feeds left out): a second file with one of these beside a target is a rival
#: copy Kodi may pick instead.
PICTURE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ico", ".tif", ".tiff", ".tga", ".pcx",
     ".webp", ".jp2", ".apng"}
)

# Optical media: xbmc/xbmc xbmc/video/VideoFileItemClassify.cpp (IsDVDFile with
# IFOs only, IsBDFile) as used by CFileItem::IsOpticalMediaFile. Kodi treats
# these like folders: art is read from CFileItem::GetLocalMetadataPath
# (xbmc/FileItem.cpp), the folder above VIDEO_TS/BDMV, under plain names.
_DISC_FILES = frozenset({"video_ts.ifo", "index.bdmv", "movieobject.bdmv", "index.bdm",
                         "movieobj.bdm"})
_VTS_IFO = re.compile(r"vts_.._0\.ifo", re.IGNORECASE)  # 12 characters, as Kodi checks
_DISC_FOLDERS = frozenset({"video_ts", "bdmv"})

# Kodi's default video stacking expressions (xbmc/xbmc
# xbmc/settings/AdvancedSettings.cpp ``m_videoStackRegExps``). Kodi stacks
# files only when two or more in one folder share title, ignored part and
# extension but differ in volume (xbmc/FileItemList.cpp StackFiles), and the
# stack's art is named after title + ignored part (xbmc/filesystem/
# StackDirectory.cpp GetStackedTitlePath). A lone "… Part 1 (2010).mkv" is not
# stacked, so its art keeps the full name. The third default, a bare " a".." d"
# volume, is left out: it matches almost any name.
_STACK_PATTERNS = (
    re.compile(r"(.*?)([ _.-]*(?:cd|dvd|p(?:(?:ar)?t)|dis[ck])[ _.-]*[0-9]+)(.*?)(\.[^.]+)$",
               re.IGNORECASE),
    re.compile(r"(.*?)([ _.-]*(?:cd|dvd|p(?:(?:ar)?t)|dis[ck])[ _.-]*[a-d])(.*?)(\.[^.]+)$",
               re.IGNORECASE),
)

# A folder named like a season folder ("Season 1", "S01", "Specials"): season
# art there is never read, because Kodi looks for it only in the show folder
# (xbmc/xbmc xbmc/video/VideoInfoScanner.cpp GetSeasonThumbs: show.m_strPath).
_SEASON_FOLDER = re.compile(r"(?:season|series|s)[ ._-]*[0-9]{1,4}|specials?", re.IGNORECASE)

# CUtil::MakeLegalFileName(title, LEGAL_WIN32_COMPAT) in xbmc/xbmc xbmc/Util.cpp:
# these become "_", then trailing dots and spaces are trimmed.
_ILLEGAL_IN_NAME = re.compile(r'[/\\?:*"<>|]')


def is_disc_file(name: str) -> bool:
    """True for a DVD/Blu-ray folder's entry file (VIDEO_TS.IFO, index.bdmv…)."""
    lower = name.lower()
    return lower in _DISC_FILES or bool(_VTS_IFO.fullmatch(lower))


def stacked_stem(name: str, siblings: Iterable[str]) -> str | None:
    """The stacked title's stem of a multi-part file, or None if it is not stacked.

    ``Solaris (1972)-cd1.avi`` beside ``Solaris (1972)-cd2.avi`` →
    ``Solaris (1972)``; ``Heat part1 1080p.mkv`` beside ``Heat part2 1080p.mkv``
    → ``Heat 1080p`` (Kodi keeps what follows the volume). ``siblings`` are the
    other file names in the folder; without another part there is no stack. A
    name whose title part would be empty (``cd1.avi``) is not treated as one.
    """
    for pattern in _STACK_PATTERNS:
        match = pattern.match(name)
        if match is None:
            continue
        title, volume, ignore, ext = (g.casefold() for g in match.groups())
        for other in siblings:
            them = pattern.match(other) if other != name else None
            if them is None:
                continue
            t2, v2, i2, e2 = (g.casefold() for g in them.groups())
            if (t2, i2, e2) == (title, ignore, ext) and v2 != volume:
                stem = match.group(1) + match.group(3)
                return stem if stem.strip() else None
        return None
    return None


def kodi_legal_filename(title: str) -> str:
    """``title`` made a legal folder name the way Kodi does it for movie sets."""
    return _ILLEGAL_IN_NAME.sub("_", title).rstrip(". ")


@dataclass(frozen=True, slots=True)
class _Base:
    """Where an item's art goes: a folder (relative) and the name prefix in it."""

    folder: PurePosixPath
    prefix: str  # "" for plain names ("poster.jpg"), else "<stem>-" or "season01-"


def item_dir(library: Path, item: Item, layout: Layout | None = None) -> Path:
    """Absolute folder that holds the item's art (the video's folder, or the item folder)."""
    base = _base(library, item, layout or _DEFAULT_LAYOUT)
    return _checked(library, base.folder, f"{item.label}: folder", folder=True)


def target_path(
    library: Path, item: Item, art: ArtType, index: int = 0, *, layout: Layout | None = None
) -> Path:
    """Absolute path of the Kodi file for ``art`` (entry ``index`` of a list art).

    Raises ``UnsafePathError`` when the path would leave the library root and
    ``ManifestError`` for art the item's type cannot have, a season item that
    points at a season folder, or a movie set with no place to go. ``index`` is
    0 for single art and 1..N for extrafanart/extrathumb entries.
    """
    folder, prefix, suffix = _name_parts(library, item, art, layout or _DEFAULT_LAYOUT)
    if art.is_list:
        if index < 1:
            raise ValueError(f"{art.value} entries are numbered from 1, got index {index}")
        name = f"{prefix}{index}{suffix}"
    else:
        if index != 0:
            raise ValueError(f"{art.value} is single art; its index is 0, got {index}")
        name = f"{prefix}{suffix}"
    return _checked(library, folder / name, f"{item.label}: {art.value} target")


def list_indexes_on_disk(
    library: Path, item: Item, art: ArtType, *, layout: Layout | None = None
) -> list[int]:
    """The N of the numbered files of list art ``art`` that exist now, sorted.

    Only canonical numbers count (``fanart3.jpg``, not ``fanart03.jpg``), so a
    file artpipe did not name is never taken for one of its entries; nor does a
    number no list could reach (``fanart99999999999999999999.jpg``), which
    would not fit the store's integer column.
    """
    if not art.is_list:
        raise ValueError(f"{art.value} is not a list art (extrafanart, extrathumb)")
    folder_rel, prefix, suffix = _name_parts(library, item, art, layout or _DEFAULT_LAYOUT)
    folder = _checked(library, folder_rel, f"{item.label}: {art.value} folder", folder=True)
    pattern = re.compile(re.escape(prefix) + r"([1-9][0-9]{0,8})" + re.escape(suffix))
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


def leftover_copies(target: Path) -> list[Path]:
    """Other image files in ``target``'s folder that Kodi would read as the same art.

    Kodi matches local art by name without extension, case-insensitively
    (xbmc/xbmc xbmc/video/VideoInfoScanner.cpp AddLocalItemArtwork:
    RemoveExtension, then ToLower), so ``X-poster.png`` and ``X-Poster.JPG``
    beside ``X-poster.jpg`` are rivals, and which one wins depends on directory
    order. Returns them sorted; an unreadable folder has none.
    """
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    return [target.parent / name for name in rival_names(target.name, names)]


def rival_names(name: str, names: Iterable[str]) -> list[str]:
    """``leftover_copies`` of the file ``name`` among a folder's ``names`` (one listing
    serves every file of the folder), sorted."""
    stem = os.path.splitext(name)[0].lower()
    out = []
    for other in names:
        if other == name:
            continue
        base, ext = os.path.splitext(other)
        if base.lower() == stem and ext.lower() in PICTURE_EXTENSIONS:
            out.append(other)
    return sorted(out)


def _name_parts(
    library: Path, item: Item, art: ArtType, layout: Layout
) -> tuple[PurePosixPath, str, str]:
    """(folder, file name before the number, after it) for ``art`` of ``item``."""
    if art not in ALLOWED_ART[item.type]:
        allowed = ", ".join(a.value for a in ArtType if a in ALLOWED_ART[item.type])
        raise ManifestError(
            f"{item.label}: {_a(item.type.value)} cannot have {art.value!r} art; "
            f"it takes {allowed}",
            line=item.line or None,
        )
    base = _base(library, item, layout)
    if art is ArtType.EXTRATHUMB:
        # Kodi itself reads no extrathumbs; skins do, from the folder every
        # media manager writes (tinyMediaManager, MediaElch, Ember):
        # <item folder>/extrathumbs/thumbN.jpg, whatever the video is called.
        return base.folder / "extrathumbs", "thumb", art.extension
    if art is ArtType.EXTRAFANART:
        if layout.extrafanart is ExtrafanartStyle.FOLDER and item.type is not ContentType.SEASON:
            return base.folder / "extrafanart", "fanart", art.extension
        # <prefix>fanartN: Kodi's "fanart" family (xbmc/xbmc
        # xbmc/video/VideoThumbLoader.cpp IsArtTypeInWhitelist matches fanart1,
        # fanart2…), read beside the item by AddLocalItemArtwork.
        return base.folder, f"{base.prefix}fanart", art.extension
    return base.folder, f"{base.prefix}{art.value}", art.extension


def _base(library: Path, item: Item, layout: Layout) -> _Base:
    if item.type in _FILE_TYPES:
        return _file_base(library, item)
    if item.type is ContentType.SEASON:
        return _season_base(item)
    if item.type is ContentType.MOVIESET and not item.path:
        return _Base(_movie_set_folder(item, layout), "")
    # A set or show folder: plain <art>.<ext> (AddLocalItemArtwork with a folder
    # path has an empty base name, so every candidate is "<art>").
    return _Base(_relative(item), "")


def _file_base(library: Path, item: Item) -> _Base:
    """A movie or episode: xbmc/xbmc xbmc/utils/ArtUtils.cpp GetLocalArtBaseFilename."""
    rel = _relative(item)
    if not rel.name or rel.name in (".", ".."):
        raise UnsafePathError(
            f"{item.label}: a {item.type.value}'s path must name its video file, "
            f"got {item.path!r}",
            path=item.path,
        )
    folder = rel.parent
    if is_disc_file(rel.name):
        # IsOpticalMediaFile: the folder above VIDEO_TS/BDMV, plain art names.
        if folder.name.lower() in _DISC_FOLDERS:
            folder = folder.parent
        return _Base(folder, "")
    # IsStack: the stacked title replaces the part's name.
    stem = None
    if any(pattern.match(rel.name) for pattern in _STACK_PATTERNS):
        stem = stacked_stem(rel.name, _names_in(library, folder))
    if stem is None:
        stem = rel.stem
    if not stem:
        raise UnsafePathError(
            f"{item.label}: a {item.type.value}'s path must name its video file, "
            f"got {item.path!r}",
            path=item.path,
        )
    return _Base(folder, f"{stem}-")


def _names_in(library: Path, folder: PurePosixPath) -> list[str]:
    """File names in a library folder (none if it is missing or unreadable)."""
    try:
        return os.listdir(_checked(library, folder, "video folder", folder=True))
    except (OSError, UnsafePathError):
        return []  # an escaping folder is refused when its target is checked


def _season_base(item: Item) -> _Base:
    """season01-, season-specials-, season-all- in the show folder (GetSeasonThumbs)."""
    if item.season is None or item.season < -1:
        raise ManifestError(
            f"{item.label}: a season item needs season ≥ 0 (0 = specials) or -1 (all), "
            f"got {item.season!r}",
            line=item.line or None,
        )
    rel = _relative(item)
    if _SEASON_FOLDER.fullmatch(rel.name):
        show = str(rel.parent)
        raise ManifestError(
            f"{item.label}: a season item's path must be the show folder, not the season "
            f"folder {item.path!r}; Kodi reads season art only from the show folder — "
            f"set its path to {show!r}",
            line=item.line or None,
        )
    label = {0: "season-specials", -1: "season-all"}.get(item.season, f"season{item.season:02d}")
    return _Base(rel, f"{label}-")


def _movie_set_folder(item: Item, layout: Layout) -> PurePosixPath:
    """<movie sets folder>/<Kodi-legal title>/ (VideoInfoScanner.cpp GetMovieSetInfoFolder)."""
    if not layout.movie_sets_folder:
        raise ManifestError(
            f"{item.label}: a movie set without a path needs the movie sets folder; "
            "pass --movie-sets-folder (Kodi's 'Movie set information folder', relative to "
            "the library) or give the set a path",
            line=item.line or None,
        )
    title = kodi_legal_filename(item.title or "")
    if not title or "\x00" in title:
        raise ManifestError(
            f"{item.label}: a movie set placed by --movie-sets-folder needs a title that "
            f"makes a folder name, got {item.title!r}; give it a title or a path",
            line=item.line or None,
        )
    problem = path_problem(layout.movie_sets_folder)
    if problem:
        raise UnsafePathError(
            f"movie sets folder {problem}: {layout.movie_sets_folder!r}; "
            "give a folder inside the library",
            path=layout.movie_sets_folder,
        )
    return PurePosixPath(layout.movie_sets_folder) / title


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
    real_root = _real_root(root)
    target = os.path.join(root, *rel.parts)
    real_target = _real_below(real_root, rel.parts)
    inside = real_target.startswith(real_root.rstrip(os.sep) + os.sep)
    if not inside and not (folder and real_target == real_root):
        raise UnsafePathError(
            f"{what} {target} resolves to {real_target}, outside the library {real_root}; "
            "remove the symlink or fix the item's path",
            path=target,
        )
    return Path(target)


_REAL_ROOT_S = 2.0  # how long a resolved library root is reused (planning asks per slot)
_real_roots: dict[str, tuple[str, float]] = {}


def _real_root(root: str) -> str:
    """``realpath(root)``, reused for a moment: every slot of every item asks for it."""
    now = time.monotonic()
    known = _real_roots.get(root)
    if known is not None and now - known[1] < _REAL_ROOT_S:
        return known[0]
    real = os.path.realpath(root)
    if len(_real_roots) > 64:
        _real_roots.clear()
    _real_roots[root] = (real, now)
    return real


def _real_below(real_root: str, parts: tuple[str, ...]) -> str:
    """``realpath(real_root/parts...)``, walking only the parts below the resolved root.

    The same answer as ``os.path.realpath`` for plain names: one lstat per part until a
    part is missing (nothing below it can be a link), the full ``realpath`` from the
    first link on, or for any part that is not a plain name.
    """
    if any(part in ("", ".", "..") or os.sep in part for part in parts):
        return os.path.realpath(os.path.join(real_root, *parts))
    path = real_root
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return os.path.join(path, *parts[i + 1:])
        except OSError:
            return os.path.realpath(os.path.join(path, *parts[i + 1:]))
        if stat.S_ISLNK(mode):
            return os.path.realpath(os.path.join(path, *parts[i + 1:]))
    return path
