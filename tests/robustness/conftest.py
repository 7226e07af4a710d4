"""The hostile-client suite's cluster: an origin, an edge with an http:// parent, an edge
with an rtmp:// parent and a balancer, started in-process on port 0 in a trio loop of their
own (a background thread), with a real H.264/AAC publisher and canary viewers that record
when every video frame arrives. Tests attack the nodes from the main thread (blocking
sockets, or a second trio loop) and then call `Cluster.check()`: every node still runs and
answers /healthz, every canary kept receiving frames (no gap over `MAX_GAP`), the canaries'
bytes decode with PyAV, and memory stayed bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from common.config import BalancerConfig, EdgeConfig, OriginConfig, build
from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClient
from common.proto.flv import FlvParser
from common.proto.rtmp.chunk import encode_message
from common.proto.rtmp.handshake import ClientHandshake

MAX_GAP = 2.0
"""Longest a canary may go without a video frame (or the balancer poller without a route,
or a node's /healthz without an answer). A stall guard, not a latency target: the canary
stream has 25 frames a second, so 2 s without one means a node stopped serving it (the
nodes run on the real clock, next to attackers on real sockets, so no virtual clock can
stand in)."""
RSS_SLACK_KB = 400 * 1024
"""How much a node's (or the test process's) resident memory may grow during one test."""
CANARY = ("live", "canary")
CAPTURE_BYTES = 96 * 1024
"""Bytes of each HTTP-FLV canary kept for the PyAV decode check."""
ROOT = Path(__file__).resolve().parents[2]

PRLIMIT = shutil.which("prlimit")
FFMPEG = shutil.which("ffmpeg")


def hostile_name_ok(app: str, name: str) -> bool:
    """False for a key that would legitimately take over or kick the canary stream."""
    return not (app.strip("/") == CANARY[0] and name.partition("?")[0] == CANARY[1])


# ---------------------------------------------------------------------------- memory


def rss_kb(pid: int | None = None) -> int:
    """VmRSS of a process (this one by default), in KiB."""
    text = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


# ---------------------------------------------------------------------------- canaries


@dataclass
class Canary:
    """A viewer that plays the canary stream the whole test and notes each video frame."""

    name: str
    arrivals: list[float] = field(default_factory=list)
    captured: bytearray = field(default_factory=bytearray)
    error: str | None = None
    decodes: bool = True
    last_failure: str = ""

    def note(self) -> None:
        self.arrivals.append(time.monotonic())

    def max_gap(self, since: float) -> float:
        """Longest wait for a frame between `since` and now (the open tail included)."""
        points = [since] + [t for t in self.arrivals if t > since] + [time.monotonic()]
        return max(b - a for a, b in zip(points, points[1:], strict=False))

    def frames_since(self, since: float) -> int:
        return sum(1 for t in self.arrivals if t > since)

    def problems(self, since: float) -> list[str]:
        out = []
        if self.error is not None:
            out.append(f"canary {self.name}: {self.error}")
        if not self.arrivals:
            out.append(f"canary {self.name}: never received a frame")
            return out
        gap = self.max_gap(since)
        if gap > MAX_GAP:
            out.append(f"canary {self.name}: no frame for {gap:.1f} s (limit {MAX_GAP:g} s)")
        return out

    def decode_problem(self) -> str | None:
        """None if the captured FLV decodes to pictures with PyAV, else why not."""
        if not self.decodes:
            return None
        import av

        data = bytes(self.captured)
        try:
            with av.open(io.BytesIO(data), format="flv") as container:
                pictures = 0
                for frame in container.decode(video=0):
                    if frame.width and frame.height:
                        pictures += 1
                    if pictures >= 5:
                        return None
        except Exception as exc:  # noqa: BLE001 - any decode failure is the finding
            return f"canary {self.name}: captured FLV does not decode: {exc!r}"
        return f"canary {self.name}: only {pictures} pictures decoded from {len(data)} bytes"


async def flv_canary(canary: Canary, url: str) -> None:
    """Play `url` (following one redirect) over HTTP-FLV until cancelled."""
    try:
        resp = await open_request("GET", url, timeout=10)
        if resp.status in (301, 302, 307):
            location = resp.headers.get("location", "")
            resp.close()
            resp = await open_request("GET", location, timeout=10)
        if resp.status != 200:
            canary.error = f"HTTP {resp.status} for {url}"
            resp.close()
            return
        parser = FlvParser()
        try:
            async for data in resp.chunks():
                if len(canary.captured) < CAPTURE_BYTES:
                    canary.captured += data
                for tag in parser.feed(data):
                    if tag.tag_type == 9:
                        canary.note()
        finally:
            resp.close()
        canary.error = "the stream ended"
    except Exception as exc:  # noqa: BLE001 - recorded, checked by the test
        canary.error = f"broke: {exc!r}"


async def rtmp_canary(canary: Canary, url: str) -> None:
    """Play `url` over RTMP until cancelled."""
    canary.decodes = False
    try:
        client = await RtmpClient.connect(url)
        try:
            await client.play()
            while True:
                events = await client.next_events()
                if not events and client.conn.closed:
                    break
                for event in events:
                    if getattr(event, "type_id", None) == 9:
                        canary.note()
                    elif type(event).__name__ in ("StreamEOF",):
                        canary.error = "the server ended the stream"
                        return
        finally:
            client.close()
        canary.error = "the connection closed"
    except Exception as exc:  # noqa: BLE001
        canary.error = f"broke: {exc!r}"


async def route_poller(canary: Canary, base: str) -> None:
    """Ask the balancer for a route to the canary stream four times a second."""
    canary.decodes = False
    app, name = CANARY
    while True:
        try:
            reply = await fetch(
                "GET", f"{base}/api/route?app={app}&name={name}&proto=flv", timeout=MAX_GAP
            )
            status, body = reply.status, reply.body
            if status == 200 and "url" in json.loads(body):
                canary.note()
            else:
                canary.last_failure = f"HTTP {status}: {body[:200]!r}"
        except Exception as exc:  # noqa: BLE001
            canary.last_failure = repr(exc)
        await trio.sleep(0.25)


# ---------------------------------------------------------------------------- nodes


@dataclass
class Node:
    """One in-process node: its object, ports, and what ended it (if anything)."""

    name: str
    obj: Any
    http_port: int = 0
    rtmp_port: int = 0
    control_port: int = 0
    error: str | None = None
    finished: bool = False

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.obj.run(task_status=task_status)
            self.error = "run() returned"
        except BaseException as exc:
            real = [leaf for leaf in _leaves(exc) if not isinstance(leaf, trio.Cancelled)]
            if not real:
                raise
            self.error = "".join(traceback.format_exception(real[0]))[-4000:]
        finally:
            self.finished = True


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def publisher_settings():
    """A small, cheap real H.264 + AAC source (1 s GOP)."""
    from topology.publisher import SourceSettings

    return SourceSettings(
        width=160, height=120, fps=15, video_kbps=150, audio_kbps=32, gop_seconds=1.0
    )


async def publish_forever(url: str, state: dict) -> None:
    """The canary stream's publisher; a failure is recorded (canaries will notice)."""
    from topology.publisher import publish

    try:
        await publish(url, settings=publisher_settings())
    except Exception as exc:  # noqa: BLE001
        state["publisher_error"] = repr(exc)


class Cluster:
    """Origin, two edges and a balancer in a trio loop on a background thread."""

    def __init__(
        self,
        *,
        edge_overrides: dict[str, object] | None = None,
        balancer_overrides: dict[str, object] | None = None,
        **origin_overrides: object,
    ) -> None:
        self.origin_overrides = origin_overrides
        self.edge_overrides = edge_overrides or {}
        self.balancer_overrides = balancer_overrides or {}
        self.nodes: dict[str, Node] = {}
        self.canaries: dict[str, Canary] = {}
        self.state: dict[str, str] = {}
        self.token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=self._thread_main, name="cluster", daemon=True)
        self.started = 0.0
        self.rss_before = 0

    # -- lifecycle

    def start(self, timeout: float = 40.0) -> Cluster:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the cluster did not come up in time")
        if self._failure is not None:
            raise RuntimeError("the cluster failed to start") from self._failure
        self.started = time.monotonic()
        self.rss_before = rss_kb()
        return self

    def stop(self) -> None:
        if self.token is not None and self._scope is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self.token)
        self._thread.join(15)

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # noqa: BLE001
            self._failure = exc
            self._ready.set()

    def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run an async function inside the cluster's loop (from the test's thread)."""
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                await self._start(nursery)
                self._ready.set()
                await trio.sleep_forever()

    async def _start(self, nursery: trio.Nursery) -> None:
        from balancer.server import Balancer
        from edge.server import Edge
        from origin.server import Origin

        balancer = Node(
            "balancer",
            Balancer(
                build(
                    BalancerConfig,
                    {
                        "host": "127.0.0.1",
                        "http_port": 0,
                        "control_port": 0,
                        "check_interval": 0.5,
                        **self.balancer_overrides,
                    },  # fmt: skip
                )
            ),
        )
        http_port, control_port = await nursery.start(balancer.run)
        balancer.http_port, balancer.control_port = http_port, control_port
        ctl = f"127.0.0.1:{control_port}"
        origin_cfg = {
            "host": "127.0.0.1",
            "rtmp_port": 0,
            "http_port": 0,
            "balancer": ctl,
            "node_id": "origin",
            **self.origin_overrides,
        }
        origin = Node("origin", Origin(build(OriginConfig, origin_cfg)))
        addr = await nursery.start(origin.run)
        origin.http_port, origin.rtmp_port = addr.http_port, addr.rtmp_port
        edges = {}
        for name, parent in (
            ("edge-http", f"http://127.0.0.1:{addr.http_port}"),
            ("edge-rtmp", f"rtmp://127.0.0.1:{addr.rtmp_port}"),
        ):
            cfg = {
                "host": "127.0.0.1",
                "rtmp_port": 0,
                "http_port": 0,
                "parents": [parent],
                "balancer": ctl,
                "node_id": name,
                **self.edge_overrides,
            }
            edge = Node(name, Edge(build(EdgeConfig, cfg)))
            eaddr = await nursery.start(edge.run)
            edge.http_port, edge.rtmp_port = eaddr.http_port, eaddr.rtmp_port
            edges[name] = edge
        self.nodes = {"origin": origin, **edges, "balancer": balancer}

        app, name = CANARY
        nursery.start_soon(
            publish_forever, f"rtmp://127.0.0.1:{origin.rtmp_port}/{app}/{name}", self.state
        )
        with trio.fail_after(30):
            while origin.obj.registry.get(app, name) is None or not any(
                f.keyframe for f in origin.obj.registry.get(app, name).iter_frames()
            ):
                await trio.sleep(0.05)
            # the balancer knows both edges before its canary asks for a route
            while len(balancer.obj.edges) < 2:
                await trio.sleep(0.05)

        plays = {
            "origin-flv": (flv_canary, f"http://127.0.0.1:{origin.http_port}/{app}/{name}.flv"),
            "edge-http-flv": (
                flv_canary,
                f"http://127.0.0.1:{edges['edge-http'].http_port}/{app}/{name}.flv",
            ),
            "edge-rtmp-flv": (
                flv_canary,
                f"http://127.0.0.1:{edges['edge-rtmp'].http_port}/{app}/{name}.flv",
            ),
            "edge-rtmp-rtmp": (
                rtmp_canary,
                f"rtmp://127.0.0.1:{edges['edge-rtmp'].rtmp_port}/{app}/{name}",
            ),
            "balancer-flv": (flv_canary, f"http://127.0.0.1:{balancer.http_port}/{app}/{name}.flv"),
            "balancer-route": (route_poller, f"http://127.0.0.1:{balancer.http_port}"),
        }
        for cname, (fn, url) in plays.items():
            canary = self.canaries[cname] = Canary(cname)
            nursery.start_soon(fn, canary, url)
        with trio.fail_after(30):
            while not all(len(c.arrivals) >= 3 or c.error for c in self.canaries.values()):
                await trio.sleep(0.05)
        broken = [c.name + ": " + str(c.error) for c in self.canaries.values() if c.error]
        if broken:
            raise RuntimeError(f"canaries failed at start: {broken}")

    # -- helpers for tests

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def http_targets(self) -> list[tuple[str, int]]:
        return [(n.name, n.http_port) for n in self.nodes.values()]

    def rtmp_targets(self) -> list[tuple[str, int]]:
        return [(n.name, n.rtmp_port) for n in self.nodes.values() if n.rtmp_port]

    def wait_frames(self, seconds: float) -> None:
        """Let the canaries play on for a while (frames keep arriving, or not)."""
        time.sleep(seconds)

    def problems(self, since: float | None = None, *, decode: bool = True) -> list[str]:
        """Everything wrong with the cluster now (empty if it is healthy)."""
        since = self.started if since is None else since
        out = []
        for node in self.nodes.values():
            if node.finished or node.error:
                out.append(f"node {node.name} is no longer running:\n{node.error}")
        for node in self.nodes.values():
            if node.finished:
                continue
            status = healthz(node.http_port)
            if status != 200:
                out.append(f"node {node.name}: /healthz answered {status}")
        if "publisher_error" in self.state:
            out.append(f"the canary publisher failed: {self.state['publisher_error']}")
        for canary in self.canaries.values():
            found = canary.problems(since)
            if found and canary.last_failure:
                found.append(f"  canary {canary.name}'s last failure: {canary.last_failure}")
            out += found
        if decode:
            for canary in self.canaries.values():
                why = canary.decode_problem()
                if why:
                    out.append(why)
        grown = rss_kb() - self.rss_before
        if grown > RSS_SLACK_KB:
            out.append(f"the test process's RSS grew by {grown // 1024} MiB")
        return out

    def check(self, since: float | None = None, *, decode: bool = True) -> None:
        """Fail with every problem found, if any."""
        problems = self.problems(since, decode=decode)
        assert not problems, "\n".join(problems)

    def alive(self) -> list[str]:
        """Cheap check between examples: names of nodes that stopped."""
        return [n.name for n in self.nodes.values() if n.finished or n.error]


@pytest.fixture
def cluster() -> Cluster:
    """A running cluster with the canary stream playing everywhere."""
    c = Cluster().start()
    try:
        yield c
    finally:
        c.stop()


# ---------------------------------------------------------------------------- raw clients


def healthz(port: int, timeout: float = 3.0) -> int | str:
    """Status of GET /healthz (or why it failed)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()
    except Exception as exc:  # noqa: BLE001
        return repr(exc)


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """A plain GET (not following redirects)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def strict_json(body: bytes) -> Any:
    """json.loads that refuses NaN/Infinity (not JSON)."""

    def bad(token: str) -> Any:
        raise ValueError(f"{token} is not valid JSON")

    return json.loads(body, parse_constant=bad)


def connect(port: int, timeout: float = 2.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay between writes
    sock.settimeout(timeout)
    return sock


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def send_and_end(
    port: int,
    data: bytes,
    ending: str,
    *,
    read: float = 0.02,
    limit: int = 1 << 20,
    rcvbuf: int | None = None,
) -> bytes:
    """Connect, send `data`, shut the sending side if `ending` is "half", read for `read`
    seconds (at most `limit` bytes), then reset ("reset") or close; what was read."""
    sock = connect(port)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        if ending == "half":
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        return read_for(sock, read, limit=limit)
    finally:
        if ending == "reset":
            reset(sock)
        else:
            sock.close()


def read_for(
    sock: socket.socket, seconds: float, limit: int = 1 << 20, until: bytes | None = None
) -> bytes:
    """What the peer sends within `seconds` (stops early at EOF, `limit` bytes, or once
    `until` has been seen)."""
    out = bytearray()
    deadline = time.monotonic() + seconds
    while len(out) < limit and not (until and until in out):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:
            break
        if not data:
            break
        out += data
    return bytes(out)


def rtmp_handshake(port: int, timeout: float = 3.0) -> tuple[socket.socket, bytes]:
    """A TCP connection past the RTMP handshake; returns it and any bytes after S2."""
    sock = connect(port, timeout)
    hs = ClientHandshake(digest=False)
    sock.sendall(hs.data_to_send())
    while not hs.complete:
        data = sock.recv(65536)
        if not data:
            sock.close()
            raise ConnectionError("closed during the handshake")
        hs.receive_data(data)
        out = hs.data_to_send()
        if out:
            sock.sendall(out)
    return sock, hs.leftover()


def rtmp_message(
    type_id: int, payload: bytes, *, stream_id: int = 0, csid: int = 3, ts: int = 0,
    chunk_size: int = 128,
) -> bytes:  # fmt: skip
    return encode_message(csid, type_id, stream_id, ts, payload, chunk_size)


def amf_command(name: str, txn: float, obj: object, *args: object, stream_id: int = 0) -> bytes:
    from common.proto import amf0

    return rtmp_message(20, amf0.encode(name, txn, obj, *args), stream_id=stream_id)


# ---------------------------------------------------------------------------- subprocess nodes

_UP = re.compile(r"(origin|edge) up: rtmp://[\d.]+:(\d+)\s+http://[\d.]+:(\d+)")


class NodeProcess:
    """A node run as `python -m MODULE ...` (optionally under prlimit), stderr collected."""

    def __init__(self, module: str, args: list[str], *, prefix: list[str] | None = None) -> None:
        cmd = [*(prefix or []), sys.executable, "-m", module, "--host", "127.0.0.1", *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self.rtmp_port = 0
        self.http_port = 0
        self._up = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if len(self.lines) > 5000:
                del self.lines[:1000]
            match = _UP.search(line)
            if match:
                self.rtmp_port, self.http_port = int(match.group(2)), int(match.group(3))
                self._up.set()
        self._up.set()

    def wait_up(self, timeout: float = 30.0) -> NodeProcess:
        if not self._up.wait(timeout) or not self.http_port:
            self.kill()
            raise RuntimeError("node did not start:\n" + "".join(self.lines[-40:]))
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    def tail(self, n: int = 40) -> str:
        return "".join(self.lines[-n:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
