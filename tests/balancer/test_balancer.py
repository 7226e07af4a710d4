"""The balancer over real sockets: heartbeats in, redirects and admission out."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl, urlsplit

import trio

from balancer.edges import Excluded, Exclusion
from balancer.policy import POLICIES
from balancer.routing import NoRoom, RejectReason
from balancer.server import Balancer
from common.config import BALANCER_POLICIES, BalancerConfig, build
from common.net.conn import open_connection
from common.net.httpclient import fetch
from common.proto import auth
from common.proto.control import ControlMessage, Heartbeat
from common.proto.wire import encode
from tests.conftest import QOS_SECRET


def beat(node: str, port: int, **extra) -> bytes:
    msg = {"type": "heartbeat", "node": node, "http": f"http://127.0.0.1:{port}",
           "rtmp": f"rtmp://127.0.0.1:{port + 1}", "viewers": 0, "egress_bps": 0.0}  # fmt: skip
    msg.update(extra)
    return encode(msg)


async def start(nursery, **overrides):
    cfg = build(
        BalancerConfig, {"host": "127.0.0.1", "http_port": 0, "control_port": 0, **overrides}
    )
    b = Balancer(cfg)
    http, control = await nursery.start(b.run)
    return b, f"http://127.0.0.1:{http}", control


def hear(b: Balancer, msg: ControlMessage, peer: str = "p") -> None:
    """`msg` arrives from `peer` on the control plane now."""
    b.table.on_message(msg, peer, trio.current_time())


def test_policy_names_agree() -> None:
    assert tuple(POLICIES) == BALANCER_POLICIES


async def test_capacity_is_never_exceeded_and_overflow_is_503(nursery) -> None:
    b, base, control = await start(nursery, policy="round_robin", check_interval=60.0)
    ctl = await open_connection("127.0.0.1", control)
    await ctl.send_all(beat("e1", 1000, capacity_viewers=2) + beat("e2", 2000, capacity_viewers=3))
    await trio.sleep(0.2)
    locations = []
    for _ in range(5):
        reply = await fetch("GET", f"{base}/live/x.flv?token=abc")
        status, headers = reply.status, reply.headers
        assert status == 302
        locations.append(headers["location"])
    assert sum(":1000/" in loc for loc in locations) == 2
    assert sum(":2000/" in loc for loc in locations) == 3
    assert all(loc.endswith("/live/x.flv?token=abc") for loc in locations), "the query is kept"
    reply = await fetch("GET", f"{base}/live/x.flv")
    status, headers, body = reply.status, reply.headers, reply.body
    assert status == 503 and headers["retry-after"] == "5" and b"full" in body
    reply = await fetch("GET", f"{base}/api/route?app=live&name=x&proto=rtmp")
    status, body = reply.status, reply.body
    assert status == 503
    # a heartbeat with fewer viewers frees room again
    await ctl.send_all(beat("e1", 1000, capacity_viewers=2, viewers=1))
    await trio.sleep(0.2)
    reply = await fetch("GET", f"{base}/api/route?app=live&name=x&proto=rtmp")
    status, body = reply.status, reply.body
    assert status == 200 and json.loads(body)["url"] == "rtmp://127.0.0.1:1001/live/x"
    metrics = (await fetch("GET", f"{base}/metrics")).body
    assert 'livecdn_routes_total{edge="e1"} 3.0' in metrics.decode()


async def test_a_class_comes_only_from_a_signed_token(nursery, caplog) -> None:
    classes = {"premium": {"rate_mbps": 4.0}, "basic": {"rate_mbps": 1.0}}
    b, base, control = await start(
        nursery, check_interval=60.0, qos_secret=QOS_SECRET, classes=classes
    )
    ctl = await open_connection("127.0.0.1", control)
    await ctl.send_all(beat("e1", 1000))
    await trio.sleep(0.2)

    async def redirected(query: str) -> dict[str, str]:
        reply = await fetch("GET", f"{base}/live/x.flv?{query}")
        assert reply.status == 302, (query, reply.status)
        return dict(parse_qsl(urlsplit(reply.headers["location"]).query))

    for ask in ("class=premium", "class=gold", "a=1"):  # asking: the default, lowest-rate class
        given = await redirected(ask)
        assert auth.check_class(QOS_SECRET, "live/x", given, time.time()) == "basic", ask
    premium = auth.class_query(QOS_SECRET, "live/x", "premium", int(time.time()) + 60)
    assert (
        auth.check_class(QOS_SECRET, "live/x", await redirected(premium), time.time()) == "premium"
    )
    for bad in (premium.replace("lc=premium", "lc=basic"), auth.class_query(QOS_SECRET, "live/x",
                "premium", int(time.time()) - 1), auth.class_query(QOS_SECRET, "live/y", "premium",
                int(time.time()) + 60), auth.class_query("wrong", "live/x", "premium",
                int(time.time()) + 60)):  # fmt: skip
        assert (await fetch("GET", f"{base}/live/x.flv?{bad}")).status == 403, bad
    route = f"{base}/api/route?app=live&name=x&proto=flv"
    assert (await fetch("GET", f"{route}&{bad}")).status == 403
    refusals = [r.getMessage() for r in caplog.records if " refused: " in r.getMessage()]
    assert len(refusals) == 5 and all(
        m.startswith("route live/x for 127.0.0.1:")
        and m.endswith("refused: invalid or expired viewer class token")
        for m in refusals
    ), refusals
    reply = await fetch("GET", f"{route}&class=premium")
    given = dict(parse_qsl(urlsplit(json.loads(reply.body)["url"]).query))
    assert auth.check_class(QOS_SECRET, "live/x", given, time.time()) == "basic"
    reply = await fetch("GET", f"{route}&{premium}")
    assert json.loads(reply.body)["url"] == f"http://127.0.0.1:1000/live/x.flv?{premium}"


async def test_missed_heartbeats_and_drain_take_edges_out(nursery, autojump_clock) -> None:
    b, base, _ = await start(nursery, heartbeat_timeout=2.5, check_interval=60.0)
    hear(b, Heartbeat("e1", "http://127.0.0.1:1"), "x")
    hear(b, Heartbeat("e2", "http://127.0.0.1:2"), "y")
    assert not isinstance(b.router.choose("live/a"), NoRoom)
    await trio.sleep(2)
    hear(b, Heartbeat("e2", "http://127.0.0.1:2"), "y")
    await trio.sleep(1)
    views, excluded = b.router.eligible("live/a")
    assert [v.id for v in views] == ["e2"]
    assert excluded == {"e1": Excluded(Exclusion.STALE, "no heartbeat for 2.5 s")}
    b.edges["e2"].set_draining(True, "in a test")
    none = b.router.choose("live/a")
    assert isinstance(none, NoRoom) and none.reason is RejectReason.NO_EDGE
    assert {k: e.why for k, e in none.excluded.items()} == {
        "e1": Exclusion.STALE,
        "e2": Exclusion.DRAINING,
    }


async def test_bounded_hash_spreads_a_hot_stream_within_the_factor(nursery) -> None:
    b, _, _ = await start(nursery, policy="bounded_hash", hash_balance_factor=1.25)
    for i in range(4):
        hear(b, Heartbeat(f"e{i}", f"http://h:{i + 1}"), "p")
    counts = {f"e{i}": 0 for i in range(4)}
    for n in range(1, 201):
        edge = b.router.choose("live/hot").edge
        counts[edge.id] += 1
        assert max(counts.values()) <= -(-1.25 * n // 4) + 1
