"""Nodes as processes: an origin that runs out of file descriptors (prlimit --nofile=64)
recovers once connections close; an edge whose parent origin is killed with SIGKILL and
restarted lives on (and plays again). Memory (VmRSS) of each process stays bounded."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
import trio

from common.net.httpclient import fetch
from tests.robustness.conftest import (
    MAX_GAP,
    PRLIMIT,
    RSS_SLACK_KB,
    Canary,
    NodeProcess,
    connect,
    flv_canary,
    healthz,
    publish_forever,
    reset,
)

pytestmark = pytest.mark.slow


def _background_trio(fn, *args) -> tuple:
    """Run `fn(*args)` in a trio loop on a thread; returns (thread, cancel)."""
    import threading

    holder: dict = {}
    ready = threading.Event()

    async def main() -> None:
        with trio.CancelScope() as scope:
            holder["scope"] = scope
            holder["token"] = trio.lowlevel.current_trio_token()
            ready.set()
            await fn(*args)

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    ready.wait(10)

    def cancel() -> None:
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(holder["scope"].cancel, trio_token=holder["token"])
        thread.join(10)

    return thread, cancel


async def _live(http_port: int, stream: str = "live/canary") -> None:
    """Until the origin at `http_port` has `stream` (its publisher has started)."""
    with trio.fail_after(10):  # a hang guard
        while (
            await fetch("GET", f"http://127.0.0.1:{http_port}/api/streams/{stream}")
        ).status != 200:
            await trio.sleep(0.1)


async def _publish_and_watch(
    url_pub: str, http_port: int, url_play: str, canary: Canary, state: dict
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish_forever, url_pub, state)
        await _live(http_port)
        await flv_canary(canary, url_play)


@pytest.mark.skipif(PRLIMIT is None, reason="prlimit is not installed")
def test_file_descriptors_run_out() -> None:
    origin = NodeProcess(
        "origin", ["--rtmp", "0", "--http", "0"], prefix=[PRLIMIT, "--nofile=64:64"]
    ).wait_up()
    try:
        rss_before = origin.rss_kb()
        held: list[socket.socket] = []
        # well past the limit, on both ports
        for i in range(120):
            port = origin.http_port if i % 2 else origin.rtmp_port
            with contextlib.suppress(OSError):
                sock = connect(port, 1.0)
                if i % 4 == 1:
                    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                held.append(sock)
        time.sleep(1.0)
        assert origin.alive(), "the origin exited when file descriptors ran out:\n" + origin.tail()
        assert any(
            "Too many open files" in line or "connection limit" in line for line in origin.lines
        ), "neither the descriptors nor the connection limit ran out:\n" + origin.tail()
        for sock in held[: len(held) // 2]:
            reset(sock)
        deadline = time.monotonic() + 10
        status: int | str = ""
        while time.monotonic() < deadline:
            status = healthz(origin.http_port, timeout=1.0)
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, f"/healthz after some connections closed: {status}\n{origin.tail()}"
        for sock in held:
            reset(sock)
        time.sleep(0.5)
        # and it still takes a publisher and a viewer
        canary, state = Canary("fd-origin"), {}
        app_url = f"rtmp://127.0.0.1:{origin.rtmp_port}/live/canary"
        _, cancel = _background_trio(
            _publish_and_watch,
            app_url,
            origin.http_port,
            f"http://127.0.0.1:{origin.http_port}/live/canary.flv",
            canary,
            state,
        )
        deadline = time.monotonic() + 10  # a hang guard: until the canary has frames
        while time.monotonic() < deadline and len(canary.arrivals) < 5:
            time.sleep(0.1)
        cancel()
        assert canary.arrivals, f"no frames after the fd storm: {canary.error} {state}"
        assert origin.alive() and healthz(origin.http_port) == 200
        grown = origin.rss_kb() - rss_before
        assert grown < RSS_SLACK_KB, f"origin RSS grew by {grown // 1024} MiB"
    finally:
        origin.stop()


def test_parent_killed_and_restarted() -> None:
    """SIGKILL the origin under an edge (rtmp:// and http:// parents) twice; the edges live,
    answer /healthz throughout, and play the stream again once the origin is back."""
    origin = NodeProcess("origin", ["--rtmp", "0", "--http", "0"]).wait_up()
    rtmp_port, http_port = origin.rtmp_port, origin.http_port
    edges = [
        NodeProcess("edge", ["--rtmp", "0", "--http", "0", "--parent", parent]).wait_up()
        for parent in (f"rtmp://127.0.0.1:{rtmp_port}", f"http://127.0.0.1:{http_port}")
    ]
    cancels = []
    try:
        rss_before = [e.rss_kb() for e in edges]
        for attempt in range(2):
            canaries = [Canary(f"edge{i}-{attempt}") for i in range(len(edges))]
            state: dict = {}

            async def run(canaries=canaries, state=state) -> None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        publish_forever, f"rtmp://127.0.0.1:{rtmp_port}/live/canary", state
                    )
                    await _live(http_port)
                    for edge, canary in zip(edges, canaries, strict=True):
                        nursery.start_soon(
                            flv_canary, canary, f"http://127.0.0.1:{edge.http_port}/live/canary.flv"
                        )

            _, cancel = _background_trio(run)
            cancels.append(cancel)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not all(len(c.arrivals) > 5 for c in canaries):
                time.sleep(0.1)
            assert all(len(c.arrivals) > 5 for c in canaries), [
                (c.name, len(c.arrivals), c.error) for c in canaries
            ] + [e.tail(10) for e in edges]
            origin.kill()  # SIGKILL while both edges pull from it
            cancel()
            for _ in range(10):
                time.sleep(0.2)
                for edge in edges:
                    assert edge.alive(), "edge exited after its parent died:\n" + edge.tail()
                    status = healthz(edge.http_port, timeout=MAX_GAP)
                    assert status == 200, f"edge /healthz while the parent is down: {status}"
            origin = NodeProcess(
                "origin", ["--rtmp", str(rtmp_port), "--http", str(http_port)]
            ).wait_up()
        for edge, before in zip(edges, rss_before, strict=True):
            grown = edge.rss_kb() - before
            assert grown < RSS_SLACK_KB, f"edge RSS grew by {grown // 1024} MiB"
    finally:
        for cancel in cancels:
            cancel()
        origin.stop()
        for edge in edges:
            edge.stop()
