"""The polite fetcher: per-origin limits, adaptive windows, rates, throttling, single flight.

Every test runs against real loopback servers. Limits are proven on the
server side (what it saw in flight, what it refused), never by timing.
"""

from __future__ import annotations

import asyncio

from artpipe.fetch import Fetcher, FetchLimits

from tests.support.server import OK, ImageServer


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
