"""Plain frozen dataclasses and enums shared by every stage.

They carry no behaviour beyond small derived facts (an art type's output
format and default size), so they pickle across thread, process and Dask
executors unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ContentType(StrEnum):
    MOVIE = "movie"
    MOVIESET = "movieset"
    TVSHOW = "tvshow"
    SEASON = "season"
    EPISODE = "episode"


class ArtType(StrEnum):
    POSTER = "poster"
    FANART = "fanart"
    BANNER = "banner"
    CLEARART = "clearart"
    CLEARLOGO = "clearlogo"
    DISCART = "discart"
    LANDSCAPE = "landscape"
    KEYART = "keyart"
    CHARACTERART = "characterart"
    THUMB = "thumb"
    EXTRAFANART = "extrafanart"
    EXTRATHUMB = "extrathumb"

    @property
    def is_list(self) -> bool:
        """extrafanart/extrathumb take a list of URLs saved as numbered files."""
        return self in (ArtType.EXTRAFANART, ArtType.EXTRATHUMB)

    @property
    def output_format(self) -> str:
        """'png' for art that needs alpha (Kodi overlays it), 'jpeg' for photo art."""
        return "png" if self in _ALPHA_ART else "jpeg"

    @property
    def extension(self) -> str:
        return ".png" if self in _ALPHA_ART else ".jpg"

    @property
    def default_max_size(self) -> tuple[int, int]:
        """(width, height) box the saved image must fit in, unless --originals."""
        return DEFAULT_MAX_SIZE[self]


_ALPHA_ART = frozenset(
    {ArtType.CLEARART, ArtType.CLEARLOGO, ArtType.DISCART, ArtType.CHARACTERART}
)

DEFAULT_MAX_SIZE: dict[ArtType, tuple[int, int]] = {
    ArtType.POSTER: (1000, 1500),
    ArtType.FANART: (1920, 1080),
    ArtType.LANDSCAPE: (1920, 1080),
    ArtType.KEYART: (1920, 1080),
    ArtType.THUMB: (1920, 1080),
    ArtType.EXTRAFANART: (1920, 1080),
    ArtType.EXTRATHUMB: (1920, 1080),
    ArtType.BANNER: (1000, 185),
    ArtType.CLEARLOGO: (800, 310),
    ArtType.CLEARART: (1000, 562),
    ArtType.DISCART: (1000, 1000),
    ArtType.CHARACTERART: (512, 512),
}


class ExtrafanartStyle(StrEnum):
    """Where numbered extrafanart goes (``--extrafanart-style``).

    ``kodi``: ``<stem>-fanartN.jpg`` beside the video (``fanartN.jpg`` in a show
    or set folder), the names Kodi itself reads as art ``fanart1``, ``fanart2``…
    (xbmc/xbmc ``xbmc/video/VideoThumbLoader.cpp`` IsArtTypeInWhitelist: the
    ``fanart`` family matches ``fanart1``). ``folder``: ``extrafanart/fanartN.jpg``,
    the older media-manager layout many skins read.
    """

    KODI = "kodi"
    FOLDER = "folder"


@dataclass(frozen=True, slots=True)
class Layout:
    """Run-wide naming choices; the same for every item of a run.

    ``movie_sets_folder`` is Kodi's "movie set information folder", relative to
    the library root: set items without a ``path`` get
    ``<movie_sets_folder>/<Kodi-legal title>/``.
    """

    extrafanart: ExtrafanartStyle = ExtrafanartStyle.KODI
    movie_sets_folder: str | None = None


class SlotStatus(StrEnum):
    """Outcome of one art slot in a run (report rows, store rows)."""

    SAVED = "saved"
    UNCHANGED = "unchanged"
    REMOVED = "removed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class ArtSlot:
    """One art file of an item.

    ``index`` is 0 for single art and 1..N for the entries of a list art
    (extrafanart/extrathumb). ``url`` None means "remove this art's file"
    (a manifest ``null`` or a list entry past the new end). ``thumb`` is a
    preview URL: informative only, never a substitute for ``url``.
    """

    art: ArtType
    index: int = 0
    url: str | None = None
    thumb: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.art.value, self.index)


@dataclass(frozen=True, slots=True)
class SlotProblem:
    """An art slot the manifest asked for but that cannot be planned at all.

    A bad URL or an art type the content type cannot have fails only that slot:
    the item keeps its other art, and the report gets a ``failed`` row with
    ``error``. ``art`` is the manifest's key as written (it may be no ArtType);
    ``url`` is the value as written when it was a string, never fetched.
    """

    art: str
    index: int
    url: str | None
    error: str


@dataclass(frozen=True, slots=True)
class Item:
    """One manifest line: a movie, set, show, season or episode and its art.

    ``slots`` holds only what the manifest mentions: an absent art key leaves
    that art alone. ``lists`` names the list arts the manifest gave (even an
    empty list), so the planner knows which numbered files past the end to remove.
    ``problems`` are the slots that failed validation (reported, never planned).
    ``path`` is "" only for a movie set placed by ``Layout.movie_sets_folder``.
    """

    id: str
    type: ContentType
    path: str
    title: str | None = None
    year: int | None = None
    season: int | None = None
    slots: tuple[ArtSlot, ...] = ()
    lists: frozenset[ArtType] = field(default_factory=frozenset)
    line: int = 0
    problems: tuple[SlotProblem, ...] = ()

    @property
    def label(self) -> str:
        """Human name for messages: 'Alien (1979)' or the id."""
        if self.title and self.year:
            return f"{self.title} ({self.year})"
        return self.title or self.id


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header says, without decoding pixels."""

    format: str
    width: int
    height: int
    orientation: int = 1


@dataclass(frozen=True, slots=True)
class SavedImage:
    """A file written atomically by ``write_image``.

    ``passthrough`` is True when the original bytes were written unchanged
    (right format, within limits); ``sha256`` is of the bytes on disk.
    """

    path: str
    format: str
    width: int
    height: int
    bytes: int
    sha256: str
    passthrough: bool = False
