"""End to end: a rolling restart of a three-edge topology's edges (the launcher's control API)
while 60 simulated HTTP-FLV players play through the balancer. Each edge drains in turn: its
players get a clean end of the stream and come back through the balancer to an edge in
rotation; none fails, none is lost.

On the real clock, so the test waits for each outcome (with hang guards that are not the
assertion) and asserts counts, not how long they took."""

from __future__ import annotations

import json

import pytest
import trio

from common.net.httpclient import fetch
from tests.topologies import balancer, edge, origin, publisher, start_topology, topology
from topology.players.crowd import LoadSpec, make_crowd, run_crowd
from topology.players.failures import Ending
from topology.players.player import PlayerState, Target
from topology.rolling import follow_restart

pytestmark = pytest.mark.slow

EDGES = ("edge1", "edge2", "edge3")
TOPOLOGY = topology(
    balancer(policy="least_load"),
    origin(),
    *(edge(name, drain_timeout=0) for name in EDGES),  # close the viewers once the balancer knows
    publisher(kbps=200),
)
PLAYERS = 60
HANG_GUARD = 60  # seconds: a step taking longer has hung


async def in_rotation(balancer_url: str) -> int:
    body = (await fetch("GET", f"{balancer_url}/api/edges")).body
    return sum(1 for e in json.loads(body)["edges"] if e["in_rotation"])


async def test_a_rolling_restart_moves_every_viewer_and_loses_none(nursery, tmp_path):
    dep = await start_topology(nursery, tmp_path, TOPOLOGY)
    balancer_url = dep.url("balancer", "http")
    with trio.fail_after(HANG_GUARD):
        while await in_rotation(balancer_url) < len(EDGES):
            await trio.sleep(0.2)
    spec = LoadSpec(players=PLAYERS, duration=10 * HANG_GUARD, ramp_s=2)  # cancelled at the end
    crowd = make_crowd(Target("flv", base=balancer_url, stream="live/demo"), spec)
    for p in crowd.players:
        # back at once, while the edge that cut it is still out of rotation (the balancer
        # is told before the viewers are closed); after the usual second, a quickly
        # restarted edge can be back in rotation and take the player again
        p.retry_s = 0.05
    nursery.start_soon(run_crowd, crowd)
    with trio.fail_after(HANG_GUARD):
        while any(p.result.state is not PlayerState.PLAYING for p in crowd.players):
            await trio.sleep(0.2)
    pids = {name: dep.nodes[name].proc.pid for name in EDGES}

    # as `python -m topology restart FILE --rolling` does, through the launcher's control API
    api = f"http://127.0.0.1:{dep.control_port}/api/rolling-restart"
    codes = []

    async def restart() -> None:
        codes.append(await follow_restart(api, dep.console_token))

    nursery.start_soon(restart)
    auth = [("authorization", f"Bearer {dep.console_token}")]
    with trio.fail_after(HANG_GUARD):
        while json.loads((await fetch("GET", api, headers=auth)).body)["state"] != "running":
            await trio.sleep(0.1)
    again = await fetch("POST", api, headers=auth)
    assert again.status == 409  # one rolling restart at a time
    with trio.fail_after(4 * HANG_GUARD):
        while not codes:
            await trio.sleep(0.5)
    run = json.loads((await fetch("GET", api, headers=auth)).body)
    assert codes == [0] and run["state"] == "done", run
    assert [e["edge"] for e in run["edges"]] == list(EDGES)
    assert all(dep.nodes[name].proc.pid != pids[name] for name in EDGES)  # each restarted
    with trio.fail_after(HANG_GUARD):  # every player back, playing
        while any(p.result.state is not PlayerState.PLAYING for p in crowd.players):
            await trio.sleep(0.2)

    for p in crowd.players:
        r = p.result
        assert r.failures, f"player {r.id} was never cut"  # its first edge restarted
        assert all(end.kind is Ending.ENDED for end in r.failures), (r.id, r.failures)
        assert len(r.edges) == len(r.failures) + 1, (r.id, r.edges, r.failures)  # each came back
        for before, after in zip(r.edges, r.edges[1:], strict=False):
            assert after != before, (r.id, r.edges)  # the balancer moved it off the drained edge


async def balancer_entry(balancer_url: str, edge: str) -> dict | None:
    body = (await fetch("GET", f"{balancer_url}/api/edges")).body
    return next((e for e in json.loads(body)["edges"] if e["id"] == edge), None)


async def test_a_rolling_restart_keeps_a_drained_edge_drained_and_can_be_cancelled(
    nursery, tmp_path
):
    dep = await start_topology(
        nursery, tmp_path, topology(balancer(), origin(), edge("e1", drain_timeout=0), edge("e2"))
    )
    balancer_url = dep.url("balancer", "http")
    with trio.fail_after(HANG_GUARD):
        while await in_rotation(balancer_url) < 2:
            await trio.sleep(0.2)
    base = f"http://127.0.0.1:{dep.control_port}"
    auth = [("authorization", f"Bearer {dep.console_token}")]
    assert (await fetch("POST", f"{base}/api/edges/e1/drain", headers=auth)).status == 200
    pids = {name: dep.nodes[name].proc.pid for name in ("e1", "e2")}

    assert (await fetch("POST", f"{base}/api/rolling-restart", headers=auth)).status == 200

    async def run() -> dict:
        return json.loads((await fetch("GET", f"{base}/api/rolling-restart", headers=auth)).body)

    with trio.fail_after(HANG_GUARD):  # until e1's restart began
        while (await run())["edges"][0]["state"] == "waiting":
            await trio.sleep(0.05)
    # the edge it restarts is its own: other actions on it are refused, saying why
    kill = await fetch("POST", f"{base}/api/nodes/e1/kill", headers=auth)
    assert kill.status == 409 and b"being restarted by the rolling restart" in kill.body
    # cancelled: it stops once e1 is back, and leaves e2 alone
    assert (await fetch("POST", f"{base}/api/rolling-restart/cancel", headers=auth)).status == 200
    with trio.fail_after(2 * HANG_GUARD):
        while (done := await run())["state"] == "running":
            await trio.sleep(0.3)
    assert done["state"] == "cancelled", done
    e1, e2 = done["edges"]
    assert e1["state"] == "done" and e1["drained"] and "kept drained" in e1["note"], e1
    assert e2["state"] == "waiting" and dep.nodes["e2"].proc.pid == pids["e2"]
    assert dep.nodes["e1"].proc.pid != pids["e1"] and dep.nodes["e1"].proc.poll() is None
    # e1 is back (healthy, registered) and still drained, as the operator left it
    entry = await balancer_entry(balancer_url, "e1")
    assert entry is not None and entry["draining"] and not entry["in_rotation"], entry
