"""The fetcher against a real loopback server that misbehaves on purpose.

Every test talks HTTP to ``tests/support/server.py`` on 127.0.0.1 — no mocked
sessions — and checks what the *server* saw (hits, gaps, in-flight counts) as
well as what the caller got. Timeouts and backoffs are tiny so the file is fast;
the only timing assertions are lower bounds the protocol demands (Retry-After)
and generous "did not hang" upper bounds.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
import tracemalloc
import zlib

import pytest
from artpipe.errors import (
    FetchError,
    FetchTimeoutError,
    HTTPStatusError,
    NotAnImageError,
    RedirectError,
    ResponseTooLargeError,
)
from artpipe.fetch import (
    SAVE_PHASE,
    Fetcher,
    FetchLimits,
    parse_retry_after,
    sniff_image,
)
from artpipe.metrics import Metrics

from tests.support.server import (
    OK,
    Body,
    Drip,
    Drop,
    GzipBomb,
    ImageServer,
    LyingLength,
    Redirect,
    Stall,
    Status,
    gzip_bomb,
    gzip_bytes,
    make_image,
)

FAST = FetchLimits(
    connect_timeout=2,
    read_timeout=2,
    total_timeout=10,
    backoff_base=0.01,
    backoff_cap=0.05,
    retry_after_cap=3,
)


def limits(**changes: object) -> FetchLimits:
    fields = {**FAST.__dict__, **changes}
    return FetchLimits(**fields)  # type: ignore[arg-type]


def _assert_names(exc: FetchError, url: str, status: int | None, attempts: int) -> None:
    """Every failure names the URL, the status, the attempt count (and a next step)."""
    assert exc.url == url
    assert exc.status == status
    assert exc.attempts == attempts
    text = str(exc)
    assert url in text
    if status is not None:
        assert str(status) in text
    assert f"{attempts} attempt" in text


# --------------------------------------------------------------------------- basics


async def test_fetch_returns_the_original_bytes_and_validators(srv: ImageServer) -> None:
    data = srv.add_image("/p.jpg", etag='"v1"', last_modified=1_700_000_000)
    metrics = Metrics()
    async with Fetcher(FAST, metrics) as fetcher:
        result = await fetcher.fetch(srv.url("/p.jpg"))
    assert result.data == data
    assert (result.status, result.attempts, result.not_modified) == (200, 1, False)
    assert result.etag == '"v1"'
    assert result.last_modified == email.utils.formatdate(1_700_000_000, usegmt=True)
    assert result.final_url == result.url == srv.url("/p.jpg")
    counters = metrics.counters()
    assert counters["http.requests"] == 1
    assert counters["http.bytes"] == len(data)
    assert counters["http.requests_in_save"] == 0, "present, and zero"
    assert counters["http.retries"] == counters["http.429"] == counters["http.not_modified"] == 0
    timers = metrics.timers()
    assert timers["fetch.web"]["count"] == 1
    assert timers[f"host.127.0.0.1:{srv.port}.fetch"]["count"] == 1, "one row per origin"
    assert srv.log[0].headers["User-Agent"] == "artpipe/0.1"


async def test_host_stats_count_requests_bytes_retries_and_throttling(srv: ImageServer) -> None:
    data = srv.add_image("/p.jpg")
    srv.script("/p.jpg", Status(429, retry_after=0), Status(500))
    async with Fetcher(FAST) as fetcher:
        await fetcher.fetch(srv.url("/p.jpg"))
        stats = fetcher.host_stats()[f"127.0.0.1:{srv.port}"]
    assert (stats.requests, stats.retries, stats.throttled) == (3, 2, 1)
    assert stats.bytes == len(data)
    assert stats.latency_ms_total > 0
    assert stats.latency_ms_avg == pytest.approx(stats.latency_ms_total / 3)
    assert stats.requests_per_s > 0


async def test_resolve_pins_a_host_name_to_the_loopback_server(srv: ImageServer) -> None:
    data = srv.add_image("/p.jpg")
    pins = {"art.example.invalid": ("127.0.0.1", srv.port)}
    async with Fetcher(FAST, resolve=pins) as fetcher:
        result = await fetcher.fetch("http://art.example.invalid/p.jpg")
        stats = fetcher.host_stats()
    assert result.data == data
    assert result.final_url == "http://art.example.invalid/p.jpg"
    assert srv.log[0].host == "art.example.invalid", "the Host header keeps the name"
    assert list(stats) == ["art.example.invalid"], "the default port is left out of the name"


async def test_fetch_outside_the_context_manager_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await Fetcher().fetch("http://127.0.0.1/x.jpg")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://h/x.jpg", "not a url", "http://"])
async def test_non_http_urls_are_refused_without_a_request(url: str) -> None:
    async with Fetcher(FAST) as fetcher:
        with pytest.raises(FetchError) as info:
            await fetcher.fetch(url)
    assert info.value.attempts == 0
    assert "http" in str(info.value)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP", "JPEG"])
async def test_every_image_format_is_accepted(srv: ImageServer, fmt: str) -> None:
    data = srv.add_image(f"/img.{fmt.lower()}", make_image(16, 16, fmt=fmt))
    async with Fetcher(FAST) as fetcher:
        result = await fetcher.fetch(srv.url(f"/img.{fmt.lower()}"))
    assert result.data == data
    assert sniff_image(data) == fmt.lower()


# ------------------------------------------------------------------ status handling


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 451])
async def test_client_errors_are_not_retried(srv: ImageServer, status: int) -> None:
    srv.script("/p.jpg", then=Status(status))
    metrics = Metrics()
    url = srv.url("/p.jpg")
    async with Fetcher(FAST, metrics) as fetcher:
        with pytest.raises(HTTPStatusError) as info:
            await fetcher.fetch(url)
    assert srv.hits("/p.jpg") == 1
    _assert_names(info.value, url, status, 1)
    assert metrics.counter("http.retries") == 0


async def test_404_for_an_unknown_path(srv: ImageServer) -> None:
    url = srv.url("/missing.png")
    async with Fetcher(FAST) as fetcher:
        with pytest.raises(HTTPStatusError) as info:
            await fetcher.fetch(url)
    _assert_names(info.value, url, 404, 1)
    assert "manifest" in str(info.value), "says what to do"
    assert srv.hits("/missing.png") == 1


async def test_503_then_ok_is_retried(srv: ImageServer) -> None:
    data = srv.add_image("/p.jpg")
    srv.script("/p.jpg", Status(503))
    metrics = Metrics()
    async with Fetcher(FAST, metrics) as fetcher:
        result = await fetcher.fetch(srv.url("/p.jpg"))
    assert result.data == data
    assert result.attempts == 2
    assert srv.hits("/p.jpg") == 2
    assert metrics.counter("http.retries") == 1
    assert metrics.counter("http.requests") == 2
    assert metrics.timers()["fetch.web"]["count"] == 2


@pytest.mark.parametrize("status", [408, 500, 502, 504])
async def test_retryable_statuses_are_retried(srv: ImageServer, status: int) -> None:
    srv.add_image("/p.jpg")
    srv.script("/p.jpg", Status(status), Status(status))
    async with Fetcher(FAST) as fetcher:
        result = await fetcher.fetch(srv.url("/p.jpg"))
    assert result.attempts == 3


async def test_retries_stop_at_max_attempts(srv: ImageServer) -> None:
    srv.script("/p.jpg", then=Status(500))
    url = srv.url("/p.jpg")
    async with Fetcher(limits(max_attempts=3)) as fetcher:
        with pytest.raises(HTTPStatusError) as info:
            await fetcher.fetch(url)
    _assert_names(info.value, url, 500, 3)
    assert srv.hits("/p.jpg") == 3


async def test_429_retry_after_is_honoured_and_then_succeeds(srv: ImageServer) -> None:
    data = srv.add_image("/p.jpg")
    srv.script("/p.jpg", Status(429, retry_after=1))
    metrics = Metrics()
    async with Fetcher(FAST, metrics) as fetcher:
        result = await fetcher.fetch(srv.url("/p.jpg"))
    assert result.data == data
    first, second = srv.hit_times("/p.jpg")
    assert second - first >= 0.9, "the client waited the Retry-After before asking again"
    assert metrics.counter("http.429") == 1


async def test_retry_after_slows_the_whole_host_but_not_others(srv: ImageServer) -> None:
    srv.add_image("/limited.jpg")
    srv.script("/limited.jpg", Status(429, retry_after=1))
    async with Fetcher(FAST) as fetcher:
        first = asyncio.create_task(fetcher.fetch(srv.url("/limited.jpg")))
        while srv.hits("/limited.jpg") == 0:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the 429 is back at the client
        same_host = asyncio.create_task(fetcher.fetch(srv.url("/other.jpg")))
        other_host = asyncio.create_task(fetcher.fetch(srv.url("/third.jpg", host="localhost")))
        await asyncio.gather(first, same_host, other_host)
    throttled_at = srv.hit_times("/limited.jpg")[0]
    (same_at,) = srv.hit_times("/other.jpg")
    (other_at,) = srv.hit_times("/third.jpg")
    assert same_at - throttled_at >= 0.9, "the throttled host waited for everyone"
    assert other_at - throttled_at < 0.9, "another host was not slowed down"


async def test_a_url_that_gives_up_still_slows_its_host(srv: ImageServer) -> None:
    srv.script("/limited.jpg", then=Status(503, retry_after=1))
    async with Fetcher(limits(max_attempts=1, throttle_deadline=0.5)) as fetcher:
        with pytest.raises(HTTPStatusError, match="throttle deadline"):
            await fetcher.fetch(srv.url("/limited.jpg"))
        await fetcher.fetch(srv.url("/next.jpg"))
    (throttled_at,) = srv.hit_times("/limited.jpg")
    (next_at,) = srv.hit_times("/next.jpg")
    assert next_at - throttled_at >= 0.9


async def test_retry_after_http_date_and_cap(srv: ImageServer) -> None:
    srv.add_image("/p.jpg")
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    srv.script("/p.jpg", Status(503, retry_after=later))
    started = time.monotonic()
    async with Fetcher(limits(retry_after_cap=0.2)) as fetcher:
        result = await fetcher.fetch(srv.url("/p.jpg"))
    assert result.attempts == 2
    assert time.monotonic() - started < 30, "an hour-long Retry-After was capped"


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None


# ------------------------------------------------------------------ broken bodies


async def test_connection_dropped_mid_body_is_retried(srv: ImageServer) -> None:
    data = srv.add_image("/p.jpg")
    srv.script("/p.jpg", Drop(after=100))
    async with Fetcher(FAST) as fetcher:
        result = await fetcher.fetch(srv.url("/p.jpg"))
    assert result.data == data
    assert srv.hits("/p.jpg") == 2


async def test_body_shorter_than_content_length_is_an_error(srv: ImageServer) -> None:
    srv.add_image("/p.jpg")
    srv.script("/p.jpg", then=Drop(after=200))
    url = srv.url("/p.jpg")
    async with Fetcher(limits(max_attempts=2)) as fetcher:
        with pytest.raises(FetchError) as info:
            await fetcher.fetch(url)
    _assert_names(info.value, url, 200, 2)
    assert srv.hits("/p.jpg") == 2, "a short body is retried"


async def test_stalled_body_hits_the_read_timeout(srv: ImageServer) -> None:
    srv.add_image("/p.jpg")
    srv.script("/p.jpg", then=Stall(seconds=60, after=100))
    url = srv.url("/p.jpg")
    started = time.monotonic()
    async with Fetcher(limits(read_timeout=0.2, max_attempts=2)) as fetcher:
        with pytest.raises(FetchTimeoutError) as info:
            await fetcher.fetch(url)
    assert time.monotonic() - started < 20, "did not hang"
    _assert_names(info.value, url, 200, 2)
    assert "read timeout" in str(info.value)


async def test_stall_then_ok_recovers(srv: ImageServer) -> None:
    data = srv.add_image("/p.jpg")
    srv.script("/p.jpg", Stall(seconds=60, after=10))
    async with Fetcher(limits(read_timeout=0.2)) as fetcher:
        result = await fetcher.fetch(srv.url("/p.jpg"))
    assert result.data == data
    assert result.attempts == 2


async def test_slow_drip_hits_the_total_timeout(srv: ImageServer) -> None:
    srv.add_image("/p.jpg", make_image(64, 48))
    srv.script("/p.jpg", then=Drip(chunk=50, interval=0.05))
    url = srv.url("/p.jpg")
    async with Fetcher(limits(read_timeout=1, total_timeout=0.3, max_attempts=1)) as fetcher:
        with pytest.raises(FetchTimeoutError) as info:
            await fetcher.fetch(url)
    assert "total timeout" in str(info.value)


async def test_slow_drip_within_the_timeouts_succeeds(srv: ImageServer) -> None:
    data = srv.add_image("/p.jpg")
    srv.script("/p.jpg", Drip(chunk=400, interval=0.01))
    async with Fetcher(FAST) as fetcher:
        result = await fetcher.fetch(srv.url("/p.jpg"))
    assert result.data == data


async def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/p.jpg"  # nothing listens here now
    async with Fetcher(limits(max_attempts=3)) as fetcher:
        with pytest.raises(FetchError) as info:
            await fetcher.fetch(url)
    _assert_names(info.value, url, None, 3)
    assert "connection failed" in str(info.value)


# -------------------------------------------------------------------- size caps


async def test_content_length_over_the_cap_is_rejected_before_reading(srv: ImageServer) -> None:
    srv.add_image("/p.jpg")
    srv.script("/p.jpg", then=LyingLength(10**9))  # sends 16 bytes, then hangs
    url = srv.url("/p.jpg")
    async with Fetcher(limits(read_timeout=30)) as fetcher:
        with pytest.raises(ResponseTooLargeError) as info:
            await fetcher.fetch(url)
    _assert_names(info.value, url, 200, 1)
    assert "not read" in str(info.value)
    assert srv.hits("/p.jpg") == 1, "a too-large body is not retried"


async def test_body_over_the_cap_is_rejected(srv: ImageServer) -> None:
    srv.add_image("/big.jpg", b"\xff\xd8\xff" + b"\0" * 5000)
    async with Fetcher(limits(max_bytes=4096)) as fetcher:
        with pytest.raises(ResponseTooLargeError):
            await fetcher.fetch(srv.url("/big.jpg"))


async def test_gzip_bomb_is_stopped_at_the_cap_with_bounded_memory(srv: ImageServer) -> None:
    expanded = 64 * 1024 * 1024
    bomb = gzip_bomb(expanded)  # built before tracing: the server's copy is not ours
    assert len(bomb) < 100 * 1024
    srv.add_image("/bomb.jpg")
    srv.script("/bomb.jpg", then=GzipBomb(expanded))
    cap = 1024 * 1024
    async with Fetcher(limits(max_bytes=cap)) as fetcher:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLargeError) as info:
                await fetcher.fetch(srv.url("/bomb.jpg"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert "after decompression" in str(info.value)
    assert peak < 8 * cap, f"peak {peak} bytes: decompression was not bounded"
    assert srv.hits("/bomb.jpg") == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_honest_compressed_bodies_are_decompressed(encoding: str) -> None:
    from aiohttp import web

    image = make_image(32, 32)
    if encoding == "gzip":
        body = gzip_bytes(image)
    elif encoding == "deflate":
        body = zlib.compress(image)
    else:
        co = zlib.compressobj(wbits=-15)
        body = co.compress(image) + co.flush()

    async def handler(request: web.Request) -> web.Response:
        name = "deflate" if "deflate" in encoding else "gzip"
        return web.Response(body=body, headers={"Content-Encoding": name})

    app = web.Application()
    app.router.add_get("/p.jpg", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with Fetcher(FAST) as fetcher:
            result = await fetcher.fetch(f"http://127.0.0.1:{port}/p.jpg")
        assert result.data == image
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------- redirects


async def test_redirects_are_followed(srv: ImageServer) -> None:
    data = srv.add_image("/final.jpg")
    srv.script("/a.jpg", then=Redirect("/b.jpg", status=301))
    srv.script("/b.jpg", then=Redirect(srv.url("/final.jpg", host="localhost"), status=307))
    async with Fetcher(FAST) as fetcher:
        result = await fetcher.fetch(srv.url("/a.jpg"))
    assert result.data == data
    assert result.final_url == srv.url("/final.jpg", host="localhost")
    assert result.url == srv.url("/a.jpg")
    assert result.attempts == 1


async def test_redirect_loop_is_refused(srv: ImageServer) -> None:
    srv.script("/loop.jpg", then=Redirect("/loop.jpg"))
    url = srv.url("/loop.jpg")
    async with Fetcher(limits(max_redirects=3)) as fetcher:
        with pytest.raises(RedirectError) as info:
            await fetcher.fetch(url)
    assert srv.hits("/loop.jpg") == 4, "the first request plus three redirects"
    assert "redirect" in str(info.value) and url in str(info.value)


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x.jpg", "gopher://x"])
async def test_redirect_to_another_scheme_is_refused(srv: ImageServer, target: str) -> None:
    srv.script("/p.jpg", then=Redirect(target))
    url = srv.url("/p.jpg")
    async with Fetcher(FAST) as fetcher:
        with pytest.raises(RedirectError) as info:
            await fetcher.fetch(url)
    _assert_names(info.value, url, 302, 1)
    assert target in str(info.value)
    assert srv.hits("/p.jpg") == 1


# ------------------------------------------------------------------ not images


async def test_html_served_as_jpeg_is_not_an_image(srv: ImageServer) -> None:
    srv.script("/p.jpg", then=Body(b"<!DOCTYPE html><html><body>Not found</body></html>"))
    url = srv.url("/p.jpg")
    async with Fetcher(FAST) as fetcher:
        with pytest.raises(NotAnImageError) as info:
            await fetcher.fetch(url)
    _assert_names(info.value, url, 200, 1)
    assert "<!DOCTYPE html" in str(info.value)
    assert srv.hits("/p.jpg") == 1, "not retried"


@pytest.mark.parametrize("body", [b"", b"\xff\xd8", b"RIFF\0\0\0\0WAVE", b"GIF90a"])
async def test_short_or_foreign_bodies_are_not_images(srv: ImageServer, body: bytes) -> None:
    srv.script("/p.jpg", then=Body(body))
    async with Fetcher(FAST) as fetcher:
        with pytest.raises(NotAnImageError):
            await fetcher.fetch(srv.url("/p.jpg"))


# ---------------------------------------------------------- conditional requests


async def test_etag_revalidation_returns_not_modified(srv: ImageServer) -> None:
    srv.add_image("/p.jpg", etag='"abc"')
    metrics = Metrics()
    async with Fetcher(FAST, metrics) as fetcher:
        result = await fetcher.fetch(srv.url("/p.jpg"), etag='"abc"')
        changed = await fetcher.fetch(srv.url("/p.jpg"), etag='"old"')
    assert result.not_modified and result.data is None and result.status == 304
    assert result.etag == '"abc"'
    assert srv.log[0].headers["If-None-Match"] == '"abc"'
    assert changed.data == srv.image("/p.jpg") and not changed.not_modified
    assert metrics.counter("http.not_modified") == 1


async def test_not_modified_keeps_the_validators_the_server_left_out(srv: ImageServer) -> None:
    srv.script("/p.jpg", then=Body(b"", status=304))  # a bare 304: no ETag, no Last-Modified
    async with Fetcher(FAST) as fetcher:
        result = await fetcher.fetch(srv.url("/p.jpg"), etag='"abc"', last_modified="lm")
    assert result.not_modified
    assert (result.etag, result.last_modified) == ('"abc"', "lm")


async def test_last_modified_revalidation_returns_not_modified(srv: ImageServer) -> None:
    stamp = 1_700_000_000
    srv.add_image("/p.jpg", last_modified=stamp)
    same = email.utils.formatdate(stamp, usegmt=True)
    older = email.utils.formatdate(stamp - 86400, usegmt=True)
    async with Fetcher(FAST) as fetcher:
        result = await fetcher.fetch(srv.url("/p.jpg"), last_modified=same)
        changed = await fetcher.fetch(srv.url("/p.jpg"), last_modified=older)
    assert result.not_modified and result.data is None
    assert srv.log[0].headers["If-Modified-Since"] == same
    assert changed.data == srv.image("/p.jpg")


# ----------------------------------------------------------- limits, coalescing


async def test_concurrency_limits_hold_on_the_server_side() -> None:
    async with ImageServer(latency=0.03) as srv:
        lim = limits(concurrency=6, per_host=4)
        urls = [srv.url(f"/{i}.jpg", host=("127.0.0.1", "localhost")[i % 2]) for i in range(60)]
        async with Fetcher(lim) as fetcher:
            results = await asyncio.gather(*(fetcher.fetch(u) for u in urls))
        assert len(results) == 60
        assert srv.max_in_flight <= 6
        assert srv.max_in_flight_host("127.0.0.1") <= 4
        assert srv.max_in_flight_host("localhost") <= 4
        assert srv.max_in_flight >= 4, "the limits were actually used"


@pytest.mark.parametrize("per_host", [1, 2])
async def test_per_host_limit_holds_for_one_host_under_a_larger_global_limit(
    per_host: int,
) -> None:
    """Many URLs on ONE host: only the per-host limit can keep them apart.

    With every URL on one host and a global limit of 8, a per-host limit that
    fell back to the global one would let 8 requests reach the server at once.
    """
    async with ImageServer(latency=0.03) as srv:
        lim = limits(concurrency=8, per_host=per_host)
        urls = [srv.url(f"/{i}.jpg") for i in range(40)]
        async with Fetcher(lim) as fetcher:
            results = await asyncio.gather(*(fetcher.fetch(u) for u in urls))
        assert len(results) == 40
        assert srv.max_in_flight_host("127.0.0.1") == per_host
        assert srv.max_in_flight == per_host


async def test_requests_queued_for_one_busy_host_wait_in_front_of_the_connector() -> None:
    """A free global slot must not let a request queue inside aiohttp's pool.

    Eight requests to one host under per_host=1: if the per-host limit fell
    back to the global one, seven would wait inside the connector, where the
    wait counts against ``total_timeout`` (0.5 s, less than 8 × 0.1 s).
    """
    async with ImageServer(latency=0.1) as srv:
        lim = limits(concurrency=8, per_host=1, total_timeout=0.5, max_attempts=1)
        async with Fetcher(lim) as fetcher:
            results = await asyncio.gather(*(fetcher.fetch(srv.url(f"/{i}.jpg")) for i in range(8)))
        assert [r.attempts for r in results] == [1] * 8
        assert srv.max_in_flight_host("127.0.0.1") == 1


async def test_waiting_for_a_slot_does_not_count_against_timeouts() -> None:
    async with ImageServer(latency=0.1) as srv:
        lim = limits(concurrency=1, per_host=1, total_timeout=0.5, max_attempts=1)
        async with Fetcher(lim) as fetcher:
            results = await asyncio.gather(
                *(fetcher.fetch(srv.url(f"/{i}.jpg")) for i in range(10))
            )
        assert all(r.attempts == 1 for r in results)
        assert srv.max_in_flight == 1


async def test_concurrent_fetches_of_one_url_share_one_request() -> None:
    async with ImageServer(latency=0.05) as srv:
        data = srv.add_image("/p.jpg")
        async with Fetcher(FAST) as fetcher:
            results = await asyncio.gather(*(fetcher.fetch(srv.url("/p.jpg")) for _ in range(20)))
            assert srv.hits("/p.jpg") == 1
            assert all(r.data == data for r in results)
            again = await fetcher.fetch(srv.url("/p.jpg"))  # not in flight any more
            assert again.data == data
            assert srv.hits("/p.jpg") == 2
            await asyncio.gather(
                fetcher.fetch(srv.url("/p.jpg")), fetcher.fetch(srv.url("/p.jpg"), etag='"x"')
            )
            assert srv.hits("/p.jpg") == 4, "different validators are different requests"


async def test_coalesced_callers_share_the_failure_too(srv: ImageServer) -> None:
    srv.script("/p.jpg", then=Status(404))
    async with Fetcher(FAST) as fetcher:
        results = await asyncio.gather(
            *(fetcher.fetch(srv.url("/p.jpg")) for _ in range(5)), return_exceptions=True
        )
    assert all(isinstance(r, HTTPStatusError) for r in results)
    assert srv.hits("/p.jpg") == 1


async def test_save_phase_requests_are_counted_only_in_their_task(srv: ImageServer) -> None:
    metrics = Metrics()
    async with Fetcher(FAST, metrics) as fetcher:

        async def save_step() -> None:
            SAVE_PHASE.set(True)
            await fetcher.fetch(srv.url("/in-save.jpg"))

        async def next_download() -> None:
            await fetcher.fetch(srv.url("/downloading.jpg"))

        await asyncio.gather(save_step(), next_download())
        assert SAVE_PHASE.get() is False
    assert metrics.counter("http.requests") == 2
    assert metrics.counter("http.requests_in_save") == 1


# ------------------------------------------------------------------ cancellation


async def test_cancelling_a_fetch_leaves_nothing_behind(srv: ImageServer) -> None:
    srv.add_image("/p.jpg")
    srv.script("/p.jpg", Stall(seconds=60, after=10))
    lim = limits(concurrency=2, per_host=2)
    async with Fetcher(lim) as fetcher:
        task = asyncio.create_task(fetcher.fetch(srv.url("/p.jpg")))
        while srv.hits("/p.jpg") == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert fetcher.downloads_in_flight() == 0
        assert srv.in_flight == 0, "the connection was closed, the server handler ended"
        # Every slot came back: the full concurrency is available again.
        await asyncio.gather(*(fetcher.fetch(srv.url(f"/{i}.jpg")) for i in range(4)))
        assert srv.max_in_flight <= 2
        assert fetcher.free_slots() == 2


async def _coalesced(fetcher: Fetcher, srv: ImageServer, n: int) -> list[asyncio.Task[object]]:
    tasks: list[asyncio.Task[object]] = [
        asyncio.create_task(fetcher.fetch(srv.url("/p.jpg"))) for _ in range(n)
    ]
    while srv.hits("/p.jpg") == 0:
        await asyncio.sleep(0.005)
    return tasks


async def test_cancelling_a_joined_caller_keeps_the_download(srv: ImageServer) -> None:
    data = srv.add_image("/p.jpg")
    srv.script("/p.jpg", OK(delay=0.2))
    async with Fetcher(FAST) as fetcher:
        leader, joiner, other = await _coalesced(fetcher, srv, 3)
        joiner.cancel()
        results = await asyncio.gather(leader, other)
        assert joiner.cancelled()
    assert all(r.data == data for r in results)  # type: ignore[attr-defined]
    assert srv.hits("/p.jpg") == 1


async def test_cancelling_the_first_caller_hands_the_download_over(srv: ImageServer) -> None:
    data = srv.add_image("/p.jpg")
    srv.script("/p.jpg", OK(delay=0.2))
    async with Fetcher(FAST) as fetcher:
        leader, joiner = await _coalesced(fetcher, srv, 2)
        leader.cancel()
        result = await joiner
        assert leader.cancelled()
        assert fetcher.downloads_in_flight() == 0
    assert result.data == data  # type: ignore[attr-defined]
    assert srv.hits("/p.jpg") == 2, "the joiner's download started afresh"


async def test_cancelling_every_caller_stops_the_download(srv: ImageServer) -> None:
    srv.add_image("/p.jpg")
    srv.script("/p.jpg", then=Stall(seconds=60, after=10))
    async with Fetcher(FAST) as fetcher:
        tasks = await _coalesced(fetcher, srv, 3)
        for task in tasks:
            task.cancel()
            await asyncio.sleep(0.02)  # the handed-over download has started
        await asyncio.gather(*tasks, return_exceptions=True)
        assert all(t.cancelled() for t in tasks)
        await asyncio.sleep(0.05)
        assert fetcher.downloads_in_flight() == 0
        assert srv.in_flight == 0, "no request is left running"


async def test_closing_the_fetcher_ends_running_fetches(srv: ImageServer) -> None:
    srv.add_image("/p.jpg")
    srv.script("/p.jpg", then=Stall(seconds=60, after=10))
    fetcher = Fetcher(limits(read_timeout=30))
    async with fetcher:
        task = asyncio.create_task(fetcher.fetch(srv.url("/p.jpg")))
        while srv.hits("/p.jpg") == 0:
            await asyncio.sleep(0.005)
    with pytest.raises(FetchError, match="closed"):
        async with asyncio.timeout(20):  # did not hang until the read timeout
            await task
    assert fetcher.downloads_in_flight() == 0


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="per_host"):
        FetchLimits(per_host=0)
    with pytest.raises(ValueError, match="read_timeout"):
        FetchLimits(read_timeout=0)
