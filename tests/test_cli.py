"""The `artpipe` command as a user meets it: exit codes, one-line errors, demo.

Runs the real entry point in a subprocess where the exit code and stderr
matter (a traceback would show there), and click's runner elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from artpipe.cli import main
from click.testing import CliRunner

ARTPIPE = [sys.executable, "-m", "artpipe"]


def artpipe(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ARTPIPE, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    text = " ".join(lines)
    for needle in needles:
        assert needle in text, proc.stderr


def test_missing_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    proc = artpipe("run", str(tmp_path / "nope.jsonl"), "--library", str(tmp_path))
    assert_one_line_error(proc, "nope.jsonl", "does not exist")


def test_missing_library_is_a_one_line_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    proc = artpipe("run", str(manifest), "--library", str(tmp_path / "lib"))
    assert_one_line_error(proc, "library folder", "does not exist")


def test_bad_executor_is_a_one_line_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    proc = artpipe("run", str(manifest), "--library", str(tmp_path), "--executor", "gpu")
    assert_one_line_error(proc, "--executor", "gpu")


def test_bad_option_value_exits_2(tmp_path: Path) -> None:
    proc = artpipe("run", "m.jsonl", "--library", str(tmp_path), "--concurrency", "zero")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_unwritable_database_is_a_one_line_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = artpipe("run", str(manifest), "--library", str(tmp_path), "--db",
                   str(blocker / "sub" / "a.db"))
    assert_one_line_error(proc, "database")


def test_empty_manifest_exits_0(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n")
    proc = artpipe("run", str(manifest), "--library", str(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr


def test_help_explains_itself() -> None:
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    for option in ("--library", "--concurrency", "--per-host", "--executor", "--originals",
                   "--refresh", "--report", "--metrics", "--trace", "--quiet", "--shard-size",
                   "--shard-retries", "Exit code"):
        assert option in result.output


def test_probe_prints_format_and_size(tmp_path: Path) -> None:
    from tests.support.server import make_image

    img = tmp_path / "a.jpg"
    img.write_bytes(make_image(64, 48))
    junk = tmp_path / "b.jpg"
    junk.write_text("<!DOCTYPE html>")
    proc = artpipe("probe", str(img), str(junk))
    assert f"{img}: jpeg 64x48" in proc.stdout
    assert str(junk) in proc.stderr and "Traceback" not in proc.stderr
    assert proc.returncode == 1


def test_demo_runs_offline_twice(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    proc = artpipe("demo", str(target))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "saved" in proc.stdout and "trace" in proc.stdout
    files = [p for p in target.rglob("*") if p.is_file() and ".artpipe" not in p.parts]
    names = {p.name for p in files}
    for expected in ("Alien (1979)-poster.jpg", "Alien (1979)-fanart1.jpg",
                     "Alien (1979)-clearlogo.png", "season01-poster.jpg",
                     "season-specials-poster.jpg", "season-all-poster.jpg",
                     "Orbit Station S01E01-thumb.jpg", "characterart.png"):
        assert expected in names, sorted(names)
    rows = [json.loads(r) for r in (target / ".artpipe" / "report.jsonl").read_text().splitlines()]
    assert rows and all(r["status"] == "saved" for r in rows)
    metrics = json.loads((target / ".artpipe" / "metrics.json").read_text())
    assert metrics["counters"].get("http.requests_in_save", 0) == 0

    again = artpipe("demo", str(target), "--quiet")
    assert again.returncode == 0
    rows = [json.loads(r) for r in (target / ".artpipe" / "report.jsonl").read_text().splitlines()]
    assert {r["status"] for r in rows} == {"unchanged"}
    metrics = json.loads((target / ".artpipe" / "metrics.json").read_text())
    assert metrics["counters"].get("http.requests", 0) == 0


@pytest.mark.parametrize("line", ['{"id": 1}', "[]", "not json"])
def test_bad_manifest_line_exits_1_with_line_number(tmp_path: Path, line: str) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n" + line + "\n")
    report = tmp_path / "r.jsonl"
    proc = artpipe("run", str(manifest), "--library", str(tmp_path), "--report", str(report))
    assert proc.returncode == 1, proc.stderr
    assert "line 2" in report.read_text()


def test_unwritable_report_is_a_one_line_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    proc = artpipe("run", str(manifest), "--library", str(tmp_path), "--report",
                   "/proc/artpipe-report.jsonl")
    assert_one_line_error(proc, "report")


def test_the_run_loop_is_uvloop_when_installed_else_asyncio(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import types

    from artpipe import cli

    async def loop_type() -> type:
        return type(asyncio.get_running_loop())

    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed: import fails
    assert cli._loop_factory() is None
    assert issubclass(cli._run_loop(loop_type()), asyncio.BaseEventLoop)

    made: list[asyncio.AbstractEventLoop] = []

    def new_event_loop() -> asyncio.AbstractEventLoop:
        made.append(asyncio.new_event_loop())
        return made[-1]

    fake = types.ModuleType("uvloop")
    fake.new_event_loop = new_event_loop  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvloop", fake)
    cli._run_loop(loop_type())
    assert len(made) == 1 and made[0].is_closed()


def test_the_cli_starts_without_loading_the_http_client_or_the_engine() -> None:
    # `artpipe --help`, `artpipe probe` and a usage error must not wait for aiohttp and the
    # engine (a quarter of a second and more): they load on the first run.
    code = ("import sys, artpipe.cli, artpipe.pipeline.options, artpipe.fetch.limits\n"
            "loaded = [m for m in ('aiohttp', 'artpipe.pipeline.runner', 'artpipe.fetch.client',"
            " 'artpipe.pipeline.driver') if m in sys.modules]\n"
            "assert not loaded, loaded\n"
            "from artpipe.fetch import Fetcher\n"
            "from artpipe.pipeline import RunReport, cluster\n"
            "assert 'aiohttp' in sys.modules and cluster.__name__ == 'artpipe.pipeline.cluster'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
