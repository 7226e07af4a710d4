"""A headless browser for tests: Debian's `chromium`, driven over the DevTools protocol (CDP)
on one WebSocket (wsproto over trio). No downloaded browsers, no Playwright."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

FLAGS = [
    "--headless=new",
    "--no-sandbox",  # tests may run as root (CI containers)
    "--remote-debugging-port=0",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-gpu",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
    "--window-size=1280,900",
]


class CdpError(Exception):
    """A DevTools command answered with an error."""


class Cdp:
    """One WebSocket to the browser: commands matched to their answers by id, events of
    attached sessions handed to their `Page`."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, trio.MemorySendChannel] = {}
        self.pages: dict[str, Page] = {}
        self.lock = trio.Lock()

    @classmethod
    async def connect(cls, port: int, path: str) -> Cdp:
        """Open the browser's DevTools WebSocket at ws://127.0.0.1:PORT/PATH."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = WSConnection(ConnectionType.CLIENT)
        cdp = cls(stream, ws)
        await cdp._send_event(Request(host=f"127.0.0.1:{port}", target=path))
        while True:
            events = await cdp._receive()
            if any(isinstance(e, RejectConnection) for e in events):
                raise CdpError("the browser refused the DevTools WebSocket")
            if any(isinstance(e, AcceptConnection) for e in events):
                return cdp

    async def _send_event(self, event: object) -> None:
        async with self.lock:
            await self.stream.send_all(self.ws.send(event))

    async def _receive(self) -> list[object]:
        data = await self.stream.receive_some(1 << 20)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    async def read_loop(self) -> None:
        """Route answers and events until the browser closes the socket."""
        text = ""
        while True:
            events = await self._receive()
            for event in events:
                if isinstance(event, Ping):
                    await self._send_event(event.response())
                elif isinstance(event, CloseConnection):
                    return
                elif isinstance(event, TextMessage | BytesMessage):
                    text += event.data if isinstance(event, TextMessage) else event.data.decode()
                    if event.message_finished:
                        self._dispatch(json.loads(text))
                        text = ""
            if not events and self.ws.state.name == "CLOSED":
                return

    def _dispatch(self, msg: dict) -> None:
        if "id" in msg:
            channel = self.waiting.pop(msg["id"], None)
            if channel is not None:
                channel.send_nowait(msg)
            return
        page = self.pages.get(msg.get("sessionId", ""))
        if page is not None:
            page.on_event(msg["method"], msg.get("params", {}))

    async def call(self, method: str, session: str | None = None, **params: Any) -> dict:
        """Send one command and wait for its result (CdpError if it failed)."""
        msg_id = next(self.ids)
        send, receive = trio.open_memory_channel(1)
        self.waiting[msg_id] = send
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session is not None:
            msg["sessionId"] = session
        await self._send_event(TextMessage(json.dumps(msg)))
        with trio.fail_after(60):
            answer = await receive.receive()
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        return answer.get("result", {})


class Page:
    """A browser tab: navigate, evaluate, screenshots; console errors and uncaught
    exceptions collected in `errors`, console messages in `logs`."""

    def __init__(self, cdp: Cdp, session: str) -> None:
        self.cdp = cdp
        self.session = session
        self.errors: list[str] = []
        self.logs: list[str] = []
        self.loaded = trio.Event()

    async def call(self, method: str, **params: Any) -> dict:
        """A command to this page's session."""
        return await self.cdp.call(method, self.session, **params)

    def on_event(self, method: str, params: dict) -> None:
        """Collect what the page says."""
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.logs.append(f"{params['type']}: {text}")
            if params["type"] in ("error", "assert"):
                self.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            exc = details.get("exception", {}).get("description", details.get("text", ""))
            self.errors.append(f"uncaught: {exc}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.logs.append(f"log {entry['level']}: {entry['text']} {entry.get('url', '')}")
            if entry["level"] == "error":
                self.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}")
        elif method == "Page.loadEventFired":
            self.loaded.set()

    async def navigate(self, url: str, *, timeout: float = 20) -> None:
        """Load `url` and wait for its load event."""
        self.loaded = trio.Event()
        result = await self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise CdpError(f"navigate to {url}: {result['errorText']}")
        with trio.fail_after(timeout):
            await self.loaded.wait()

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited), as JSON."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(details.get("exception", {}).get("description", details["text"]))
        return result["result"].get("value")

    async def wait_for(self, expression: str, *, timeout: float = 20, poll: float = 0.2) -> Any:
        """Evaluate `expression` until it is truthy; its value (TimeoutError after `timeout`
        naming the expression and the page's errors)."""
        with trio.move_on_after(timeout):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await trio.sleep(poll)
        raise TimeoutError(f"{expression!r} not true within {timeout} s; errors: {self.errors}")

    async def playback(self, video: str = "video", *, seconds: float = 3, timeout: float = 30):
        """Wait until the `<video>` (a CSS selector) shows a picture, then until its
        currentTime has advanced `seconds` past the first one shown; its videoWidth."""
        v = f"document.querySelector({json.dumps(video)})"
        start = await self.wait_for(f"{v}.videoWidth > 0 && {v}.currentTime", timeout=timeout)
        await self.wait_for(f"{v}.currentTime > {start + seconds}", timeout=timeout)
        return await self.evaluate(f"{v}.videoWidth")

    async def play(
        self,
        base: str,
        stream: str,
        via: str,
        query: str = "",
        *,
        fragment: str = "",
        timeout: float = 30,
    ) -> tuple[int, str]:
        """Open the console at `base` playing `stream` ("app/name") over `via` (flv, ws or
        hls), `query` added to the play URL, `fragment` (e.g. the launcher's) to the page's,
        and watch it play (`playback`); its videoWidth and the player's status line."""
        ask = {"play": stream, "via": via} | ({"query": query} if query else {})
        await self.navigate(f"{base}/?{urlencode(ask)}" + (f"#{fragment}" if fragment else ""))
        width = await self.playback(timeout=timeout)
        return width, await self.evaluate("document.getElementById('playing').textContent")

    async def play_each(
        self, base: str, stream: str, vias: list[str], query: str = "", *, fragment: str = ""
    ) -> dict[str, tuple[int, str]]:
        """`play` over each of `vias` at the same time: the last in this tab, the others in
        windows of their own, left for about:blank once all played (their errors added to
        this one's); each via's videoWidth and status line."""
        tabs = [await new_page(self.cdp, window=True) for _ in vias[:-1]] + [self]
        played: dict[str, tuple[int, str]] = {}

        async def play(tab: Page, via: str) -> None:
            played[via] = await tab.play(base, stream, via, query, fragment=fragment)

        async with trio.open_nursery() as nursery:
            for tab, via in zip(tabs, vias, strict=True):
                nursery.start_soon(play, tab, via)
        for tab in tabs[:-1]:
            await tab.navigate("about:blank")
            self.errors += tab.errors
        return {via: played[via] for via in vias}

    async def screenshot(self, path: Path, *, full: bool = False) -> None:
        """Save the page (the window, or all of it if `full`) as PNG to `path` (and keep a
        copy: `keep_screenshot`)."""
        shape: dict[str, Any] = {}
        if full:
            size = (await self.call("Page.getLayoutMetrics"))["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            shape = {"captureBeyondViewport": True, "clip": clip}
        result = await self.call("Page.captureScreenshot", format="png", **shape)
        path.write_bytes(base64.b64decode(result["data"]))
        keep_screenshot(path)


class Browser:
    """A running headless chromium and its DevTools connection."""

    def __init__(self, cdp: Cdp, nursery: trio.Nursery) -> None:
        self.cdp = cdp
        self.nursery = nursery

    async def new_page(self) -> Page:
        """A new tab with Page, Runtime and Log events on."""
        return await new_page(self.cdp)


async def new_page(cdp: Cdp, *, window: bool = False) -> Page:
    """A new tab of the browser behind `cdp` (in a window of its own: a tab in the foreground,
    whose videos play), with Page, Runtime and Log events on."""
    target = await cdp.call("Target.createTarget", url="about:blank", newWindow=window)
    attached = await cdp.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)
    page = Page(cdp, attached["sessionId"])
    cdp.pages[page.session] = page
    for domain in ("Page", "Runtime", "Log"):
        await page.call(f"{domain}.enable")
    return page


def keep_screenshot(shot: Path) -> None:
    """Copy `shot` into the folder named by LIVECDN_SCREENSHOTS, if set (e.g. `docs`, to
    refresh the README's pictures)."""
    folder = os.environ.get("LIVECDN_SCREENSHOTS")
    if folder:
        shutil.copyfile(shot, Path(folder) / shot.name)


@contextlib.asynccontextmanager
async def open_browser(profile: Path) -> AsyncIterator[Browser]:
    """Start chromium with a fresh profile in `profile` (an empty directory); stopped on
    exit. Tests using it should carry `needs_chromium`."""
    assert CHROMIUM is not None
    port_file = profile / "DevToolsActivePort"
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                check=False,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                task_status=task_status,
            )
        )
        try:
            with trio.fail_after(30):
                while not port_file.exists() or len(port_file.read_text().split()) < 2:
                    if proc.returncode is not None:
                        raise RuntimeError(f"chromium exited with {proc.returncode}")
                    await trio.sleep(0.05)
            port, path = port_file.read_text().split()[:2]
            cdp = await Cdp.connect(int(port), path)
            nursery.start_soon(cdp.read_loop)
            yield Browser(cdp, nursery)
        finally:
            nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def open_page(tmp_path: Path) -> AsyncIterator[Page]:
    """A tab of a fresh chromium whose profile lives under `tmp_path`."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    async with open_browser(profile) as browser:
        yield await browser.new_page()
