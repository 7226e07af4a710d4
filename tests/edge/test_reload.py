"""An edge's config reload (what SIGHUP does): new parents, secrets, classes and connection
limit apply while an HTTP-FLV viewer keeps playing; a reload that changes a key needing a
restart applies nothing."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace

import pytest
import trio

from common.config import ConfigError, EdgeConfig, build
from common.net.httpclient import HttpClientError, fetch, open_request
from common.proto import auth, flv, playtoken
from common.proto.flv import FlvParser
from tests.conftest import QOS_SECRET, start_edge, start_origin
from tests.media import publish_synthetic
from tests.metrics import metric, scrape

PLAY_SECRET = "play-secret-for-reload-0123"
CLASSES = {"gold": {"rate_mbps": 4.0, "ceil_mbps": 8.0}, "basic": {"rate_mbps": 2.0}}


class Viewer:
    """One HTTP-FLV play, read tag by tag."""

    def __init__(self, resp) -> None:
        self.resp = resp
        self.chunks = resp.chunks()
        self.parser = FlvParser()
        self.pending: list[flv.FlvTag] = []

    @classmethod
    async def open(cls, url: str) -> Viewer:
        resp = await open_request("GET", url)
        assert resp.status == 200, resp.status
        return cls(resp)

    async def video(self, count: int) -> list[int]:
        """The timestamps of the next `count` video tags."""
        out: list[int] = []
        with trio.fail_after(10):
            while len(out) < count:
                while not self.pending:
                    self.pending += self.parser.feed(await self.chunks.__anext__())
                tag = self.pending.pop(0)
                if tag.tag_type == flv.TAG_VIDEO:
                    out.append(tag.timestamp)
        return out


async def upstream_parent(http: str, app: str, name: str) -> str:
    """The parent the edge pulls app/name from (its streams API)."""
    info = json.loads((await fetch("GET", f"{http}/api/streams/{app}/{name}")).body)
    return info["upstream"]["parent"]


async def connections(edge, count: int) -> None:
    """Wait until the edge holds `count` connections."""
    with trio.fail_after(5):
        while edge.node.slots.active != count:
            await trio.sleep(0.02)


async def test_reload_applies_parents_secrets_classes_and_limits_while_a_viewer_plays(nursery):
    origins = [await start_origin(nursery) for _ in range(2)]
    for _, addr in origins:
        await publish_synthetic(nursery, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/s")
    first, second = (f"rtmp://127.0.0.1:{addr.rtmp_port}" for _, addr in origins)
    edge, addr = await start_edge(nursery, [first])
    http = f"http://127.0.0.1:{addr.http_port}"
    viewer = await Viewer.open(f"{http}/live/s.flv")
    before = await viewer.video(10)

    new = replace(
        edge.config,
        parents=[second],
        play_secret=PLAY_SECRET,
        qos_secret=QOS_SECRET,
        classes=CLASSES,
        max_connections=2,
    )
    applied = edge.controls.reload(new)
    assert set(applied) == {"parents", "play_secret", "qos_secret", "classes", "max_connections"}
    assert edge.config is new

    # the upstream left the removed parent for the new one; the viewer never noticed
    with trio.fail_after(10):
        while await upstream_parent(http, "live", "s") != second:
            await trio.sleep(0.05)
    after = await viewer.video(30)
    assert before[-1] <= after[0] and after == sorted(after)

    # new plays need a signed URL, and get the class their token names
    path = "live/s"
    assert (await fetch("GET", f"{http}/{path}.flv")).status == 403
    await connections(edge, 1)  # the refused request's connection is closed
    exp = int(time.time()) + 60
    token = playtoken.play_query(PLAY_SECRET, path, exp)
    gold = auth.class_query(QOS_SECRET, path, "gold", exp)
    second_viewer = await Viewer.open(f"{http}/{path}.flv?{token}&{gold}")
    assert await second_viewer.video(5)
    assert edge.qos.viewers["gold"] == 1

    # two connections now: a third is refused at the connection limit, the viewers play on
    with pytest.raises((OSError, HttpClientError)):  # closed at once
        await fetch("GET", f"{http}/healthz")
    assert len(await viewer.video(10)) == 10
    viewer.resp.close()
    second_viewer.resp.close()
    await connections(edge, 0)
    refused = metric(
        await scrape(http), "livecdn_connections_refused_total", reason="connection_limit"
    )
    assert refused >= 1


async def test_a_reload_changing_a_key_that_needs_a_restart_applies_nothing(nursery):
    edge, _ = await start_edge(nursery, ["rtmp://127.0.0.1:1"])
    old = edge.config
    new = build(EdgeConfig, {**asdict(old), "http_port": 1, "tls_ca": "/x.pem", "weight": 2.0})
    with pytest.raises(ConfigError) as info:
        edge.controls.reload(new)
    assert "http_port, tls_ca cannot change without a restart" in str(info.value)
    assert "nothing applied" in str(info.value)
    assert edge.config is old and edge.heartbeat.config is old
    assert edge.controls.reload(build(EdgeConfig, asdict(old))) == []
