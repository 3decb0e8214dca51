"""The SQLite store: rows model the files on disk, across reopen and failure.

A RuleBasedStateMachine drives random saves, failures, removals, batches
that roll back, and reopens, checking after every step that the store equals
a plain-dict model: one row per slot, a failure never forgets the file that
is still on disk (its url, size and mtime), a rolled-back batch leaves
nothing behind.
"""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
from pathlib import Path

import pytest
from artpipe.store import (
    SCHEMA_VERSION,
    ArtworkRow,
    ItemRow,
    Store,
    StoreError,
    default_db_path,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

SLOTS = st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["poster", "extrafanart"]),
                  st.integers(0, 2))


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.db = Path(self.tmp.name) / "s.db"
        self.store = Store(self.db)
        self.model: dict[tuple[str, str, int], dict[str, object]] = {}

    def teardown(self) -> None:
        self.store.close()
        self.tmp.cleanup()

    @rule(slot=SLOTS, url=st.sampled_from(["http://x/1", "http://x/2"]),
          size=st.integers(1, 10_000), mtime=st.integers(0, 2**62))
    def save(self, slot: tuple[str, str, int], url: str, size: int, mtime: int) -> None:
        item, art, index = slot
        with self.store.batch():
            self.store.upsert_item(ItemRow(item, "movie", None, item))
            self.store.upsert_artwork(ArtworkRow(item, art, index, url, f"/{item}/{art}{index}",
                                                 bytes=size, sha256=f"h{size}", mtime_ns=mtime))
        self.model[slot] = {"url": url, "bytes": size, "mtime_ns": mtime, "status": "saved",
                            "error": None}

    @rule(slot=SLOTS, mtime=st.integers(0, 2**62))
    def touched(self, slot: tuple[str, str, int], mtime: int) -> None:
        """A kept file proved (by hash) to be artpipe's gets its new mtime recorded."""
        with self.store.batch():
            self.store.update_mtime(*slot, mtime)
        if slot in self.model:
            self.model[slot] = {**self.model[slot], "mtime_ns": mtime}

    @rule(slot=SLOTS, error=st.text(min_size=1, max_size=20))
    def fail(self, slot: tuple[str, str, int], error: str) -> None:
        item, art, index = slot
        with self.store.batch():
            self.store.mark_failed(item, art, index, f"/{item}/{art}{index}", error)
        old = self.model.get(slot, {"url": None, "bytes": None, "mtime_ns": None})
        self.model[slot] = {**old, "status": "failed", "error": error}

    @rule(slot=SLOTS)
    def remove(self, slot: tuple[str, str, int]) -> None:
        with self.store.batch():
            self.store.delete_artwork(*slot)
        self.model.pop(slot, None)

    @rule(slot=SLOTS)
    def rolled_back_batch(self, slot: tuple[str, str, int]) -> None:
        item, art, index = slot
        with pytest.raises(RuntimeError), self.store.batch():
            self.store.upsert_artwork(ArtworkRow(item, art, index, "http://x/9", "/p"))
            raise RuntimeError("crash mid-batch")

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = Store(self.db)

    @invariant()
    def store_equals_model(self) -> None:
        rows = {(r.item, r.art, r.index): r for r in self.store.all_artwork()}
        assert set(rows) == set(self.model)
        for key, want in self.model.items():
            row = rows[key]
            assert row.url == want["url"]
            assert row.bytes == want["bytes"]
            assert row.mtime_ns == want["mtime_ns"]
            assert row.status == want["status"]
            assert row.error == want["error"]

    @invariant()
    def rows_read_together_equal_rows_read_alone(self) -> None:
        items = ["a", "b", "none"]
        together = self.store.artwork_for_many(items)
        assert together == {item: self.store.artwork_for(item) for item in items}
        assert together["none"] == {}
        assert {(i, a, n) for i, rows in together.items() for a, n in rows} == set(self.model)


TestStoreMachine = StoreMachine.TestCase
# each step commits to SQLite; 40 sequences of 30 steps cover every rule pairing
TestStoreMachine.settings = settings(max_examples=40, stateful_step_count=30)


def test_wal_mode_and_default_path(tmp_path: Path) -> None:
    assert default_db_path(tmp_path) == tmp_path / ".artpipe" / "artpipe.db"
    with Store(default_db_path(tmp_path)):
        pass
    db = sqlite3.connect(default_db_path(tmp_path))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_unopenable_database_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the artpipe database"):
        Store(blocker / "x.db")


def test_locked_database_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with Store(db) as first:
        other = sqlite3.connect(db, isolation_level=None, timeout=0.1)
        other.execute("BEGIN IMMEDIATE")
        first._db.execute("PRAGMA busy_timeout=100")
        with pytest.raises(StoreError, match="locked"), first.batch():
            pass
        other.execute("ROLLBACK")
        other.close()


def test_validators_update_keeps_the_rest(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        store.upsert_artwork(ArtworkRow("i", "poster", 0, "http://u", "/p", sha256="h",
                                        etag='"1"'))
        store.update_validators("i", "poster", 0, '"2"', None)
        row = store.artwork_for("i")[("poster", 0)]
        assert (row.etag, row.sha256, row.url) == ('"2"', "h", "http://u")


def test_a_database_from_before_mtimes_is_upgraded_in_place(tmp_path: Path) -> None:
    """Schema 1 had no mtime_ns: its rows stay, with an unknown mtime until checked."""
    db = tmp_path / "s.db"
    old = sqlite3.connect(db)
    old.executescript(
        """CREATE TABLE items (id TEXT PRIMARY KEY, type TEXT NOT NULL, title TEXT,
                               path TEXT NOT NULL, updated_at REAL NOT NULL);
           CREATE TABLE artwork (item TEXT NOT NULL, art TEXT NOT NULL, "index" INTEGER NOT NULL,
               url TEXT, path TEXT NOT NULL, width INTEGER, height INTEGER, bytes INTEGER,
               sha256 TEXT, etag TEXT, last_modified TEXT, status TEXT NOT NULL, error TEXT,
               updated_at REAL NOT NULL, PRIMARY KEY (item, art, "index"));
           INSERT INTO artwork VALUES ('i', 'poster', 0, 'http://u', '/p', 10, 20, 300, 'h',
                                       NULL, NULL, 'saved', NULL, 1.0);
           PRAGMA user_version=1;"""
    )
    old.close()
    for _ in range(2):  # opening an upgraded database again changes nothing
        with Store(db) as store:
            row = store.artwork_for("i")[("poster", 0)]
            assert (row.url, row.bytes, row.sha256) == ("http://u", 300, "h")
    with Store(db) as store:
        assert row.mtime_ns is None
        store.update_mtime("i", "poster", 0, 123)
        row = store.artwork_for("i")[("poster", 0)]
        assert (row.bytes, row.mtime_ns, row.sha256, row.url) == (300, 123, "h", "http://u")
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    check.close()


@given(ids=st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=30),
       cuts=st.lists(st.integers(0, 30), max_size=4))
@settings(max_examples=60)
def test_first_lines_name_the_first_line_of_each_id_however_they_are_chunked(
    ids: list[str], cuts: list[int]
) -> None:
    # The driver checks manifest lines a chunk at a time: the answer for each line must
    # not depend on where the chunks end (a repeat inside one chunk, or across two).
    given_lines = [(item_id, line, f"/{item_id}/{line}") for line, item_id in
                   enumerate(ids, start=1)]
    first_seen: dict[str, tuple[int, str]] = {}
    want = []
    for item_id, line, path in given_lines:
        want.append(first_seen.get(item_id))
        first_seen.setdefault(item_id, (line, path))
    bounds = [0, *sorted(c for c in cuts if c < len(ids)), len(ids)]
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "s.db") as store:
        got = []
        for start, end in itertools.pairwise(bounds):
            got += store.first_lines_of(given_lines[start:end])
        assert got == want
        assert store.first_line_of("a", 99, "/late") == first_seen.get("a")
