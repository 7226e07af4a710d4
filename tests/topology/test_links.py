"""Link emulation in a topology: the far edge pulls through its link proxy, and the fault
schedule's degrade changes the link at run time. The delay the link adds is measured by
bench/link_latency.py (a real clock: the nodes are processes)."""

from __future__ import annotations

import pytest
import trio

from common.net.httpclient import open_request
from common.proto import flv
from common.proto.flv import FlvParser
from tests.topologies import near_and_far, start_topology
from topology.faults import apply_fault
from topology.schema import FaultSpec

pytestmark = pytest.mark.slow

TOPOLOGY = near_and_far(delay_ms=100)


async def play_frames(url: str, frames: int = 25) -> None:
    """Play `url` until `frames` video frames have arrived."""
    resp = await open_request("GET", url)
    parser = FlvParser()
    seen = 0
    with trio.fail_after(15):  # a hang guard
        async for data in resp.chunks():
            seen += sum(1 for tag in parser.feed(data) if tag.tag_type == flv.TAG_VIDEO)
            if seen >= frames:
                break
    resp.close()


async def test_the_far_edge_plays_through_its_link_and_degrade_changes_it(nursery, tmp_path):
    dep = await start_topology(nursery, tmp_path, TOPOLOGY)
    link = dep.proxies[("far", "origin")]
    assert link.settings.delay_ms == 100
    await play_frames(f"{dep.url('near', 'http')}/live/demo.flv")
    far = f"{dep.url('far', 'http')}/live/demo.flv"
    await play_frames(far)
    assert link.bytes > 0, "the far edge pulls through its link proxy"

    # the fault schedule's degrade changes the link at run time
    await apply_fault(dep, FaultSpec(action="degrade", edge="far", parent="origin", delay_ms=300))
    assert link.settings.delay_ms == 300
    before = link.bytes
    await play_frames(far, 75)  # past what the edge has cached
    assert link.bytes > before, "the degraded link still carries the stream"
    nursery.cancel_scope.cancel()
