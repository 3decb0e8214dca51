"""The SQLite store: what artpipe has written, so a rerun knows what it has.

The only module that imports sqlite3 for the library's records (the download
cache keeps its own small index). One writer — the driver process — in WAL
mode, one transaction per batch of items: a crash loses at most the last
batch of *records*, and the files those records describe were written
atomically before the record, so a lost record only costs a re-download,
never a wrong file.

A row describes the file that is on disk (``url`` is where that file came
from). A failed slot updates ``status``/``error`` but keeps the old file's
``url`` and ``sha256``: the old file is still there, untouched. ``bytes`` and
``mtime_ns`` are the file's stat right after artpipe wrote it, so the next run
can tell with one stat whether someone changed the file since, and hashes it
only when the stat disagrees (docs/changed-files.md).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artpipe.errors import StoreError
from artpipe.redact import redact_text, redact_url

SCHEMA_VERSION = 3  # 3: URLs are stored with their secrets redacted (artpipe.redact)
log = logging.getLogger("artpipe")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    title       TEXT,
    path        TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS artwork (
    item          TEXT NOT NULL,
    art           TEXT NOT NULL,
    "index"       INTEGER NOT NULL,
    url           TEXT,
    path          TEXT NOT NULL,
    width         INTEGER,
    height        INTEGER,
    bytes         INTEGER,
    sha256        TEXT,
    etag          TEXT,
    last_modified TEXT,
    status        TEXT NOT NULL,
    error         TEXT,
    updated_at    REAL NOT NULL,
    mtime_ns      INTEGER,
    refused_url   TEXT,
    PRIMARY KEY (item, art, "index")
);
"""
# Columns added since schema 1, for databases created before them: (name, type).
_ADDED_COLUMNS = (("mtime_ns", "INTEGER"), ("refused_url", "TEXT"))

_COLUMNS = (
    "item", "art", "index", "url", "path", "width", "height", "bytes", "sha256",
    "etag", "last_modified", "status", "error", "updated_at", "mtime_ns", "refused_url",
)
_COLUMN_LIST = ", ".join(f'"{c}"' for c in _COLUMNS)
_UPSERT_ARTWORK = (
    f"INSERT INTO artwork ({_COLUMN_LIST}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
    'ON CONFLICT(item, art, "index") DO UPDATE SET '
    + ", ".join(f'"{c}"=excluded."{c}"' for c in _COLUMNS[3:]))
_UPDATED_AT = _COLUMNS.index("updated_at")
_UPSERT_ITEM = (
    "INSERT INTO items (id, type, title, path, updated_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET type=excluded.type, title=excluded.title, "
    "path=excluded.path, updated_at=excluded.updated_at")
# Ids per IN (...) query: well under SQLite's host-parameter limit (999 before 3.32).
_IDS_PER_QUERY = 500


@dataclass(frozen=True, slots=True)
class ArtworkRow:
    """One artwork slot as recorded: the file on disk and where it came from."""

    item: str
    art: str
    index: int
    url: str | None
    path: str
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    status: str = "saved"
    error: str | None = None
    updated_at: float = 0.0
    mtime_ns: int | None = None
    # a failed slot whose image a work limit refused (pixels, JPEG scans): the URL it was
    # refused for, so the next run fails it again without a download (plan.Refused)
    refused_url: str | None = None


@dataclass(frozen=True, slots=True)
class ItemRow:
    id: str
    type: str
    title: str | None
    path: str


class Store:
    """Items and artwork rows; open once per run, in the driver."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.set_aside: Path | None = None  # where a corrupt database was moved, if one was
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc):
                    raise
                self.set_aside = self._set_aside(exc)
                self._db = self._open()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(
                f"cannot open the artpipe database {self.path}: {exc}; "
                "check the folder is writable, or pass --db to put it elsewhere"
            ) from exc
        self._in_tx = False
        self._run_ids = False

    def _open(self) -> sqlite3.Connection:
        db = open_database(self.path, _SCHEMA, timeout=10.0)
        try:
            self._db = db
            self._migrate()
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self, exc: sqlite3.DatabaseError) -> Path:
        """Keep a corrupt database (it may be recoverable by hand) and start a fresh one.

        The records are only what artpipe wrote; without them the next run
        compares nothing, downloads each image once more and rewrites it —
        the library files themselves are untouched.
        """
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(self.path, aside)
        for extra in ("-wal", "-shm"):
            try:
                os.replace(f"{self.path}{extra}", f"{aside}{extra}")
            except FileNotFoundError:
                pass
        log.warning(
            "warning: the artpipe database %s is corrupt (%s); it was moved to %s and a new "
            "one started, so this run downloads each image once more and rewrites its file",
            self.path, exc, aside)
        return aside

    def _migrate(self) -> None:
        """Add the columns a database from an older artpipe lacks. Its rows hold NULL
        there: a NULL mtime costs one hash of that file on the next run, then it is set."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(artwork)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE artwork ADD COLUMN {name} {kind}")
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version < 3:
            self._redact_rows()

    def _redact_rows(self) -> None:
        """Rows from before schema 3 may hold ``api_key=…`` or ``user:pass@`` in clear.

        Rewritten once, redacted the way new rows are; the plan still matches
        them with the manifest's URL (``redact.matches``), so nothing is
        downloaded again for it.
        """
        rows = self._db.execute(
            "SELECT item, art, \"index\", url, error FROM artwork "
            "WHERE url LIKE '%@%' OR url LIKE '%=%' OR error LIKE '%://%'").fetchall()
        for item, art, index, url, error in rows:
            clean_url = redact_url(url) if url else url
            clean_error = redact_text(error) if error else error
            if (clean_url, clean_error) != (url, error):
                self._db.execute(
                    'UPDATE artwork SET url=?, error=? WHERE item=? AND art=? AND "index"=?',
                    (clean_url, clean_error, item, art, index))

    # -- lifecycle ------------------------------------------------------
    def close(self) -> None:
        if self._in_tx:
            self._db.execute("COMMIT")
            self._in_tx = False
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for a batch of items: all of it lands or none."""
        if self._in_tx:
            yield
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(
                f"the artpipe database {self.path} is locked by another process ({exc}); "
                "wait for the other artpipe run to finish"
            ) from exc
        self._in_tx = True
        try:
            yield
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(
                f"cannot write the artpipe database {self.path}: {exc}; the images already "
                "written are complete — free disk space or fix permissions and run again"
            ) from exc
        except BaseException:
            self._rollback()
            raise
        finally:
            self._in_tx = False

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:  # already rolled back by SQLite (disk full, I/O error)
            return

    # -- writes (driver only) -------------------------------------------
    def upsert_item(self, row: ItemRow) -> None:
        self.upsert_items([row])

    def upsert_items(self, rows: list[ItemRow]) -> None:
        now = time.time()
        self._db.executemany(_UPSERT_ITEM, [(r.id, r.type, r.title, r.path, now) for r in rows])

    def upsert_artwork(self, row: ArtworkRow) -> None:
        self.upsert_artworks([row])

    def upsert_artworks(self, rows: list[ArtworkRow]) -> None:
        """Many rows in one statement: a batch of items costs one call into SQLite."""
        now = time.time()
        values = []
        for row in rows:
            value = [getattr(row, c) for c in _COLUMNS]
            value[_UPDATED_AT] = now
            values.append(value)
        self._db.executemany(_UPSERT_ARTWORK, values)

    def mark_failed(self, item: str, art: str, index: int, path: str, error: str,
                    refused_url: str | None = None) -> None:
        """Record a failure without forgetting the (untouched) file already there.

        ``refused_url``: the URL a work limit refused (remembered until it changes).
        """
        now = time.time()
        self._db.execute(
            'INSERT INTO artwork (item, art, "index", url, path, status, error, updated_at, '
            "refused_url) VALUES (?, ?, ?, NULL, ?, 'failed', ?, ?, ?) "
            'ON CONFLICT(item, art, "index") DO UPDATE SET status=\'failed\', '
            "error=excluded.error, updated_at=excluded.updated_at, "
            "refused_url=excluded.refused_url",
            (item, art, index, path, error, now, refused_url),
        )

    def update_validators(
        self, item: str, art: str, index: int, etag: str | None, last_modified: str | None
    ) -> None:
        """A 304 may carry fresher validators for the file we kept."""
        self._db.execute(
            'UPDATE artwork SET etag=COALESCE(?, etag), last_modified=COALESCE(?, last_modified), '
            'updated_at=? WHERE item=? AND art=? AND "index"=?',
            (etag, last_modified, time.time(), item, art, index),
        )

    def update_mtime(self, item: str, art: str, index: int, mtime_ns: int) -> None:
        """A kept file was hashed and holds what artpipe wrote, under a new mtime (touched,
        restored from a backup, a row from before mtimes): remember it, so the next run
        is back to one stat."""
        self._db.execute(
            'UPDATE artwork SET mtime_ns=?, updated_at=? WHERE item=? AND art=? AND "index"=?',
            (mtime_ns, time.time(), item, art, index),
        )

    def first_line_of(self, item_id: str, line: int, path: str) -> tuple[int, str] | None:
        """The (line, path) that gave ``item_id`` first in this run; None when this is it."""
        return self.first_lines_of([(item_id, line, path)])[0]

    def first_lines_of(self, given: list[tuple[str, int, str]]
                       ) -> list[tuple[int, str] | None]:
        """``first_line_of`` for each (id, line, path) in manifest order, in a few queries.

        A temporary table (this connection, this run only, on disk): a
        manifest of millions of ids costs no memory for it.
        """
        if not self._run_ids:
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS run_ids "
                             "(id TEXT PRIMARY KEY, line INTEGER, path TEXT)")
            self._run_ids = True
        firsts: dict[str, tuple[int, str]] = {}
        ids = list(dict.fromkeys(item_id for item_id, _, _ in given))
        firsts.update((str(i), (int(line), str(path))) for i, line, path in rows_in(
            self._db, "SELECT id, line, path FROM temp.run_ids WHERE id IN ", ids))
        out: list[tuple[int, str] | None] = []
        new = []
        for item_id, line, path in given:
            first = firsts.get(item_id)
            if first is None:
                firsts[item_id] = (line, path)
                new.append((item_id, line, path))
            out.append(first)
        self._db.executemany("INSERT INTO temp.run_ids VALUES (?, ?, ?)", new)
        return out

    def delete_artwork(self, item: str, art: str, index: int) -> None:
        self._db.execute(
            'DELETE FROM artwork WHERE item=? AND art=? AND "index"=?', (item, art, index)
        )

    # -- reads ----------------------------------------------------------
    def artwork_for(self, item: str) -> dict[tuple[str, int], ArtworkRow]:
        """All rows of one item, keyed by (art, index)."""
        return self.artwork_for_many([item])[item]

    def artwork_for_many(self, items: list[str]) -> dict[str, dict[tuple[str, int], ArtworkRow]]:
        """``artwork_for`` of each item (an empty dict for one without rows), in few queries."""
        out: dict[str, dict[tuple[str, int], ArtworkRow]] = {item: {} for item in items}
        for r in rows_in(self._db, f"SELECT {_COLUMN_LIST} FROM artwork WHERE item IN ",
                         list(out)):
            out[r[0]][(r[1], r[2])] = ArtworkRow(*r)
        return out

    def all_artwork(self) -> list[ArtworkRow]:
        cur = self._db.execute(
            f'SELECT {_COLUMN_LIST} FROM artwork ORDER BY item, art, "index"'
        )
        return [ArtworkRow(*r) for r in cur.fetchall()]

    def items(self) -> list[ItemRow]:
        cur = self._db.execute("SELECT id, type, title, path FROM items ORDER BY id")
        return [ItemRow(*r) for r in cur.fetchall()]


def rows_in(db: sqlite3.Connection, select: str, values: list[str]) -> list[tuple[Any, ...]]:
    """``select`` + ``(?, ?, …)`` over ``values``, a few hundred at a time: many keys in a
    few queries, under SQLite's host-parameter limit."""
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(values), _IDS_PER_QUERY):
        chunk = values[start:start + _IDS_PER_QUERY]
        rows += db.execute(f"{select}({', '.join('?' for _ in chunk)})", chunk).fetchall()
    return rows


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Damage, not a lock or a permission problem (those are the user's to fix)."""
    if isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def open_database(
    path: Path, schema: str, *, timeout: float, check_same_thread: bool = True
) -> sqlite3.Connection:
    """Open an artpipe SQLite file (WAL, autocommit) and prove it healthy before use.

    Shared by the store and the cache index. ``quick_check`` runs first because a damaged
    page would otherwise surface mid-run, inside some batch; the caller decides what a
    ``sqlite3.DatabaseError`` from here means (set the store aside, rebuild the cache).
    """
    db = sqlite3.connect(
        path,
        check_same_thread=check_same_thread,
        isolation_level=None,  # autocommit; multi-statement changes use BEGIN
        timeout=timeout,
    )
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        problem = db.execute("PRAGMA quick_check").fetchone()
        if problem is not None and problem[0] != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed ({problem[0]})")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db


def default_db_path(library: str | os.PathLike[str]) -> Path:
    return Path(library) / ".artpipe" / "artpipe.db"
