"""The `artpipe` command: run, demo, probe.

Parses options, calls ``asyncio.run(pipeline.run(...))`` and renders: a live
rich progress display on a terminal, plain lines otherwise, and a summary
table at the end. A user mistake (missing manifest, unwritable library, bad
option) is one line on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from artpipe.errors import ArtpipeError
from artpipe.fetch.limits import parse_host_rate, parse_rate
from artpipe.models import SlotStatus
from artpipe.pipeline import options as defaults

if TYPE_CHECKING:
    from artpipe.pipeline import ItemOutcome, RunReport, RunStats

EXIT_OK, EXIT_FAILED_SLOTS, EXIT_USAGE = 0, 1, 2

err_console = Console(stderr=True)
# C0 and C1 controls and DEL: an ESC from a manifest could recolour, retitle or clear the
# terminal; everything from outside is shown with these written as escapes.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe(text: object) -> str:
    """``text`` (from a manifest, a server or a file name) ready for rich markup.

    Square brackets are escaped, so an art key ``[bold red]`` prints as
    itself instead of styling (or, unbalanced, crashing) the summary, and
    control characters are shown as ``\\x1b`` rather than sent raw.
    """
    from artpipe.redact import redact_text

    shown = _CONTROL.sub(lambda m: ascii(m.group())[1:-1], redact_text(str(text)))
    return escape(shown)
_SUMMARY_HOSTS = 10  # rows of the summary's hosts table


def _host_rate(_ctx: click.Context, _param: click.Parameter,
               value: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    try:
        return tuple(parse_host_rate(v) for v in value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _rate(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    try:
        return None if value is None else parse_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _secret_params(_ctx: click.Context, _param: click.Parameter,
                   value: tuple[str, ...]) -> frozenset[str]:
    from artpipe.redact import DEFAULT_SECRET_PARAMS

    return DEFAULT_SECRET_PARAMS | {v.strip().lower() for v in value if v.strip()}


def _fail(message: str) -> None:
    """One line on stderr, exit 2: for mistakes the user can fix."""
    err_console.print(f"[bold red]error:[/] {safe(message)}", highlight=False, soft_wrap=True)
    sys.exit(EXIT_USAGE)


def _count_lines(path: Path) -> int | None:
    """Manifest size for the ETA; a fast byte scan, never parsed."""
    try:
        with path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return None


class _Display:
    """Progress for a run: rich on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, console: Console, total: int | None, quiet: bool) -> None:
        self.console = console
        self.total = total
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self._last_plain = 0.0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self.hosts: Callable[[], dict[str, Any]] | None = None

    @contextmanager
    def running(self) -> Iterator[_Display]:
        if not self.live:
            yield self
            return
        self._progress = Progress(
            TextColumn("[bold]items"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task("items", total=self.total, detail="")
        with self._progress:
            yield self

    def update(self, stats: RunStats, _outcome: ItemOutcome | None) -> None:
        if self.quiet:
            return
        slots = stats.slots
        rate = stats.bytes_written / max(1e-3, time.monotonic() - stats.started) / 1e6
        hosts = sorted(stats.host_rates().items(), key=lambda kv: -kv[1])[:3]
        windows = stats.host_windows()  # the adaptive window: cut when a host pushes back
        per_host = "".join(
            f" · {safe(name)} {r:.0f}/s" + (f" ×{windows[name]}" if name in windows else "")
            for name, r in hosts)
        detail = (
            f"saved {slots['saved']} · unchanged {slots['unchanged']} · "
            f"removed {slots['removed']} · failed {slots['failed'] + stats.bad_lines} · "
            f"{stats.bytes_written / 1e6:.1f} MB ({rate:.1f} MB/s){per_host}"
        )
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=stats.items_done, total=self.total,
                                  detail=detail)
            return
        now = time.monotonic()
        if now - self._last_plain >= 2.0:
            self._last_plain = now
            of = f"/{self.total}" if self.total else ""
            self.console.print(f"items {stats.items_done}{of} · {detail}", highlight=False)


def _summary(console: Console, report: RunReport) -> None:
    stats = report.stats
    table = Table(title="artpipe run", show_header=True, header_style="bold")
    table.add_column("status")
    table.add_column("slots", justify="right")
    for status in SlotStatus:
        table.add_row(status.value, str(stats.slots[status.value]))
    if stats.bad_lines:
        table.add_row("bad manifest lines", str(stats.bad_lines))
    console.print(table)
    counters = report.metrics.counters()
    timers = report.metrics.timers()
    per_item = timers.get("item.save_all", {})
    elapsed = time.monotonic() - stats.started
    console.print(
        f"{stats.items_done} items in {elapsed:.1f} s · "
        f"{counters.get('http.requests', 0)} requests "
        f"({counters.get('http.requests_in_save', 0)} during save) · "
        f"{stats.bytes_written / 1e6:.1f} MB written · "
        f"avg {per_item.get('avg_ms', 0):.0f} ms/item",
        highlight=False,
    )
    if report.hosts:
        # the busiest hosts only: a scraper may touch thousands
        busiest = sorted(report.hosts.items(), key=lambda kv: -int(kv[1].get("requests", 0)))
        hosts = Table(title="hosts", header_style="bold")
        for col in ("host", "requests", "MB", "retries", "throttled", "window", "waited s"):
            hosts.add_column(col, justify="right" if col != "host" else "left")
        for name, h in busiest[:_SUMMARY_HOSTS]:
            window = f"{h['window']}" if h.get("window") else ""
            if h.get("window_min") and h["window_min"] != h.get("window"):
                window += f" (min {h['window_min']})"
            hosts.add_row(safe(name), str(h.get("requests", 0)), f"{h.get('bytes', 0) / 1e6:.1f}",
                          str(h.get("retries", 0)), str(h.get("throttled", 0)), window,
                          f"{h.get('wait_ms', 0) / 1000:.1f}")
        if len(busiest) > _SUMMARY_HOSTS:
            rest = busiest[_SUMMARY_HOSTS:]
            hosts.caption = (f"and {len(rest)} more rows "
                             f"({sum(int(h.get('requests', 0)) for _, h in rest)} requests)")
        console.print(hosts)
    if stats.errors:
        console.print("[bold]most common errors[/]")
        for message, n in stats.errors.most_common(5):
            console.print(f"  {n} × {safe(message)}", highlight=False)


_T = TypeVar("_T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (the ``fast`` extra: a few % faster), else None."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _run_loop(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(main)``, on uvloop's loop when it is installed."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


def _run_engine(manifest: Path, library: Path, quiet: bool, total: int | None,
                **options: Any) -> RunReport:
    from artpipe import pipeline

    console = Console()
    display = _Display(console, total, quiet)
    try:
        with display.running():
            report = _run_loop(_stoppable(
                pipeline.run(manifest, library, progress=display.update, **options)
            ))
    except KeyboardInterrupt:
        err_console.print(
            "interrupted: files already written are complete; run the same command again "
            "to finish the rest"
        )
        sys.exit(130)
    except _Terminated:
        err_console.print(
            "terminated (SIGTERM): files already written are complete and recorded; run the "
            "same command again to finish the rest"
        )
        sys.exit(128 + signal.SIGTERM)
    except ArtpipeError as exc:  # ManifestError, StoreError, ...: the run cannot go on
        _fail(str(exc))
    if not quiet:
        _summary(console, report)
    return report


class _Terminated(Exception):
    """SIGTERM stopped the run (after the same clean shutdown as Ctrl-C)."""


async def _stoppable(run: Coroutine[Any, Any, RunReport]) -> RunReport:
    """Run ``run``, cancelled cleanly on SIGTERM (systemd, ``docker stop``), as on Ctrl-C.

    Cancelling unwinds the run's ``finally`` blocks: the outcomes received so
    far are recorded in the store, the render pool is shut down and the
    report is flushed. Without a handler SIGTERM killed the process on the
    spot and the store rows of files already written were lost.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(run)
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, terminate)
    except (NotImplementedError, RuntimeError):  # no signals here (Windows, not main thread)
        return await task
    try:
        return await task
    except asyncio.CancelledError:
        if terminated:
            raise _Terminated from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: the package and what its compiled core was built with, on one line."""
    if not value or ctx.resilient_parsing:
        return
    from artpipe import doctor

    by_name = {fact.name: fact.value for fact in doctor.facts()}
    click.echo(f"artpipe {by_name['artpipe']} (libjpeg-turbo {by_name['libjpeg-turbo']}, "
               f"JPEG SIMD {by_name['JPEG SIMD']}, resize {by_name['resize SIMD']}; "
               f"{by_name['python']}; `artpipe doctor` for more)")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version and how the core was built.")
def main() -> None:
    """artpipe: fill a media library (Kodi layout) with artwork.

    Reads a JSONL manifest of movies, sets, shows, seasons and episodes with
    artwork URLs, downloads only what is missing or changed, and writes each
    image resized and atomically under its Kodi file name.
    """


@main.command()
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--library", "-l", required=True, type=click.Path(path_type=Path),
              help="Library root; manifest paths are relative to it.")
@click.option("--cache-dir", type=click.Path(path_type=Path),
              help="Cache of downloaded originals [default: LIBRARY/.artpipe/cache].")
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite store [default: LIBRARY/.artpipe/artpipe.db].")
@click.option("--concurrency", default=defaults.DEFAULT_CONCURRENCY, show_default=True,
              type=click.IntRange(1, 1024), help="Downloads in flight, all hosts together.")
@click.option("--per-host", default=defaults.DEFAULT_PER_HOST, show_default=True,
              type=click.IntRange(1, 256),
              help="Downloads in flight to one host: where its adaptive window starts, "
                   "and the most it grows back to after the host pushed back.")
@click.option("--rate", "rates", multiple=True, metavar="HOST=N/s", callback=_host_rate,
              help="At most N requests a second to HOST (a host name covers all its ports; "
                   "host:port one). Repeatable.")
@click.option("--rate-default", metavar="N/s", callback=_rate,
              help="At most N requests a second to every host without its own --rate.")
@click.option("--throttle-deadline", type=click.FloatRange(min=0, min_open=True),
              default=defaults.DEFAULT_THROTTLE_DEADLINE, show_default=True, metavar="SECONDS",
              help="How long one download keeps waiting while its host throttles "
                   "(429, Retry-After) before it is failed.")
@click.option("--executor", default=defaults.DEFAULT_EXECUTOR, show_default=True,
              help="Where images render: thread, process, or dask://HOST:PORT.")
@click.option("--workers", type=click.IntRange(1, 512),
              help="Render workers [default: one per CPU core].")
@click.option("--originals", is_flag=True, help="Keep original sizes (no downscaling).")
@click.option("--refresh", is_flag=True,
              help="Revalidate saved art with conditional GETs (ETag/Last-Modified).")
@click.option("--keep-changed", is_flag=True,
              help="Keep library files changed since artpipe wrote them, instead of "
                   "restoring what the manifest asks (see docs/changed-files.md).")
@click.option("--report", type=click.Path(path_type=Path, dir_okay=False),
              help="Write one JSON line per art slot here.")
@click.option("--metrics", type=click.Path(path_type=Path, dir_okay=False),
              help="Write timers and counters (JSON) here.")
@click.option("--trace", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a Chrome trace (open in Perfetto) here.")
@click.option("--shard-size", type=click.IntRange(1), default=defaults.DEFAULT_SHARD_SIZE,
              show_default=True,
              help="With dask://: manifest items per shard sent to a worker.")
@click.option("--shard-retries", type=click.IntRange(0),
              default=defaults.DEFAULT_SHARD_RETRIES, show_default=True,
              help="With dask://: times Dask retries a failed or lost shard.")
@click.option("--extrafanart-style", "extrafanart", type=click.Choice(["kodi", "folder"]),
              default="kodi", show_default=True,
              help="kodi: <stem>-fanartN.jpg (what Kodi reads); folder: extrafanart/fanartN.jpg.")
@click.option("--movie-sets-folder", metavar="DIR",
              help="Kodi's movie set information folder, relative to the library: a movieset "
                   "without a path goes to DIR/<title>/.")
@click.option("--secret-param", "secret_params", multiple=True, metavar="NAME",
              callback=_secret_params,
              help="A query parameter whose value is a secret: redacted (like user:password@ "
                   "and api_key, token, signature, … already are) wherever a URL is written "
                   "or shown. Repeatable.")
@click.option("--html", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the run report page here [default: LIBRARY/.artpipe/report.html; "
                   "report, metrics and trace then default to that folder too].")
@click.option("--no-html", is_flag=True, help="No report page (and no default run files).")
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary; exit code only.")
def run(manifest: Path, library: Path, quiet: bool, html: Path | None, no_html: bool,
        **options: Any) -> None:
    """Download and save the artwork listed in MANIFEST into the library.

    Exit code 0: every slot saved or unchanged; 1: some slots failed (the
    rest were saved, old files kept); 2: usage error or unreadable manifest.
    """
    if not manifest.is_file():
        _fail(f"manifest {manifest} does not exist or is not a file; pass a JSONL manifest")
    if not library.is_dir():
        _fail(f"library folder {library} does not exist; create it first or fix --library")
    if not os.access(library, os.W_OK):
        _fail(f"library folder {library} is not writable; fix its permissions or pick another")
    executor = options["executor"]
    if executor not in ("thread", "process") and not executor.startswith("dask://"):
        _fail(f"--executor {executor!r} is not one of: thread, process, dask://HOST:PORT")
    for key in ("report", "metrics", "trace", "html"):
        target = html if key == "html" else options[key]
        if target is not None and not target.parent.is_dir():
            _fail(f"--{key} {target}: folder {target.parent} does not exist")
    if not no_html:
        from artpipe import report_html

        html = html or report_html.default_html_path(library)
        for key, default in report_html.default_run_files(library).items():
            options[key] = options[key] or default  # the page is built from these
    _check_outputs(manifest, library, html, options)
    if not no_html:
        report_html.state_dir(library).mkdir(exist_ok=True)
    total = None if quiet else _count_lines(manifest)
    options = {k: v for k, v in options.items() if v is not None}
    report = _run_engine(manifest, library, quiet, total, **options)
    if html is not None and not no_html:
        _write_page(report, html, quiet)
    sys.exit(report.exit_code)


def _check_outputs(manifest: Path, library: Path, html: Path | None,
                   options: dict[str, Any]) -> None:
    """An output on the manifest, the database or another output: refused before any write."""
    from artpipe.pipeline import RunOptions, check_outputs

    try:
        check_outputs(manifest, RunOptions(
            library=library, db=options.get("db"), report=options.get("report"),
            metrics=options.get("metrics"), trace=options.get("trace")), html=html)
    except ArtpipeError as exc:
        _fail(str(exc))


def _write_page(report: RunReport, html: Path, quiet: bool) -> None:
    """The run report page, after the run: its thumbnails are rendered now."""
    import shlex

    from artpipe import report_html

    command = shlex.join(["artpipe", *sys.argv[1:]])
    try:
        built = report_html.write_after_run(report, html, command)
    except KeyboardInterrupt:
        err_console.print("interrupted while writing the report page; the run itself is "
                          "complete — `artpipe report LIBRARY` writes the page")
        sys.exit(130)
    except ArtpipeError as exc:
        _fail(str(exc))
    if not quiet:
        Console().print(f"page:     {safe(built.path)}", highlight=False, soft_wrap=True)


@main.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False),
                default="demo-library")
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary.")
def demo(directory: Path, quiet: bool) -> None:
    """Run the whole engine offline on bundled sample art into DIRECTORY.

    Starts a server on 127.0.0.1 with sample posters, fanart, logos and
    thumbs, writes a manifest covering movies, a movie set, a show with
    seasons and episodes, and runs `artpipe run` on it. Run it twice: the
    second run makes no requests and rewrites nothing.
    """
    from artpipe import demo as demo_mod
    from artpipe import pipeline

    directory.mkdir(parents=True, exist_ok=True)
    state = directory / ".artpipe"
    state.mkdir(exist_ok=True)
    manifest = state / "demo-manifest.jsonl"
    outputs = {"report": state / "report.jsonl", "metrics": state / "metrics.json",
               "trace": state / "trace.json"}
    console = Console()
    display = _Display(console, None, quiet)

    async def go() -> RunReport:
        async with demo_mod.serve_demo_art() as port:
            items = demo_mod.demo_manifest(f"http://{demo_mod.DEMO_HOST}/art")
            demo_mod.write_manifest(items, manifest)
            demo_mod.make_library(directory, items)
            display.total = len(items)
            return await pipeline.run(
                manifest, directory, progress=display.update,
                resolve={demo_mod.DEMO_HOST: ("127.0.0.1", port)},
                report=outputs["report"], metrics=outputs["metrics"], trace=outputs["trace"],
            )

    try:
        with display.running():
            report = _run_loop(go())
    except KeyboardInterrupt:
        err_console.print("interrupted: run `artpipe demo` again to finish the rest")
        sys.exit(130)
    except ArtpipeError as exc:
        _fail(str(exc))
    if not quiet:
        _summary(console, report)
        console.print(f"library:  {safe(directory)}")
        console.print(f"manifest: {safe(manifest)}")
        for name, path in outputs.items():
            console.print(f"{name + ':':9} {safe(path)}")
    _write_page(report, state / "report.html", quiet)
    if not quiet:
        console.print("Open the trace in https://ui.perfetto.dev (load the file; it stays local).")
        _note_slow_build()
    sys.exit(report.exit_code)


def _note_slow_build() -> None:
    """pip hides the build's warning, so a core built without nasm says so where users look."""
    from artpipe import _core

    if dict(_core.build_info()).get("jpeg_simd_built") != "true":
        err_console.print(
            "[yellow]note:[/] this artpipe was built without libjpeg-turbo's SIMD (no nasm at "
            "build time): JPEG work is about 2x slower. `artpipe doctor` says more.",
            highlight=False, soft_wrap=True,
        )


@main.command()
@click.argument("library", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", "-o", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the page here [default: LIBRARY/.artpipe/report.html].")
def report(library: Path, out: Path | None) -> None:
    """Rebuild the run report page of LIBRARY from its store and last run's files."""
    from artpipe import report_html

    if not library.is_dir():
        _fail(f"library folder {library} does not exist; pass the library root")
    if out is not None and not out.parent.is_dir():
        _fail(f"--out {out}: folder {out.parent} does not exist")
    try:
        built = report_html.build(library, out=out)
    except ArtpipeError as exc:
        _fail(str(exc))
    click.echo(f"{built.path} ({built.slots} slots, {built.thumbs_made} new thumbnails)")


@main.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=False))
def probe(files: tuple[Path, ...]) -> None:
    """Print format and size of image FILES (header only; nothing is decoded)."""
    from artpipe.image import probe_file

    status = EXIT_OK
    for path in files:
        try:  # a bounded read: a 3 GB file costs 4 MB, a FIFO is refused, not waited on
            info = probe_file(path)
        except OSError as exc:
            err_console.print(f"{safe(path)}: cannot read: {safe(exc.strerror or exc)}",
                              highlight=False)
            status = EXIT_FAILED_SLOTS
            continue
        except ArtpipeError as exc:
            err_console.print(f"{safe(path)}: {safe(exc)}", highlight=False)
            status = EXIT_FAILED_SLOTS
            continue
        orient = f" orientation {info.orientation}" if info.orientation != 1 else ""
        click.echo(f"{path}: {info.format} {info.width}x{info.height}{orient}")
    sys.exit(status)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def doctor(as_json: bool) -> None:
    """Show how artpipe is installed and what its core can do on this machine.

    Version, Python, platform, the wheel tag pip installed, the libjpeg-turbo
    version and whether its SIMD is built in and used, the resize CPU
    extension, image formats and the pixel limit. Paste it into bug reports.
    Exits 1 when something makes artpipe slower than it should be.
    """
    from artpipe import doctor as doctor_facts

    facts = doctor_facts.facts()
    if as_json:
        import json

        click.echo(json.dumps({fact.name: fact.value for fact in facts}, indent=2))
    else:
        console = Console(highlight=False)
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        for fact in facts:
            value = escape(fact.value)
            table.add_row(fact.name, f"[yellow]{value}[/]" if fact.problem else value)
        console.print(table)
        for fact in facts:
            if fact.problem:
                console.print(f"[yellow]note:[/] {escape(fact.name)}: {escape(fact.problem)}",
                              soft_wrap=True)
    sys.exit(EXIT_FAILED_SLOTS if any(fact.problem for fact in facts) else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
