"""Floods: many idle and half-sent connections on every listener, many publishers and
viewers at once that then vanish, and a publisher sending as fast as it can, while the
canaries of another stream keep playing and /healthz keeps answering."""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import trio

from common.net.httpclient import open_request
from common.net.rtmpclient import RtmpClient
from tests.media import aac_frame, aac_header, avc_header, interframe, keyframe
from tests.robustness.conftest import CANARY, FFMPEG, MAX_GAP, Cluster, connect, healthz, reset

pytestmark = pytest.mark.slow

PARTIAL = {
    "rtmp": [b"", b"\x03", b"\x03" + b"\x00" * 700],
    "http": [b"", b"GET /healthz HTTP/1.1\r\nHost", b"GET /live/canary.flv HTTP/1.1\r\n"],
    "control": [b"", b"\x00\x00", b"\x00\x00\x10\x00\x81"],
}


class HealthWatch:
    """Polls /healthz on every node from a thread; notes every answer that is not 200 or
    does not come within MAX_GAP (a stall guard, as for the canaries)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for node, port in self.cluster.http_targets():
                t0 = time.monotonic()
                status = healthz(port, timeout=MAX_GAP)
                took = time.monotonic() - t0
                if status != 200:
                    self.failures.append(f"{node}: /healthz {status} after {took:.1f} s")
            self._stop.wait(0.3)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self.failures, "\n".join(self.failures[:20])


def _flood(attacks: list[list[tuple[str, int]]], hold_seconds: float) -> None:
    """The attacker, in a process of its own. For each node in turn (`attacks`: its
    listeners' kinds and ports): 200 connections on each listener, idle or stopped
    mid-request, plus three threads per HTTP listener of short /metrics requests reset at
    once; it holds them `hold_seconds`, then resets them all together."""
    for listeners in attacks:
        held: list[socket.socket] = []
        for kind, port in listeners:
            for i in range(200):
                try:
                    sock = connect(port)
                except OSError:
                    continue
                data = PARTIAL[kind][i % len(PARTIAL[kind])]
                if data:
                    with contextlib.suppress(OSError):
                        sock.sendall(data)
                held.append(sock)
        threads = [
            threading.Thread(target=_burst, args=(port,))
            for kind, port in listeners
            if kind == "http"
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(hold_seconds)
        for sock in held:
            reset(sock)


def _burst(port: int) -> None:
    for _ in range(60):
        with contextlib.suppress(OSError):
            sock = connect(port)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            reset(sock)


def test_connection_flood(cluster: Cluster) -> None:
    """Each node in turn: 200 connections on each of its listeners, idle or stopped
    mid-request, plus a burst of short HTTP requests; then all reset at once.

    The attacker is another process, as it would be (threads of this one would take turns
    with the nodes' loop for the GIL), and it floods one node at a time: the four nodes
    share one thread here, so a flood of all at once would put four nodes' work in front
    of each one's new connections."""
    since = time.monotonic()
    attacks = []
    for n in cluster.nodes.values():
        listeners = [("http", n.http_port)] + ([("rtmp", n.rtmp_port)] if n.rtmp_port else [])
        if n.control_port:
            listeners.append(("control", n.control_port))
        attacks.append(listeners)
    attacker = multiprocessing.get_context("spawn").Process(target=_flood, args=(attacks, 2.0))
    with HealthWatch(cluster):
        attacker.start()
        attacker.join(90)
        assert attacker.exitcode == 0, f"the attacker process ended with {attacker.exitcode}"
        cluster.wait_frames(1.0)
    cluster.check(since)


async def _publisher(port: int, name: str, seconds: float) -> None:
    with contextlib.suppress(Exception):
        client = await RtmpClient.connect(f"rtmp://127.0.0.1:{port}/live/{name}")
        try:
            await client.publish()
            await client.send_metadata({"width": 160.0, "height": 120.0, "videocodecid": 7.0})
            await client.send(9, 0, avc_header())
            await client.send(8, 0, aac_header())
            start = trio.current_time()
            for n in range(int(seconds * 25)):
                await trio.sleep_until(start + n / 25)
                await client.send(9, n * 40, keyframe(3000) if n % 25 == 0 else interframe(600))
                await client.send(8, n * 40, aac_frame())
        finally:
            with contextlib.suppress(OSError):
                client.conn.sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0"
                )
            client.close()


async def _viewer(port: int, name: str, seconds: float) -> None:
    """Play live/name over HTTP-FLV for `seconds`, (re)connecting while it is not there."""
    with trio.move_on_after(seconds):
        while True:
            with contextlib.suppress(Exception):
                resp = await open_request("GET", f"http://127.0.0.1:{port}/live/{name}.flv")
                try:
                    async for _ in resp.chunks():
                        pass
                finally:
                    resp.close()
            await trio.sleep(0.2)


def test_publish_flood(cluster: Cluster) -> None:
    """40 publishers at once, each watched on both edges, all cut off together."""
    since = time.monotonic()
    origin = cluster.node("origin")
    edges = [cluster.node("edge-http"), cluster.node("edge-rtmp")]

    async def flood() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(_publisher, origin.rtmp_port, f"flood{i}", 4.0)
                for edge in edges:
                    nursery.start_soon(_viewer, edge.http_port, f"flood{i}", 3.5)

    with HealthWatch(cluster):
        trio.run(flood)
        cluster.wait_frames(1.5)
    cluster.check(since)


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")
def test_fast_publisher(cluster: Cluster, clip: Path) -> None:
    """ffmpeg without -re: a publisher sending media as fast as it can for 6 s, with viewers
    of it on both edges; the canary stream keeps flowing."""
    since = time.monotonic()
    origin = cluster.node("origin")
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-stream_loop", "-1", "-i", str(clip),
           "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{origin.rtmp_port}/live/fast"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    registry = origin.obj.registry
    try:
        deadline = time.monotonic() + 10
        while registry.get("live", "fast") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        stream = registry.get("live", "fast")
        assert stream is not None, "ffmpeg did not start publishing"
        # the canary's publisher is paced in real time: the flood is measured against it
        canary = registry.get(*CANARY)
        frames, paced = stream.stats.frames_in, canary.stats.frames_in

        async def viewers() -> None:
            async with trio.open_nursery() as nursery:
                for edge in ("edge-http", "edge-rtmp", "origin"):
                    for _ in range(3):
                        nursery.start_soon(_viewer, cluster.node(edge).http_port, "fast", 5.5)

        with HealthWatch(cluster):
            trio.run(viewers)
            cluster.wait_frames(0.5)
        flooded = stream.stats.frames_in - frames
        real_time = canary.stats.frames_in - paced
        assert flooded > 4 * real_time, (
            f"{flooded} messages while the real-time canary sent {real_time} (not a flood)"
        )
    finally:
        proc.kill()
        proc.wait(10)
    cluster.wait_frames(1.0)
    cluster.check(since)
