"""End to end: a topology with `[balancer] require_play_token = true` as real processes: the
run's play_secret reaches every node, unsigned plays are refused everywhere, and the load
run's players (FLV, HLS and RTMP, through the balancer) sign their URLs and play."""

from __future__ import annotations

import pytest
import trio

from common.net.httpclient import fetch
from tests.topologies import balancer, edge, origin, publisher, start_topology, topology
from tests.topology.test_three_edge import edges
from topology.loadrun import run_load, target_for
from topology.players.crowd import LoadSpec

pytestmark = pytest.mark.slow

TOPOLOGY = topology(
    balancer(require_play_token=True),
    origin(),
    edge("edge1"),
    edge("edge2", parent_protocol="http"),
    publisher(kbps=300),
)


async def test_a_topology_requiring_play_tokens_plays_only_signed_urls(nursery, tmp_path):
    dep = await start_topology(nursery, tmp_path, TOPOLOGY)
    secret = dep.topo.balancer.config["play_secret"]
    assert len(secret) >= 32
    with trio.fail_after(60):  # both edges in rotation
        while (
            sum(e["in_rotation"] for e in (await edges(dep.url("balancer", "http"))).values()) < 2
        ):
            await trio.sleep(0.2)
    for node in ("balancer", "origin", "edge1", "edge2"):
        reply = await fetch("GET", f"{dep.url(node, 'http')}/live/demo.flv")
        assert reply.status == 403 and b"no play token" in reply.body, (node, reply.status)
    summaries: dict[str, dict] = {}

    async def load(protocol: str) -> None:
        spec = LoadSpec(players=6, duration=6.0, protocol=protocol, ramp_s=1.0)
        target = target_for(dep, protocol, "live/demo")
        summaries[protocol] = await run_load(target, spec, out_dir=tmp_path, dep=dep,
                                             label=protocol, quiet=True)  # fmt: skip

    async with trio.open_nursery() as loads:  # the three runs at once: each mostly waits
        for protocol in ("flv", "hls", "rtmp"):
            loads.start_soon(load, protocol)
    for protocol, summary in summaries.items():
        assert summary["played"] == 6 and summary["failures"] == 0, (protocol, summary)
        assert summary["bytes"] > 0
