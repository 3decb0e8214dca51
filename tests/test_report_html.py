"""The run report page, checked in a real browser (headless Chromium) and as data.

Two runs are looked at: the demo (through the `artpipe demo` command, which
must print the page's path) and a run against a loopback server that fails
in every way the page groups — HTTP 404/429/500, a read timeout, an HTML page
served as an image, a symlink out of the library, a file where a folder must
be, a line that is not an item — beside enough good items to need a second
page of the contact sheet. The browser opens each page from file:// and the
tests compare what it shows with report.jsonl and metrics.json.

Chromium is required: without it these tests fail and say how to install it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import artpipe
import pytest
from artpipe import report_html
from artpipe.errors import ArtpipeError
from artpipe.fetch import FetchLimits
from artpipe.report_html import failure_reason, in_flight

from tests.support.browser import Browser
from tests.support.server import Body, ImageServer, Stall, Status, ThreadedImageServer

HOSTILE_TITLE = 'Broken </script><script>document.title="pwned"</script><b>bold</b>'
GOOD_ITEMS = 55  # more than one page of cards (48)


# -- fixtures: two finished runs ----------------------------------------------


def _rows(library: Path) -> list[dict[str, Any]]:
    text = (library / ".artpipe" / "report.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def demo_library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`artpipe demo` into a fresh folder; returns (library, the page path it printed)."""
    library = tmp_path_factory.mktemp("demo") / "library"
    proc = subprocess.run([sys.executable, "-m", "artpipe", "demo", str(library)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    printed = re.search(r"^page:\s+(\S.*)$", proc.stdout, re.M)
    assert printed, f"the demo did not print the page's path:\n{proc.stdout}"
    return library, Path(printed.group(1).strip())


async def _failing_run(library: Path) -> Any:
    movies = library / "Movies"
    movies.mkdir(parents=True)
    (movies / "Blocked (2000)").write_text("a file where the movie's folder should be")
    outside = library.parent / "outside"
    outside.mkdir()
    (movies / "Escape (2001)").symlink_to(outside)
    async with ImageServer() as srv:
        srv.add_image("/ok.jpg")
        srv.add_image("/ok2.jpg")
        srv.script("/404.jpg", then=Status(404))
        srv.script("/500.jpg", then=Status(500))
        srv.script("/429.jpg", then=Status(429, retry_after=1))
        srv.script("/html.jpg", then=Body(b"<!DOCTYPE html><html>sorry</html>"))
        srv.script("/slow.jpg", then=Stall(seconds=30))
        items: list[Any] = [
            {"id": f"good{n:02}", "type": "movie", "title": f"Good {n:02}", "year": 2000,
             "path": f"Movies/Good {n:02} (2000)/Good {n:02} (2000).mkv",
             "art": {"poster": srv.url("/ok.jpg"), "fanart": srv.url("/ok2.jpg")}}
            for n in range(GOOD_ITEMS)
        ]
        items += [
            {"id": "broken", "type": "movie", "title": HOSTILE_TITLE, "year": 1998,
             "path": "Movies/Broken (1998)/Broken (1998).mkv",
             "art": {"poster": srv.url("/404.jpg"), "fanart": srv.url("/500.jpg"),
                     "banner": srv.url("/html.jpg"), "landscape": srv.url("/slow.jpg"),
                     "thumb": srv.url("/429.jpg"), "keyart": srv.url("/ok.jpg")}},
            {"id": "blocked", "type": "movie", "title": "Blocked", "year": 2000,
             "path": "Movies/Blocked (2000)/Blocked (2000).mkv",
             "art": {"poster": srv.url("/ok.jpg")}},
            {"id": "escape", "type": "movie", "title": "Escape", "year": 2001,
             "path": "Movies/Escape (2001)/Escape (2001).mkv",
             "art": {"poster": srv.url("/ok.jpg")}},
            "not an item",
        ]
        files = report_html.default_run_files(library)
        files["report"].parent.mkdir()
        # a throttled slot waits for its host until the deadline: 429, 1 s, 429, give up
        limits = FetchLimits(read_timeout=0.3, total_timeout=5, max_attempts=2,
                             backoff_base=0.01, backoff_cap=0.02, throttle_deadline=1.5)
        return await artpipe.run(items, library, limits=limits, **files)


@pytest.fixture(scope="module")
def failed_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    library = tmp_path_factory.mktemp("failed") / "library"
    library.mkdir()
    run = asyncio.run(_failing_run(library))
    assert run.exit_code == 1
    built = report_html.write_after_run(
        run, report_html.default_html_path(library),
        "artpipe run failing.jsonl --library lib --note https://h.test/x?api_key=SeCrEt")
    assert built.path == library / ".artpipe" / "report.html"
    return library


# -- browser helpers ----------------------------------------------------------

COUNTS_JS = """Object.fromEntries(Array.from(document.querySelectorAll('[id^="count-"]'))
  .map(e => [e.id.slice(6), Number(e.dataset.count)]))"""

# every <img> on the current page: [src, loaded]
IMAGES_JS = """Array.from(document.images).map(i => [i.getAttribute('src'),
  i.complete && i.naturalWidth > 0])"""

WAIT_IMAGES_JS = """Promise.all(Array.from(document.images).map(i => i.decode()
  .then(() => true, () => false)))"""


async def _all_sheet_pages(browser: Browser) -> list[tuple[str, str, str]]:
    """Walk the contact sheet page by page; every tile as (item, status, error)."""
    tiles: list[tuple[str, str, str]] = []
    pages = int(await browser.eval("document.getElementById('sheet-page').dataset.pages"))
    for page in range(1, pages + 1):
        if page > 1:
            await browser.eval("document.getElementById('sheet-next').click()")
        assert await browser.eval(
            "Number(document.getElementById('sheet-page').dataset.page)") == page
        await browser.eval(WAIT_IMAGES_JS)
        images = await browser.eval(IMAGES_JS)
        broken = [src for src, ok in images if not ok]
        assert not broken, f"thumbnails that did not load on page {page}: {broken}"
        tiles += [tuple(t) for t in await browser.eval(
            """Array.from(document.querySelectorAll('.card .slot')).map(s =>
                 [s.closest('.card').dataset.item, s.dataset.status, s.dataset.error || ''])""")]
    return tiles


def _expected_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(r["status"] for r in rows if r["item"] is not None)
    expected = {status: counts.get(status, 0) for status in
                ("saved", "unchanged", "removed", "failed", "skipped")}
    expected["bad-lines"] = sum(1 for r in rows if r["item"] is None)
    return expected


# -- the demo -------------------------------------------------------------------


async def test_demo_page_loads_offline_with_every_thumbnail(
    demo_library: tuple[Path, Path],
) -> None:
    library, page = demo_library
    assert page == (library / ".artpipe" / "report.html").resolve()
    rows = _rows(library)
    async with Browser() as browser:
        await browser.open(page.as_uri())
        assert await browser.eval(COUNTS_JS) == _expected_counts(rows)
        tiles = await _all_sheet_pages(browser)
        assert len(tiles) == len(rows)
        shown = Counter(status for _, status, _ in tiles)
        assert shown["saved"] == sum(1 for r in rows if r["status"] == "saved") > 0
        assert await browser.eval(
            "document.getElementById('fact-requests-in-save').textContent") \
            == "requests during save0"
        assert browser.problems() == []
    thumbs = list((library / ".artpipe" / "report" / "thumbs").iterdir())
    assert thumbs and all(t.stat().st_size < 16_000 for t in thumbs)
    assert all(artpipe.probe(t.read_bytes()).format == "jpeg" for t in thumbs)
    sizes = [artpipe.probe(t.read_bytes()) for t in thumbs]
    assert all(max(info.width, info.height) <= 160 for info in sizes)


def test_demo_page_is_self_contained(demo_library: tuple[Path, Path]) -> None:
    _, page = demo_library
    text = page.read_text(encoding="utf-8")
    # nothing from the network: no remote scripts, styles, fonts or images
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "@import" not in text and "@font-face" not in text
    # thumbnails are referenced, never inlined
    assert "data:image" not in text
    assert len(text) < 200_000


# -- a run with failures --------------------------------------------------------


async def test_failed_run_page_matches_its_report(failed_library: Path) -> None:
    rows = _rows(failed_library)
    metrics = json.loads((failed_library / ".artpipe" / "metrics.json").read_text())
    async with Browser() as browser:
        await browser.open((failed_library / ".artpipe" / "report.html").as_uri())
        assert await browser.eval(COUNTS_JS) == _expected_counts(rows)
        assert (await browser.eval("document.title")).startswith("artpipe report")
        tiles = await _all_sheet_pages(browser)
        assert len(tiles) == sum(1 for r in rows if r["item"] is not None)
        # every failed slot of the report is a failed tile carrying its exact error
        failed = sorted((r["item"], r["error"]) for r in rows
                        if r["item"] is not None and r["status"] == "failed")
        assert sorted((item, err) for item, status, err in tiles if status == "failed") == failed
        # hosts and timeline agree with the metrics
        requests = metrics["counters"]["http.requests"]
        assert await browser.eval(
            "document.querySelector('.hosts tr[data-host^=\"127.0.0.1:\"] td:nth-child(2)')"
            ".textContent") == str(requests)
        assert await browser.eval(
            "Number(document.getElementById('timeline').dataset.requests)") == requests
        # each throttled answer (429 twice) is a mark on the timeline
        assert await browser.eval("document.querySelectorAll('#timeline .throttle').length") \
            == metrics["counters"]["http.429"] == 2
        assert browser.problems() == []


async def test_failed_slot_shows_its_error_when_clicked(failed_library: Path) -> None:
    rows = _rows(failed_library)
    error = next(r["error"] for r in rows if r["item"] == "broken" and r["art"] == "poster")
    async with Browser() as browser:
        await browser.open((failed_library / ".artpipe" / "report.html").as_uri())
        await browser.eval("""(() => {
            const box = document.getElementById('sheet-filter');
            box.value = 'broken'; box.dispatchEvent(new Event('input')); })()""")
        await browser.eval("new Promise(r => setTimeout(r, 300))")  # the filter's debounce
        assert await browser.eval("document.querySelectorAll('.card').length") == 1
        tile = "document.querySelector('.card .slot[data-status=\"failed\"]')"
        assert await browser.eval(f"{tile}.querySelector('figcaption').textContent") == "poster"
        assert await browser.eval(f"{tile}.title") == error
        assert await browser.eval(f"{tile}.querySelector('.err')") is None
        await browser.eval(f"{tile}.click()")
        assert await browser.eval(f"{tile}.querySelector('.err').textContent") == error
        # the hostile title is text on the page, and no script of it ran
        assert await browser.eval("document.querySelector('.card h3').textContent") \
            == HOSTILE_TITLE
        assert await browser.eval("document.title") != "pwned"
        assert await browser.eval("document.querySelectorAll('b').length") == 0
        assert browser.problems() == []


async def test_failures_are_grouped_by_reason_and_filtered(failed_library: Path) -> None:
    async with Browser() as browser:
        await browser.open((failed_library / ".artpipe" / "report.html").as_uri())
        groups = await browser.eval("""Object.fromEntries(Array.from(
            document.querySelectorAll('#failures details.group')).map(g =>
              [g.dataset.reason, g.querySelectorAll('tr.failure').length]))""")
        assert groups == {"HTTP 404": 1, "HTTP 500": 1, "HTTP 429": 1, "timeout": 1,
                          "decode error": 1, "unsafe path": 1, "disk": 1, "manifest line": 1}
        await browser.eval("""(() => {
            const box = document.getElementById('failure-filter');
            box.value = '404.jpg'; box.dispatchEvent(new Event('input')); })()""")
        await browser.eval("new Promise(r => setTimeout(r, 300))")
        rows = await browser.eval("""Array.from(document.querySelectorAll('#failures tr.failure'))
            .map(tr => Array.from(tr.cells).map(c => c.textContent))""")
        assert len(rows) == 1
        item, art, url, error = rows[0]
        assert (art, url.endswith("/404.jpg")) == ("poster", True)
        assert "HTTP 404" in error and item.startswith("Broken")
        assert browser.problems() == []


async def test_rebuilt_page_elsewhere_still_finds_its_thumbnails(
    failed_library: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pages" / "lib.html"
    out.parent.mkdir()
    proc = subprocess.run([sys.executable, "-m", "artpipe", "report", str(failed_library),
                           "--out", str(out)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    original = (failed_library / ".artpipe" / "report.html").read_text(encoding="utf-8")
    blob = re.compile(r'<script type="application/json" id="artpipe-data">(.*?)</script>', re.S)
    before = json.loads(blob.search(original).group(1))  # type: ignore[union-attr]
    after = json.loads(blob.search(out.read_text(encoding="utf-8")).group(1))  # type: ignore[union-attr]
    assert after["items"] == before["items"] and after["failures"] == before["failures"]
    async with Browser() as browser:
        await browser.open(out.as_uri())
        tiles = await _all_sheet_pages(browser)
        assert sum(1 for _, status, _ in tiles if status == "saved") == 2 * GOOD_ITEMS + 1
        assert browser.problems() == []


# -- the command line -----------------------------------------------------------


def _one_movie(tmp_path: Path, url: str) -> Path:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "tt1", "type": "movie", "title": "One", "year": 2001,
                                    "path": "One (2001)/One (2001).mkv",
                                    "art": {"poster": url}}) + "\n")
    return manifest


def test_run_writes_the_page_and_its_files_by_default(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    with ThreadedImageServer() as srv:
        srv.add_image("/p.jpg")
        manifest = _one_movie(tmp_path, srv.url("/p.jpg"))
        proc = subprocess.run([sys.executable, "-m", "artpipe", "run", str(manifest),
                               "--library", str(library)], capture_output=True, text=True,
                              timeout=120, check=False, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    state = library / ".artpipe"
    assert f"page:     {state / 'report.html'}" in proc.stdout
    for name in ("report.html", "report.jsonl", "metrics.json", "trace.json",
                 "report/run.json"):
        assert (state / name).is_file(), name
    facts = report_html.RunFacts.load(library)
    assert facts is not None
    assert facts.command.startswith("artpipe run ") and facts.exit_code == 0
    assert facts.slots["saved"] == 1 and facts.counters["http.requests"] == 1
    assert len(list((state / "report" / "thumbs").glob("*.jpg"))) == 1


def test_run_html_elsewhere_and_no_html(tmp_path: Path) -> None:
    with ThreadedImageServer() as srv:
        srv.add_image("/p.jpg")
        manifest = _one_movie(tmp_path, srv.url("/p.jpg"))
        for flag in ("--html", "--no-html"):
            library = tmp_path / flag.strip("-")
            library.mkdir()
            page = tmp_path / f"{flag.strip('-')}.html"
            extra = [flag, str(page)] if flag == "--html" else [flag]
            proc = subprocess.run([sys.executable, "-m", "artpipe", "run", str(manifest),
                                   "--library", str(library), "--quiet", *extra],
                                  capture_output=True, text=True, timeout=120, check=False)
            assert proc.returncode == 0, proc.stderr
            assert page.is_file() == (flag == "--html")
            assert not (library / ".artpipe" / "report.html").exists()
            assert (library / ".artpipe" / "report.jsonl").exists() == (flag == "--html")


def test_run_html_in_a_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    proc = subprocess.run([sys.executable, "-m", "artpipe", "run", str(manifest), "--library",
                           str(tmp_path), "--html", str(tmp_path / "no" / "r.html")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "--html" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the page as data -----------------------------------------------------------


def test_thumbnails_are_shared_and_not_rendered_twice(failed_library: Path) -> None:
    thumbs = failed_library / ".artpipe" / "report" / "thumbs"
    # 2 distinct images behind 111 saved slots: one thumbnail each
    assert len(list(thumbs.glob("*.jpg"))) == 2
    again = report_html.build(failed_library)
    assert again.thumbs_made == 0 and again.thumbs_failed == 0


def test_hostile_strings_cannot_close_the_data_script(failed_library: Path) -> None:
    text = (failed_library / ".artpipe" / "report.html").read_text(encoding="utf-8")
    assert "SeCrEt" not in text  # a secret on the command line is redacted too
    assert "</script><script>document.title" not in text
    assert text.count("</script>") == 2  # the data blob's and the script's own


def test_report_without_a_run_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ArtpipeError, match=r"no artpipe run found.*artpipe run"):
        report_html.build(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "artpipe", "report", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "no artpipe run found" in proc.stderr and "Traceback" not in proc.stderr


def test_page_from_the_store_alone_when_run_files_are_gone(
    failed_library: Path, tmp_path: Path
) -> None:
    facts = report_html.RunFacts.load(failed_library)
    assert facts is not None and facts.report is not None
    copy = tmp_path / "copy"
    shutil.copytree(failed_library, copy, symlinks=True)
    (copy / ".artpipe" / "report" / "run.json").unlink()
    built = report_html.build(copy, out=tmp_path / "store.html")
    text = built.path.read_text(encoding="utf-8")
    assert "no run facts recorded" in text and "built from store" in text
    saved = sum(1 for r in _rows(failed_library) if r["status"] == "saved")
    failed = sum(1 for r in _rows(failed_library) if r["status"] == "failed" and r["item"])
    assert f'id="count-saved" data-count="{saved}"' in text
    assert f'id="count-failed" data-count="{failed}"' in text


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("could not fetch http://h/a.jpg: server answered HTTP 404 (after 1 attempt)", "HTTP 404"),
        ("could not fetch http://h/timeout.jpg: server answered HTTP 503 (after 4 attempts)",
         "HTTP 503"),
        ("could not fetch http://h/HTTP-404.jpg: no data for 30 s (read timeout) (HTTP 200, "
         "after 4 attempts)", "timeout"),
        ("could not fetch http://h/a.jpg: connect timed out after 10 s", "timeout"),
        ("could not fetch http://h/a.jpg: got a body that starts with \"<!DOCTYPE\", not a JPEG, "
         "PNG, GIF or WebP image (HTTP 200, after 1 attempt; an error page?)", "decode error"),
        ("could not decode jpeg: unexpected end of file", "decode error"),
        ("jpeg image is 20000x20000 = 400000000 pixels, over the limit of 100000000 pixels",
         "decode error"),
        ("poster target /l/x.jpg resolves to /tmp/x.jpg, outside the library /l", "unsafe path"),
        ("cannot create the folder for /l/a/b.jpg: File exists: /l/a/b.jpg", "disk"),
        ("/l/Movies/Blocked is not a directory; nothing was written: /l/Movies/Blocked/p.jpg",
         "disk"),
        ("write failed: No space left on device (os error 28); the old file (if any) was kept",
         "disk"),
        ("could not fetch http://h/a.jpg: Content-Length 99999999 bytes is over the "
         "52428800-byte cap (HTTP 200, after 1 attempt, body not read)", "response too large"),
        ("could not fetch http://h/a.jpg: connection failed (ClientConnectorError: refused)",
         "connection"),
        ("the render worker failed (BrokenProcessPool: a child died); rerun to retry this image",
         "render worker"),
        ("bug in write_image: index out of range; please report it with the URL",
         "render worker"),
        ("art.poster is not a valid URL (bad port)", "manifest entry"),
        ("something nobody expected", "other"),
    ],
)
def test_failure_reasons(error: str, reason: str) -> None:
    assert failure_reason(error) == reason


def test_bad_manifest_lines_group_apart_unless_the_cause_is_known() -> None:
    assert failure_reason("line 3: invalid JSON", manifest_line=True) == "manifest line"
    assert failure_reason("line 4: Alien: path escapes the library root; fix the item's path",
                          manifest_line=True) == "unsafe path"


def test_in_flight_peaks_follow_overlapping_requests() -> None:
    # 0-10 one request, 10-20 three, 20-30 one; a request ending as another starts
    # does not overlap it
    spans = [(0.0, 30.0), (10.0, 20.0), (10.0, 20.0), (30.0, 40.0)]
    start, end, peaks = in_flight(spans, 4)
    assert (start, end) == (0.0, 40.0)
    assert peaks == [1, 3, 1, 1]
    assert in_flight([], 4) == (0.0, 0.0, [])
