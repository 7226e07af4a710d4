"""End to end: a three-edge topology as real processes, viewers through the balancer,
an edge killed and restarted."""

from __future__ import annotations

import json
import subprocess
from urllib.parse import urlsplit

import pytest
import trio

from common import flv
from common.errors import ProtocolError
from common.flv import FlvParser
from common.httpclient import HttpClientError, fetch, open_request
from topology import launch, schema

pytestmark = pytest.mark.slow

TOPOLOGY = """
[balancer]
http_port = 0
control_port = 0
policy = "least_load"

[[origin]]
name = "origin"
rtmp_port = 0
http_port = 0

[[edge]]
name = "edge1"
parents = ["origin"]
rtmp_port = 0
http_port = 0
capacity_viewers = 100

[[edge]]
name = "edge2"
parents = ["origin"]
rtmp_port = 0
http_port = 0
capacity_viewers = 100

[[edge]]
name = "edge3"
parents = ["origin"]
parent_protocol = "http"
rtmp_port = 0
http_port = 0
capacity_viewers = 100

[[publisher]]
origin = "origin"
stream = "live/demo"
size = "320x180"
fps = 25
kbps = 300
"""


class Viewer:
    """Plays HTTP-FLV through the balancer (following its 302), reconnecting when cut off."""

    def __init__(self, balancer: str) -> None:
        self.balancer = balancer
        self.edges: list[str] = []
        self.video_at: list[float] = []
        self.failures = 0
        self.errors: list[str] = []

    async def run(self) -> None:
        while True:
            try:
                status, headers, _ = await fetch("GET", f"{self.balancer}/live/demo.flv")
                assert status == 302, status
                location = headers["location"]
                self.edges.append(urlsplit(location).port)
                resp = await open_request("GET", location)
                if resp.status != 200:
                    resp.close()
                    raise HttpClientError(f"edge answered {resp.status}")
                parser = FlvParser()
                async for data in resp.chunks():
                    for tag in parser.feed(data):
                        if tag.tag_type == flv.TAG_VIDEO:
                            self.video_at.append(trio.current_time())
                resp.close()
            except (OSError, HttpClientError, ProtocolError, trio.TooSlowError) as exc:
                self.failures += 1
                self.errors.append(str(exc))
            await trio.sleep(0.2)


async def edges(balancer: str) -> dict[str, dict]:
    _, _, body = await fetch("GET", f"{balancer}/api/edges")
    return {e["id"]: e for e in json.loads(body)["edges"]}


async def test_three_edges_kill_one_and_viewers_move(nursery, tmp_path):
    path = tmp_path / "three.toml"
    path.write_text(TOPOLOGY)
    topo = schema.load(str(path))
    dep = await nursery.start(
        lambda task_status: launch.up(topo, run_dir=tmp_path / "run", task_status=task_status)
    )
    balancer = dep.url("balancer", "http")
    with trio.fail_after(10):
        while len([e for e in (await edges(balancer)).values() if e["in_rotation"]]) < 3:
            await trio.sleep(0.2)
    viewers = [Viewer(balancer) for _ in range(60)]
    for v in viewers:
        nursery.start_soon(v.run)
        await trio.sleep(0.02)
    await trio.sleep(4)
    assert all(len(v.video_at) > 10 for v in viewers), "every viewer plays"
    per_edge = {
        e: sum(1 for v in viewers if v.edges and v.edges[-1] == dep.nodes[e].http_port)
        for e in ("edge1", "edge2", "edge3")
    }
    assert all(n >= 10 for n in per_edge.values()), per_edge  # least_load spreads them

    # kill edge1: out of rotation within 3 s, its viewers come back through the balancer
    victim = dep.nodes["edge1"]
    victim.proc.kill()
    killed = trio.current_time()
    with trio.fail_after(3):
        while (await edges(balancer))["edge1"]["in_rotation"]:
            await trio.sleep(0.1)
    routes = [(await fetch("GET", f"{balancer}/live/demo.flv"))[1]["location"] for _ in range(20)]
    assert not any(f":{victim.http_port}/" in r for r in routes), (
        "no new viewer goes to the dead edge"
    )
    await trio.sleep(5)
    moved = [v for v in viewers if v.edges and len(v.edges) > 1]
    assert len(moved) >= per_edge["edge1"], "edge1's viewers reconnected elsewhere"
    stuck = [v.errors[-3:] for v in viewers if not (v.video_at and v.video_at[-1] > killed + 3)]
    assert not stuck, f"everyone plays again; errors of those who do not: {stuck}"

    # restart it: it rejoins the rotation
    victim.proc = subprocess.Popen(victim.cmd, stderr=subprocess.DEVNULL)
    with trio.fail_after(10):
        while not (await edges(balancer))["edge1"]["in_rotation"]:
            await trio.sleep(0.2)
    _, _, body = await fetch("GET", f"{balancer}/api/streams")
    (stream,) = json.loads(body)["streams"]
    assert stream["stream"] == "live/demo" and stream["viewers"] >= 50
    nursery.cancel_scope.cancel()
