"""[[load]] profiles in topology files: validated, and run by `up`."""

from __future__ import annotations

import json

import pytest
import trio

from tests.topologies import balancer, edge, origin, publisher, start_topology, table, topology
from topology import schema

NODES = (balancer(), origin(), edge("edge1"), publisher(kbps=300))
LAN_AND_4G = {"players": 20, "duration": "6s", "ramp": "1s", "profiles": "lan:3,4g:1"}
TOPOLOGY = topology(
    *NODES,
    table("[[load]]", LAN_AND_4G),
    table("[[load]]", {"players": 10, "duration": "6s", "ramp": "1s", "protocol": "rtmp"}),
)


@pytest.mark.parametrize(
    ("bad", "message"),
    [({"protocol": "dash"}, "protocol must be one of"),
     ({"arrival": "burst"}, "arrival must be one of"),
     ({"profiles": "5g"}, "unknown client profile"),
     ({"duration": "soon"}, "bad duration"),
     ({"stream": "demo"}, "stream must be 'app/name'"),
     ({"stream": "live/bad name"}, "stream must be 'app/name'"),
     ({"players": 0}, "players must be >= 1")],
)  # fmt: skip
def test_bad_load_profiles_name_the_file_and_the_key(tmp_path, bad, message) -> None:
    path = tmp_path / "t.toml"
    path.write_text(topology(*NODES, table("[[load]]", LAN_AND_4G | bad)))
    with pytest.raises(schema.TopologyError, match=message) as info:
        schema.load(str(path))
    assert str(path) in str(info.value) and "[[load]] #1" in str(info.value)


@pytest.mark.slow
async def test_up_runs_the_files_load_profiles(nursery, tmp_path):
    dep = await start_topology(nursery, tmp_path, TOPOLOGY)
    run_dir = dep.run_dir
    assert "clock_stamps = true" in (run_dir / "origin.toml").read_text()
    result = run_dir / "load1.json"
    with trio.fail_after(30):
        while not result.exists():
            await trio.sleep(0.5)
    data = json.loads(result.read_text())
    s = data["summary"]
    assert s["players"] == 20 and s["played"] == 20, s
    assert s["profiles"] == {"lan": 15, "4g": 5}
    assert s["viewers_per_edge"] == {"edge1": 20}
    # the servers' own counts (taken near the end, with the RTMP profile's 10 playing too)
    assert s["servers"]["edge1"]["viewers"] == 30 and s["servers"]["origin"]["viewers"] == 1
    assert s["latency_samples"] > 0
    # the RTMP profile asked the balancer's /api/route and played from the edge too
    rtmp = run_dir / "load2.json"
    with trio.fail_after(10):
        while not rtmp.exists():
            await trio.sleep(0.5)
    s = json.loads(rtmp.read_text())["summary"]
    assert s["played"] == 10 and s["viewers_per_edge"] == {"edge1": 10}, s
    nursery.cancel_scope.cancel()
