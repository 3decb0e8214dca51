"""Properties of the fetcher over random server behaviour, on a real loopback server.

For any mix of per-request behaviours (ok, slow, 500, 503, 429 with Retry-After,
connection drop, stall, slow drip, 404, HTML as JPEG, redirect) across URLs on
two host names, fetched concurrently (some URLs by several callers at once):

- every fetch ends in the right bytes or a FetchError — never another
  exception, never a hang (a generous overall deadline);
- the outcome, the attempt count and the server's hit count are exactly what
  the retry rules predict (retry 5xx/429/drops/timeouts, never 404 or non-images;
  a throttled answer — 429, or Retry-After — is waited for, not counted against
  ``max_attempts``);
- coalesced callers share one request sequence;
- the global and per-host limits are never exceeded, measured on the server.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from dataclasses import dataclass

import pytest
from artpipe.errors import FetchError, FetchTimeoutError, HTTPStatusError, NotAnImageError
from artpipe.fetch import Fetcher, FetchLimits, FetchResult
from artpipe.fetch.body import Inflater, TooLarge
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.server import (
    OK,
    Behaviour,
    Body,
    Drip,
    Drop,
    ImageServer,
    Redirect,
    Stall,
    Status,
)

LIMITS = FetchLimits(
    concurrency=3,
    per_host=2,
    connect_timeout=2,
    read_timeout=0.25,
    total_timeout=0.6,
    max_attempts=3,
    backoff_base=0.005,
    backoff_cap=0.02,
    retry_after_cap=0.05,
)
DEADLINE_S = 60.0  # "did not hang": far above the worst legitimate case (~5 s)


@dataclass(frozen=True)
class Step:
    """One scripted answer and what the retry rules say about it."""

    name: str
    outcome: str  # "ok" | "retry" | "wait" (throttled: not an attempt used up) | "fatal"
    error: type[FetchError] | None = None


STEPS: dict[str, tuple[Step, Behaviour]] = {
    "ok": (Step("ok", "ok"), OK()),
    "slow": (Step("slow", "ok"), OK(delay=0.03)),
    "redirect": (Step("redirect", "ok"), Redirect("/target.jpg")),
    "500": (Step("500", "retry", HTTPStatusError), Status(500)),
    "503": (Step("503", "wait", HTTPStatusError), Status(503, retry_after=0.01)),
    "429": (Step("429", "wait", HTTPStatusError), Status(429, retry_after=0.02)),
    "drop": (Step("drop", "retry", FetchError), Drop(after=50)),
    "stall": (Step("stall", "retry", FetchTimeoutError), Stall(seconds=30, after=20)),
    "drip": (Step("drip", "retry", FetchTimeoutError), Drip(chunk=40, interval=0.04)),
    "404": (Step("404", "fatal", HTTPStatusError), Status(404)),
    "html": (Step("html", "fatal", NotAnImageError), Body(b"<html><body>oops</body></html>")),
}

scripts = st.lists(st.sampled_from(sorted(STEPS)), min_size=0, max_size=4)
urls = st.lists(
    st.tuples(scripts, st.sampled_from(["127.0.0.1", "localhost"]), st.integers(1, 3)),
    min_size=1,
    max_size=6,
)


def expected(script: list[str]) -> tuple[str, int, type[FetchError] | None]:
    """(ok | error, attempts, error type) as the retry rules predict."""
    failures = 0
    for attempt in range(1, len(script) + 2):
        name = script[attempt - 1] if attempt <= len(script) else "ok"
        step = STEPS[name][0]
        if step.outcome == "ok":
            return "ok", attempt, None
        if step.outcome == "wait":
            continue
        failures += 1
        if step.outcome == "fatal" or failures == LIMITS.max_attempts:
            return "error", attempt, step.error
    raise AssertionError("unreachable")


async def scenario(plan: list[tuple[list[str], str, int]]) -> None:
    async with ImageServer() as srv:
        target = srv.add_image("/target.jpg")
        calls: list[tuple[int, str]] = []
        for i, (script, host, callers) in enumerate(plan):
            path = f"/u{i}.jpg"
            srv.add_image(path)
            srv.script(path, *(STEPS[name][1] for name in script))
            calls += [(i, srv.url(path, host=host))] * callers
        async with Fetcher(LIMITS) as fetcher:
            async with asyncio.timeout(DEADLINE_S):
                results = await asyncio.gather(
                    *(fetcher.fetch(url) for _, url in calls), return_exceptions=True
                )
        assert srv.max_in_flight <= LIMITS.concurrency
        for host in ("127.0.0.1", "localhost"):
            assert srv.max_in_flight_host(host) <= LIMITS.per_host

        for (i, url), result in zip(calls, results, strict=True):
            script = plan[i][0]
            path = f"/u{i}.jpg"
            kind, attempts, error = expected(script)
            if kind == "ok":
                assert isinstance(result, FetchResult), (script, result)
                redirected = script[attempts - 1 : attempts] == ["redirect"]
                assert result.data == (target if redirected else srv.image(path))
                assert result.attempts == attempts
            else:
                assert isinstance(result, FetchError), (script, result)
                assert type(result) is error, (script, result)
                assert result.attempts == attempts
                assert result.url == url and url in str(result)
            # Coalesced callers shared one sequence of requests.
            assert srv.hits(path) == attempts, (script, srv.hits(path))


@settings(
    max_examples=min(40, settings.default.max_examples),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=urls)
def test_every_fetch_ends_as_predicted_within_limits(
    plan: list[tuple[list[str], str, int]],
) -> None:
    asyncio.run(scenario(plan))


@given(data=st.binary(max_size=5000), cap=st.integers(1, 6000), gz=st.booleans())
def test_bounded_inflate_returns_the_body_or_stops_at_the_cap(
    data: bytes, cap: int, gz: bool
) -> None:
    body = gzip.compress(data) if gz else zlib.compress(data)
    inflater = Inflater(cap, "gzip" if gz else "deflate")
    out: list[bytes] = []
    try:
        for i in range(0, len(body), 7):
            inflater.feed(body[i : i + 7], out)
        inflater.finish(out)
    except TooLarge:
        assert len(data) > cap
        assert sum(map(len, out)) <= cap
    else:
        assert len(data) <= cap
        assert b"".join(out) == data


def test_expected_model_matches_the_rules() -> None:
    assert expected([]) == ("ok", 1, None)
    assert expected(["500", "drop"]) == ("ok", 3, None)
    assert expected(["500", "stall", "drip"]) == ("error", 3, FetchTimeoutError)
    assert expected(["429", "404"]) == ("error", 2, HTTPStatusError)
    assert expected(["html"]) == ("error", 1, NotAnImageError)


@pytest.mark.parametrize("script", [["drip", "stall", "429"], ["redirect"], ["503", "slow"]])
def test_examples_that_must_always_hold(script: list[str]) -> None:
    asyncio.run(scenario([(script, "127.0.0.1", 2), (["500"], "localhost", 1)]))
