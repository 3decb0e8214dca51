"""The run report page at scale: build time, bytes per slot, time to interactive (a benchmark).

Writes the files a 100,000-slot run leaves behind — report.jsonl (20,000
movies × poster, fanart, banner, clearlogo, landscape; about 3% failed with
real error texts, 1% skipped), a full trace (100,000 ``fetch.web`` spans, the
trace's cap) and run.json — over library files that are hard links to the
bundled demo art under distinct names, so ``--thumbs`` different thumbnails
are really rendered by the core. Then it builds the page with
``report_html.build`` and opens it from file:// in headless Chromium
(``tests/support/browser.py``) several times, timing navigation → the page's
ready flag after DOMContentLoaded (first sheet page rendered, handlers bound:
interactive), navigation → the load event (that page's thumbnails loaded),
and the next-page and filter interactions.

    python bench/bench_report.py                        # 100,000 slots, 2,000 thumbnails
    python bench/bench_report.py --slots 10000 --opens 3

Target: interactive in under 2 s, and a few KB per item at most. Prints a
Markdown table for bench/RESULTS.md ("Run report page"). Run from the
repository root with artpipe importable and Debian's ``chromium`` installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from artpipe import report_html  # noqa: E402

from tests.support.browser import Browser  # noqa: E402

ARTS = ("poster", "fanart", "banner", "clearlogo", "landscape")
ERRORS = (
    "could not fetch {url}: server answered HTTP 404 (after 1 attempt, not retried); "
    "the image is gone; update or remove the URL in the manifest",
    "could not fetch {url}: server answered HTTP 429 (after 4 attempts); the server "
    "rate-limits us; lower the concurrency or retry later",
    "could not fetch {url}: no data for 30 s (read timeout) (HTTP 200, after 4 attempts); "
    "the server is slow or unreachable — retry later or raise the timeout",
    "could not decode jpeg: unexpected end of file",
)


def make_run(library: Path, slots: int, thumbs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    art = resources.files("artpipe") / "demo_art"
    sources: dict[str, list[Path]] = {a: [] for a in ARTS}
    store = library / "art"
    store.mkdir(parents=True)
    originals = {p.name: p for p in (Path(str(art)) / n for n in os.listdir(str(art)))}
    per_art = max(1, thumbs // len(ARTS))
    for a in ARTS:
        picks = sorted(n for n in originals if n.startswith(a))
        for i in range(per_art):
            name = picks[i % len(picks)]
            target = store / f"{a}-{i}{Path(name).suffix}"
            os.link(originals[name], target)
            sources[a].append(target)
    state = library / ".artpipe"
    state.mkdir()
    counts = {"saved": 0, "failed": 0, "skipped": 0}
    with (state / "report.jsonl").open("w", encoding="utf-8") as out:
        for n in range(slots // len(ARTS)):
            for a in ARTS:
                url = f"https://images.example.org/{a}/{n:06}.jpg"
                row = {"item": f"tt{n:07}", "type": "movie", "art": a, "index": 0, "url": url,
                       "status": "saved", "path": None, "width": 1000, "height": 1500,
                       "bytes": 120_000, "error": None}
                roll = rng.random()
                if roll < 0.03:
                    row.update(status="failed", bytes=None, error=f'"Movie {n} ({1950 + n % 70})" '
                               f"{a}: {rng.choice(ERRORS).format(url=url)}; any existing "
                               "file was kept")
                elif roll < 0.04:
                    row.update(status="skipped", bytes=None)
                else:
                    row["path"] = str(sources[a][n % len(sources[a])])
                counts[str(row["status"])] += 1
                out.write(json.dumps(row) + "\n")
    # a trace at its cap: 100k requests, up to 32 in flight
    events, t = [], 0.0
    for _ in range(100_000):
        t += rng.expovariate(1 / 40.0)
        events.append({"name": "fetch.web", "ph": "X", "ts": t, "dur": rng.uniform(200, 2500),
                       "pid": 1, "tid": 1})
    (state / "trace.json").write_text(json.dumps({"traceEvents": events}), encoding="utf-8")
    facts = report_html.RunFacts(
        command="artpipe run library.jsonl --library ~/Media", started_at=time.time(),
        wall_s=t / 1e6, exit_code=1, slots={**counts, "unchanged": 0, "removed": 0},
        bad_lines=0, bytes_written=counts["saved"] * 120_000,
        counters={"http.requests": 100_000, "http.requests_in_save": 0},
        host_timers={"images.example.org": {"p50_ms": 640.0, "p95_ms": 2100.0}},
        hosts={"images.example.org": {"requests": 100_000, "bytes": 12 * 10**9,
                                      "retries": 420, "throttled": 90}},
        library=str(library), db=str(state / "artpipe.db"), report=str(state / "report.jsonl"),
        trace=str(state / "trace.json"),
    )
    facts.save(library)


async def measure(page: Path, opens: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"open": [], "mark": [], "load": [], "next": [],
                                     "filter": []}
    async with Browser() as browser:
        for _ in range(opens):
            times["open"].append(await browser.open(page.as_uri()))
            times["load"].append(browser.last_load_s)
            times["mark"].append(await browser.eval(
                "performance.getEntriesByName('artpipe-ready')[0].startTime") / 1000)
            t0 = time.perf_counter()
            await browser.eval("""new Promise(r => { document.getElementById('sheet-next')
                .click(); requestAnimationFrame(() => requestAnimationFrame(r)); })""")
            times["next"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await browser.eval("""new Promise(r => {
                const s = document.getElementById('sheet-mode');
                s.value = 'problems'; s.dispatchEvent(new Event('change'));
                requestAnimationFrame(() => requestAnimationFrame(r)); })""")
            times["filter"].append(time.perf_counter() - t0)
        if browser.problems():
            raise SystemExit(f"the page reported problems: {browser.problems()}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=100_000)
    parser.add_argument("--thumbs", type=int, default=2_000)
    parser.add_argument("--opens", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="artpipe-report-") as tmp:
        library = Path(tmp) / "library"
        make_run(library, args.slots, args.thumbs)
        t0 = time.perf_counter()
        built = report_html.build(library)
        build_s = time.perf_counter() - t0
        rebuild_t0 = time.perf_counter()
        report_html.build(library)
        rebuild_s = time.perf_counter() - rebuild_t0
        thumbs = list((library / ".artpipe" / "report" / "thumbs").glob("*.jpg"))
        thumb_bytes = sum(p.stat().st_size for p in thumbs)
        page_bytes = built.path.stat().st_size
        items = args.slots // len(ARTS)
        times = asyncio.run(measure(built.path, args.opens))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{built.slots:,} slots ({items:,} items), {built.thumbs_made:,} thumbnails made\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| page file | {page_bytes / 1e6:.1f} MB = {page_bytes / built.slots:.0f} B/slot, "
          f"{page_bytes / items:.0f} B/item |")
    print(f"| thumbnails | {len(thumbs):,} files, {thumb_bytes / len(thumbs) / 1e3:.1f} KB each |")
    print(f"| build (renders {built.thumbs_made:,} thumbnails) | {build_s:.1f} s |")
    print(f"| rebuild (thumbnails reused) | {rebuild_s:.1f} s |")
    print(f"| open → interactive, median of {args.opens} (min–max) | {med['open']:.2f} s "
          f"({min(times['open']):.2f}–{max(times['open']):.2f}) |")
    print(f"| navigation start → page's ready mark (in-page clock), median | "
          f"{med['mark']:.2f} s ({min(times['mark']):.2f}–{max(times['mark']):.2f}) |")
    print(f"| open → first page's thumbnails loaded (load event), median | {med['load']:.2f} s "
          f"({min(times['load']):.2f}–{max(times['load']):.2f}) |")
    print(f"| next sheet page, median | {med['next'] * 1000:.0f} ms |")
    print(f"| filter 'failed or missing', median | {med['filter'] * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
