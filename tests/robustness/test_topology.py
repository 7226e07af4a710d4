"""A whole topology brought up by the launcher (every node its own process): hostile input at
every listener of every node, then one edge killed with SIGKILL. The launcher reports the
death and keeps running, every other node lives and answers /healthz, the canaries on the
other nodes kept receiving frames, a new viewer through the balancer lands on a live edge,
and no process's memory ran away."""

from __future__ import annotations

import contextlib
import struct
import time

import msgpack
import pytest
import trio

from tests.robustness.conftest import (
    MAX_GAP,
    RSS_SLACK_KB,
    Canary,
    flv_canary,
    healthz,
    read_for,
    reset,
    rss_kb,
    rtmp_handshake,
    send_and_end,
)
from tests.robustness.strategies import command, encode_conversation
from tests.topologies import balancer, edge, origin, publisher, start_topology, topology

pytestmark = pytest.mark.slow

TOPOLOGY = topology(
    balancer(),
    origin(),
    edge("edge1"),
    edge("edge2", parent_protocol="http"),
    publisher("live/canary"),
)

HOSTILE_HTTP = [
    b"GET //[ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /live/a%20b.flv HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /live/%2E%2E.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /%2E%2E/%2E%2E/etc/passwd.flv HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /live/x%00y-1-2.ts HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/streams/live/%0D%0Ainjected HTTP/1.1\r\nHost: x\r\n\r\n",
    b"DELETE /api/streams/live/nope?ban=nan HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /live/x.flv?lc=gold&lexp=99999999999&lsig=%E2%98%83 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /api/edges/x/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),  # a TLS hello
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 300,  # pipelined
]


def attack_http(port: int) -> None:
    """Hostile requests, and resets in the middle of large responses."""
    for request in HOSTILE_HTTP:
        with contextlib.suppress(OSError):
            send_and_end(port, request, "close", read=0.5)
    for path in (b"/metrics", b"/api/streams", b"/live/canary.flv"):
        request = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        with contextlib.suppress(OSError):
            send_and_end(port, request, "reset", read=0.3, limit=2048, rcvbuf=4096)


def attack_rtmp(port: int) -> None:
    """Garbage, a truncated handshake, hostile commands after a real handshake."""
    for data in (b"\x03" + bytes(100), b"\x06" + b"\xff" * 1537, b"GET / HTTP/1.1\r\n\r\n"):
        with contextlib.suppress(OSError):
            send_and_end(port, data, "reset", read=0)
    steps = [
        command("connect", 1.0, {"app": "../escape", "tcUrl": "rtmp://x/../escape"}),
        command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://x/live"}),
        command("createStream", 2.0, None),
        command("play", 3.0, None, "a b/../\u00e9?x#y", stream_id=1),
        command("publish", 4.0, None, "x" * 200, "live", stream_id=1),
    ]
    for i in range(len(steps)):
        try:
            sock, _ = rtmp_handshake(port)
            for chunk in encode_conversation(steps[i : i + 1] if i == 0 else steps[1 : i + 1]):
                sock.sendall(chunk)
            read_for(sock, 0.3)
            reset(sock)
        except OSError:
            pass


def attack_control(port: int) -> None:
    """Malformed and oversized control frames."""
    frames = [
        b"\xff\xff\xff\xff",
        struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1",
        b"".join(
            struct.pack(">I", len(body)) + body
            for body in (
                msgpack.packb({"type": "heartbeat", "v": 1, "node": "evil", "weight": "abc"}),
                msgpack.packb({"type": "streams", "v": 1, "streams": 5}),
                msgpack.packb({"type": "heartbeat", "v": 1, "node": "x", "viewers": float("inf")}),
            )
        ),
    ]
    for frame in frames:
        with contextlib.suppress(OSError):
            send_and_end(port, frame, "close", read=0.3)


def rss_of(dep) -> dict[str, int]:
    return {name: rss_kb(node.proc.pid) for name, node in dep.nodes.items()}


async def test_a_topology_survives_hostile_clients_and_a_killed_edge(nursery, tmp_path, capsys):
    dep = await start_topology(nursery, tmp_path, TOPOLOGY)
    http = {name: node.http_port for name, node in dep.nodes.items()}
    canaries = {name: Canary(name) for name in ("origin", "edge1", "edge2", "balancer")}
    for name, canary in canaries.items():
        nursery.start_soon(flv_canary, canary, f"http://127.0.0.1:{http[name]}/live/canary.flv")
    with trio.fail_after(20):
        while not all(c.arrivals for c in canaries.values()):
            await trio.sleep(0.1)
    rss_before = rss_of(dep)
    since = time.monotonic()

    async def attack(node) -> None:
        await trio.to_thread.run_sync(attack_http, node.http_port)
        if node.kind == "balancer":
            await trio.to_thread.run_sync(attack_control, node.control_port)
        else:
            await trio.to_thread.run_sync(attack_rtmp, node.rtmp_port)

    async with trio.open_nursery() as attacks:  # every node at once: each waits on its reads
        for node in dep.nodes.values():
            attacks.start_soon(attack, node)
    for name, node in dep.nodes.items():
        assert node.proc.returncode is None, f"{name} died of hostile input"

    # kill -9 an edge: the launcher reports it and goes on; nobody else notices
    victim = dep.nodes["edge1"]
    victim.proc.kill()
    reported = ""
    with trio.fail_after(10):
        while "node edge1" not in reported:
            reported += capsys.readouterr().err
            await trio.sleep(0.1)
    assert "died: killed by SIGKILL" in reported
    await trio.sleep(3)
    problems = []
    for name, node in dep.nodes.items():
        if name == "edge1":
            continue
        if node.proc.returncode is not None:
            problems.append(f"{name} exited with {node.proc.returncode}")
        elif (status := await trio.to_thread.run_sync(healthz, node.http_port)) != 200:
            problems.append(f"{name} /healthz: {status}")
        grew = rss_kb(node.proc.pid) - rss_before[name]
        if grew > RSS_SLACK_KB:
            problems.append(f"{name} RSS grew by {grew} KiB")
    for name in ("origin", "edge2"):
        canary = canaries[name]
        if canary.error or canary.max_gap(since) > MAX_GAP:
            problems.append(
                f"canary {name}: {canary.error or f'gap {canary.max_gap(since):.1f} s'}"
            )
    # a new viewer through the balancer goes to a live edge (edge1 is out within 3 s)
    late = Canary("after the kill")
    nursery.start_soon(flv_canary, late, f"http://127.0.0.1:{http['balancer']}/live/canary.flv")
    with trio.fail_after(10):
        while not late.arrivals and late.error is None:
            await trio.sleep(0.1)
    if late.error:
        problems.append(f"a viewer after the kill: {late.error}")
    assert not problems, problems
