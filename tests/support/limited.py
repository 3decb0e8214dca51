"""A loopback server that enforces real limits the way artwork providers do.

``LimitedServer`` serves one small JPEG at every path, but refuses with 429
and Retry-After when a client asks too much: more than ``max_concurrent``
requests at once (``Retry-After: <seconds>``), or more than ``max_rps``
accepted requests in any sliding second (``Retry-After: <HTTP-date>`` when
``date_retry_after``, the second at which a request would be accepted again,
rounded up, as an HTTP-date can only say whole seconds). It counts what the
client did to it — accepted and refused requests, and the most requests it
ever had in flight (``GET /_stats`` for a client in another process) — so
tests and benchmarks prove limits on the server side.
``relax`` changes the limits while it runs (the host got less busy).

Run as a separate process::

    python tests/support/limited.py --max-concurrent 4 --max-rps 20 --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import math
import sys
import time
from collections import deque

from aiohttp import web

from tests.support.server import make_image


class LimitedServer:
    """An aiohttp server on 127.0.0.1 with a concurrency and a per-second limit."""

    def __init__(
        self,
        *,
        max_concurrent: int | None = None,
        max_rps: float | None = None,
        retry_after: float = 1.0,
        date_retry_after: bool = False,
        latency: float = 0.0,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_rps = max_rps
        self.retry_after = retry_after
        self.date_retry_after = date_retry_after
        self.latency = latency
        self.body = make_image(64, 48, quality=80)
        self.accepted = 0
        self.refused = 0
        self.in_flight = 0  # every request in the handler, refused ones too
        self.max_in_flight = 0
        self._serving = 0  # accepted requests being served
        self._recent: deque[float] = deque()  # monotonic times of accepted requests
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def requests(self) -> int:
        return self.accepted + self.refused

    @property
    def refused_fraction(self) -> float:
        return self.refused / self.requests if self.requests else 0.0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def relax(self, *, max_concurrent: int | None = None, max_rps: float | None = None) -> None:
        """New limits from now on (None: no such limit)."""
        self.max_concurrent = max_concurrent
        self.max_rps = max_rps

    async def start(self, port: int = 0) -> LimitedServer:
        app = web.Application()
        app.router.add_route("GET", "/_stats", self._stats)  # not counted
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LimitedServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _refusal(self, now: float) -> dict[str, str] | None:
        """Retry-After headers when this request is over a limit, else None."""
        if self.max_concurrent is not None and self._serving >= self.max_concurrent:
            return {"Retry-After": f"{self.retry_after:g}"}
        if self.max_rps is not None:
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.max_rps:
                free_in = self._recent[0] + 1.0 - now
                if self.date_retry_after:
                    when = math.ceil(time.time() + free_in)
                    return {"Retry-After": email.utils.formatdate(when, usegmt=True)}
                return {"Retry-After": f"{max(1, math.ceil(free_in))}"}
        return None

    async def _stats(self, _request: web.Request) -> web.Response:
        """What the server saw, for a client in another process (the benchmark)."""
        return web.json_response({"accepted": self.accepted, "refused": self.refused,
                                  "max_in_flight": self.max_in_flight})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            refusal = self._refusal(time.monotonic())
            if refusal is not None:
                self.refused += 1
                return web.Response(status=429, text="slow down", headers=refusal)
            self.accepted += 1
            self._serving += 1
            self._recent.append(time.monotonic())
            try:
                if self.latency:
                    await asyncio.sleep(self.latency)
                return web.Response(body=self.body, content_type="image/jpeg")
            finally:
                self._serving -= 1
        finally:
            self.in_flight -= 1


async def _serve_forever(args: argparse.Namespace) -> None:
    server = LimitedServer(max_concurrent=args.max_concurrent, max_rps=args.max_rps,
                           retry_after=args.retry_after, date_retry_after=args.date,
                           latency=args.latency)
    await server.start(args.port)
    print(f"PORT {server.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-concurrent", type=int)
    parser.add_argument("--max-rps", type=float)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--date", action="store_true", help="Retry-After as an HTTP-date")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve_forever(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
