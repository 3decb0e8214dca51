"""Headless Chromium driven over the DevTools protocol, for checking pages in a real browser.

Uses only aiohttp (already a dependency) to speak the Chrome DevTools
Protocol to Debian's ``chromium``: no Selenium, no driver binary to match to
the browser's version. A test opens a ``file://`` page, waits for the page to
say it is ready, evaluates JavaScript in it, and reads everything the console
and the browser's own log reported (script errors, CSP violations, images and
files that failed to load).

Chromium is required, not optional: without it ``chromium_path`` fails the
test with the apt line that installs it (a skipped browser test proves nothing).

Usage::

    async with Browser() as browser:
        await browser.open(path.as_uri())
        assert await browser.eval("document.title") == "..."
        assert browser.problems() == []
        await browser.screenshot(Path("shot.png"))
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

INSTALL = "apt-get install -y chromium"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str:
    """The browser to drive: $ARTPIPE_CHROMIUM, else the first Chromium on PATH; else fail."""
    override = os.environ.get("ARTPIPE_CHROMIUM")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            pytest.fail(f"ARTPIPE_CHROMIUM={override} is not an executable file", pytrace=False)
        return override
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "headless Chromium is needed for the report page's browser tests but none is on "
        f"PATH (looked for {', '.join(_CANDIDATES)}); install it: {INSTALL} "
        "(or point ARTPIPE_CHROMIUM at a Chromium binary)",
        pytrace=False,
    )


class BrowserError(RuntimeError):
    """The browser could not start or a protocol call failed."""


class Browser:
    """One headless Chromium with one page; an async context manager."""

    def __init__(self, width: int = 1280, height: int = 900, start_timeout: float = 60.0):
        self.width = width
        self.height = height
        self.start_timeout = start_timeout
        self.console: list[dict[str, Any]] = []  # every console call, log entry and exception
        self.last_load_s = 0.0
        self._proc: asyncio.subprocess.Process | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}

    async def __aenter__(self) -> Browser:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="artpipe-chromium-")
        self._proc = await asyncio.create_subprocess_exec(
            chromium_path(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync",
            "--hide-scrollbars", "--mute-audio", f"--window-size={self.width},{self.height}",
            f"--user-data-dir={self._profile.name}", "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1", "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        endpoint = await asyncio.wait_for(self._endpoint(), self.start_timeout)
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"http://{endpoint}/json/list") as resp:
            targets = await resp.json(content_type=None)
        pages = [t for t in targets if t.get("type") == "page"]
        if not pages:
            raise BrowserError(f"Chromium at {endpoint} offers no page target: {targets}")
        self._ws = await self._http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=self.width,
                        height=self.height, deviceScaleFactor=1, mobile=False)

    async def _endpoint(self) -> str:
        """host:port from Chromium's "DevTools listening on ws://…" line on stderr."""
        assert self._proc is not None and self._proc.stderr is not None
        seen = []
        while True:
            line = await self._proc.stderr.readline()
            if not line:
                raise BrowserError("Chromium exited before it listened for DevTools: "
                                   + " | ".join(seen[-10:]))
            text = line.decode(errors="replace").strip()
            seen.append(text)
            found = re.search(r"DevTools listening on ws://([^/\s]+)/", text)
            if found:
                # keep draining stderr so a chatty browser never blocks on a full pipe
                asyncio.get_running_loop().create_task(self._drain())
                return found.group(1)

    async def _drain(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        with contextlib.suppress(Exception):
            while await self._proc.stderr.read(65536):
                pass

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._profile is not None:
            self._profile.cleanup()
        self._proc = self._http = self._ws = self._reader = self._profile = None

    # -- protocol ----------------------------------------------------------------
    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            method = data.get("method", "")
            params = data.get("params", {})
            self._record(method, params)
            for waiter in self._events.pop(method, []):
                if not waiter.done():
                    waiter.set_result(params)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("Chromium closed the DevTools connection"))

    def _record(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append({"source": "console", "level": params["type"], "text": text})
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.console.append({"source": "exception", "level": "error", "text": text})
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.console.append({"source": entry.get("source", "log"),
                                 "level": entry.get("level", ""),
                                 "text": f"{entry.get('text', '')} {entry.get('url', '')}".strip()})

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        if self._ws is None:
            raise BrowserError("the browser is not running")
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 60)
        if "error" in reply:
            raise BrowserError(f"{method} failed: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def _expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._events.setdefault(method, []).append(future)
        return future

    # -- what tests call ---------------------------------------------------------
    async def open(self, url: str, *, ready: str = "document.documentElement.dataset.ready",
                   timeout: float = 60.0) -> float:
        """Load ``url``; returns the seconds until it was interactive.

        Interactive: DOMContentLoaded fired and ``ready`` is truthy (the page's
        script has rendered its first screen and bound its handlers). Returns
        after the load event too (images in the first screen loaded), whose
        time is kept in ``last_load_s``.
        """
        interactive_event = self._expect("Page.domContentEventFired")
        loaded = self._expect("Page.loadEventFired")
        start = time.perf_counter()
        reply = await self.send("Page.navigate", url=url)
        if reply.get("errorText"):
            raise BrowserError(f"could not open {url}: {reply['errorText']}")
        await asyncio.wait_for(interactive_event, timeout)
        deadline = time.monotonic() + timeout
        while not await self.eval(f"!!({ready})"):
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} loaded but never became ready ({ready})")
            await asyncio.sleep(0.01)
        interactive = time.perf_counter() - start
        await asyncio.wait_for(loaded, timeout)
        self.last_load_s = time.perf_counter() - start
        return interactive

    async def eval(self, expression: str) -> Any:
        """Evaluate JavaScript in the page (promises awaited); returns the JSON value."""
        reply = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                awaitPromise=True)
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"script failed: {text}\n{expression}")
        return reply.get("result", {}).get("value")

    async def screenshot(self, path: Path, *, full_page: bool = True) -> None:
        """A PNG of the page (the whole scroll height with ``full_page``)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = await self.eval("[document.documentElement.scrollWidth,"
                                   " document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
            params["captureBeyondViewport"] = True
        shot = await self.send("Page.captureScreenshot", **params)
        path.write_bytes(base64.b64decode(shot["data"]))

    def problems(self) -> list[dict[str, Any]]:
        """Console errors and warnings, uncaught exceptions, failed loads, CSP reports."""
        return [c for c in self.console if c["level"] in ("error", "warning", "assert")]


async def _screenshot(page: Path, out: Path, width: int) -> None:
    async with Browser(width=width, height=900) as browser:
        await browser.open(page.resolve().as_uri())
        await browser.eval("Promise.all(Array.from(document.images).map(i => i.decode()"
                           ".catch(() => null)))")
        await browser.screenshot(out)
        if browser.problems():
            raise SystemExit(f"{page} reported problems: {browser.problems()}")


def main(argv: list[str] | None = None) -> None:
    """``python tests/support/browser.py PAGE.html OUT.png``: a full-page screenshot."""
    import argparse

    parser = argparse.ArgumentParser(description="Full-page PNG of a page, headless Chromium.")
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1200)
    args = parser.parse_args(argv)
    asyncio.run(_screenshot(args.page, args.out, args.width))


if __name__ == "__main__":
    main()
