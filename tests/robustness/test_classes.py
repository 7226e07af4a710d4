"""Viewer classes (QoS): forged, malformed and non-ASCII class tokens over HTTP-FLV, HLS and
RTMP, and class-paced HLS viewers that reset in the middle of a segment."""

from __future__ import annotations

import time

import pytest

from common.proto import auth
from tests.robustness.conftest import Cluster, connect, http_get, read_for, reset
from tests.robustness.test_names import _get, _rtmp

SECRET = "robustness-secret"
CLASSES = {"gold": {"rate_mbps": 2.0, "ceil_mbps": 4.0}, "bronze": {"rate_mbps": 0.5}}

BAD_TOKENS = [
    "lc=gold",
    "lc=gold&lexp=99999999999&lsig=x",
    "lc=gold&lexp=%C2%B2&lsig=x",  # a Unicode digit: isdigit() but not int()
    "lc=gold&lexp=99999999999&lsig=%E2%98%83",  # non-ASCII signature
    "lc=%E2%98%83&lexp=99999999999&lsig=abc",
    "lc=gold&lexp=-1&lsig=abc",
    "lc=gold&lexp=" + "9" * 5000 + "&lsig=abc",
    "lc=gold&lc=bronze&lexp=1&lexp=2&lsig=",
    "lc=nosuch&lexp=99999999999&lsig=" + "0" * 32,
]


@pytest.fixture
def qos_cluster() -> Cluster:
    c = Cluster(
        edge_overrides={"qos_secret": SECRET, "classes": CLASSES, "capacity_mbps": 50.0},
        balancer_overrides={"qos_secret": SECRET, "classes": CLASSES},
    ).start()
    try:
        yield c
    finally:
        c.stop()


def test_forged_class_tokens(qos_cluster: Cluster) -> None:
    cluster = qos_cluster
    since = time.monotonic()
    errors = []
    for token in BAD_TOKENS:
        for node, port in cluster.http_targets():
            for path in ("/live/canary.flv", "/live/canary.m3u8", "/live/x.flv"):
                status, _ = _get(port, f"{path}?{token}")
                if status >= 500 and status != 503:
                    errors.append(f"{node} GET {path}?{token[:60]}: {status}")
        for _, port in cluster.rtmp_targets():
            name = "canary?" + token.replace("%E2%98%83", "\u2603").replace("%C2%B2", "\u00b2")
            _rtmp(port, "live", "play", name, media=False)
        dead = cluster.alive()
        assert not dead, f"{dead} stopped after token {token[:80]!r}:\n" + "\n".join(
            str(cluster.node(n).error) for n in dead
        )
    cluster.check(since)
    assert not errors, "\n".join(errors[:20])


def test_paced_hls_viewer_resets_mid_segment(qos_cluster: Cluster) -> None:
    """A gold viewer, sent by the balancer with its signed class token, takes a few bytes of
    a class-paced segment and resets; again and again."""
    cluster = qos_cluster
    since = time.monotonic()
    balancer = cluster.node("balancer").http_port
    deadline = time.monotonic() + 10
    segments: list[tuple[int, str]] = []
    while not segments and time.monotonic() < deadline:
        gold = auth.class_query(SECRET, "live/canary", "gold", int(time.time()) + 60)
        status, headers, _ = http_get(balancer, f"/live/canary.m3u8?{gold}")
        assert status == 302, status
        location = headers["location"]
        assert location.endswith(gold), location
        host_port, _, path = location[len("http://") :].partition("/")
        port = int(host_port.rpartition(":")[2])
        status, _, body = http_get(port, "/" + path)
        if status == 200:
            for line in body.decode().splitlines():
                if line and not line.startswith("#"):
                    segments.append((port, line if line.startswith("/") else "/live/" + line))
        time.sleep(0.3)
    assert segments, "no HLS segments with a class token"
    for _ in range(4):
        for port, target in segments:
            sock = connect(port)
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            read_for(sock, 0.05, limit=3000)
            reset(sock)
        dead = cluster.alive()
        assert not dead, f"{dead} stopped:\n" + "\n".join(str(cluster.node(n).error) for n in dead)
    cluster.wait_frames(1.0)
    cluster.check(since)


async def test_forged_publish_tokens() -> None:
    """An origin with publish_secret refuses bad tokens with a status, whatever they hold."""
    import trio

    from common.config import OriginConfig, build
    from origin.server import Origin
    from tests.robustness.conftest import Node

    cfg = {"host": "127.0.0.1", "rtmp_port": 0, "http_port": 0, "publish_secret": SECRET}
    node = Node("origin", Origin(build(OriginConfig, cfg)))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(node.run)
        answers = []
        for query in ("expires=99999999999&token=\u2603", "expires=\u00b2&token=x",
                      "expires=" + "9" * 5000 + "&token=x", "expires=-1&token=",
                      "token=x&token=y&expires=1&expires=2"):  # fmt: skip
            answer = await trio.to_thread.run_sync(
                _rtmp, address.rtmp_port, "live", "publish", f"x?{query}", True
            )
            answers.append((query[:40], answer))
            assert not node.finished, f"the origin stopped:\n{node.error}"
        nursery.cancel_scope.cancel()
    refused = [q for q, a in answers if b"NetStream.Publish.Unauthorized" not in a
               and b"NetStream.Publish.BadName" not in a]  # fmt: skip
    assert not refused, f"no refusal status for: {refused}"
