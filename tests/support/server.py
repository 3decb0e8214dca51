"""A loopback aiohttp image server with scripted misbehaviour, for tests and benchmarks.

Real servers misbehave in ways a mocked session never does: they drop the
connection mid-body, stall, lie about Content-Length, gzip a bomb, redirect in
circles or serve an HTML error page as ``image/jpeg``. ``ImageServer`` is a real
aiohttp server on 127.0.0.1 whose behaviour is scripted per path, and which
measures what the client did to it: hits per path, request timeline, and the
maximum number of requests in flight (globally and per ``Host``), so tests can
prove concurrency limits on the server side.

Usage::

    from tests.support.server import ImageServer, OK, Status, Drop

    async with ImageServer() as srv:
        srv.add_image("/p.jpg")                          # generated JPEG
        srv.script("/p.jpg", Status(503, retry_after=0.1), Drop(after=100))
        url = srv.url("/p.jpg")                          # http://127.0.0.1:PORT/p.jpg
        ...                                              # 1st hit 503, 2nd drop, then OK
        assert srv.hits("/p.jpg") == 3
        assert srv.max_in_flight <= 8
        srv.url("/p.jpg", host="localhost")              # same server, another Host

Any path ending in ``.jpg`` that was not added is served as a generated JPEG,
distinct per path (``generate=True``), so a benchmark can ask for 5,000
different images without registering them. Other unknown paths are 404.

Behaviours (frozen dataclasses, one per request): ``OK``, ``Status``, ``Drop``,
``Stall``, ``Drip``, ``GzipBomb``, ``Redirect``, ``Body``, ``LyingLength``.
``srv.script(path, *behaviours, then=OK())`` plays the behaviours in order, one
per request, then repeats ``then`` forever.

Run as a separate process (the benchmark does)::

    python tests/support/server.py --latency 0.02 --port 0   # prints "PORT <n>"
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import gzip
import hashlib
import io
import random
import sys
import threading
import time
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# --------------------------------------------------------------------------- images


def make_image(
    width: int = 64, height: int = 48, *, fmt: str = "JPEG", seed: int = 0, quality: int = 85
) -> bytes:
    """A small real image (Pillow), deterministic for (size, fmt, seed)."""
    from PIL import Image, ImageDraw

    rnd = random.Random(seed)
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(max(4, width * height // 10_000)):
        x, y = rnd.randrange(width), rnd.randrange(height)
        w, h = rnd.randrange(4, max(5, width // 3)), rnd.randrange(4, max(5, height // 3))
        color = (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
        draw.ellipse((x, y, x + w, y + h), fill=color)
    if fmt.upper() == "JPEG":
        noise = Image.effect_noise((width, height), 16).convert("RGB")
        img = Image.blend(img, noise, 0.08)
    out = io.BytesIO()
    if fmt.upper() == "JPEG":
        img.save(out, "JPEG", quality=quality)
    else:
        img.save(out, fmt.upper())
    return out.getvalue()


def distinct_jpeg(base: bytes, tag: str) -> bytes:
    """``base`` with a JPEG comment segment naming ``tag``: same pixels, distinct bytes.

    Lets a benchmark serve thousands of different images without encoding each one.
    """
    payload = tag.encode("utf-8")[:65000]
    segment = b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload
    return base[:2] + segment + base[2:]


# ----------------------------------------------------------------------- behaviours


@dataclass(frozen=True)
class OK:
    """Serve the path's image (honours If-None-Match / If-Modified-Since → 304)."""

    delay: float = 0.0  # extra latency before the headers


@dataclass(frozen=True)
class Status:
    """Answer ``code`` with an optional Retry-After (seconds, or an HTTP-date string)."""

    code: int
    retry_after: float | str | None = None
    body: bytes = b"error"


@dataclass(frozen=True)
class Drop:
    """Send headers with the full Content-Length, ``after`` body bytes, then close the socket."""

    after: int = 100


@dataclass(frozen=True)
class Stall:
    """Send headers and ``after`` body bytes, then go silent for ``seconds``."""

    seconds: float = 3600.0
    after: int = 100


@dataclass(frozen=True)
class Drip:
    """Send the body ``chunk`` bytes at a time, ``interval`` seconds apart (slow drip)."""

    chunk: int = 64
    interval: float = 0.05


@dataclass(frozen=True)
class GzipBomb:
    """``Content-Encoding: gzip`` body that expands to ``expanded`` zero bytes.

    It starts with JPEG magic bytes so only a size cap can stop it.
    """

    expanded: int = 100 * 1024 * 1024


@dataclass(frozen=True)
class Redirect:
    """Redirect (``status``) to ``location``: an absolute URL or a path on this server."""

    location: str
    status: int = 302


@dataclass(frozen=True)
class Body:
    """Serve arbitrary bytes with any content type (an HTML page as image/jpeg, say)."""

    data: bytes
    content_type: str = "image/jpeg"
    status: int = 200


@dataclass(frozen=True)
class LyingLength:
    """Declare ``content_length`` in the headers, send a few bytes, then hang (until closed)."""

    content_length: int


Behaviour = OK | Status | Drop | Stall | Drip | GzipBomb | Redirect | Body | LyingLength


@dataclass
class Hit:
    """One request as the server saw it."""

    path: str
    host: str
    start: float  # time.monotonic()
    end: float | None
    behaviour: str
    headers: dict[str, str]


@dataclass
class _Resource:
    data: bytes
    content_type: str
    etag: str | None
    last_modified: str | None
    script: deque[Behaviour] = field(default_factory=deque)
    then: Behaviour = field(default_factory=OK)


_BOMB_CACHE: dict[int, bytes] = {}


def gzip_bomb(expanded: int) -> bytes:
    """A gzip body that expands to ``expanded`` bytes (JPEG magic first); cached."""
    if expanded not in _BOMB_CACHE:
        co = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31 = gzip container
        parts = [co.compress(b"\xff\xd8\xff\xe0" + b"\0" * 12)]
        block = b"\0" * (1024 * 1024)
        left = expanded - 16
        while left > 0:
            n = min(left, len(block))
            parts.append(co.compress(block[:n]))
            left -= n
        parts.append(co.flush())
        _BOMB_CACHE[expanded] = b"".join(parts)
    return _BOMB_CACHE[expanded]


# --------------------------------------------------------------------------- server


class ImageServer:
    """Loopback aiohttp server; see the module docstring for the API."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        generate: bool = True,
        image_size: tuple[int, int] = (64, 48),
        quality: int = 85,
    ) -> None:
        self.latency = latency
        self.generate = generate
        self._image_size = image_size
        self._quality = quality
        self._base_jpeg: bytes | None = None
        self._resources: dict[str, _Resource] = {}
        self._hits: dict[str, int] = defaultdict(int)
        self.log: list[Hit] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._in_flight_host: dict[str, int] = defaultdict(int)
        self._max_in_flight_host: dict[str, int] = defaultdict(int)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> ImageServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that hangs up ends a stalled handler at once;
        # shutdown_timeout: close() never waits long for a handler still sleeping.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=0.5,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ImageServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- configuration ---------------------------------------------------------
    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """Absolute URL of ``path``; ``host="localhost"`` reaches this server by another name."""
        return f"http://{host}:{self.port}{path}"

    def add_image(
        self,
        path: str,
        data: bytes | None = None,
        *,
        etag: str | None = None,
        last_modified: str | float | None = None,
        content_type: str = "image/jpeg",
    ) -> bytes:
        """Serve ``data`` (default: a generated JPEG distinct per path) at ``path``.

        ``last_modified`` may be an HTTP-date or a Unix time. Returns the bytes served.
        """
        if data is None:
            data = self._generated(path)
        if isinstance(last_modified, float | int):
            last_modified = email.utils.formatdate(last_modified, usegmt=True)
        old = self._resources.get(path)
        res = _Resource(data, content_type, etag, last_modified)
        if old is not None:
            res.script, res.then = old.script, old.then
        self._resources[path] = res
        return data

    def script(self, path: str, *behaviours: Behaviour, then: Behaviour | None = None) -> None:
        """Play ``behaviours`` one per request on ``path``, then ``then`` (default OK) forever."""
        res = self._resource(path, create=True)
        assert res is not None
        res.script = deque(behaviours)
        res.then = then if then is not None else OK()

    def image(self, path: str) -> bytes:
        """The bytes an OK request for ``path`` returns."""
        res = self._resource(path, create=True)
        assert res is not None
        return res.data

    # -- measurements ----------------------------------------------------------
    def hits(self, path: str | None = None) -> int:
        """Requests seen for ``path`` (all paths when None)."""
        if path is None:
            return sum(self._hits.values())
        return self._hits.get(path, 0)

    def max_in_flight_host(self, host: str) -> int:
        """Highest number of concurrent requests whose Host header named ``host``."""
        return self._max_in_flight_host.get(host, 0)

    def hit_times(self, path: str) -> list[float]:
        """``time.monotonic()`` of each request's arrival for ``path``."""
        return [h.start for h in self.log if h.path == path]

    def reset_counters(self) -> None:
        self._hits.clear()
        self.log.clear()
        self.max_in_flight = self.in_flight
        self._max_in_flight_host.clear()

    # -- internals -------------------------------------------------------------
    def _generated(self, path: str) -> bytes:
        if self._base_jpeg is None:
            w, h = self._image_size
            self._base_jpeg = make_image(w, h, seed=1, quality=self._quality)
        return distinct_jpeg(self._base_jpeg, path)

    def _resource(self, path: str, *, create: bool = False) -> _Resource | None:
        res = self._resources.get(path)
        if res is None and (create or (self.generate and path.endswith(".jpg"))):
            digest = hashlib.sha256(path.encode()).hexdigest()[:16]
            res = _Resource(self._generated(path), "image/jpeg", f'"{digest}"', None)
            if create:
                # Generated images are deterministic: only keep the ones a test scripts or
                # inspects, so a benchmark's thousands of paths cost no server memory.
                self._resources[path] = res
        return res

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        host = (request.host or "").rsplit(":", 1)[0]
        self._hits[path] += 1
        self.in_flight += 1
        self._in_flight_host[host] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._max_in_flight_host[host] = max(
            self._max_in_flight_host[host], self._in_flight_host[host]
        )
        res = self._resource(path)
        behaviour: Behaviour | None = None
        if res is not None:
            behaviour = res.script.popleft() if res.script else res.then
        name = type(behaviour).__name__ if behaviour is not None else "NotFound"
        hit = Hit(path, host, time.monotonic(), None, name, dict(request.headers))
        self.log.append(hit)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if res is None or behaviour is None:
                return web.Response(status=404, text=f"no image at {path}")
            return await self._play(request, res, behaviour)
        except ConnectionError:
            # The client hung up while we dripped or stalled (it timed out): expected.
            raise asyncio.CancelledError from None
        finally:
            self.in_flight -= 1
            self._in_flight_host[host] -= 1
            hit.end = time.monotonic()

    async def _play(self, request: web.Request, res: _Resource, b: Behaviour) -> web.StreamResponse:
        if isinstance(b, OK):
            if b.delay:
                await asyncio.sleep(b.delay)
            return self._ok(request, res)
        if isinstance(b, Status):
            headers = {}
            if b.retry_after is not None:
                ra = b.retry_after
                headers["Retry-After"] = ra if isinstance(ra, str) else f"{ra:g}"
            return web.Response(status=b.code, body=b.body, headers=headers)
        if isinstance(b, Redirect):
            return web.Response(status=b.status, headers={"Location": b.location})
        if isinstance(b, Body):
            return web.Response(status=b.status, body=b.data, content_type=b.content_type)
        if isinstance(b, GzipBomb):
            body = gzip_bomb(b.expanded)
            return web.Response(
                body=body, headers={"Content-Type": "image/jpeg", "Content-Encoding": "gzip"}
            )
        resp = web.StreamResponse(headers={"Content-Type": res.content_type})
        if isinstance(b, LyingLength):
            resp.content_length = b.content_length
            await resp.prepare(request)
            await resp.write(res.data[:16])
            await asyncio.sleep(3600)  # the client is expected to hang up
            return resp
        resp.content_length = len(res.data)
        await resp.prepare(request)
        if isinstance(b, Drop):
            await resp.write(res.data[: b.after])
            _hang_up(request)
            return resp
        if isinstance(b, Stall):
            await resp.write(res.data[: b.after])
            await asyncio.sleep(b.seconds)
            await resp.write(res.data[b.after :])
            return resp
        if isinstance(b, Drip):
            for i in range(0, len(res.data), b.chunk):
                await resp.write(res.data[i : i + b.chunk])
                await asyncio.sleep(b.interval)
            return resp
        raise AssertionError(f"unknown behaviour {b!r}")

    def _ok(self, request: web.Request, res: _Resource) -> web.Response:
        headers = {"Content-Type": res.content_type}
        if res.etag:
            headers["ETag"] = res.etag
        if res.last_modified:
            headers["Last-Modified"] = res.last_modified
        inm = request.headers.get("If-None-Match")
        ims = request.headers.get("If-Modified-Since")
        if inm is not None and res.etag is not None:
            if res.etag in [t.strip() for t in inm.split(",")] or inm.strip() == "*":
                return web.Response(status=304, headers=headers)
        elif ims is not None and res.last_modified is not None:
            try:
                since = email.utils.parsedate_to_datetime(ims)
                modified = email.utils.parsedate_to_datetime(res.last_modified)
            except (TypeError, ValueError):
                pass
            else:
                if modified <= since:
                    return web.Response(status=304, headers=headers)
        return web.Response(body=res.data, headers=headers)


class ThreadedImageServer:
    """An ``ImageServer`` on its own event loop in a daemon thread.

    For tests that run ``artpipe`` in a subprocess (and SIGKILL it): the server
    lives in the test process, outside the event loop the test itself may use.
    ``with ThreadedImageServer() as srv:`` yields the started ``ImageServer``.
    """

    def __init__(self, **options: Any) -> None:
        self.srv = ImageServer(**{"generate": False, **options})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="image-server")

    def __enter__(self) -> ImageServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.srv.start(), self.loop).result(30)
        return self.srv

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.srv.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


def _hang_up(request: web.Request) -> None:
    """Close the socket under aiohttp's feet: the client sees a short body."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def gzip_bytes(data: bytes) -> bytes:
    """gzip ``data`` (for tests that serve honest compressed bodies)."""
    return gzip.compress(data)


# ------------------------------------------------------------------ separate process


async def _serve_forever(args: argparse.Namespace) -> None:
    srv = ImageServer(
        latency=args.latency, image_size=(args.width, args.height), quality=args.quality
    )
    await srv.start(port=args.port)
    sys.stdout.write(f"PORT {srv.port}\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await srv.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="loopback image server for benchmarks")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=750)
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality (85: ~42 KB)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve_forever(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()


__all__: list[Any] = [
    "OK",
    "Behaviour",
    "Body",
    "Drip",
    "Drop",
    "GzipBomb",
    "Hit",
    "ImageServer",
    "LyingLength",
    "Redirect",
    "Stall",
    "Status",
    "distinct_jpeg",
    "gzip_bomb",
    "gzip_bytes",
    "make_image",
]
