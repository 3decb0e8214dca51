"""The polite fetcher: per-origin limits, adaptive windows, rates, throttling, single flight.

Every test runs against real loopback servers that enforce limits the way
artwork providers do (``tests/support/limited.py``: too many at once → 429
with Retry-After in seconds; too many a second → 429 with an HTTP-date).
Limits are proven on the server side — what it saw in flight, what it
refused — never by timing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from artpipe import run
from artpipe.cli import main
from artpipe.errors import HTTPStatusError
from artpipe.fetch import Fetcher, FetchLimits
from artpipe.fetch.limits import OTHER_HOSTS, Origin, parse_host_rate, parse_rate
from artpipe.metrics import Metrics
from click.testing import CliRunner

from tests.support.limited import LimitedServer
from tests.support.server import OK, ImageServer, Status, ThreadedImageServer

FAST = FetchLimits(connect_timeout=5, read_timeout=5, total_timeout=20, backoff_base=0.01,
                   backoff_cap=0.05, retry_after_cap=3, throttle_deadline=60)


def limits(**changes: object) -> FetchLimits:
    return FetchLimits(**{**FAST.__dict__, **changes})  # type: ignore[arg-type]


async def fetch_all(fetcher: Fetcher, urls: list[str]) -> list[bytes | None]:
    results = await asyncio.gather(*(fetcher.fetch(u) for u in urls))
    return [r.data for r in results]


# -- origins ------------------------------------------------------------------


async def test_two_ports_of_one_address_are_two_hosts_with_their_own_slots() -> None:
    async with ImageServer() as slow, ImageServer() as fast:
        slow.script("/held.jpg", OK(delay=30))
        async with Fetcher(FetchLimits(per_host=1, concurrency=8)) as fetcher:
            held = asyncio.create_task(fetcher.fetch(slow.url("/held.jpg")))
            while slow.in_flight == 0:
                await asyncio.sleep(0.005)
            result = await fetcher.fetch(fast.url("/p.jpg"))
            assert not held.done(), "the other port's request went while the first was held"
            stats = fetcher.host_stats()
            held.cancel()
            await asyncio.gather(held, return_exceptions=True)
    assert result.data == fast.image("/p.jpg")
    assert set(stats) == {f"127.0.0.1:{slow.port}", f"127.0.0.1:{fast.port}"}


# -- adaptive window ------------------------------------------------------------


async def test_a_concurrency_limited_host_is_learned_and_nothing_is_lost() -> None:
    async with LimitedServer(max_concurrent=3, retry_after=0.2, latency=0.01) as host:
        async with Fetcher(limits(per_host=8)) as fetcher:
            urls = [host.url(f"/{i}.jpg") for i in range(240)]
            data = await fetch_all(fetcher, urls)
            (stats,) = fetcher.host_stats().values()
    assert all(d == host.body for d in data), "every request ended served: none lost"
    assert host.accepted == 240
    assert host.max_in_flight <= 8, "never more in flight than --per-host"
    # the first round sends 8 and 5 are refused; afterwards the window holds at 3
    # and only a rare probe above it is refused
    assert host.refused <= 12, f"{host.refused} refused of {host.requests}"
    assert stats.throttled == host.refused
    assert stats.window_min <= 3 < 8
    assert stats.windows and stats.windows[0][1] < 8, "the window's history is kept"


async def test_the_window_recovers_once_the_host_relaxes() -> None:
    async with LimitedServer(max_concurrent=2, retry_after=0.1, latency=0.01) as host:
        async with Fetcher(limits(per_host=6)) as fetcher:
            await fetch_all(fetcher, [host.url(f"/a{i}.jpg") for i in range(40)])
            (cut,) = fetcher.host_stats().values()
            assert cut.window_min <= 2 and host.refused > 0, "the window was cut"
            host.relax(max_concurrent=None)
            refused = host.refused
            for batch in range(12):
                await fetch_all(fetcher, [host.url(f"/b{batch}-{i}.jpg") for i in range(60)])
            window = fetcher.host_windows()[f"127.0.0.1:{host.port}"]
    assert window == 6, "back to --per-host, never above it"
    assert host.refused == refused, "a relaxed host refuses nothing"
    assert host.max_in_flight <= 6


async def test_fixed_window_keeps_per_host_and_is_refused_more() -> None:
    async with LimitedServer(max_concurrent=2, retry_after=0.1, latency=0.01) as fixed_host, \
            LimitedServer(max_concurrent=2, retry_after=0.1, latency=0.01) as adaptive_host:
        async with Fetcher(limits(per_host=6, adaptive=False)) as fetcher:
            await fetch_all(fetcher, [fixed_host.url(f"/{i}.jpg") for i in range(60)])
            fixed_window = fetcher.host_windows()[f"127.0.0.1:{fixed_host.port}"]
        async with Fetcher(limits(per_host=6)) as fetcher:
            await fetch_all(fetcher, [adaptive_host.url(f"/{i}.jpg") for i in range(60)])
    assert fixed_window == 6
    assert fixed_host.accepted == adaptive_host.accepted == 60, "nothing lost either way"
    assert adaptive_host.refused < fixed_host.refused


# -- rates ------------------------------------------------------------------------


async def test_a_rate_limited_host_with_an_http_date_is_learned() -> None:
    async with LimitedServer(max_rps=25, date_retry_after=True) as host:
        async with Fetcher(limits(per_host=4)) as fetcher:
            data = await fetch_all(fetcher, [host.url(f"/{i}.jpg") for i in range(120)])
            (stats,) = fetcher.host_stats().values()
    assert all(d == host.body for d in data), "none lost"
    assert host.max_in_flight <= 4
    # learned from what it took in the second before it refused: near the limit
    assert stats.rate is not None and stats.rate < 25 * 1.1
    # two rounds are refused while the rate is learned (the first second tells a
    # rate from a concurrency limit), then the pace holds
    assert host.refused <= 10, f"{host.refused} refused of {host.requests}"


async def test_a_configured_rate_is_never_exceeded() -> None:
    async with LimitedServer(max_rps=20, date_retry_after=True) as host:
        # a little under the host's limit: pacing exactly at it is refused whenever
        # two requests arrive a millisecond closer than they left
        spec, rate = parse_host_rate(f"127.0.0.1:{host.port}=15/s")
        async with Fetcher(limits(per_host=8, rates=((spec, rate),))) as fetcher:
            await fetch_all(fetcher, [host.url(f"/{i}.jpg") for i in range(30)])
            (stats,) = fetcher.host_stats().values()
    assert host.accepted == 30
    assert host.refused == 0, "paced at the configured rate, never bunched"
    assert stats.rate == 15


def test_rate_specs_parse_and_bad_ones_say_what_is_expected() -> None:
    assert parse_rate("20/s") == parse_rate("20") == 20.0
    assert parse_rate("0.5/s") == 0.5
    assert parse_host_rate("API.TheMovieDB.org=40/s") == ("api.themoviedb.org", 40.0)
    for bad in ("fast", "0/s", "-1/s"):
        with pytest.raises(ValueError, match="requests per second"):
            parse_rate(bad)
    with pytest.raises(ValueError, match="HOST=N/s"):
        parse_host_rate("40/s")
    lim = FetchLimits(rates=(("img.example", 5.0), ("http://127.0.0.1:81", 2.0)),
                      rate_default=9.0)
    assert lim.rate_for(Origin("https", "img.example", 8443)) == 5.0, "a bare host: all ports"
    assert lim.rate_for(Origin("http", "127.0.0.1", 81)) == 2.0
    assert lim.rate_for(Origin("http", "127.0.0.1", 82)) == 9.0


# -- no slot lost to throttling -----------------------------------------------------


async def test_throttling_does_not_use_up_the_attempts_for_real_failures(
    srv: ImageServer,
) -> None:
    data = srv.add_image("/p.jpg")
    srv.script("/p.jpg", *[Status(429, retry_after=0.05)] * 5, Status(500))
    async with Fetcher(limits(max_attempts=2)) as fetcher:
        result = await fetcher.fetch(srv.url("/p.jpg"))
    assert result.data == data
    assert result.attempts == 7, "5 throttled, 1 failed, 1 served: within 2 attempts"


async def test_a_host_that_never_stops_throttling_fails_at_the_deadline_saying_so(
    srv: ImageServer,
) -> None:
    srv.script("/p.jpg", then=Status(429, retry_after=0.1))
    url = srv.url("/p.jpg")
    async with Fetcher(limits(max_attempts=2, throttle_deadline=0.5)) as fetcher:
        with pytest.raises(HTTPStatusError) as info:
            await fetcher.fetch(url)
    text = str(info.value)
    assert url in text and "HTTP 429" in text
    assert "throttle deadline of 0.5 s" in text and "--throttle-deadline" in text
    assert srv.hits("/p.jpg") > 2, "kept asking past max_attempts while the host said wait"


async def test_a_503_without_retry_after_is_a_real_failure(srv: ImageServer) -> None:
    srv.script("/p.jpg", then=Status(503))
    async with Fetcher(limits(max_attempts=3)) as fetcher:
        with pytest.raises(HTTPStatusError, match="after 3 attempts"):
            await fetcher.fetch(srv.url("/p.jpg"))
    assert srv.hits("/p.jpg") == 3


# -- bounded state --------------------------------------------------------------------


async def test_host_tables_stay_bounded_and_totals_stay_right(srv: ImageServer) -> None:
    names = [f"h{i}.example.invalid" for i in range(40)]
    pins = {name: ("127.0.0.1", srv.port) for name in names}
    metrics = Metrics()
    async with Fetcher(limits(max_hosts=8), metrics, resolve=pins) as fetcher:
        for name in names:  # one after another, so each host is idle when the next comes
            await fetcher.fetch(f"http://{name}/p.jpg")
        tracked = fetcher.hosts_tracked()
        stats = fetcher.host_stats()
        top = fetcher.host_stats(top=3)
    assert tracked <= 8
    assert len(stats) <= 9 and stats[OTHER_HOSTS].requests == 40 - (len(stats) - 1)
    assert sum(s.requests for s in stats.values()) == 40, "forgotten hosts still count"
    assert len(top) == 4 and sum(s.requests for s in top.values()) == 40
    host_timers = [n for n in metrics.timers() if n.startswith("host.")]
    assert len(host_timers) == 9, "8 hosts and one shared row, not 40 timers"
    assert len(metrics.hosts()) <= 9


# -- single flight ------------------------------------------------------------------------


async def test_spellings_of_one_url_share_one_download(srv: ImageServer) -> None:
    data = srv.add_image("/p.jpg")
    srv.script("/p.jpg", OK(delay=0.2))
    base = srv.url("/p.jpg")
    spellings = [base, base.replace("http://", "HTTP://"), base + "#poster"]
    async with Fetcher(FAST) as fetcher:
        results = await asyncio.gather(*(fetcher.fetch(u) for u in spellings))
    assert srv.hits("/p.jpg") == 1
    assert [r.data for r in results] == [data] * 3


async def test_a_cancelled_first_caller_hands_over_to_another_spelling(
    srv: ImageServer,
) -> None:
    data = srv.add_image("/p.jpg")
    srv.script("/p.jpg", OK(delay=0.3))
    async with Fetcher(FAST) as fetcher:
        leader = asyncio.create_task(fetcher.fetch(srv.url("/p.jpg")))
        while srv.hits("/p.jpg") == 0:
            await asyncio.sleep(0.005)
        joiner = asyncio.create_task(fetcher.fetch(srv.url("/p.jpg") + "#x"))
        await asyncio.sleep(0.01)
        leader.cancel()
        result = await joiner
        assert fetcher.downloads_in_flight() == 0
    assert leader.cancelled()
    assert result.data == data


async def test_a_run_fetches_each_normalized_url_once(srv: ImageServer, tmp_path: Path) -> None:
    srv.add_image("/shared.jpg")
    srv.script("/shared.jpg", OK(delay=0.2))
    url = srv.url("/shared.jpg")
    items = [{"id": f"m{i}", "type": "movie", "title": f"M{i}", "year": 2000 + i,
              "path": f"Movies/M{i}/M{i}.mkv",
              "art": {"poster": [url, url.replace("http://", "HTTP://"), url + "#a"][i]}}
             for i in range(3)]
    (tmp_path / "lib").mkdir()
    report = await run(items, tmp_path / "lib", limits=FAST, metrics=tmp_path / "m.json")
    assert report.summary()["saved"] == 3
    assert srv.hits("/shared.jpg") == 1
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) >= {"timers", "counters", "hosts"}
    host = metrics["hosts"][f"127.0.0.1:{srv.port}"]
    assert (host["throttled"], host["window_min"]) == (0, FAST.per_host), "never cut"


# -- command line -------------------------------------------------------------------------


def test_cli_rates_and_throttle_deadline_reach_the_fetcher(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    with ThreadedImageServer() as srv:
        manifest = tmp_path / "m.jsonl"
        lines = []
        for i in range(3):
            srv.add_image(f"/p{i}.jpg")
            lines.append(json.dumps({"id": f"m{i}", "type": "movie", "title": f"M{i}",
                                     "year": 2000, "path": f"Movies/M{i}/M{i}.mkv",
                                     "art": {"poster": srv.url(f"/p{i}.jpg")}}))
        manifest.write_text("\n".join(lines) + "\n")
        result = CliRunner().invoke(main, [
            "run", str(manifest), "--library", str(library), "--no-html",
            "--rate", f"127.0.0.1:{srv.port}=50/s", "--rate-default", "5/s",
            "--throttle-deadline", "30", "--metrics", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    hosts = json.loads((tmp_path / "m.json").read_text())["hosts"]
    assert hosts[f"127.0.0.1:{srv.port}"]["rate"] == 50, "its own rate, not the default"
    assert "window" in result.output and "waited s" in result.output, "the summary shows both"


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--rate", "fast", "HOST=N/s"),
    ("--rate", "img.example=0/s", "requests per second"),
    ("--rate-default", "lots", "requests per second"),
    ("--throttle-deadline", "0", "throttle-deadline"),
])
def test_cli_bad_rate_options_are_usage_errors(tmp_path: Path, option: str, value: str,
                                               says: str) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    result = CliRunner().invoke(main, ["run", str(manifest), "--library", str(tmp_path),
                                       option, value])
    assert result.exit_code == 2
    assert says in result.output
