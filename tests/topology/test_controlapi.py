"""The launcher's control API (topology/controlapi.py): its pure parts, and a topology brought
up as processes, whose nodes, links and load profile the API shows and changes."""

from __future__ import annotations

import json
import tomllib

import pytest
import trio

from common.net.httpclient import fetch, open_request
from tests.topologies import balancer, edge, origin, publisher, start_topology, table, topology
from topology import schema
from topology.controlapi import (
    MAX_CONNECTIONS,
    MAX_SUBSCRIBERS,
    Action,
    ApiError,
    ControlApi,
    link_changes,
    parse_action,
    tiers,
)
from topology.deployment import LoadRun
from topology.loadrun import live_sample
from topology.output import url_table
from topology.plan import plan
from topology.players.buffer import Stall
from topology.players.crowd import LoadSpec, make_crowd
from topology.players.player import Target
from topology.rolling import EdgeStep, RollingRestart
from topology.runsecrets import FILE

# ------------------------------------------------------------------ pure parts


@pytest.mark.parametrize(
    ("path", "action"),
    [("/api/nodes/e1/kill", Action("kill", ("e1",))),
     ("/api/nodes/e1/restart", Action("restart", ("e1",))),
     ("/api/edges/e1/drain", Action("drain", ("e1",))),
     ("/api/edges/e1/undrain", Action("undrain", ("e1",))),
     ("/api/streams/live/demo/kick", Action("kick", ("live", "demo"))),
     ("/api/links/e2/origin", Action("link", ("e2", "origin"))),
     ("/api/links/e2/origin/cut", Action("cut", ("e2", "origin"))),
     ("/api/links/e2/origin/restore", Action("restore", ("e2", "origin"))),
     ("/api/loads/0/start", Action("start", ("0",))),
     ("/api/rolling-restart", Action("rolling-restart", ())),
     ("/api/rolling-restart/cancel", Action("rolling-cancel", ())),
     ("/api/nodes/e1/explode", None), ("/api/topology", None), ("/", None),
     ("/api/links/e2/origin/cut/x", None)],
)  # fmt: skip
def test_parse_action(path, action):
    assert parse_action(path) == action


def test_link_changes_take_any_subset_with_the_rate_in_mbps():
    assert link_changes(b'{"delay_ms": 80, "rate_kbps": 1500}') == {
        "delay_ms": 80.0,
        "rate_mbps": 1.5,
    }
    assert link_changes(b'{"loss": 0.05, "jitter_ms": 0}') == {"loss": 0.05, "jitter_ms": 0.0}


@pytest.mark.parametrize(
    ("body", "why"),
    [(b"", "not JSON"), (b"\xff", "not JSON"), (b"[1]", "give an object"), (b"{}", "give an object"),
     (b'{"delay": 5}', "not a link setting"), (b'{"loss": 1.5}', "loss must be"),
     (b'{"delay_ms": -1}', "delay_ms must be"), (b'{"rate_kbps": "fast"}', "rate_kbps must be"),
     (b'{"jitter_ms": true}', "jitter_ms must be"), (b'{"delay_ms": 1e400}', "delay_ms must be"),
     (b'{"delay_ms": NaN}', "delay_ms must be")],
)  # fmt: skip
def test_link_changes_refuse_bad_bodies(body, why):
    with pytest.raises(ApiError, match=why) as exc:
        link_changes(body)
    assert exc.value.status == 400


def test_tiers_count_from_the_origins(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(topology(origin(), edge("mid"), edge("leaf", "mid"), edge("leaf2", "leaf"),
                             edge("near")))  # fmt: skip
    assert tiers(schema.load(str(path))) == {
        "origin": 0,
        "mid": 1,
        "leaf": 2,
        "leaf2": 3,
        "near": 1,
    }


def test_a_live_sample_counts_arrived_players_joins_and_stalls():
    crowd = make_crowd(Target("flv", base="http://127.0.0.1:1", stream="live/x"),
                       LoadSpec(players=3, duration=10))  # fmt: skip
    crowd.players[0].result.join_s = 0.2
    crowd.players[1].result.join_s = 0.4
    crowd.players[1].buffer.stalls += [Stall(1.0), Stall(2.0)]
    row = {"t": 3.0, "waiting": 1, "playing": 2, "latency_p50_s": 0.8123}
    assert live_sample(row, crowd.players) == {"t": 3.0, "players": 2, "playing": 2,
                                               "join_ms_p50": 200.0, "stalls": 2,
                                               "latency_ms_p50": 812.3}  # fmt: skip
    row["latency_p50_s"] = None
    for p in crowd.players:
        p.result.join_s = None
    sample = live_sample(row, crowd.players)
    assert sample["join_ms_p50"] is None and sample["latency_ms_p50"] is None


def test_load_samples_are_bounded():
    run = LoadRun()
    run.samples.extend({"t": i} for i in range(10_000))
    assert len(run.samples) == run.samples.maxlen and run.samples[-1] == {"t": 9999}


# ------------------------------------------------------------------ the API, nodes not started

TOKEN = "console-token-for-the-tests-0123456789"


@pytest.fixture
async def planned(nursery, tmp_path):
    """The control API of a planned topology whose nodes are not started: its base URL."""
    path = tmp_path / "t.toml"
    path.write_text(topology(balancer(), origin(), edge("e1"), edge("e2")))
    api = ControlApi(plan(schema.load(str(path)), tmp_path), TOKEN)
    port = await nursery.start(api.serve)
    return api, f"http://127.0.0.1:{port}"


async def test_every_request_needs_the_console_token(planned):
    _, base = planned
    bearer = [("authorization", f"Bearer {TOKEN}")]
    for path in ("/api/topology", "/api/events", "/api/rolling-restart", "/api/loads/0"):
        resp = await fetch("GET", base + path)
        assert resp.status == 401 and "console_token" in json.loads(resp.body)["error"], path
        assert resp.headers.get("connection") == "close", "a refused client holds no slot"
        wrong = await fetch("GET", f"{base}{path}?token={'x' * 32}")
        assert wrong.status == 403, path
    assert (await fetch("GET", base + "/api/topology", headers=bearer)).status == 200
    assert (await fetch("GET", f"{base}/api/topology?token={TOKEN}")).status == 200
    # ?token= is for reads (EventSource sends no header): a POST needs the header
    assert (await fetch("POST", f"{base}/api/nodes/e1/kill?token={TOKEN}")).status == 401


async def test_live_feeds_cannot_take_the_slots_of_actions(planned):
    _, base = planned
    # clients that keep every connection open: feeds with the token, and without
    held = []
    for url in [f"{base}/api/events?token={TOKEN}"] * MAX_CONNECTIONS + [f"{base}/api/events"] * 6:
        held.append(await open_request("GET", url, timeout=5))
    statuses = [resp.status for resp in held]
    assert statuses.count(200) == MAX_SUBSCRIBERS
    assert statuses.count(503) == MAX_CONNECTIONS - MAX_SUBSCRIBERS and statuses.count(401) == 6
    # an authorized action is still answered (this deployment is not up)
    auth = [("authorization", f"Bearer {TOKEN}")]
    resp = await fetch("POST", f"{base}/api/rolling-restart", headers=auth, timeout=5)
    assert resp.status == 503 and "not up" in json.loads(resp.body)["error"]
    for resp in held:
        resp.close()


async def test_the_edge_a_rolling_restart_owns_refuses_other_actions(planned):
    api, base = planned
    auth = [("authorization", f"Bearer {TOKEN}")]
    run = api.rolling = RollingRestart([EdgeStep("e1", "done"), EdgeStep("e2", "draining")])
    for path in ("/api/nodes/e2/kill", "/api/nodes/e2/restart", "/api/edges/e2/undrain"):
        resp = await fetch("POST", base + path, headers=auth)
        assert resp.status == 409, path
        assert "e2 is being restarted by the rolling restart (draining)" in resp.body.decode()
    # another edge is the actions' (e1 is not running: refused for that reason)
    resp = await fetch("POST", base + "/api/nodes/e1/kill", headers=auth)
    assert resp.status == 409 and "e1 is not running" in resp.body.decode()
    # cancel: the run stops once e2 is back
    resp = await fetch("POST", base + "/api/rolling-restart/cancel", headers=auth)
    assert resp.status == 200 and json.loads(resp.body)["cancelling"] and run.cancelling
    run.state = "cancelled"
    assert (await fetch("POST", base + "/api/rolling-restart/cancel", headers=auth)).status == 409
    resp = await fetch("POST", base + "/api/nodes/e2/kill", headers=auth)
    assert resp.status == 409 and "e2 is not running" in resp.body.decode()


# ------------------------------------------------------------------ a real topology

TOPOLOGY = topology(
    balancer(),
    origin(),
    edge("e1"),
    edge("e2"),
    table("[[link]]", {"edge": "e2", "parent": "origin", "delay_ms": 20}),
    publisher(),
    table("[[load]]", {"players": 2, "duration": "4s", "ramp": "1s", "start_at": "1h"}),
)


class Api:
    """The control API of a deployment, as the console calls it."""

    def __init__(self, dep) -> None:
        self.base = f"http://127.0.0.1:{dep.control_port}"
        self.auth = [("authorization", f"Bearer {dep.console_token}")]

    async def get(self, path: str) -> dict:
        resp = await fetch("GET", self.base + path, headers=self.auth, timeout=10)
        assert resp.status == 200, (path, resp.status, resp.body)
        return json.loads(resp.body)

    async def post(self, path: str, body: dict | None = None, status: int = 200) -> dict:
        data = json.dumps(body).encode() if body is not None else b""
        resp = await fetch("POST", self.base + path, body=data, headers=self.auth, timeout=15)
        assert resp.status == status, (path, resp.status, resp.body)
        return json.loads(resp.body)

    async def node(self, name: str) -> dict:
        return next(n for n in (await self.get("/api/topology"))["nodes"] if n["name"] == name)


async def healthy(url: str, within: float = 20.0) -> None:
    with trio.fail_after(within):
        while True:
            try:
                if (await fetch("GET", url + "/healthz", timeout=1)).status == 200:
                    return
            except Exception:
                pass
            await trio.sleep(0.2)


@pytest.mark.slow
async def test_the_control_api_shows_and_changes_a_running_topology(nursery, tmp_path):
    dep = await start_topology(nursery, tmp_path, TOPOLOGY)
    api = Api(dep)
    secrets = tomllib.loads((dep.run_dir / FILE).read_text())
    assert secrets["console"]["console_token"] == dep.console_token and len(dep.console_token) >= 32
    fragment = f"#launcher=http://127.0.0.1:{dep.control_port}&token={dep.console_token}"
    (console,) = [line for line in url_table(dep).splitlines() if "console (open in" in line]
    assert console.endswith(f"/?play=live/demo{fragment}"), console

    # the view: tiers, parents, links, loads
    view = await api.get("/api/topology")
    assert view["balancer"] == {"http": dep.url("balancer", "http")}
    nodes = {n["name"]: n for n in view["nodes"]}
    assert {n: (v["kind"], v["tier"], v["parents"], v["state"]) for n, v in nodes.items()} == {
        "origin": ("origin", 0, [], "running"),
        "e1": ("edge", 1, ["origin"], "running"),
        "e2": ("edge", 1, ["origin"], "running"),
    }
    assert nodes["e1"]["balanced"] and nodes["e1"]["pid"] == dep.nodes["e1"].proc.pid
    assert nodes["e1"]["http"] == dep.url("e1", "http")
    assert view["links"] == [{"edge": "e2", "parent": "origin", "delay_ms": 20.0, "jitter_ms": 0.0,
                              "loss": 0.0, "rate_kbps": 0.0, "state": "up"}]  # fmt: skip
    assert view["loads"] == [{"index": 0, "profile": "lan", "players": 2, "state": "idle"}]

    # the live feed sends the same view
    resp = await open_request("GET", api.base + "/api/events", headers=api.auth, timeout=5)
    assert resp.headers["content-type"] == "text/event-stream"
    text, chunks = b"", resp.chunks()
    with trio.fail_after(5):
        while b"data: " not in text or not text.endswith(b"\n\n"):
            text += await chunks.__anext__()
    resp.close()
    event = json.loads(text.split(b"data: ", 1)[1])
    assert event["name"] == view["name"] and event["links"] == view["links"]

    # POST without the token, with a wrong one
    for headers, status in (([], 401), ([("authorization", "Bearer " + "x" * 32)], 403)):
        resp = await fetch("POST", api.base + "/api/nodes/e1/kill", headers=headers)
        assert resp.status == status and "error" in json.loads(resp.body)
    assert dep.nodes["e1"].proc.poll() is None, "a refused kill kills nothing"
    await api.post("/api/nodes/nobody/kill", status=404)
    await api.post("/api/nodes/balancer/kill", status=404)  # the console's own page: not offered
    big = await fetch("POST", api.base + "/api/links/e2/origin", body=b" " * 5000, headers=api.auth)
    assert big.status == 413, "bodies are small"
    assert (await fetch("DELETE", api.base + "/api/topology", headers=api.auth)).status == 405
    assert (await fetch("GET", api.base + "/api/nodes", headers=api.auth)).status == 404
    await api.post("/api/nodes/e1/restart", status=409)

    # kill an edge, restart it
    proc = dep.nodes["e1"].proc
    assert await api.post("/api/nodes/e1/kill") == {"node": "e1", "state": "stopped"}
    assert proc.poll() is not None
    assert (await api.node("e1"))["state"] == "stopped" and (await api.node("e1"))["pid"] is None
    await api.post("/api/nodes/e1/kill", status=409)
    assert await api.post("/api/nodes/e1/restart") == {"node": "e1", "state": "running"}
    await healthy(dep.url("e1", "http"))
    assert (await api.node("e1"))["pid"] == dep.nodes["e1"].proc.pid != proc.pid

    # a link: degrade (the proxy's settings change), cut, restore (the file's settings)
    link = dep.proxies[("e2", "origin")]
    got = await api.post("/api/links/e2/origin", {"delay_ms": 150, "rate_kbps": 2000, "loss": 0.01})
    assert got["delay_ms"] == 150 and got["rate_kbps"] == 2000 and got["loss"] == 0.01
    assert (link.settings.delay_ms, link.settings.rate_mbps, link.settings.loss) == (150, 2, 0.01)
    await api.post("/api/links/e2/origin", {"delay_ms": -5}, status=400)
    await api.post("/api/links/e1/origin", {"delay_ms": 5}, status=404)
    assert (await api.post("/api/links/e2/origin/cut"))["state"] == "cut" and link.settings.down
    assert (await api.get("/api/topology"))["links"][0]["state"] == "cut"
    got = await api.post("/api/links/e2/origin/restore")
    assert got["state"] == "up" and got["delay_ms"] == 20 and not link.settings.down

    # drain through the launcher: the balancer says the edge drains
    balancer_edges = dep.url("balancer", "http") + "/api/edges"
    with trio.fail_after(10):  # until e2 has reported to the balancer
        while not [e for e in json.loads((await fetch("GET", balancer_edges)).body)["edges"]
                   if e["id"] == "e2"]:  # fmt: skip
            await trio.sleep(0.2)
    assert await api.post("/api/edges/e2/drain") == {"edge": "e2", "draining": True}
    edges = json.loads((await fetch("GET", balancer_edges)).body)["edges"]
    assert next(e for e in edges if e["id"] == "e2")["draining"]
    await api.post("/api/edges/e2/undrain")
    edges = json.loads((await fetch("GET", balancer_edges)).body)["edges"]
    assert not next(e for e in edges if e["id"] == "e2")["draining"]
    await api.post("/api/edges/origin/drain", status=404)

    # a load profile: started now, its samples appear while it runs
    await api.post("/api/loads/3/start", status=404)
    assert await api.post("/api/loads/0/start") == {"index": 0, "state": "running"}
    await api.post("/api/loads/0/start", status=409)
    with trio.fail_after(10):
        while not (got := await api.get("/api/loads/0"))["samples"]:
            await trio.sleep(0.3)
    assert got["state"] == "running" and got["samples"][0]["players"] >= 1
    with trio.fail_after(20):
        while (got := await api.get("/api/loads/0"))["state"] != "done":
            await trio.sleep(0.5)
    assert max(s["playing"] for s in got["samples"]) >= 1, got

    # kick: the origin's stream is gone
    kicked = await api.post("/api/streams/live/demo/kick?ban=30")
    assert kicked["origin"] == "origin" and kicked["ban_s"] == 30
    gone = await fetch("GET", dep.url("origin", "http") + "/api/streams/live/demo")
    assert gone.status == 404
    await api.post("/api/streams/live/demo/kick", status=404)
    nursery.cancel_scope.cancel()
