"""What a run is asked to do: ``RunOptions``, its defaults, and the rules derived from it.

The CLI reads its ``--concurrency``, ``--per-host``, ``--shard-size`` … defaults
from here, and the local and the cluster run both ask ``RunOptions`` for the
cache folder, the item-worker count and the fetch limits, so each rule is
written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, TypedDict

from artpipe.cache import DEFAULT_MAX_BYTES
from artpipe.errors import ArtpipeError
from artpipe.fetch import DEFAULT_LIMITS, FetchLimits
from artpipe.models import ExtrafanartStyle, Layout
from artpipe.naming import path_problem
from artpipe.redact import DEFAULT_SECRET_PARAMS

DEFAULT_CONCURRENCY: Final = DEFAULT_LIMITS.concurrency
DEFAULT_PER_HOST: Final = DEFAULT_LIMITS.per_host
DEFAULT_EXECUTOR: Final = "thread"
# Memory bounds (docs in pipeline/budget.py): 1 GiB of bodies is 20 bodies at the 50 MiB
# cap, or thousands of real posters; 1 GiB of decoded pixels is one 16-bit RGBA PNG of
# 134 MP, or a hundred 4K JPEGs.
DEFAULT_BODY_BUDGET = 1024 * 1024 * 1024
DEFAULT_PIXEL_BUDGET = 1024 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ItemSettings:
    """How items are saved and planned: the run options every item runner shares."""

    originals: bool = False
    refresh: bool = False
    quality: int = 90
    layout: Layout = field(default_factory=Layout)  # extrafanart style, movie sets folder
    keep_changed: bool = False  # keep files changed outside artpipe (docs/changed-files.md)
    body_budget: int = DEFAULT_BODY_BUDGET  # bytes of downloaded bodies held until saved
    pixel_budget: int = DEFAULT_PIXEL_BUDGET  # decoded pixel bytes of the renders in flight


DEFAULT_QUALITY: Final = ItemSettings().quality
DEFAULT_BATCH_SIZE: Final = 64
DEFAULT_CACHE_BYTES: Final = DEFAULT_MAX_BYTES
DEFAULT_SHARD_SIZE: Final = 2000
DEFAULT_SHARD_RETRIES: Final = 3
DEFAULT_THROTTLE_DEADLINE: Final = DEFAULT_LIMITS.throttle_deadline


@dataclass(frozen=True)
class RunOptions:
    """Every option of ``artpipe.pipeline.run`` (the CLI's flags, by the same names)."""

    library: Path
    cache_dir: Path | None = None
    db: Path | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    per_host: int = DEFAULT_PER_HOST
    executor: str | Executor = DEFAULT_EXECUTOR
    workers: int | None = None
    originals: bool = False
    refresh: bool = False
    keep_changed: bool = False
    quality: int = DEFAULT_QUALITY
    report: Path | None = None
    metrics: Path | None = None
    trace: Path | None = None
    limits: FetchLimits | None = None
    item_workers: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    cache_bytes: int = DEFAULT_CACHE_BYTES
    resolve: Mapping[str, tuple[str, int]] | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    shard_retries: int = DEFAULT_SHARD_RETRIES
    extrafanart: str = ExtrafanartStyle.KODI.value
    movie_sets_folder: str | None = None
    rates: tuple[tuple[str, float], ...] = ()  # (host, req/s), on top of limits.rates
    rate_default: float | None = None  # req/s for every other host (None: limits')
    throttle_deadline: float | None = None  # seconds (None: limits', 10 minutes by default)
    # query parameters whose values are redacted wherever a URL is written (artpipe.redact)
    secret_params: frozenset[str] = DEFAULT_SECRET_PARAMS
    # bytes of downloaded bodies held until saved / decoded pixel bytes rendering at once
    body_budget: int = DEFAULT_BODY_BUDGET
    pixel_budget: int = DEFAULT_PIXEL_BUDGET

    def __post_init__(self) -> None:
        self.layout()  # a bad naming option stops the run before anything is created

    def fetch_limits(self) -> FetchLimits:
        """``limits`` (or the defaults) with this run's concurrency, per-host limit and rates."""
        base = self.limits or DEFAULT_LIMITS
        return replace(
            base, concurrency=self.concurrency, per_host=self.per_host,
            rates=tuple(self.rates) + base.rates,  # the run's own rates match first
            rate_default=self.rate_default if self.rate_default is not None
            else base.rate_default,
            throttle_deadline=self.throttle_deadline or base.throttle_deadline,
        )

    def item_settings(self) -> ItemSettings:
        """What every item runner of this run shares."""
        return ItemSettings(originals=self.originals, refresh=self.refresh,
                            quality=self.quality, layout=self.layout(),
                            keep_changed=self.keep_changed, body_budget=self.body_budget,
                            pixel_budget=self.pixel_budget)

    def layout(self) -> Layout:
        """The naming choices (docs/kodi.md); a bad one stops the run before it starts."""
        try:
            style = ExtrafanartStyle(self.extrafanart)
        except ValueError:
            choices = ", ".join(s.value for s in ExtrafanartStyle)
            raise ArtpipeError(
                f"unknown extrafanart style {self.extrafanart!r}; use one of {choices}"
            ) from None
        folder = self.movie_sets_folder
        if folder is not None:
            problem = path_problem(folder) or (None if folder.strip() else "is empty")
            if problem:
                raise ArtpipeError(
                    f"movie sets folder {problem}: {folder!r}; give a folder inside the "
                    "library, relative to it (e.g. 'Movie Sets')"
                )
        return Layout(extrafanart=style, movie_sets_folder=folder)

    def cache_root(self, library: Path) -> Path:
        """Where originals are cached: ``cache_dir``, else ``<library>/.artpipe/cache``."""
        return self.cache_dir if self.cache_dir is not None else library / ".artpipe" / "cache"

    def item_workers_for(self, limits: FetchLimits) -> int:
        """Items in progress at once for a fetcher with ``limits`` (on a cluster, a shard's).

        As many as the download limit (at least 4): an item spends most of its time
        waiting (its folder's stat calls, the network, the render and the commit), so
        fewer items than downloads leave the fetcher idle, as a quarter did (8 items of
        2 slots kept 16 of 32 downloads busy). Memory is bounded by the byte budgets,
        not by this count.
        """
        return self.item_workers or max(4, limits.concurrency)


class RunOptionsArgs(TypedDict, total=False):
    """``RunOptions``' fields as keyword arguments of ``artpipe.run`` (all optional)."""

    cache_dir: Path | None
    db: Path | None
    concurrency: int
    per_host: int
    executor: str | Executor
    workers: int | None
    originals: bool
    refresh: bool
    keep_changed: bool
    quality: int
    report: Path | None
    metrics: Path | None
    trace: Path | None
    limits: FetchLimits | None
    item_workers: int | None
    batch_size: int
    cache_bytes: int
    resolve: Mapping[str, tuple[str, int]] | None
    shard_size: int
    shard_retries: int
    extrafanart: str
    movie_sets_folder: str | None
    rates: tuple[tuple[str, float], ...]
    rate_default: float | None
    throttle_deadline: float | None
    secret_params: frozenset[str]
    body_budget: int
    pixel_budget: int
