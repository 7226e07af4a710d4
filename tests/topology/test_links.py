"""Link emulation: a 100 ms edge->origin link shows up in startup and latency."""

from __future__ import annotations

import statistics

import pytest
import trio

from common.net.httpclient import open_request
from common.proto import flv
from common.proto.flv import FlvParser
from tests.conftest import start_topology
from topology.faults import apply_fault
from topology.schema import FaultSpec

pytestmark = pytest.mark.slow

TOPOLOGY = """
[[origin]]
name = "origin"
rtmp_port = 0
http_port = 0

[[edge]]
name = "near"
parents = ["origin"]
rtmp_port = 0
http_port = 0

[[edge]]
name = "far"
parents = ["origin"]
rtmp_port = 0
http_port = 0

[[link]]
edge = "far"
parent = "origin"
delay_ms = 100

[[publisher]]
origin = "origin"
stream = "live/demo"
size = "320x180"
fps = 25
kbps = 300
"""


async def watch(url: str, seconds: float, out: dict) -> None:
    start = trio.current_time()
    resp = await open_request("GET", url)
    out["first_byte"] = None
    out["frames"] = {}
    parser = FlvParser()
    with trio.move_on_after(seconds):
        async for data in resp.chunks():
            now = trio.current_time()
            if out["first_byte"] is None:
                out["first_byte"] = now - start
            for tag in parser.feed(data):
                if tag.tag_type == flv.TAG_VIDEO:
                    out["frames"].setdefault(tag.timestamp, now)
    resp.close()


async def delays(dep, seconds: float) -> tuple[dict, dict, list[float]]:
    near, far = {}, {}
    async with trio.open_nursery() as n:
        n.start_soon(watch, f"{dep.url('near', 'http')}/live/demo.flv", seconds, near)
        n.start_soon(watch, f"{dep.url('far', 'http')}/live/demo.flv", seconds, far)
    common = sorted(set(near["frames"]) & set(far["frames"]))[40:]  # past the GOP burst
    return near, far, [(far["frames"][t] - near["frames"][t]) * 1000 for t in common]


async def test_a_delayed_link_raises_startup_and_latency(nursery, tmp_path):
    dep = await start_topology(nursery, tmp_path, TOPOLOGY)
    near, far, diffs = await delays(dep, 5)
    assert far["first_byte"] - near["first_byte"] > 0.4, (near["first_byte"], far["first_byte"])
    added = statistics.median(diffs)
    assert 80 <= added <= 120, f"added latency {added:.0f} ms for a 100 ms link"

    # the fault schedule's degrade changes the link at run time
    await apply_fault(dep, FaultSpec(action="degrade", edge="far", parent="origin", delay_ms=300))
    await trio.sleep(1)
    _, _, diffs = await delays(dep, 4)
    added = statistics.median(diffs[-30:])
    assert 240 <= added <= 360, f"added latency {added:.0f} ms after degrading to 300 ms"
    nursery.cancel_scope.cancel()
