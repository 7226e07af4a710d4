"""End to end: a three-edge topology as real processes, 300 simulated HTTP-FLV players
through the balancer, an edge killed and restarted, every player's video decoded.

On the real clock, so the test waits for each outcome (with hang guards that are not the
assertion) and asserts counts, not how long they took."""

from __future__ import annotations

import json
from collections import Counter

import av
import pytest
import trio

from common.net.httpclient import fetch
from common.proto import flv
from common.proto.flv import FlvParser
from tests.topologies import balancer, edge, origin, publisher, start_topology, topology
from topology.players.crowd import LoadSpec, make_crowd, run_crowd
from topology.players.player import SimPlayer, Target
from topology.procs import start_node

pytestmark = pytest.mark.slow

TOPOLOGY = topology(
    balancer(policy="least_load"),
    origin(),
    edge("edge1", capacity_viewers=200),
    edge("edge2", capacity_viewers=200),
    edge("edge3", parent_protocol="http", capacity_viewers=200),
    publisher(kbps=300),
)


PLAYERS = 300
HANG_GUARD = 60  # seconds: a step taking longer has hung (each takes a few seconds)


def decoded_frames(data: bytes) -> int:
    """Pictures an H.264 decoder (PyAV) makes of the video in the start of an HTTP-FLV body."""
    codec = None
    frames = 0
    for tag in FlvParser().feed(data):
        body = tag.body
        if tag.tag_type != flv.TAG_VIDEO or len(body) < 6 or body[0] & 0x0F != 7:
            continue
        if body[1] == 0:  # AVCDecoderConfigurationRecord
            codec = av.CodecContext.create("h264", "r")
            codec.extradata = body[5:]
        elif body[1] == 1 and codec is not None:
            frames += len(codec.decode(av.Packet(body[5:])))
    return frames


async def edges(balancer: str) -> dict[str, dict]:
    body = (await fetch("GET", f"{balancer}/api/edges")).body
    return {e["id"]: e for e in json.loads(body)["edges"]}


async def test_three_edges_kill_one_and_viewers_move(nursery, tmp_path):
    dep = await start_topology(nursery, tmp_path, TOPOLOGY)
    balancer = dep.url("balancer", "http")
    with trio.fail_after(HANG_GUARD):
        while len([e for e in (await edges(balancer)).values() if e["in_rotation"]]) < 3:
            await trio.sleep(0.2)
    port_of = {f"127.0.0.1:{dep.nodes[e].http_port}": e for e in ("edge1", "edge2", "edge3")}
    spec = LoadSpec(players=PLAYERS, duration=10 * HANG_GUARD, ramp_s=5)  # cancelled at the end
    crowd = make_crowd(Target("flv", base=balancer, stream="live/demo"), spec)
    for p in crowd.players:
        p.capture_limit = 96 * 1024  # ~2 s of the 300 kbit/s stream
    nursery.start_soon(run_crowd, crowd)
    with trio.fail_after(HANG_GUARD):  # until every player plays, its first seconds captured
        while any(
            p.result.playing_s is None or len(p.capture) < p.capture_limit for p in crowd.players
        ):
            await trio.sleep(0.2)
    per_edge = Counter(port_of[p.result.edge] for p in crowd.players)
    assert all(n >= 60 for n in per_edge.values()), per_edge  # least_load spreads them
    for name, n in per_edge.items():  # the edges count the same viewers as the players
        body = (await fetch("GET", f"{dep.url(name, 'http')}/api/streams")).body
        (stream,) = json.loads(body)["streams"]
        assert abs(stream["viewers"]["total"] - n) <= 0.05 * n, (name, stream["viewers"], n)

    # kill edge1: out of rotation (its control connection closes; a silent edge's heartbeat
    # timeout is counted in virtual time in tests/balancer/test_balancer.py), its viewers
    # come back through the balancer
    victim = dep.nodes["edge1"]
    on_victim = [p for p in crowd.players if port_of[p.result.edge] == "edge1"]
    victim.proc.kill()
    received = {id(p): p.buffer.received_s for p in on_victim}
    with trio.fail_after(HANG_GUARD):
        while (await edges(balancer))["edge1"]["in_rotation"]:
            await trio.sleep(0.1)
    routes = [
        (await fetch("GET", f"{balancer}/live/demo.flv")).headers["location"] for _ in range(20)
    ]
    assert not any(f":{victim.http_port}/" in r for r in routes), (
        "no new viewer goes to the dead edge"
    )

    def not_back() -> list[SimPlayer]:
        """Players not playing, and edge1's not yet on another edge with media since."""
        now = trio.current_time()
        moved = {id(p) for p in on_victim if port_of[p.result.edge] != "edge1"}
        moved &= {id(p) for p in on_victim if p.buffer.received_s > received[id(p)]}
        return [
            p
            for p in crowd.players
            if p.live_state(now) != "playing" or (id(p) in received and id(p) not in moved)
        ]

    with trio.move_on_after(HANG_GUARD):  # until everyone plays again
        while not_back():
            await trio.sleep(0.2)
    stuck = [(p.result.edge, p.result.failures[-3:]) for p in not_back()]
    assert not stuck, f"all play again, edge1's viewers elsewhere with new media; not: {stuck}"
    others = [p for p in crowd.players if p not in on_victim]
    assert all(not p.result.failures for p in others), "nobody else was disturbed"

    # restart it: it rejoins the rotation
    await start_node(dep, victim)  # watched and stopped with the deployment
    with trio.fail_after(HANG_GUARD):
        while not (await edges(balancer))["edge1"]["in_rotation"]:
            await trio.sleep(0.2)
    body = (await fetch("GET", f"{balancer}/api/streams")).body
    (stream,) = json.loads(body)["streams"]
    assert stream["stream"] == "live/demo" and stream["viewers"] >= PLAYERS - 5
    nursery.cancel_scope.cancel()

    # and every player's first seconds decode
    counts = [decoded_frames(bytes(p.capture)) for p in crowd.players]
    assert min(counts) >= 10, sorted(counts)[:10]
