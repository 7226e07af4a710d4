"""Viewer classes are an entitlement (issue 12): in a topology with classes and signed play
URLs, a viewer who takes a valid play URL for the stream to the origin directly, instead of
an edge, must not get more than the default class, measured at the player. Origins do not
shape: the topology gives them edges_only (plays only for edges signing their pulls with the
cluster_secret), so the origin refuses the viewer while the edge plays it shaped."""

from __future__ import annotations

import time

import pytest
import trio

from common.config import OriginConfig, load
from common.net.httpclient import fetch, open_request
from common.proto.playtoken import play_query
from tests.topologies import balancer, edge, origin, publisher, start_topology, topology
from tests.topology.test_three_edge import edges

pytestmark = pytest.mark.slow

CEIL_MBPS = 0.3
TOPOLOGY = topology(
    balancer(
        require_play_token=True,
        classes={"basic": {"rate_mbps": 0.2, "ceil_mbps": CEIL_MBPS}},
    ),
    origin(),
    edge("edge1"),
    publisher(size="640x360", kbps=1500),
)
WARMUP_S = 2.0  # the GOP a new viewer starts with may come at once
MEASURE_S = 6.0


async def rate_mbps(url: str) -> float:
    """The rate a player of `url` receives after the warm-up (0 if it is refused)."""
    resp = await open_request("GET", url)
    if resp.status != 200:
        resp.close()
        return 0.0
    counted, start = 0, time.monotonic()
    with trio.move_on_after(WARMUP_S + MEASURE_S):
        async for data in resp.chunks():
            if time.monotonic() - start >= WARMUP_S:
                counted += len(data)
    resp.close()
    return counted * 8 / MEASURE_S / 1e6


async def test_a_play_url_taken_to_the_origin_gets_no_more_than_the_default_class(
    nursery, tmp_path
):
    dep = await start_topology(nursery, tmp_path, TOPOLOGY)
    with trio.fail_after(60):
        while not (await edges(dep.url("balancer", "http"))).get("edge1", {}).get("in_rotation"):
            await trio.sleep(0.2)
    query = play_query(dep.topo.balancer.config["play_secret"], "live/demo", int(time.time()) + 120)
    origin_config = load(OriginConfig, dep.run_dir / "origin.toml", environ={})
    assert origin_config.edges_only and origin_config.cluster_secret
    for path in ("live/demo.flv", "live/demo.m3u8"):
        reply = await fetch("GET", f"{dep.url('origin', 'http')}/{path}?{query}")
        assert reply.status == 403 and b"no pull token" in reply.body, (path, reply.status)
    rates: dict[str, float] = {}

    async def measure(node: str) -> None:
        rates[node] = await rate_mbps(f"{dep.url(node, 'http')}/live/demo.flv?{query}")

    async with trio.open_nursery() as players:
        for node in ("edge1", "origin"):
            players.start_soon(measure, node)
    assert 0 < rates["edge1"] <= CEIL_MBPS * 1.5, rates  # the edge shapes it as the default class
    assert rates["origin"] == 0, rates  # refused: not an edge
