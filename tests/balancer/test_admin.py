"""The balancer's admin routes (POST /api/edges/NAME/drain|undrain): loopback only without an
admin_token, a bearer token with one; and its start-up warnings."""

from __future__ import annotations

import json

from common.net.httpclient import fetch
from common.proto.control import Heartbeat
from tests.balancer.test_balancer import hear, start

TOKEN = "adm-" + "z" * 28


async def test_without_a_token_a_loopback_peer_may_drain_and_undrain(nursery):
    b, base, _ = await start(nursery)
    hear(b, Heartbeat("e1", "http://127.0.0.1:1"), "x")
    reply = await fetch("POST", f"{base}/api/edges/e1/drain")
    assert reply.status == 200
    assert json.loads(reply.body) == {"edge": "e1", "draining": True}
    assert b.edges["e1"].draining
    reply = await fetch("POST", f"{base}/api/edges/e1/undrain")
    assert json.loads(reply.body) == {"edge": "e1", "draining": False}


async def test_with_a_token_draining_needs_the_right_bearer(nursery):
    b, base, _ = await start(nursery, admin_token=TOKEN)
    hear(b, Heartbeat("e1", "http://127.0.0.1:1"), "x")
    for action in ("drain", "undrain"):
        url = f"{base}/api/edges/e1/{action}"
        missing = await fetch("POST", url)
        assert missing.status == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        for wrong in ("Bearer nope", f"Bearer {TOKEN}x", f"Basic {TOKEN}"):
            reply = await fetch("POST", url, headers=[("authorization", wrong)])
            assert reply.status == 403, wrong
        assert b.edges["e1"].draining is (action == "undrain")  # unchanged so far
        reply = await fetch("POST", url, headers=[("authorization", f"Bearer {TOKEN}")])
        assert reply.status == 200
        assert b.edges["e1"].draining is (action == "drain")


async def test_without_a_token_a_web_page_on_the_host_cannot_drain(nursery):
    b, base, _ = await start(nursery)
    hear(b, Heartbeat("e1", "http://127.0.0.1:1"), "x")
    page = [("origin", "https://evil.example")]  # a form post needs no preflight
    reply = await fetch("POST", f"{base}/api/edges/e1/drain", headers=page)
    assert reply.status == 403
    assert not b.edges["e1"].draining


async def test_read_only_routes_refuse_other_methods(nursery):
    _, base, _ = await start(nursery)
    for method, path in (("DELETE", "/api/edges"), ("POST", "/api/streams"),
                         ("POST", "/healthz"), ("PUT", "/metrics"), ("DELETE", "/api/route")):  # fmt: skip
        reply = await fetch(method, base + path)
        assert reply.status == 405 and reply.headers["allow"] == "GET, HEAD", (method, path)
