"""On-disk cache of downloaded ORIGINALS (never thumbs) and their HTTP validators.

Blobs are named by the sha256 of their bytes, so two URLs serving the same
image share one blob, and two different images that happen to share a file
name can never overwrite each other (Ember's cache keyed blobs by file name and
served one movie's poster for another). A small SQLite index (WAL) maps the
normalized URL to the blob, its size, ETag, Last-Modified and last use.

- Writes are atomic: temp file in the cache directory, then rename. A
  cancelled or killed download leaves no half-written entry; a stray temp file
  is removed the next time a cache opens the directory. Blobs are not fsynced:
  each carries its sha256 and is verified on read, so one that a power cut
  truncated is a miss, never wrong bytes.
- Index writes are batched: one transaction per ``_BATCH_PUTS`` puts or
  ``_BATCH_S`` seconds, committed by the next call after that or by ``flush``
  and ``close`` (a killed run loses at most those rows: a few downloads again).
- Reads verify the sha256: a blob that no longer matches (bit rot, a truncated
  copy, someone editing files) or that is gone is dropped and reported as a miss,
  so the caller downloads it again instead of rendering garbage.
- Size is capped with least-recently-used eviction; a blob still referenced by
  another URL is deleted only with its last reference.

Methods are synchronous and short (local disk, one small SQLite file). They
are safe from the event loop thread and worker threads at once: one
connection, ``check_same_thread=False``, every index access under a lock, and
file reads and hashing outside it. ``recently_put`` takes no lock, so the event
loop can ask it without waiting for a worker thread's index write.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from artpipe import _core
from artpipe.batches import BatchThread
from artpipe.redact import redact_url
from artpipe.store import open_database, rows_in

_DEFAULT_PORTS = {"http": "80", "https": "443"}
DEFAULT_MAX_BYTES = 2 * 1024**3
"""The cache's size cap unless the run passes ``cache_bytes``."""
_TEMP_PREFIX = ".tmp-"
_STALE_TEMP_S = 3600.0  # temp files older than this were left by a killed process
_BATCH_PUTS = 64  # index rows per transaction, at most
_BATCH_S = 0.25  # seconds a transaction stays open, at most (another process may wait on it)
_REMEMBERED = 8192  # blobs known good, and URLs put, by this cache object (bounded)
log = logging.getLogger("artpipe")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    url TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT,
    last_modified TEXT,
    last_used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_sha256 ON entries (sha256);
CREATE INDEX IF NOT EXISTS entries_last_used ON entries (last_used);
"""


# A URL already in normal form: lower-case http(s) scheme and ASCII host, no user info, no
# default port, a path, no fragment, and no empty query ("?" at the end is dropped).
_NORMAL = re.compile(r"(https?)://[a-z0-9.-]+(?::(\d+))?/[^#\s\x00-\x1f\x7f]*(?<!\?)")


@functools.lru_cache(maxsize=16384)  # pure, and asked ~6 times per image
def normalize_url(url: str) -> str:
    """The cache and coalescing key of ``url``.

    Lower-cases scheme and host, drops the default port (80/443) and the
    fragment, and gives an empty path a "/". Path and query are kept as they
    are: servers may treat them case-sensitively.
    """
    normal = _NORMAL.fullmatch(url)
    if normal is not None and normal[2] != _DEFAULT_PORTS[normal[1]]:
        return url  # what ``_normalized`` would give back, without parsing (most URLs)
    return _normalized(url)


def _normalized(url: str) -> str:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    hostport = hostport.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and hostport.endswith(":" + default):
        hostport = hostport[: -len(default) - 1]
    elif hostport.endswith(":"):
        hostport = hostport[:-1]
    netloc = f"{userinfo}{at}{hostport}"
    path = parts.path or ("/" if netloc else "")
    return urlunsplit((scheme, netloc, path, parts.query, ""))


@functools.lru_cache(maxsize=16384)
def _key(url: str) -> str:
    """The index key of ``url``: its normalized form, or — when it carries a secret
    (``user:pass@``, ``api_key=``…) — the redacted form plus a SHA-256 of the whole.

    The index lives beside the library and must not hold credentials in clear,
    yet two URLs that differ only in a secret may serve different images, so
    the hash keeps them apart.
    """
    key = normalize_url(url)
    shown = redact_url(key)
    if shown == key:
        return key
    return f"{shown}#sha256={hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


@dataclass(frozen=True)
class CacheEntry:
    """One cached original: the URL's key, its blob and the validators to revalidate it."""

    url: str
    sha256: str
    size: int
    etag: str | None
    last_modified: str | None
    path: Path


class Cache:
    """Content-addressed cache of originals under ``directory``, at most ``max_bytes``."""

    def __init__(
        self, directory: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"Cache max_bytes must be >= 0, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._blobs = self.directory / "blobs"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._clock = itertools.count()
        self._pending = 0  # puts in the open transaction
        self._releases = 0  # blobs deleted so far: a put checks its blob again if this moved
        self._batch_started = 0.0
        # The keys this object put, for ``recently_put``. A plain dict: membership is
        # atomic under the GIL.
        self._put_keys: dict[str, None] = {}
        index = self.directory / "index.sqlite"
        try:
            self._db: sqlite3.Connection | None = self._open(index)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked, unwritable: not damage
                raise
            # The cache is only a cache: start it again rather than refuse the run.
            self._reset(index, exc)
            self._db = self._open(index)
        self._total = self._blob_bytes()
        self._forget_clear_secrets()
        self._remove_stale_temps()

    def _forget_clear_secrets(self) -> None:
        """Drop entries an older artpipe keyed by a URL with its secret in clear."""
        db = self._conn()
        rows = db.execute(
            "SELECT url, sha256, size FROM entries WHERE (url LIKE '%@%' OR url LIKE '%=%') "
            "AND url NOT LIKE '%#sha256=%'").fetchall()
        for url, sha, size in rows:
            if redact_url(url) != url:
                db.execute("DELETE FROM entries WHERE url = ?", (url,))
                self._release_blob(sha, size)

    @staticmethod
    def _open(index: Path) -> sqlite3.Connection:
        return open_database(index, _SCHEMA, timeout=30.0, check_same_thread=False)

    def _reset(self, index: Path, exc: sqlite3.DatabaseError) -> None:
        """Drop a corrupt index and the blobs it described (nothing else can name them)."""
        for name in (index.name, f"{index.name}-wal", f"{index.name}-shm"):
            try:
                (index.parent / name).unlink()
            except FileNotFoundError:
                pass
        shutil.rmtree(self._blobs, ignore_errors=True)
        self._blobs.mkdir(parents=True, exist_ok=True)
        log.warning("warning: the download cache index %s was corrupt (%s); the cache was "
                    "emptied and starts again (images are downloaded once more)", index, exc)

    # -- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._commit()
                except sqlite3.Error as exc:  # only a cache: those rows are lost, not the run
                    log.warning("warning: the download cache index %s could not be updated "
                                "(%s); some images may be downloaded again", self.directory, exc)
                self._db.close()
                self._db = None

    def flush(self) -> None:
        """Commit the batched index writes now (other processes then see them)."""
        with self._lock:
            if self._db is not None:
                self._commit()

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- queries -----------------------------------------------------------------
    def recently_put(self, url: str) -> bool:
        """Whether this cache object put ``url`` lately; no lock and no disk, so safe to
        ask from the event loop (a True may since have been evicted: read it to know)."""
        return _key(url) in self._put_keys

    def contains(self, url: str) -> bool:
        """Whether the index has ``url`` (no disk access beyond the index)."""
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT 1 FROM entries WHERE url = ?", (_key(url),))
                .fetchone()
            )
        return row is not None

    def get(self, url: str) -> CacheEntry | None:
        """The entry for ``url`` if its blob file exists (marks it recently used)."""
        key = _key(url)
        with self._lock:
            entry = self._lookup(key)
            if entry is None:
                return None
            if not entry.path.is_file():
                self._drop_blob(entry.sha256)
                return None
            self._touch(key)
            return entry

    def read(self, url: str) -> bytes | None:
        """The cached bytes of ``url``, verified against their sha256; None on a miss.

        A blob that is gone or whose hash no longer matches is dropped from the
        index (for every URL that shared it) and reported as a miss.
        """
        found = self.read_entry(url)
        return found[0] if found is not None else None

    def read_entry(self, url: str) -> tuple[bytes, CacheEntry] | None:
        """``read``, with the entry the bytes came from (its validators): one index lookup."""
        key = _key(url)
        with self._lock:
            entry = self._lookup(key)
        if entry is None:
            return None
        try:
            data = entry.path.read_bytes()
        except FileNotFoundError:
            data = None
        if data is None or hashlib.sha256(data).hexdigest() != entry.sha256:
            with self._lock:
                self._drop_blob(entry.sha256)
            return None
        with self._lock:
            self._touch(key)
        return data, entry

    # -- changes -----------------------------------------------------------------
    def put(
        self,
        url: str,
        data: bytes,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> CacheEntry:
        """Store ``data`` as the original of ``url`` (atomic; idempotent for the same bytes).

        May evict least-recently-used entries to stay under ``max_bytes``; an
        entry larger than the whole cache is evicted at once (and a later read misses).
        """
        entry = self.put_many([(url, data, etag, last_modified)])[0]
        if isinstance(entry, BaseException):
            raise entry
        return entry

    def put_many(
        self, puts: list[tuple[str, bytes, str | None, str | None]]
    ) -> list[CacheEntry | OSError]:
        """``put`` for each (url, data, etag, last_modified): the blobs in one call into the
        core, the index rows in a few statements. Each gets its entry, or the OSError that
        kept its blob off the disk (that put only: the others are stored)."""
        if len({_key(url) for url, _, _, _ in puts}) < len(puts):
            # one URL twice: in order, so the later bytes win as with two puts
            return [entry for put in puts for entry in self.put_many([put])]
        releases = self._releases
        written = _core.write_blobs([data for _, data, _, _ in puts], self._blobs,
                                    temp_prefix=_TEMP_PREFIX)
        out: list[CacheEntry | OSError] = []
        stored: list[tuple[int, CacheEntry, bytes]] = []  # (where in ``out``, entry, bytes)
        for (url, data, etag, last_modified), (sha, error) in zip(puts, written, strict=True):
            if sha is None:
                out.append(error if isinstance(error, OSError) else OSError(str(error)))
                continue
            entry = CacheEntry(_key(url), sha, len(data), etag, last_modified,
                               self._blob_path(sha))
            stored.append((len(out), entry, data))
            out.append(entry)
        if not stored:
            return out
        entries = [entry for _, entry, _ in stored]
        with self._lock:
            db = self._conn()
            self._begin()
            old = {url: (sha, size) for url, sha, size in rows_in(
                db, "SELECT url, sha256, size FROM entries WHERE url IN ",
                [e.url for e in entries])}
            known = {sha for (sha,) in rows_in(
                db, "SELECT DISTINCT sha256 FROM entries WHERE sha256 IN ",
                list({e.sha256 for e in entries}))}
            db.executemany(
                "INSERT OR REPLACE INTO entries (url, sha256, size, etag, last_modified, "
                "last_used) VALUES (?, ?, ?, ?, ?, ?)",
                [(e.url, e.sha256, e.size, e.etag, e.last_modified, self._now())
                 for e in entries])
            for entry in entries:
                if entry.sha256 not in known:
                    known.add(entry.sha256)
                    self._total += entry.size
                self._remember(self._put_keys, entry.url)
            # Each put's own file work fails that put alone (the rows are in either way: a
            # row without its blob reads as a miss).
            for at, entry, data in stored:
                try:
                    before = old.get(entry.url)
                    if before is not None and before[0] != entry.sha256:
                        self._release_blob(*before)
                    if self._releases != releases and not entry.path.exists():
                        # Another thread deleted this blob (its last other user evicted)
                        # between our write and the insert: write it again, under the lock.
                        self._write_blob(data)
                except OSError as exc:
                    out[at] = exc
            try:
                self._shrink(protect=entries[-1].url)
            except OSError as exc:  # an evicted blob that cannot be deleted: the last put's
                out[stored[-1][0]] = exc
            finally:
                self._pending += len(entries)
                self._maybe_commit()
        return out

    def evict(self, url: str) -> None:
        """Forget ``url``; its blob goes too unless another URL still uses it."""
        key = _key(url)
        with self._lock:
            db = self._conn()
            row = db.execute("SELECT sha256, size FROM entries WHERE url = ?", (key,)).fetchone()
            if row is None:
                return
            db.execute("DELETE FROM entries WHERE url = ?", (key,))
            self._release_blob(row[0], row[1])

    def total_bytes(self) -> int:
        """Bytes held in blobs (each shared blob counted once)."""
        with self._lock:
            return self._total

    # -- internals ---------------------------------------------------------------
    @staticmethod
    def _remember(known: dict[str, None], key: str) -> None:
        known[key] = None
        if len(known) > _REMEMBERED:
            del known[next(iter(known))]

    def _begin(self) -> None:
        """Open the batch transaction if none is (under the lock)."""
        db = self._conn()
        if not db.in_transaction:
            db.execute("BEGIN")
            self._pending = 0
            self._batch_started = time.monotonic()

    def _maybe_commit(self) -> None:
        if (self._pending >= _BATCH_PUTS
                or time.monotonic() - self._batch_started >= _BATCH_S):
            self._commit()

    def _commit(self) -> None:
        db = self._conn()
        if db.in_transaction:
            db.commit()
        self._pending = 0

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"cache {self.directory} is closed")
        return self._db

    def _now(self) -> float:
        # Wall clock plus a tie-breaker so two puts in the same tick keep their order.
        return time.time() + next(self._clock) * 1e-9

    def _blob_path(self, sha: str) -> Path:
        return self._blobs / sha[:2] / sha

    def _lookup(self, key: str) -> CacheEntry | None:
        row = (
            self._conn()
            .execute(
                "SELECT url, sha256, size, etag, last_modified FROM entries WHERE url = ?", (key,)
            )
            .fetchone()
        )
        if row is None:
            return None
        url, sha, size, etag, last_modified = row
        return CacheEntry(url, sha, size, etag, last_modified, self._blob_path(sha))

    def _touch(self, key: str) -> None:
        self._conn().execute("UPDATE entries SET last_used = ? WHERE url = ?", (self._now(), key))

    def _blob_bytes(self) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT COALESCE(SUM(size), 0) FROM"
                " (SELECT sha256, MAX(size) AS size FROM entries GROUP BY sha256)"
            )
            .fetchone()
        )
        return int(row[0])

    def _write_blob(self, data: bytes) -> None:
        """One blob through the core's writer (temp file, rename, not fsynced: blobs.rs)."""
        ((_, error),) = _core.write_blobs([data], self._blobs, temp_prefix=_TEMP_PREFIX)
        if error is not None:
            raise error

    def _release_blob(self, sha: str, size: int) -> None:
        """Delete the blob of ``sha`` (``size`` bytes) when no entry references it any more."""
        db = self._conn()
        if db.execute("SELECT 1 FROM entries WHERE sha256 = ? LIMIT 1", (sha,)).fetchone():
            return
        try:
            self._blob_path(sha).unlink()
        except FileNotFoundError:
            pass
        finally:  # after the unlink: a put that read the count before it checks its blob
            self._releases += 1
        self._total = max(0, self._total - size)

    def _drop_blob(self, sha: str) -> None:
        """A blob is gone or corrupt: forget every URL that used it, then the file."""
        db = self._conn()
        row = db.execute("SELECT MAX(size) FROM entries WHERE sha256 = ?", (sha,)).fetchone()
        db.execute("DELETE FROM entries WHERE sha256 = ?", (sha,))
        self._release_blob(sha, int(row[0] or 0))

    def _shrink(self, protect: str) -> None:
        """Evict least-recently-used entries until the blobs fit in ``max_bytes``."""
        if self._total <= self.max_bytes:
            return
        # Another process may share this directory: trust the index, not our count.
        self._total = self._blob_bytes()
        db = self._conn()
        while self._total > self.max_bytes:
            row = db.execute(
                "SELECT url, sha256, size FROM entries WHERE url != ? ORDER BY last_used LIMIT 1",
                (protect,),
            ).fetchone()
            if row is None:
                # Only the new entry is left and it alone is over the cap.
                row = db.execute(
                    "SELECT url, sha256, size FROM entries WHERE url = ?", (protect,)
                ).fetchone()
                if row is None:
                    return
            db.execute("DELETE FROM entries WHERE url = ?", (row[0],))
            self._release_blob(row[1], row[2])

    def _remove_stale_temps(self) -> None:
        cutoff = time.time() - _STALE_TEMP_S
        for tmp in self._blobs.glob(f"*/{_TEMP_PREFIX}*"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except FileNotFoundError:
                pass


_Put = tuple[str, bytes, str | None, str | None]  # url, data, etag, last_modified


class CacheWriter(BatchThread[tuple[_Put, Future[CacheEntry]]]):
    """One thread that stores downloads in a ``Cache`` in batches; ``put`` returns a future.

    Every put waiting is stored with one ``Cache.put_many`` (the blobs in one call into
    the core, the index rows in a few statements): on a busy machine each call that
    leaves Python's lock costs a wait to take it back, and a put one at a time made
    about ten. When no more puts are waiting, the index rows are committed, so other
    processes sharing the cache never wait on an idle open transaction.
    """

    def __init__(self, cache: Cache, name: str = "cache") -> None:
        self.cache = cache
        super().__init__(name, _BATCH_PUTS)

    def put(self, url: str, data: bytes, *, etag: str | None = None,
            last_modified: str | None = None) -> Future[CacheEntry]:
        """``Cache.put`` on the writer's thread; the future raises why it could not be."""
        future: Future[CacheEntry] = Future()
        self._give(((url, data, etag, last_modified), future))
        return future

    def handle(self, batch: list[tuple[_Put, Future[CacheEntry]]]) -> None:
        self._store([(put, future) for put, future in batch
                     if future.set_running_or_notify_cancel()])

    def _store(self, batch: list[tuple[_Put, Future[CacheEntry]]]) -> None:
        if not batch:
            return
        entries: list[CacheEntry | BaseException]
        try:
            entries = list(self.cache.put_many([put for put, _ in batch]))
        except Exception as exc:  # a broken index: every put of the batch failed
            entries = [exc] * len(batch)
        if self.idle():  # nothing more waiting: commit, even after a failure (never left open)
            try:
                self.cache.flush()
            except Exception as exc:  # the rows were not committed: those puts failed
                entries = [exc] * len(batch)
        for (_, future), entry in zip(batch, entries, strict=True):
            if isinstance(entry, BaseException):
                future.set_exception(entry)
            else:
                future.set_result(entry)


__all__ = ["Cache", "CacheEntry", "CacheWriter", "normalize_url"]
