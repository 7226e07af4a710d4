"""A 200 ms emulated link shows up in the players' measured latency (origin clock stamps)."""

from __future__ import annotations

import pytest
import trio

from tests.conftest import start_topology
from topology.players.crowd import LoadSpec, make_crowd, run_crowd
from topology.players.player import Target
from topology.players.report import summarize

pytestmark = pytest.mark.slow

TOPOLOGY = """
[[origin]]
name = "origin"
rtmp_port = 0
http_port = 0
clock_stamps = true

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
delay_ms = 200

[[publisher]]
origin = "origin"
stream = "live/demo"
size = "320x180"
fps = 25
kbps = 300
"""


async def test_a_200ms_link_adds_200ms_of_latency(nursery, tmp_path):
    dep = await start_topology(nursery, tmp_path, TOPOLOGY)
    spec = LoadSpec(players=8, duration=10, ramp_s=1)
    crowds = {
        name: make_crowd(Target("flv", base=dep.url(name, "http"), stream="live/demo"), spec)
        for name in ("near", "far")
    }
    async with trio.open_nursery() as n:
        for crowd in crowds.values():
            n.start_soon(run_crowd, crowd)
    s = {
        name: summarize(
            [p.result.summary() | {"latency_s": p.result.latency_s} for p in crowd.players],
            crowd.seconds,
        )  # fmt: skip
        for name, crowd in crowds.items()
    }
    added = s["far"]["delivery_s"][50] - s["near"]["delivery_s"][50]
    assert 0.16 <= added <= 0.24, (added, s["near"]["delivery_s"], s["far"]["delivery_s"])
    assert all(x["played"] == 8 and x["players_with_stalls"] == 0 for x in s.values()), s
    print(f"delivery p50 near {s['near']['delivery_s'][50]:.3f} s, far "
          f"{s['far']['delivery_s'][50]:.3f} s; on screen p50 near {s['near']['latency_s'][50]:.3f}"
          f" s, far {s['far']['latency_s'][50]:.3f} s")  # fmt: skip
    nursery.cancel_scope.cancel()
