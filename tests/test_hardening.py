"""Hardening: one hostile input, file or fault fails at most its slot or line.

Each test reproduces one attack from issue 15 against the real engine (a
loopback server, generated files) and checks the rule it broke: the run goes
on, the other items are saved, and the bad one becomes one clear failed row.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from artpipe import pipeline
from artpipe.cli import safe
from artpipe.errors import ArtpipeError
from artpipe.store import Store, default_db_path

from tests.support.server import ImageServer, Redirect, Stall, ThreadedImageServer

BAD_HOSTS = ("http://xn--zz-/x.jpg", "http://a..b/x.jpg")


def write_manifest(path: Path, lines: list[str | dict[str, Any]]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines), encoding="utf-8")
    return path


def report_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def movie(item_id: str, art: dict[str, Any]) -> dict[str, Any]:
    return {"id": item_id, "type": "movie", "path": f"{item_id}/{item_id}.mkv", "art": art}


# -- class 1: whole-run crashes from one input ---------------------------------------------


async def test_host_idna_cannot_encode_fails_only_its_slot(srv: ImageServer,
                                                           tmp_path: Path) -> None:
    """A redirect to, or a manifest URL with, a host IDNA cannot encode fails one slot."""
    for n, bad in enumerate(BAD_HOSTS):
        srv.script(f"/r{n}.jpg", then=Redirect(bad))
    library = tmp_path / "lib"
    library.mkdir()
    manifest = write_manifest(tmp_path / "m.jsonl", [
        movie("a", {"poster": srv.url("/r0.jpg"), "fanart": srv.url("/ok.jpg")}),
        movie("b", {"poster": srv.url("/r1.jpg"), "banner": BAD_HOSTS[0]}),
        movie("c", {"poster": BAD_HOSTS[1]}),
    ])
    report = await pipeline.run(manifest, library, report=tmp_path / "r.jsonl")
    assert report.summary()["saved"] == 1
    assert report.summary()["failed"] == 4
    failed = [r for r in report_rows(tmp_path / "r.jsonl") if r["status"] == "failed"]
    assert all("cannot be encoded" in r["error"] for r in failed), failed
    assert (library / "a" / "a-fanart.jpg").is_file()


async def test_poisoned_manifest_lines_fail_only_their_line(srv: ImageServer,
                                                            tmp_path: Path) -> None:
    """Lone surrogates, deep nesting and huge integers fail their line, and never roll
    back the store rows of the good items in the same batch."""
    ok = [movie(f"ok{n}", {"poster": srv.url(f"/ok{n}.jpg")}) for n in range(3)]
    poison = [
        '{"id": "s\\ud800", "type": "movie", "path": "S/s.mkv"}',
        '{"id": "t", "type": "movie", "title": "x\\udfff", "path": "T/t.mkv"}',
        '{"id": "u", "type": "movie", "path": "U\\ud800/u.mkv"}',
        '{"id": "n", "type": "movie", "path": "N/n.mkv", "year": ' + "9" * 5000 + "}",
        '{"id": "d", "type": "movie", "path": "D/d.mkv", "x": ' + "[" * 50_000
        + "]" * 50_000 + "}",
        '{"id": "e", "type": "movie", "path": "E/e.mkv", "title": ' + "[" * 900
        + "]" * 900 + "}",
    ]
    slot_poison = [
        '{"id": "v", "type": "movie", "path": "V/v.mkv", "art": {"poster": '
        '"http://h.example/\\ud800.jpg"}}',
        '{"id": "w", "type": "movie", "path": "W/w.mkv", "art": {"\\ud800": '
        '"http://h.example/x.jpg"}}',
    ]
    library = tmp_path / "lib"
    library.mkdir()
    manifest = write_manifest(tmp_path / "m.jsonl",
                              [ok[0], *poison, ok[1], *slot_poison, ok[2]])
    report = await pipeline.run(manifest, library, report=tmp_path / "r.jsonl")
    assert report.stats.bad_lines == len(poison)
    assert report.summary()["saved"] == 3
    assert report.summary()["failed"] == 2
    rows = report_rows(tmp_path / "r.jsonl")
    assert len(rows) == 3 + len(poison) + 2
    with Store(default_db_path(library)) as store:
        ids = {row.id for row in store.items()}
    assert {"ok0", "ok1", "ok2", "v", "w"} <= ids


async def test_corrupt_store_is_set_aside_and_the_run_goes_on(
        srv: ImageServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A corrupt artpipe.db is kept under another name, a fresh one started, and said so."""
    library = tmp_path / "lib"
    library.mkdir()
    manifest = write_manifest(tmp_path / "m.jsonl", [movie("a", {"poster": srv.url("/a.jpg")})])
    await pipeline.run(manifest, library)
    db = default_db_path(library)
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    db.write_bytes(b"not a database " * 100)
    with caplog.at_level(logging.WARNING, logger="artpipe"):
        report = await pipeline.run(manifest, library)
    assert report.exit_code == 0
    aside = [p for p in db.parent.iterdir() if p.name.startswith("artpipe.db.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a database")
    assert "is corrupt" in caplog.text and aside[0].name in caplog.text
    with Store(db) as store:
        assert [row.item for row in store.all_artwork()] == ["a"]


async def test_corrupt_cache_index_is_rebuilt(
        srv: ImageServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The cache is only a cache: a corrupt index empties it, with a warning, not a refusal."""
    library = tmp_path / "lib"
    library.mkdir()
    manifest = write_manifest(tmp_path / "m.jsonl", [movie("a", {"poster": srv.url("/a.jpg")})])
    await pipeline.run(manifest, library)
    index = library / ".artpipe" / "cache" / "index.sqlite"
    for extra in ("-wal", "-shm"):
        Path(f"{index}{extra}").unlink(missing_ok=True)
    index.write_bytes(b"\0garbage" * 512)
    (library / "a" / "a-poster.jpg").unlink()
    with caplog.at_level(logging.WARNING, logger="artpipe"):
        report = await pipeline.run(manifest, library)
    assert report.summary()["saved"] == 1
    assert "cache index" in caplog.text and "corrupt" in caplog.text


# -- class 6: items that collide ------------------------------------------------------------


def test_numbered_files_artpipe_never_wrote_are_not_surplus(tmp_path: Path) -> None:
    """A hand-placed fanart5.jpg, or one numbered past any integer column, is left alone
    when the list shrinks: only files the store recorded are removed as surplus."""
    from artpipe.manifest import parse_item
    from artpipe.models import ArtType
    from artpipe.plan import Recorded, Remove, plan_item

    from tests.test_plan import World

    world = World(tmp_path / "lib")
    folder = world.library / "Movies" / "A"
    folder.mkdir(parents=True)
    for name in ("A-fanart2.jpg", "A-fanart5.jpg", "A-fanart99999999999999999999.jpg"):
        (folder / name).write_bytes(b"placed by hand")
    world.records[("a", ArtType.EXTRAFANART, 2)] = Recorded("https://img.example/2.jpg")
    line = {"id": "a", "type": "movie", "path": "Movies/A/A.mkv",
            "art": {"extrafanart": ["https://img.example/1.jpg"]}}
    plan = plan_item(parse_item(line), world.library, world)
    assert [p.slot.index for p in plan.slots if isinstance(p.source, Remove)] == [2]
    assert plan.errors == ()


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "artpipe", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_markup_and_control_characters_from_a_manifest_are_escaped(tmp_path: Path) -> None:
    """An art key with rich markup crashed the summary; an ESC reached the terminal raw."""
    library = tmp_path / "lib"
    library.mkdir()
    manifest = write_manifest(tmp_path / "m.jsonl", [
        movie("a", {"[/bold][bold red]poster\x1b]0;pwned\x07": "http://h.example/p.jpg"}),
        {"id": "\x1b[2J\x1b[31mb", "type": "bogus", "path": "B/b.mkv"},
    ])
    proc = run_cli("run", manifest, "--library", library, "--no-html")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "MarkupError" not in proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr
    assert "[/bold][bold red]poster" in proc.stdout  # shown as written, not as styling
    assert safe("[/]\x1b[2J\x9b") == "\\[/]\\x1b[2J\\x9b"  # "[2J" is no tag: left as is


# -- class 7: worker and signal faults ------------------------------------------------------


@pytest.mark.parametrize("output", ["--report", "--metrics", "--trace", "--html"])
def test_an_output_aliasing_the_manifest_is_refused_before_any_write(
        tmp_path: Path, output: str) -> None:
    """``--report manifest.jsonl`` truncated the manifest before its first line was read."""
    library = tmp_path / "lib"
    library.mkdir()
    manifest = write_manifest(tmp_path / "m.jsonl", [movie("a", {})])
    before = manifest.read_bytes()
    alias = tmp_path / "alias.jsonl"
    alias.symlink_to(manifest)
    proc = run_cli("run", manifest, "--library", library, output, alias)
    assert proc.returncode == 2
    assert "same file as the manifest" in proc.stderr, proc.stderr
    assert manifest.read_bytes() == before
    assert not (library / ".artpipe").exists()  # nothing was created either


async def test_outputs_on_each_other_or_the_database_are_refused(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    manifest = write_manifest(tmp_path / "m.jsonl", [movie("a", {})])
    out = tmp_path / "out.json"
    with pytest.raises(ArtpipeError, match=r"--trace .* is the same file as --metrics"):
        await pipeline.run(manifest, library, metrics=out, trace=out)
    db = tmp_path / "db.sqlite"
    with pytest.raises(ArtpipeError, match=r"--report .* is the same file as --db"):
        await pipeline.run(manifest, library, db=db, report=db)
    assert not db.exists() and not out.exists()


async def test_a_killed_render_worker_fails_only_the_slots_it_held(srv: ImageServer,
                                                                  tmp_path: Path) -> None:
    """``--executor process``: SIGKILL the render workers mid-run; the pool restarts, the
    run ends normally (no BrokenProcessPool), and a rerun completes what was lost."""
    library = tmp_path / "lib"
    library.mkdir()
    manifest = write_manifest(tmp_path / "m.jsonl", [
        movie(f"m{n}", {"poster": srv.url(f"/p{n}.jpg")}) for n in range(6)])
    killed: list[int] = []

    def kill_workers(stats: Any, outcome: Any) -> None:
        if outcome is not None and not killed:
            for child in multiprocessing.active_children():
                if child.pid is not None:
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child.pid)

    report = await pipeline.run(manifest, library, executor="process", workers=1,
                                item_workers=1, progress=kill_workers)
    assert killed
    summary = report.summary()
    assert summary["saved"] + summary["failed"] == 6 and summary["saved"] >= 1
    rows = report_rows_of(library)
    assert all("render worker failed" in r["error"] for r in rows if r["status"] == "failed")
    again = await pipeline.run(manifest, library, executor="process", workers=1)
    assert again.exit_code == 0
    assert again.summary()["saved"] == summary["failed"]


def report_rows_of(library: Path) -> list[dict[str, Any]]:
    with Store(default_db_path(library)) as store:
        return [{"status": r.status, "error": r.error} for r in store.all_artwork()]


def test_sigterm_stops_cleanly_and_keeps_the_store_rows(tmp_path: Path) -> None:
    """SIGTERM (systemd, docker stop) gets Ctrl-C's shutdown: the rows of the files
    already written are recorded, and the exit says so (128 + 15)."""
    library = tmp_path / "lib"
    library.mkdir()
    with ThreadedImageServer() as srv:
        srv.add_image("/a.jpg")
        srv.add_image("/b.jpg")
        srv.script("/b.jpg", then=Stall(seconds=3600))
        manifest = write_manifest(tmp_path / "m.jsonl", [
            movie("a", {"poster": srv.url("/a.jpg")}),
            movie("b", {"poster": srv.url("/b.jpg")}),
        ])
        proc = subprocess.Popen(
            [sys.executable, "-m", "artpipe", "run", str(manifest), "--library",
             str(library), "--no-html"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # the first progress line comes with item a's outcome
                if "saved 1" in line:
                    break
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated" in err and "Traceback" not in err
    with Store(default_db_path(library)) as store:
        saved = {(r.item, r.status) for r in store.all_artwork()}
    assert ("a", "saved") in saved
    assert (library / "a" / "a-poster.jpg").is_file()


# -- class 4: secrets at rest ---------------------------------------------------------------


def test_url_secrets_are_never_written_or_shown(tmp_path: Path) -> None:
    """``api_key=``, ``token=`` and ``user:password@`` appear in no file artpipe writes (report,
    store, cache index, metrics, trace, page) nor on the terminal; a rerun still knows the
    files it wrote and makes no request."""
    library = tmp_path / "lib"
    library.mkdir()
    secrets = ("SEKRIT-api", "SEKRIT-token", "SEKRIT-password", "SEKRIT-custom")
    with ThreadedImageServer() as srv:
        srv.add_image("/p.jpg")
        srv.add_image("/f.jpg")
        base = srv.url("/")
        poster = srv.url("/p.jpg") + f"?size=w500&api_key={secrets[0]}"
        fanart = base.replace("://", f"://user:{secrets[2]}@") + "f.jpg"
        missing = srv.url("/gone.png") + f"?token={secrets[1]}&ticket={secrets[3]}"
        manifest = write_manifest(tmp_path / "m.jsonl", [
            movie("a", {"poster": poster, "fanart": fanart, "clearlogo": missing})])
        argv = ("run", manifest, "--library", library, "--secret-param", "Ticket")
        first = run_cli(*argv)
        assert first.returncode == 1, first.stderr
        hits = srv.hits()
        second = run_cli(*argv)
        assert second.returncode == 1, second.stderr
        assert srv.hits() - hits == 1  # only the failed slot is asked for again
    written = [p for p in library.rglob("*") if p.is_file() and not p.suffix == ".jpg"]
    names = {p.name for p in written}
    assert {"artpipe.db", "index.sqlite", "report.jsonl", "metrics.json", "trace.json",
            "report.html"} <= names, names
    for path in written:
        data = path.read_bytes()
        assert not any(s.encode() in data for s in secrets), path
    for proc in (first, second):
        assert not any(s in proc.stdout + proc.stderr for s in secrets)
    rows = report_rows(library / ".artpipe" / "report.jsonl")
    by_art = {r["art"]: r for r in rows}
    assert by_art["poster"]["url"].endswith("?size=w500&api_key=REDACTED")
    assert "REDACTED@" in by_art["fanart"]["url"]
    assert "token=REDACTED&ticket=REDACTED" in by_art["clearlogo"]["error"]


def test_a_redacted_url_still_matches_its_clear_form_and_nothing_else() -> None:
    from artpipe.redact import matches, redact_text, redact_url

    url = "https://u:pw@img.example/p.jpg?size=w500&API_KEY=abc&sig=x%3D&n=1#frag"
    shown = redact_url(url)
    assert shown == ("https://REDACTED@img.example/p.jpg?size=w500&API_KEY=REDACTED&"
                     "sig=REDACTED&n=1#frag")
    assert matches(shown, url)
    assert matches(shown, url.replace("abc", "rotated"))  # a rotated key: the same image
    assert not matches(shown, url.replace("w500", "w300"))
    assert redact_url("https://img.example/p.jpg?id=3") == "https://img.example/p.jpg?id=3"
    assert redact_url("https://img.example/p.jpg?ticket=1", {"ticket"}).endswith("=REDACTED")
    assert redact_text("failed: http://a:b@h/x?token=t; retry") == (
        "failed: http://REDACTED@h/x?token=REDACTED; retry")


async def test_a_repeated_id_is_refused_so_two_paths_do_not_fight(srv: ImageServer,
                                                                  tmp_path: Path) -> None:
    """Two lines with one id and two paths rewrote each other's art on every run: the
    first line wins, the later one is a bad line naming the first, and a rerun is quiet."""
    library = tmp_path / "lib"
    library.mkdir()
    first = {"id": "a", "type": "movie", "path": "A/a.mkv",
             "art": {"poster": srv.url("/1.jpg")}}
    again = {"id": "a", "type": "movie", "path": "B/b.mkv",
             "art": {"poster": srv.url("/2.jpg")}}
    manifest = write_manifest(tmp_path / "m.jsonl", [first, again])
    report = await pipeline.run(manifest, library, report=tmp_path / "r.jsonl")
    assert (report.summary()["saved"], report.stats.bad_lines) == (1, 1)
    bad = [r for r in report_rows(tmp_path / "r.jsonl") if r["art"] is None]
    assert "line 2" in bad[0]["error"] and "already given by line 1" in bad[0]["error"]
    assert (library / "A" / "a-poster.jpg").is_file()
    assert not (library / "B").exists()
    hits = srv.hits()
    rerun = await pipeline.run(manifest, library)
    assert (rerun.summary()["unchanged"], rerun.summary()["saved"]) == (1, 0)
    assert srv.hits() == hits


async def test_colliding_targets_go_to_the_first_item_in_manifest_order(tmp_path: Path) -> None:
    """Two video files of one movie in one folder name the same poster: whichever item is
    planned first, the first line keeps the file and the other slot fails naming both."""
    import asyncio

    from artpipe.manifest import parse_item
    from artpipe.pipeline.claims import Claims
    from artpipe.plan import plan_item

    from tests.test_plan import World

    world = World(tmp_path / "lib")
    (world.library / "M").mkdir(parents=True)
    lines = [{"id": f"m{n}", "type": "movie", "title": f"M{n}", "path": f"M/M.{ext}",
              "art": {"poster": f"https://img.example/{n}.jpg",
                      "extrafanart": [f"https://img.example/{n}e.jpg"]}}
             for n, ext in enumerate(("mkv", "avi"))]
    items = [parse_item(line, n + 1) for n, line in enumerate(lines)]
    plans = [plan_item(item, world.library, world) for item in items]
    claims = Claims()
    tickets = [claims.ticket() for _ in items]
    # the second item is ready first: it must wait for the first one's turn
    later = asyncio.ensure_future(claims.claim(tickets[1], items[1], plans[1]))
    await asyncio.sleep(0)
    assert not later.done()
    kept, lost = await claims.claim(tickets[0], items[0], plans[0])
    assert (len(kept.slots), lost) == (2, [])
    kept, lost = await later
    assert kept.slots == ()
    assert [(x.slot.art.value, x.target.name) for x in lost] == [
        ("poster", "M-poster.jpg"), ("extrafanart", "M-fanart1.jpg")]
    assert all('"M0"' in x.error and "line 1" in x.error and "first in the manifest" in x.error
               for x in lost)
    # a ticket given up (an item that failed before claiming) does not hold the line
    stuck = claims.ticket()
    after = claims.ticket()
    claims.done(stuck)
    kept, lost = await claims.claim(after, items[1], plans[1])  # its turn came: no hang
    assert kept.slots == () and len(lost) == 2


async def test_two_items_on_one_file_do_not_fight_across_runs(srv: ImageServer,
                                                              tmp_path: Path) -> None:
    """End to end: the first line keeps the poster, the second fails naming it, and a
    rerun neither downloads nor rewrites anything."""
    library = tmp_path / "lib"
    (library / "M").mkdir(parents=True)
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"id": f"m{n}", "type": "movie", "title": f"M{n}", "path": f"M/M.{ext}",
         "art": {"poster": srv.url(f"/{n}.jpg"), "extrafanart": [srv.url(f"/{n}e.jpg")]}}
        for n, ext in enumerate(("mkv", "avi"))])
    report = await pipeline.run(manifest, library, report=tmp_path / "r.jsonl")
    assert (report.summary()["saved"], report.summary()["failed"]) == (2, 2)
    failed = [r for r in report_rows(tmp_path / "r.jsonl") if r["status"] == "failed"]
    assert {r["item"] for r in failed} == {"m1"}
    assert all('"M0"' in r["error"] and "first in the manifest" in r["error"] for r in failed)
    with Store(default_db_path(library)) as store:
        owners = {(r.item, r.art): r.url for r in store.all_artwork() if r.status == "saved"}
    assert owners == {("m0", "poster"): srv.url("/0.jpg"),
                      ("m0", "extrafanart"): srv.url("/0e.jpg")}
    stamps = {p: p.stat().st_mtime_ns for p in (library / "M").iterdir()}
    hits = srv.hits()
    rerun = await pipeline.run(manifest, library)
    assert (rerun.summary()["unchanged"], rerun.summary()["saved"]) == (2, 0)
    assert srv.hits() == hits
    assert {p: p.stat().st_mtime_ns for p in (library / "M").iterdir()} == stamps
