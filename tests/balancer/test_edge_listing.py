"""The balancer's edge and stream listings: an edge whose reports stopped has no viewers, the
streams list adds up, and draining an edge it does not know says so."""

from __future__ import annotations

import json

import trio

from common.net.httpclient import fetch
from common.net.reporter import report
from common.proto.control import Heartbeat
from tests.balancer.test_control_plane import start


async def listing(base: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """/api/edges by id and /api/streams by stream."""
    edges = json.loads((await fetch("GET", f"{base}/api/edges")).body)["edges"]
    streams = json.loads((await fetch("GET", f"{base}/api/streams")).body)["streams"]
    return {e["id"]: e for e in edges}, {s["stream"]: s for s in streams}


async def out_of_rotation(base: str, node: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """The listings once `node` is out of rotation."""
    with trio.fail_after(10):
        while (found := await listing(base))[0][node]["in_rotation"]:
            await trio.sleep(0.05)
    return found


async def test_an_edge_whose_reports_stop_has_no_viewers_and_streams_add_up(nursery) -> None:
    # 2 s: a reporter beating every 0.1 s stays fresh through a stalled second
    b, base, control = await start(nursery, heartbeat_timeout=2.0)
    counts = {"silent": 3, "closed": 2, "live": 4}
    silent = trio.Event()

    def beats(node: str) -> list[Heartbeat]:
        if node == "silent" and silent.is_set():
            return []  # connected, but its heartbeats stop
        n = counts[node]
        return [Heartbeat(node, "http://127.0.0.1:1000", viewers=n, streams={"live/a": n})]

    reporters = {}
    for node in counts:
        reporters[node] = scope = trio.CancelScope()

        async def run(node: str = node, scope: trio.CancelScope = scope) -> None:
            with scope:
                await report(f"127.0.0.1:{control}", lambda: beats(node), 0.1)

        nursery.start_soon(run)
    with trio.fail_after(10):
        while (await listing(base))[1].get("live/a", {}).get("viewers") != 9:
            await trio.sleep(0.05)

    reporters["closed"].cancel()  # its control connection closes: out at once
    edges, streams = await out_of_rotation(base, "closed")
    assert edges["closed"]["out_reason"] == "control connection closed"
    assert streams["live/a"]["edges"] == {"silent": 3, "live": 4}
    silent.set()
    edges, streams = await out_of_rotation(base, "silent")
    assert edges["silent"]["out_reason"] in ("no heartbeat for 2 s", "control connection closed")
    for node in ("silent", "closed"):
        assert (edges[node]["viewers"], edges[node]["streams"]) == (0, {})
        assert edges[node]["last_viewers"] == counts[node]
    assert edges["live"]["viewers"] == edges["live"]["last_viewers"] == 4
    assert streams["live/a"]["edges"] == {"live": 4}
    assert streams["live/a"]["viewers"] == sum(e["viewers"] for e in edges.values())
    reporters["live"].cancel()


async def test_draining_an_unknown_edge_names_it(nursery) -> None:
    _, base, _ = await start(nursery)
    for action in ("drain", "undrain"):
        reply = await fetch("POST", f"{base}/api/edges/ghost/{action}")
        assert reply.status == 404
        assert json.loads(reply.body) == {"error": "no edge named ghost"}
    reply = await fetch("POST", f"{base}/api/edges/ghost/explode")
    assert reply.status == 404 and "drain or /undrain" in json.loads(reply.body)["error"]
