"""The edge's parts on their own: class admission (edge/qos.py) and the heartbeat's contents
(edge/heartbeat.py)."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

import pytest

from common.config import EdgeConfig, build
from common.net.httpclient import fetch
from common.proto import auth
from common.proto.control import MAX_STREAMS
from edge.heartbeat import advertised_host, busiest
from edge.qos import Qos
from tests.conftest import QOS_SECRET, start_edge, start_origin

CLASSES = {"basic": {"rate_mbps": 0.2, "ceil_mbps": 0.25}}


def edge_config(**values: object) -> EdgeConfig:
    return build(EdgeConfig, {"parents": ["rtmp://127.0.0.1:1"], **values})


def token(klass: str = "basic", path: str = "live/a", secret: str = QOS_SECRET) -> dict[str, str]:
    return dict(parse_qsl(auth.class_query(secret, path, klass, int(time.time()) + 60)))


def test_a_classed_viewer_counts_once_the_fan_out_admits_it() -> None:
    assert Qos(edge_config()).play_pacer("live", "a", {}) is None, "no classes: unshaped"
    qos = Qos(edge_config(qos_secret=QOS_SECRET, classes=CLASSES))
    pacer = qos.play_pacer("live", "a", token())
    assert pacer is not None and qos.viewers == {}, "not counted before it is served"
    pacer.start(0.0)
    pacer.start(0.0)
    assert qos.viewers == {"basic": 2}
    qos.pacer("basic").start(0.0)  # an HLS segment's pacing
    assert qos.viewers == {"basic": 2}


def test_a_viewer_without_a_class_token_is_shaped_as_the_default_class() -> None:
    classes = {
        "premium": {"rate_mbps": 2.0, "ceil_mbps": 4.0},
        "basic": {"rate_mbps": 0.2, "ceil_mbps": 0.25},
        "cheap": {"rate_mbps": 0.2, "ceil_mbps": 1.0},
    }
    qos = Qos(edge_config(qos_secret=QOS_SECRET, classes=classes))
    assert qos.default == "basic", "the lowest rate, then the lowest ceil"
    for query in ({}, {"class": "premium"}, {"lexp": "99999999999", "lsig": "x"}):
        pacer = qos.play_pacer("live", "a", query)
        assert pacer is not None and pacer.shaper is qos.pacer("basic"), query
    pacer = qos.play_pacer("live", "a", token("premium"))
    assert pacer is not None and pacer.shaper is qos.pacer("premium")
    pacer.start(0.0)
    qos.play_pacer("live", "a", {}).start(0.0)
    assert qos.viewers == {"premium": 1, "basic": 1}


@pytest.mark.parametrize(
    "query",
    [token(secret="wrong"), token(path="live/b"), {**token(), "lc": "premium"}, {"lc": "basic"}],
)
def test_a_bad_class_token_is_refused_and_not_counted(query: dict[str, str]) -> None:
    qos = Qos(edge_config(qos_secret=QOS_SECRET, classes=CLASSES))
    with pytest.raises(PermissionError):
        qos.play_pacer("live", "a", query)
    assert qos.viewers == {}


async def test_classed_requests_for_a_missing_stream_are_not_admitted(nursery) -> None:
    _, o = await start_origin(nursery)
    _, e = await start_edge(nursery, [f"rtmp://127.0.0.1:{o.rtmp_port}"], qos_secret=QOS_SECRET,
                            classes=CLASSES)  # fmt: skip
    query = auth.class_query(QOS_SECRET, "live/nope", "basic", int(time.time()) + 60)
    for method in ("GET", "HEAD"):
        status = (
            await fetch(method, f"http://127.0.0.1:{e.http_port}/live/nope.flv?{query}")
        ).status
        assert status == 404
    metrics = (await fetch("GET", f"http://127.0.0.1:{e.http_port}/metrics")).body
    assert "livecdn_class_viewers_total{" not in metrics.decode()


def test_the_heartbeat_holds_the_busiest_routable_streams() -> None:
    viewers = {("live", f"s{i}"): i for i in range(MAX_STREAMS + 5)}
    viewers[("live", "bad name")] = 10**6  # outside the grammar: left out, not an error
    streams = busiest(viewers)
    assert len(streams) == MAX_STREAMS and "live/bad name" not in streams
    assert min(streams.values()) == 5 and "live/s4" not in streams


@pytest.mark.parametrize(
    ("host", "public_host", "want"),
    [
        ("0.0.0.0", "", "127.0.0.1"),
        ("::", "", "127.0.0.1"),
        ("10.0.0.5", "", "10.0.0.5"),
        ("0.0.0.0", "edge1.example.com", "edge1.example.com"),
        ("::1", "", "[::1]"),
    ],
)
def test_the_heartbeat_advertises_a_host_for_urls(host: str, public_host: str, want: str) -> None:
    assert advertised_host(edge_config(host=host, public_host=public_host)) == want
