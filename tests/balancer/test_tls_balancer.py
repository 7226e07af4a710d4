"""The balancer's HTTPS listener: the same routes as HTTP, over TLS, with a certificate made
at test time."""

from __future__ import annotations

import pytest
import trio

from balancer.server import Balancer
from common.config import BalancerConfig, build
from common.net.httpclient import fetch
from common.net.tls import TlsError, client_context
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
