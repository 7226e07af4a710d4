"""The balancer's HTTPS listener: the same routes as HTTP, over TLS, and viewers who came over
TLS sent to the edges' TLS listeners (a certificate made at test time)."""

from __future__ import annotations

import json

import pytest
import trio

from balancer.edges import Health
from balancer.server import Balancer
from common.config import BalancerConfig, build
from common.net.httpclient import fetch
from common.net.tls import TlsError, client_context
from common.proto.control import ControlError, Heartbeat
from tests.conftest import start_edge
from tests.tlscerts import Certs


async def test_https_serves_the_balancer_routes(nursery: trio.Nursery, tls_certs: Certs):
    values = {"host": "127.0.0.1", "http_port": 0, "control_port": 0, "https_port": 0}
    b = Balancer(build(BalancerConfig, {**values, "tls_cert": tls_certs.cert,
                                        "tls_key": tls_certs.key}))  # fmt: skip
    await nursery.start(b.run)
    assert b.https_port
    url = f"https://localhost:{b.https_port}"
    health = await fetch("GET", f"{url}/healthz", tls=client_context(tls_certs.ca))
    assert health.status == 200 and b'"balancer"' in health.body
    edges = await fetch("GET", f"{url}/api/edges", tls=client_context(tls_certs.ca))
    assert edges.status == 200
    with pytest.raises(TlsError, match="certificate verify failed"):
        await fetch("GET", f"{url}/healthz", tls=client_context(tls_certs.other_ca))

    plain = Balancer(build(BalancerConfig, values))
    await nursery.start(plain.run)
    assert plain.https_port is None


async def test_a_viewer_who_came_over_tls_is_sent_to_the_edges_tls_listener(
    nursery: trio.Nursery, tls_certs: Certs
):
    tls = {"tls_cert": tls_certs.cert, "tls_key": tls_certs.key, "https_port": 0}
    values = {"host": "127.0.0.1", "http_port": 0, "control_port": 0, "check_interval": 0.2}
    b = Balancer(build(BalancerConfig, {**values, **tls}))
    http, control = await nursery.start(b.run)
    _, e = await start_edge(
        nursery, ["http://127.0.0.1:9"], balancer=f"127.0.0.1:{control}", node_id="e1",
        rtmps_port=0, **tls,
    )  # fmt: skip
    with trio.fail_after(10):
        while "e1" not in b.edges or b.edges["e1"].health is not Health.UP:
            await trio.sleep(0.05)
    trust = client_context(tls_certs.ca)
    secure = await fetch("GET", f"https://localhost:{b.https_port}/live/x.flv", tls=trust)
    assert secure.status == 302
    assert secure.headers["location"] == f"https://127.0.0.1:{e.https_port}/live/x.flv"
    plain = await fetch("GET", f"http://127.0.0.1:{http}/live/x.flv")
    assert plain.headers["location"] == f"http://127.0.0.1:{e.http_port}/live/x.flv"
    route = f"https://localhost:{b.https_port}/api/route?app=live&name=x&proto=rtmp"
    got = json.loads((await fetch("GET", route, tls=trust)).body)
    assert got["url"] == f"rtmps://127.0.0.1:{e.rtmps_port}/live/x"


def test_heartbeats_carry_only_checked_tls_urls():
    beat = Heartbeat(node="e1", http="http://10.0.0.1:8081", https="https://10.0.0.1:8444")
    assert Heartbeat.from_wire(beat.to_wire()) == beat
    assert "rtmps" not in beat.to_wire()  # only what the edge has (older balancers ignore it)
    for bad in ("http://10.0.0.1:8444", "https://0.0.0.0:8444", "https://h:1/path"):
        with pytest.raises(ControlError):
            Heartbeat(node="e1", http="http://10.0.0.1:8081", https=bad)
