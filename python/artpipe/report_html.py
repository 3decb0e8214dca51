"""The run report: one HTML page to look at what a run saved, what failed and why.

Built from what a run leaves behind — the report rows (``report.jsonl``), the
metrics, the Chrome trace, the SQLite store — plus ``run.json``, the few facts
no other file keeps (command line, wall time, exit code, per-host retries and
throttling). ``artpipe run`` writes it at the end; ``artpipe report LIBRARY``
rebuilds it at any time from the same files.

The page must open offline from a ``file://`` URL and stay fast for a run of
100,000 slots, so:

* everything is inline (CSS, script, an SVG timeline): no CDN, no fonts, and a
  Content-Security-Policy that forbids the page to fetch anything but its own
  thumbnails, so a hostile title or URL from a manifest can do nothing;
* the slots travel as one compact JSON blob that the inline script renders one
  page of cards at a time — the browser never lays out 100,000 images;
* thumbnails are small JPEGs made by the Rust core from the saved library
  files, kept under ``.artpipe/report/thumbs/`` and referenced relatively;
  they are named by the content hash of the file they show, so a rerun that
  changed nothing renders nothing.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from artpipe.errors import ArtpipeError
from artpipe.image import render
from artpipe.models import SlotStatus
from artpipe.redact import redact_text
from artpipe.report_assets import PAGE_CSS, PAGE_SCRIPT

RUN_FACTS_VERSION = 1
# Thumbnails fit this box: about 2 KB each at this quality (posters, fanart, logos
# alike), sharp enough to tell two posters apart on a contact sheet.
THUMB_BOX = (160, 160)
THUMB_QUALITY = 70
# Bins of the in-flight timeline: enough to see bursts, few enough for a small SVG.
TIMELINE_BINS = 300
TIMELINE_WIDTH, TIMELINE_HEIGHT = 900, 160

_STATUSES = tuple(s.value for s in SlotStatus)


def state_dir(library: str | os.PathLike[str]) -> Path:
    """The library's ``.artpipe`` folder, where a run keeps its own files."""
    return Path(library) / ".artpipe"


def report_dir(library: str | os.PathLike[str]) -> Path:
    """Where the page's thumbnails and the run facts live."""
    return state_dir(library) / "report"


def default_html_path(library: str | os.PathLike[str]) -> Path:
    return state_dir(library) / "report.html"


def default_run_files(library: str | os.PathLike[str]) -> dict[str, Path]:
    """Report rows, metrics and trace beside the page: what the page is built from."""
    state = state_dir(library)
    return {"report": state / "report.jsonl", "metrics": state / "metrics.json",
            "trace": state / "trace.json"}


@dataclass
class RunFacts:
    """What only the finished run knows; saved as ``.artpipe/report/run.json``."""

    command: str
    started_at: float  # seconds since the epoch
    wall_s: float
    exit_code: int
    slots: dict[str, int]
    bad_lines: int
    bytes_written: int
    counters: dict[str, int]
    host_timers: dict[str, dict[str, float]]
    hosts: dict[str, dict[str, Any]]
    library: str
    db: str
    report: str | None = None
    metrics: str | None = None
    trace: str | None = None
    version: int = RUN_FACTS_VERSION

    @classmethod
    def from_run(cls, run: Any, command: str) -> RunFacts:
        """Facts from a ``pipeline.RunReport`` just returned."""
        wall = max(0.0, time.monotonic() - run.stats.started)
        timers = run.metrics.timers()
        host_timers = {
            name: {"p50_ms": float(timers[f"host.{name}.fetch"]["p50_ms"]),
                   "p95_ms": float(timers[f"host.{name}.fetch"]["p95_ms"])}
            for name in run.hosts if f"host.{name}.fetch" in timers
        }
        return cls(
            command=redact_text(command), started_at=time.time() - wall, wall_s=wall,
            exit_code=run.exit_code, slots=run.summary(), bad_lines=run.stats.bad_lines,
            bytes_written=run.stats.bytes_written, counters=run.metrics.counters(),
            host_timers=host_timers,
            hosts={name: dict(h) for name, h in run.hosts.items()},
            library=str(run.library), db=str(run.db),
            report=_opt_str(run.report_path), metrics=_opt_str(run.metrics_path),
            trace=_opt_str(run.trace_path),
        )

    def save(self, library: str | os.PathLike[str]) -> Path:
        path = report_dir(library) / "run.json"
        _write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, library: str | os.PathLike[str]) -> RunFacts | None:
        """The last run's facts, or None when no run wrote them (or they are unreadable)."""
        path = report_dir(library) / "run.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("version") != RUN_FACTS_VERSION:
                return None
            return cls(**raw)
        except (OSError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class Built:
    """What ``build`` wrote: the page, how many slots it shows, thumbnails made now."""

    path: Path
    slots: int
    thumbs_made: int
    thumbs_failed: int


@dataclass(slots=True)
class _Slot:
    item: str | None
    type: str
    art: str
    index: int
    status: str
    url: str | None
    path: str | None
    error: str | None
    thumb: str | None = None


@dataclass(slots=True)
class _Item:
    id: str
    type: str
    slots: list[_Slot] = field(default_factory=list)


def write_after_run(run: Any, html_path: str | os.PathLike[str], command: str,
                    *, workers: int | None = None) -> Built:
    """Save the run's facts, then build the page (thumbnails included)."""
    facts = RunFacts.from_run(run, command)
    try:
        facts.save(run.library)
    except OSError as exc:
        raise ArtpipeError(
            f"the run finished (library and store are up to date) but the report folder "
            f"{report_dir(run.library)} could not be written: {exc.strerror or exc}"
        ) from exc
    return build(run.library, out=html_path, facts=facts, workers=workers)


def build(library: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None,
          facts: RunFacts | None = None, workers: int | None = None) -> Built:
    """Write the report page for ``library`` from the last run's files and the store.

    Without ``run.json`` or the report rows (a run made with ``--no-html``, or
    only by the Python API), the page shows what the store knows: every
    recorded slot, with no run totals.
    """
    root = Path(os.path.realpath(library))
    if not root.is_dir():
        raise ArtpipeError(f"library folder {library} does not exist; pass the library root")
    facts = facts or RunFacts.load(root)
    db = Path(facts.db) if facts else state_dir(root) / "artpipe.db"
    titles, hashes = _store_facts(db)
    rows_file = Path(facts.report) if facts and facts.report else None
    if rows_file is not None and rows_file.is_file():
        slots = _rows_from_report(rows_file)
        source = f"report rows {rows_file}"
    elif db.is_file():
        slots = _rows_from_store(db)
        source = f"store {db}"
    else:
        raise ArtpipeError(
            f"no artpipe run found in {root}: neither {state_dir(root) / 'report'} nor "
            f"the store {db} exists; run `artpipe run MANIFEST --library {library}` first"
        )
    items, bad = _group(slots)
    thumbs = report_dir(root) / "thumbs"
    try:
        made, failed = _make_thumbs(items, hashes, thumbs, workers)
    except OSError as exc:
        raise ArtpipeError(
            f"cannot write the report's thumbnails in {thumbs}: {exc.strerror or exc}; "
            "check that the library's .artpipe folder is writable"
        ) from exc
    html_path = Path(out) if out is not None else default_html_path(root)
    html_path = Path(os.path.abspath(html_path))
    page = _page(root, html_path, thumbs, items, bad, titles, facts, source)
    try:
        _write_text(html_path, page)
    except OSError as exc:
        raise ArtpipeError(
            f"cannot write the report page {html_path}: {exc.strerror or exc}; "
            "pick a writable path"
        ) from exc
    _sweep_thumbs(thumbs, items)
    count = sum(len(i.slots) for i in items) + len(bad)
    return Built(html_path, count, made, failed)


# -- inputs -------------------------------------------------------------------


def _rows_from_report(path: Path) -> Iterator[_Slot]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a run killed mid-line leaves half a row; the rest still shows
            if not isinstance(row, dict):
                continue
            yield _Slot(item=row.get("item"), type=str(row.get("type") or ""),
                        art=row.get("art") or "", index=int(row.get("index") or 0),
                        status=str(row.get("status") or SlotStatus.FAILED.value),
                        url=row.get("url"), path=row.get("path"), error=row.get("error"))


def _rows_from_store(db: Path) -> Iterator[_Slot]:
    from artpipe.store import Store

    with Store(db) as store:
        rows = store.all_artwork()
    for r in rows:
        yield _Slot(item=r.item, type="", art=r.art, index=r.index, status=r.status, url=r.url,
                    path=r.path, error=r.error)


def _store_facts(
    db: Path,
) -> tuple[dict[str, tuple[str, str]], dict[tuple[str, str, int], str]]:
    """Titles of items and content hashes of saved files, when a store exists."""
    if not db.is_file():
        return {}, {}
    from artpipe.store import Store

    try:
        with Store(db) as store:
            titles = {i.id: (i.title or i.id, i.type) for i in store.items()}
            hashes = {(a.item, a.path, a.index): a.sha256 for a in store.all_artwork()
                      if a.sha256}
    except ArtpipeError:
        return {}, {}  # a locked or broken store only costs titles and reuse of thumbnails
    return titles, hashes


def _group(slots: Iterable[_Slot]) -> tuple[list[_Item], list[_Slot]]:
    """Slots per item, in the order items finished; manifest lines that failed apart."""
    items: dict[str, _Item] = {}
    bad: list[_Slot] = []
    for slot in slots:
        if slot.item is None:
            bad.append(slot)
            continue
        item = items.get(slot.item)
        if item is None:
            item = items[slot.item] = _Item(slot.item, slot.type)
        item.slots.append(slot)
    return list(items.values()), bad


# -- thumbnails ---------------------------------------------------------------


def _thumb_key(slot: _Slot, hashes: dict[tuple[str, str, int], str]) -> str | None:
    """A name that changes when the file does: its sha256, else path, size and mtime."""
    assert slot.path is not None
    sha = hashes.get((slot.item or "", slot.path, slot.index))
    if sha:
        return sha[:32]
    try:
        st = os.stat(slot.path)
    except OSError:
        return None
    seed = f"{slot.path}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    return hashlib.sha256(seed).hexdigest()[:32]


def _make_thumbs(items: list[_Item], hashes: dict[tuple[str, str, int], str], folder: Path,
                 workers: int | None) -> tuple[int, int]:
    """Render the missing thumbnails in a thread pool (the core releases the GIL)."""
    wanted: dict[str, tuple[str, list[_Slot]]] = {}
    for item in items:
        for slot in item.slots:
            if slot.status not in (SlotStatus.SAVED, SlotStatus.UNCHANGED) or not slot.path:
                continue
            key = _thumb_key(slot, hashes)
            if key is None:
                slot.error = slot.error or f"the saved file {slot.path} is missing"
                continue
            name = key + ".jpg"
            slot.thumb = name
            wanted.setdefault(name, (slot.path, []))[1].append(slot)
    folder.mkdir(parents=True, exist_ok=True)
    existing = {entry.name for entry in os.scandir(folder)}
    todo = [(name, src) for name, (src, _) in wanted.items() if name not in existing]
    if not todo:
        return 0, 0
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2,
                            thread_name_prefix="thumb") as pool:
        results = list(pool.map(lambda job: _render_thumb(job[1], folder / job[0]), todo))
    failed = 0
    for (name, _), error in zip(todo, results, strict=True):
        if error is None:
            continue
        failed += 1
        for slot in wanted[name][1]:
            slot.thumb = None
            slot.error = slot.error or error
    return len(todo) - failed, failed


def _render_thumb(source: str, dest: Path) -> str | None:
    """Write one thumbnail; returns why it could not be made, or None."""
    try:
        data = Path(source).read_bytes()
        small = render(data, max_size=THUMB_BOX, format="jpeg", quality=THUMB_QUALITY)
    except OSError as exc:
        return f"no preview: cannot read {source}: {exc.strerror or exc}"
    except ArtpipeError as exc:
        return f"no preview of {source}: {exc}"
    try:
        # no fsync: a thumbnail lost in a crash is only rendered again
        _write_bytes(dest, small)
    except OSError as exc:
        return f"no preview: cannot write {dest}: {exc.strerror or exc}"
    return None


def _sweep_thumbs(folder: Path, items: list[_Item]) -> None:
    """Remove thumbnails of files no longer shown, so the folder tracks the library."""
    keep = {slot.thumb for item in items for slot in item.slots if slot.thumb}
    for entry in os.scandir(folder):
        if entry.name.endswith(".jpg") and entry.name not in keep:
            try:
                os.unlink(entry.path)
            except OSError:
                continue  # best effort: a stale thumbnail only costs its bytes


# -- failure reasons ----------------------------------------------------------

_HTTP_STATUS = re.compile(r"\bHTTP (\d{3})\b")
_REASONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("response too large", re.compile(r"-byte cap")),
    ("timeout", re.compile(r"timed out|timeout", re.I)),
    ("unsafe path", re.compile(r"outside the library|path must|fix the item's path|unsafe",
                               re.I)),
    ("decode error", re.compile(r"could not decode|not an image|unsupported|pixels, over the "
                                r"limit|could not encode|an error page", re.I)),
    ("disk", re.compile(r"no space|permission denied|read-only|cannot create the folder|"
                        r"cannot read|not a directory|is a directory|nothing was written|"
                        r"cannot remove|cannot write|disk|the old file \(if any\) was kept",
                        re.I)),
    ("connection", re.compile(r"connection failed|body ended early|connection", re.I)),
    ("render worker", re.compile(r"render worker failed|bug in \w+|please report it")),
)


def failure_reason(error: str | None, *, manifest_line: bool = False) -> str:
    """The group a failure belongs to: 'HTTP 404', 'timeout', 'decode error', ...

    URLs are left out of the match, so an image called ``timeout.jpg`` is not a timeout.
    """
    reason = _classify(" ".join(w for w in (error or "").split() if "://" not in w))
    if manifest_line and reason in ("other", "manifest entry"):
        return "manifest line"  # a line that is no item at all (not JSON, no id, ...)
    return reason


def _classify(text: str) -> str:
    for name, pattern in _REASONS[:2]:
        if pattern.search(text):
            return name
    status = _HTTP_STATUS.search(text)
    if status and status.group(1) not in ("200", "203"):
        return f"HTTP {status.group(1)}"
    for name, pattern in _REASONS[2:]:
        if pattern.search(text):
            return name
    if re.search(r"\bart\.|manifest|not a valid URL|scheme", text):
        return "manifest entry"
    return "other"


# -- the page -----------------------------------------------------------------


def _page(root: Path, html_path: Path, thumbs: Path, items: list[_Item], bad: list[_Slot],
          titles: dict[str, tuple[str, str]], facts: RunFacts | None, source: str) -> str:
    counts: Counter[str] = Counter()
    failures: list[list[str]] = []
    sheet: list[list[Any]] = []
    for item in items:
        title, kind = titles.get(item.id, (item.id, item.type))
        cells = []
        for slot in item.slots:
            counts[slot.status] += 1
            label = slot.art if not slot.index else f"{slot.art} {slot.index}"
            shown = slot.status
            if slot.status in (SlotStatus.SAVED, SlotStatus.UNCHANGED) and not slot.thumb:
                shown = "missing"
            cells.append([label, shown, slot.thumb or "", slot.error or ""])
            if slot.status == SlotStatus.FAILED:
                failures.append([failure_reason(slot.error), title, label, slot.url or "",
                                 slot.error or ""])
        sheet.append([item.id, title, item.type or kind, cells])
    for slot in bad:
        failures.append([failure_reason(slot.error, manifest_line=True), "(manifest)", "",
                         "", slot.error or ""])
    thumbs_rel = os.path.relpath(thumbs, html_path.parent)
    data = {
        "thumbs": urllib.parse.quote(Path(thumbs_rel).as_posix()) + "/",
        "items": sheet,
        "failures": failures,
    }
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # inside <script>: no "</script>" or "<!--" can end it early, whatever a title holds
    blob = blob.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    blob = blob.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    e = html.escape
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(facts.started_at)) if facts \
        else "no run recorded"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # the page may load its own thumbnails and nothing else: no network, no
        # plugin, no form — a hostile string in a manifest stays text
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>artpipe report · {e(root.name or str(root))}</title>",
        f"<style>{PAGE_CSS}</style></head><body>",
        '<header><h1>artpipe run report</h1>',
        f'<p class="sub">library <code>{e(str(root))}</code> · {e(when)} · '
        f"built from {e(source)}</p>",
        '<nav><a href="#summary">summary</a><a href="#sheet-section">contact sheet</a>'
        f'<a href="#failures-section">failures ({len(failures)})</a>'
        '<a href="#hosts-section">hosts</a></nav></header><main>',
        _summary_html(counts, len(bad), facts, items),
        _sheet_html(),
        _failures_html(len(failures)),
        _hosts_html(facts),
        "</main>",
        f'<script type="application/json" id="artpipe-data">{blob}</script>',
        f"<script>{PAGE_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _summary_html(counts: Counter[str], bad_lines: int, facts: RunFacts | None,
                  items: list[_Item]) -> str:
    e = html.escape
    cells = [
        f'<div class="stat st-{s}"><span class="n" id="count-{s}" data-count="{counts[s]}">'
        f'{counts[s]:,}</span><span class="k">{s}</span></div>'
        for s in _STATUSES
    ]
    cells.append(f'<div class="stat"><span class="n" id="count-bad-lines" '
                 f'data-count="{bad_lines}">{bad_lines:,}</span>'
                 f'<span class="k">bad manifest lines</span></div>')
    facts_rows: list[tuple[str, str, str]] = [("items", "items", f"{len(items):,}")]
    if facts is not None:
        requests = facts.counters.get("http.requests", 0)
        in_save = facts.counters.get("http.requests_in_save", 0)
        facts_rows += [
            ("bytes", "bytes written", _size(facts.bytes_written)),
            ("wall", "wall time", f"{facts.wall_s:,.1f} s"),
            ("requests", "requests", f"{requests:,}"),
            ("requests-in-save", "requests during save",
             f'<span class="{"good" if in_save == 0 else "bad"}">{in_save:,}</span>'),
            ("downloaded", "downloaded", _size(facts.counters.get("http.bytes", 0))),
            ("exit-code", "exit code", f"{facts.exit_code}"),
            ("command", "command line", f"<code>{e(facts.command)}</code>"),
        ]
    else:
        facts_rows.append(("note", "run", "no run facts recorded (built from the store alone)"))
    table = "".join(f'<tr id="fact-{key}"><th>{name}</th><td>{value}</td></tr>'
                    for key, name, value in facts_rows)
    return (f'<section id="summary"><h2>Summary</h2><div class="stats">{"".join(cells)}</div>'
            f'<table class="facts">{table}</table></section>')


def _sheet_html() -> str:
    return (
        '<section id="sheet-section"><h2>Contact sheet</h2>'
        '<div class="tools"><input id="sheet-filter" type="search" '
        'placeholder="filter by title or id" aria-label="filter items">'
        '<select id="sheet-mode" aria-label="which items">'
        '<option value="all">all items</option>'
        '<option value="problems">items with failed or missing art</option></select>'
        '<span class="pager"><button id="sheet-prev" type="button">‹ prev</button>'
        '<span id="sheet-page"></span>'
        '<button id="sheet-next" type="button">next ›</button></span></div>'
        '<div id="sheet" class="sheet"></div></section>'
    )


def _failures_html(count: int) -> str:
    return (
        '<section id="failures-section"><h2>Failures</h2>'
        '<div class="tools"><input id="failure-filter" type="search" '
        'placeholder="filter by item, art, URL or error" aria-label="filter failures">'
        f'<span id="failure-count" data-count="{count}"></span></div>'
        '<div id="failures"></div></section>'
    )


def _hosts_html(facts: RunFacts | None) -> str:
    e = html.escape
    if facts is None or not facts.hosts:
        body = '<p class="muted">No requests were made in this run.</p>'
    else:
        head = ("<tr><th>host</th><th>requests</th><th>MB</th><th>p50 ms</th><th>p95 ms</th>"
                "<th>retries</th><th>throttled</th></tr>")
        rows = []
        for name, h in sorted(facts.hosts.items()):
            t = facts.host_timers.get(name, {})
            rows.append(
                f'<tr data-host="{e(name)}"><td>{e(name)}</td>'
                f'<td>{int(h.get("requests", 0)):,}</td>'
                f'<td>{float(h.get("bytes", 0)) / 1e6:,.2f}</td>'
                f'<td>{t.get("p50_ms", 0):,.0f}</td><td>{t.get("p95_ms", 0):,.0f}</td>'
                f'<td>{int(h.get("retries", 0)):,}</td>'
                f'<td class="{"bad" if h.get("throttled") else ""}">'
                f'{int(h.get("throttled", 0)):,}</td></tr>'
            )
        body = f'<table class="hosts">{head}{"".join(rows)}</table>'
    timeline = _timeline_svg(facts)
    return (f'<section id="hosts-section"><h2>Hosts</h2>{body}'
            f"<h3>Requests in flight</h3>{timeline}</section>")


# -- timeline -----------------------------------------------------------------


def _trace_spans(trace: str | None) -> tuple[list[tuple[float, float]], list[float]]:
    """(start, end) µs of each request and the times of throttled answers, from the trace."""
    if not trace:
        return [], []
    try:
        doc = json.loads(Path(trace).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], []
    spans: list[tuple[float, float]] = []
    throttles: list[float] = []
    events = doc.get("traceEvents", []) if isinstance(doc, dict) else []
    for ev in events:
        if not isinstance(ev, dict) or ev.get("ph") != "X":
            continue
        try:
            ts, dur = float(ev["ts"]), float(ev.get("dur", 0.0))
        except (KeyError, TypeError, ValueError):
            continue
        if ev.get("name") == "fetch.web":
            spans.append((ts, ts + dur))
        elif ev.get("name") == "fetch.throttled":
            throttles.append(ts + dur)
    return spans, throttles


def in_flight(spans: list[tuple[float, float]], bins: int) -> tuple[float, float, list[int]]:
    """Most requests in flight within each of ``bins`` equal slices of the run.

    Returns (start, end, peaks). A sweep over start/end points: exact peaks,
    O(n log n) in the number of requests.
    """
    if not spans:
        return 0.0, 0.0, []
    t0 = min(s for s, _ in spans)
    t1 = max(e for _, e in spans)
    width = max(t1 - t0, 1e-9) / bins
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans],
                    key=lambda p: (p[0], p[1]))  # ends before starts at the same instant
    peaks = [0] * bins
    level = 0
    for i, (t, step) in enumerate(points):
        level += step
        if i + 1 < len(points):
            nxt = points[i + 1][0]
            if level <= 0 or nxt <= t:
                continue
            lo = min(bins - 1, int((t - t0) / width))
            hi = min(bins - 1, int((nxt - t0) / width - 1e-9))
            for b in range(lo, hi + 1):
                if level > peaks[b]:
                    peaks[b] = level
    return t0, t1, peaks


def _timeline_svg(facts: RunFacts | None) -> str:
    spans, throttles = _trace_spans(facts.trace if facts else None)
    if not spans:
        return '<p class="muted">No request trace for this run.</p>'
    t0, t1, peaks = in_flight(spans, TIMELINE_BINS)
    w, h, pad = TIMELINE_WIDTH, TIMELINE_HEIGHT, 30
    top = max(peaks) or 1
    sx = (w - pad - 10) / TIMELINE_BINS
    sy = (h - 2 * pad + 10) / top
    base = h - pad
    path = [f"M{pad},{base}"]
    for b, v in enumerate(peaks):
        x0, x1 = pad + b * sx, pad + (b + 1) * sx
        y = base - v * sy
        path.append(f"L{x0:.1f},{y:.1f}L{x1:.1f},{y:.1f}")
    path.append(f"L{pad + TIMELINE_BINS * sx:.1f},{base}Z")
    seconds = (t1 - t0) / 1e6
    marks = []
    for t in throttles:
        x = pad + (t - t0) / max(t1 - t0, 1e-9) * TIMELINE_BINS * sx
        marks.append(f'<line class="throttle" x1="{x:.1f}" x2="{x:.1f}" y1="{pad - 10}" '
                     f'y2="{base}"><title>throttled answer at {(t - t0) / 1e6:.2f} s'
                     "</title></line>")
    throttled = sum(int(hh.get("throttled", 0)) for hh in facts.hosts.values()) if facts else 0
    legend = f"peak {top} in flight · {len(spans):,} requests over {seconds:,.2f} s"
    if throttles:
        legend += f" · {len(throttles):,} throttled answers (red lines)"
    elif throttled:
        legend += f" · {throttled:,} throttled answers (their times are not in this trace)"
    return (
        f'<svg id="timeline" class="timeline" viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="requests in flight over time" data-peak="{top}" '
        f'data-requests="{len(spans)}">'
        f'<path class="area" d="{"".join(path)}"/>'
        f'<line class="axis" x1="{pad}" x2="{w - 10}" y1="{base}" y2="{base}"/>'
        f'<text x="{pad}" y="{h - 8}">0 s</text>'
        f'<text x="{w - 10}" y="{h - 8}" text-anchor="end">{seconds:,.2f} s</text>'
        f'<text x="{pad - 4}" y="{base - top * sy + 4:.1f}" text-anchor="end">{top}</text>'
        f'{"".join(marks)}</svg><p class="muted">{legend}</p>'
    )


# -- small helpers ------------------------------------------------------------


def _size(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:,.1f} MB"
    return f"{n / 1e3:,.1f} KB"


def _opt_str(path: Any) -> str | None:
    return None if path is None else str(Path(os.path.abspath(path)))


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode("utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    """Whole file or the old one: a browser open on the page never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = [
    "Built",
    "RunFacts",
    "build",
    "default_html_path",
    "default_run_files",
    "failure_reason",
    "in_flight",
    "report_dir",
    "write_after_run",
]
