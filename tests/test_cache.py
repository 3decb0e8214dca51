"""The on-disk cache of originals: content addressing, LRU, corruption, atomicity."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from artpipe.cache import Cache, normalize_url
from hypothesis import example, given
from hypothesis import strategies as st


def _blob_files(directory: Path) -> list[Path]:
    return sorted(p for p in (directory / "blobs").rglob("*") if p.is_file())


def test_put_then_read_round_trips_with_validators(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        entry = cache.put("https://img.example/p.jpg", b"poster", etag='"v1"', last_modified="x")
        assert entry.sha256 == hashlib.sha256(b"poster").hexdigest()
        assert entry.path.read_bytes() == b"poster"
        assert cache.contains("https://img.example/p.jpg")
        assert cache.read("https://img.example/p.jpg") == b"poster"
        got = cache.get("https://img.example/p.jpg")
        assert got is not None
        assert (got.etag, got.last_modified, got.size) == ('"v1"', "x", 6)


def test_read_entry_gives_the_bytes_with_the_validators_of_the_same_row(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        url = "https://img.example/p.jpg"
        cache.put(url, b"old", etag='"v1"')
        cache.put(url, b"new", etag='"v2"', last_modified="then")
        found = cache.read_entry(url)
        assert found is not None
        data, entry = found
        assert (data, entry.etag, entry.last_modified) == (b"new", '"v2"', "then")
        entry.path.write_bytes(b"bad")  # damaged behind the cache's back: a miss, dropped
        assert cache.read_entry(url) is None
        assert not cache.contains(url)


def test_missing_url_is_a_miss(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        assert not cache.contains("http://a/x.jpg")
        assert cache.get("http://a/x.jpg") is None
        assert cache.read("http://a/x.jpg") is None


def test_index_survives_reopen(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        cache.put("http://a/x.jpg", b"data", etag='"e"')
    with Cache(tmp_path) as cache:
        assert cache.read("http://a/x.jpg") == b"data"
        entry = cache.get("http://a/x.jpg")
        assert entry is not None and entry.etag == '"e"'
        assert cache.total_bytes() == 4


def test_normalized_urls_share_one_entry(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        cache.put("HTTPS://IMG.Example:443/p.jpg#frag", b"one")
        assert cache.read("https://img.example/p.jpg") == b"one"


def test_two_urls_with_the_same_bytes_share_one_blob(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        a = cache.put("http://a/poster.jpg", b"same bytes")
        b = cache.put("http://b/other.jpg", b"same bytes")
        assert a.path == b.path
        assert len(_blob_files(tmp_path)) == 1
        assert cache.total_bytes() == len(b"same bytes")
        cache.evict("http://a/poster.jpg")
        assert a.path.exists(), "still referenced by the other URL"
        assert cache.read("http://b/other.jpg") == b"same bytes"
        cache.evict("http://b/other.jpg")
        assert not a.path.exists(), "the last reference took the blob with it"
        assert cache.total_bytes() == 0


def test_same_file_name_different_images_never_collide(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        cache.put("http://a/movie1/poster.jpg", b"alien")
        cache.put("http://a/movie2/poster.jpg", b"aliens")
        assert cache.read("http://a/movie1/poster.jpg") == b"alien"
        assert cache.read("http://a/movie2/poster.jpg") == b"aliens"


def test_replacing_a_url_releases_its_old_blob(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        old = cache.put("http://a/p.jpg", b"old")
        new = cache.put("http://a/p.jpg", b"new!")
        assert not old.path.exists()
        assert new.path.exists()
        assert cache.total_bytes() == 4


def test_put_is_idempotent(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        first = cache.put("http://a/p.jpg", b"bytes")
        mtime = first.path.stat().st_mtime_ns
        second = cache.put("http://a/p.jpg", b"bytes", etag='"new"')
        assert first.path == second.path
        assert first.path.stat().st_mtime_ns == mtime, "an intact blob is not rewritten"
        entry = cache.get("http://a/p.jpg")
        assert entry is not None and entry.etag == '"new"'
        assert cache.total_bytes() == 5


def test_corrupted_blob_is_a_miss_and_is_dropped(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        entry = cache.put("http://a/p.jpg", b"original bytes")
        cache.put("http://b/q.jpg", b"original bytes")
        entry.path.write_bytes(b"bit rot!")
        assert cache.read("http://a/p.jpg") is None
        assert not cache.contains("http://a/p.jpg")
        assert not cache.contains("http://b/q.jpg"), "every URL of a bad blob is dropped"
        assert not entry.path.exists()
        # and a fresh download repairs it
        cache.put("http://a/p.jpg", b"original bytes")
        assert cache.read("http://a/p.jpg") == b"original bytes"


def test_truncated_blob_is_repaired_by_put(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        entry = cache.put("http://a/p.jpg", b"0123456789")
        entry.path.write_bytes(b"01234")
        cache.put("http://a/p.jpg", b"0123456789")
        assert cache.read("http://a/p.jpg") == b"0123456789"


def test_deleted_blob_is_a_miss(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        entry = cache.put("http://a/p.jpg", b"bytes")
        entry.path.unlink()
        assert cache.get("http://a/p.jpg") is None
        assert cache.read("http://a/p.jpg") is None
        assert not cache.contains("http://a/p.jpg")
        assert cache.total_bytes() == 0


def test_lru_eviction_keeps_recently_used(tmp_path: Path) -> None:
    with Cache(tmp_path, max_bytes=300) as cache:
        for name in "abc":
            cache.put(f"http://h/{name}.jpg", name.encode() * 100)
        assert cache.read("http://h/a.jpg") is not None  # a is now the most recent
        cache.put("http://h/d.jpg", b"d" * 100)  # over the cap: evict the LRU (b)
        assert not cache.contains("http://h/b.jpg")
        for name in "acd":
            assert cache.contains(f"http://h/{name}.jpg")
        assert cache.total_bytes() <= 300
        assert len(_blob_files(tmp_path)) == 3


def test_eviction_counts_shared_blobs_once(tmp_path: Path) -> None:
    with Cache(tmp_path, max_bytes=250) as cache:
        cache.put("http://h/a.jpg", b"x" * 100)
        cache.put("http://h/a2.jpg", b"x" * 100)  # same blob: still 100 bytes
        cache.put("http://h/b.jpg", b"y" * 100)
        assert cache.total_bytes() == 200
        for url in ("http://h/a.jpg", "http://h/a2.jpg", "http://h/b.jpg"):
            assert cache.contains(url)


def test_entry_larger_than_the_cache_is_not_kept(tmp_path: Path) -> None:
    with Cache(tmp_path, max_bytes=10) as cache:
        cache.put("http://h/big.jpg", b"z" * 11)
        assert cache.read("http://h/big.jpg") is None
        assert cache.total_bytes() == 0
        assert _blob_files(tmp_path) == []


def test_put_leaves_no_temp_files_and_cleans_stale_ones(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        entry = cache.put("http://h/a.jpg", b"data")
    stale = entry.path.parent / ".tmp-killed"
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    fresh = entry.path.parent / ".tmp-in-progress"
    fresh.write_bytes(b"half")
    with Cache(tmp_path):
        pass
    assert not stale.exists(), "a killed process's temp file is cleaned up"
    assert fresh.exists(), "another process may still be writing this one"
    fresh.unlink()
    assert _blob_files(tmp_path) == [entry.path]


def test_failed_write_leaves_the_old_blob_and_no_temp(tmp_path: Path) -> None:
    """Atomicity: a write that fails midway leaves neither a partial blob nor a temp file."""

    with Cache(tmp_path) as cache:
        cache.put("http://h/a.jpg", b"good")
        blobs_before = _blob_files(tmp_path)
        with pytest.raises(TypeError):
            cache.put("http://h/a.jpg", "not bytes")  # type: ignore[arg-type]
        assert _blob_files(tmp_path) == blobs_before
        assert cache.read("http://h/a.jpg") == b"good"


def test_threads_and_main_thread_share_a_cache(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    with Cache(tmp_path, max_bytes=50_000) as cache:

        def worker(n: int) -> None:
            try:
                for i in range(50):
                    url = f"http://h/{n}/{i}.jpg"
                    cache.put(url, f"{n}-{i}".encode() * 50)
                    data = cache.read(url)
                    assert data is None or data == f"{n}-{i}".encode() * 50
                    cache.contains(f"http://h/{(n + 1) % 4}/{i}.jpg")
            except BaseException as exc:  # collected for the main thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert cache.total_bytes() <= 50_000
        listed = {p.name for p in _blob_files(tmp_path)}
        total = sum(p.stat().st_size for p in _blob_files(tmp_path))
        assert total == cache.total_bytes()
        assert all(not name.startswith(".tmp-") for name in listed)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Example.COM/a/B.jpg", "http://example.com/a/B.jpg"),
        ("http://example.com:80/x", "http://example.com/x"),
        ("https://example.com:443/x", "https://example.com/x"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("http://example.com:443/x", "http://example.com:443/x"),
        ("http://example.com/x.jpg#top", "http://example.com/x.jpg"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com/x?b=2&a=1", "http://example.com/x?b=2&a=1"),
        ("http://User:Pw@Example.com:80/x", "http://User:Pw@example.com/x"),
        ("http://[::1]:80/x", "http://[::1]/x"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@given(
    host=st.from_regex(r"[a-zA-Z][a-zA-Z0-9-]{0,10}(\.[a-zA-Z]{2,5})?", fullmatch=True),
    path=st.from_regex(r"(/[A-Za-z0-9._~%-]{0,8}){0,3}", fullmatch=True),
    scheme=st.sampled_from(["http", "https", "HTTP", "Https"]),
)
def test_normalize_url_is_idempotent(host: str, path: str, scheme: str) -> None:
    once = normalize_url(f"{scheme}://{host}{path}")
    assert normalize_url(once) == once
    assert once.startswith(scheme.lower() + "://" + host.lower())


def test_index_writes_are_batched_until_flush_or_close(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from artpipe import cache as cache_module

    monkeypatch.setattr(cache_module, "_BATCH_S", 1e9)  # only the count or a flush commits

    def committed() -> int:
        other = sqlite3.connect(tmp_path / "index.sqlite")
        try:
            return int(other.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        finally:
            other.close()

    with Cache(tmp_path) as cache:
        for n in range(3):
            cache.put(f"http://a/{n}.jpg", b"x%d" % n)
        assert committed() == 0  # one open transaction, not one commit per put
        assert all(cache.contains(f"http://a/{n}.jpg") for n in range(3))  # seen by itself
        cache.flush()
        assert committed() == 3
        for n in range(3, 3 + cache_module._BATCH_PUTS):
            cache.put(f"http://a/{n}.jpg", b"x%d" % n)
        assert committed() == 3 + cache_module._BATCH_PUTS  # a full batch commits itself
        cache.put("http://a/last.jpg", b"last")
    assert committed() == 4 + cache_module._BATCH_PUTS  # close commits the rest
    with Cache(tmp_path) as cache:
        assert cache.read("http://a/last.jpg") == b"last"


def test_recently_put_needs_no_lock_and_a_blob_already_there_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Cache(tmp_path) as cache:
        assert not cache.recently_put("http://a/p.jpg")
        entry = cache.put("http://a/p.jpg", b"0123456789")
        assert cache.recently_put("HTTP://A:80/p.jpg")  # by the normalized key
        before = os.stat(entry.path)
        cache.put("http://b/p.jpg", b"0123456789")  # same bytes, checked: not written again
        after = os.stat(entry.path)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        reads: list[Path] = []
        real = Path.read_bytes
        monkeypatch.setattr(Path, "read_bytes", lambda p: reads.append(p) or real(p))
        assert cache.read("http://b/p.jpg") == b"0123456789"  # a read still verifies
        assert reads == [entry.path]


def test_blob_folders_removed_behind_its_back_are_made_again(tmp_path: Path) -> None:
    import shutil

    cache = Cache(tmp_path / "c")
    first = cache.put("http://a/1.jpg", b"one")
    shutil.rmtree(first.path.parent)  # someone cleaning up the cache folder mid-run
    again = cache.put("http://a/2.jpg", b"one")  # same bytes: same shard folder
    assert again.path == first.path and again.path.read_bytes() == b"one"
    assert cache.read("http://a/2.jpg") == b"one"
    assert not list(first.path.parent.glob(".tmp-*"))
    cache.close()


_URL_PIECES = st.sampled_from(["http", "https", "HTTP", "://", "a", "B", ".", "-", ":", "80",
                               "443", "8080", "/", "?", "#", "@", "x", "%20", " ", "\t", "é",
                               "[", "]", "=", "&", "0"])


@given(st.lists(_URL_PIECES, max_size=14).map("".join))
@example("/?")  # an empty query: the parse drops the "?"
@example("/x ")  # trailing space: stripped
@example(":443/x")  # https's default port: dropped
@example("/x#frag")
@example("/x?a=1&b")
def test_the_normal_form_shortcut_agrees_with_the_parse(text: str) -> None:
    from artpipe.cache import _normalized

    for url in (text, "http://" + text, "https://a.b" + text, "http://h:80/" + text):
        try:
            parsed = _normalized(url)
        except ValueError:
            continue  # an invalid port or IPv6 literal: the parse refuses it, and so must the key
        assert normalize_url(url) == parsed, url


_PUT_URLS = ["http://a/1.jpg", "http://a/2.jpg", "HTTP://A/2.jpg", "http://b/3.png"]
_PUTS = st.lists(st.tuples(st.sampled_from(_PUT_URLS),
                           st.sampled_from([b"one", b"two", b"three!"]),
                           st.sampled_from([None, '"e1"'])), max_size=8)


@given(puts=_PUTS, cap=st.sampled_from([4, 9, 1 << 20]))
def test_put_many_leaves_the_cache_as_the_same_puts_one_by_one(
        puts: list[tuple[str, bytes, str | None]], cap: int) -> None:
    # The batch a writer thread stores must equal its puts in order: a URL given twice keeps
    # the later bytes, shared bytes share one blob, and a small cap evicts the same entries.
    import tempfile

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        with Cache(Path(a), max_bytes=cap) as one, Cache(Path(b), max_bytes=cap) as many:
            for url, data, etag in puts:
                one.put(url, data, etag=etag)
            results = many.put_many([(url, data, etag, None) for url, data, etag in puts])
            assert all(not isinstance(r, BaseException) for r in results)
            for url in _PUT_URLS:
                assert one.read(url) == many.read(url), url
                got_one, got_many = one.get(url), many.get(url)
                assert (got_one and got_one.etag) == (got_many and got_many.etag)
            assert one.total_bytes() == many.total_bytes()
            assert ([p.name for p in _blob_files(Path(a))]
                    == [p.name for p in _blob_files(Path(b))])


def test_the_writer_stores_puts_in_batches_and_one_bad_blob_fails_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from artpipe import cache as cache_module
    from artpipe.cache import CacheWriter

    blocked = hashlib.sha256(b"blocked").hexdigest()
    (tmp_path / "blobs").mkdir(parents=True, exist_ok=True)
    (tmp_path / "blobs" / blocked[:2]).write_bytes(b"a file where its shard folder goes")
    batches: list[int] = []
    put_many = Cache.put_many

    def counted(self: Cache, puts: list[Any]) -> list[Any]:
        batches.append(len(puts))
        return put_many(self, puts)

    monkeypatch.setattr(Cache, "put_many", counted)
    gate = threading.Event()
    flush = Cache.flush

    def held_flush(self: Cache) -> None:
        gate.wait(10)  # the first batch is still being stored: the rest queue up
        flush(self)

    monkeypatch.setattr(Cache, "flush", held_flush)
    with Cache(tmp_path) as cache:
        writer = CacheWriter(cache)
        try:
            first = writer.put("http://h/0.jpg", b"first")
            futures = [writer.put(f"http://h/{n}.jpg", b"pic%d" % n) for n in range(1, 6)]
            bad = writer.put("http://h/bad.jpg", b"blocked")
            gate.set()
            assert first.result(10).size == len(b"first")
            assert [f.result(10).size for f in futures] == [4] * 5
            with pytest.raises(OSError):
                bad.result(10)
        finally:
            gate.set()
            writer.close()
        writer.close()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            writer.put("http://h/late.jpg", b"late")
        assert cache.read("http://h/3.jpg") == b"pic3"
        assert cache.read("http://h/bad.jpg") is None
    assert sum(batches) == 7 and len(batches) < 7, batches
    assert cache_module._BATCH_PUTS >= 7


def test_the_writer_commits_even_after_a_batch_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An open index transaction left behind would make another run sharing the cache wait.
    from artpipe.cache import CacheWriter

    def broken(self: Cache, puts: list[Any]) -> list[Any]:
        self._begin()  # the transaction is open when it fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Cache, "put_many", broken)
    with Cache(tmp_path) as cache:
        writer = CacheWriter(cache)
        try:
            with pytest.raises(OSError, match="No space"):
                writer.put("http://h/a.jpg", b"a").result(10)
        finally:
            writer.close()
        assert not cache._conn().in_transaction
