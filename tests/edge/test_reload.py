"""An edge's config reload (what SIGHUP does): new parents, secrets, classes (new rates for
the viewers of a class too) and connection limit apply while HTTP-FLV viewers keep playing; a
new cluster_secret restarts the reports to the balancer; a reload that changes a key needing a
restart applies nothing."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace

import pytest
import trio

from common.config import ConfigError, EdgeConfig, build
from common.net.httpclient import HttpClientError, fetch, open_request
from common.proto import auth, flv, playtoken
from common.proto.flv import FlvParser
from common.serve import reload as reloading
from common.serve.reload import PartlyApplied
from tests.balancer.test_balancer import start
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
    applied = await edge.controls.reload(new)
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
    # a class's new rates pace the viewers it has already
    gold_shaper = edge.qos.htb.classes["gold"]
    faster = {**CLASSES, "gold": {"rate_mbps": 6.0, "ceil_mbps": 12.0}}
    assert await edge.controls.reload(replace(new, classes=faster)) == ["classes"]
    assert edge.qos.htb.classes["gold"] is gold_shaper
    assert (gold_shaper.assured.rate, gold_shaper.ceiling.rate) == (750_000, 1_500_000)
    assert len(await second_viewer.video(5)) == 5

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
    new = build(EdgeConfig, {**asdict(old), "http_port": 1, "hls_window": 3, "weight": 2.0})
    with pytest.raises(ConfigError) as info:
        await edge.controls.reload(new)
    assert "http_port, hls_window cannot change without a restart" in str(info.value)
    assert "nothing applied" in str(info.value)
    assert edge.config is old and edge.heartbeat.config is old
    assert await edge.controls.reload(build(EdgeConfig, asdict(old))) == []
    # a tls_ca that cannot be read refuses the reload too
    with pytest.raises(ConfigError, match="cannot read tls_ca /nonexistent.pem"):
        await edge.controls.reload(replace(old, tls_ca="/nonexistent.pem", weight=2.0))
    assert edge.config is old and edge.tls is None


async def test_a_new_cluster_secret_restarts_the_reports_to_the_balancer(nursery, caplog):
    old_secret, new_secret = "cluster-secret-old-0123", "cluster-secret-new-0123"
    balancer, _, control = await start(nursery, cluster_secret=old_secret, check_interval=60.0)
    edge, addr = await start_edge(
        nursery, ["rtmp://127.0.0.1:1"], balancer=f"127.0.0.1:{control}", cluster_secret=old_secret
    )
    node = f"edge-{addr.http_port}"
    await reports(caplog, 1)
    # the balancer's session with the edge stays; the edge's next one takes the new secret
    assert await balancer.controls.reload(replace(balancer.config, cluster_secret=new_secret))
    assert await edge.controls.reload(replace(edge.config, cluster_secret=new_secret))
    await reports(caplog, 2)
    assert "authenticating to the balancer" not in caplog.text
    heard = balancer.edges[node].last_heartbeat
    with trio.fail_after(5):
        while balancer.edges[node].last_heartbeat == heard:
            await trio.sleep(0.05)


async def reports(caplog, count: int) -> None:
    """Wait until the edge has authenticated to the balancer `count` times."""
    with trio.fail_after(5):
        while caplog.text.count("(authenticated)") < count:
            await trio.sleep(0.05)


async def test_a_tls_ca_that_hangs_is_read_off_the_event_loop_and_given_up(
    nursery, tmp_path, monkeypatch
):
    edge, addr = await start_edge(nursery, ["rtmp://127.0.0.1:1"])
    monkeypatch.setattr(reloading, "READ_TIMEOUT", 0.5)
    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo)  # nobody writes: opening it for reading waits
    old = edge.config
    failed = []

    async def reload() -> None:
        with pytest.raises(ConfigError, match=f"tls_ca {fifo} not read in 0.5 s") as info:
            await edge.controls.reload(replace(old, tls_ca=str(fifo), weight=2.0))
        failed.append(info.value)

    try:
        async with trio.open_nursery() as waiting:
            waiting.start_soon(reload)
            # the edge answers while the reload waits for its file
            assert (await fetch("GET", f"http://127.0.0.1:{addr.http_port}/healthz")).status == 200
            assert not failed
    finally:  # let the abandoned thread's open() return
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert failed and edge.config is old and edge.tls is None


async def test_a_reload_computes_what_can_fail_before_applying_anything(nursery, monkeypatch):
    edge, _ = await start_edge(nursery, ["rtmp://127.0.0.1:1"])
    old = edge.config
    new = replace(old, parents=["rtmp://127.0.0.1:2"], max_connections=5, weight=2.0)

    def broken(config):
        raise RuntimeError("a bug")

    monkeypatch.setattr("edge.reload.PullSettings.from_config", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        await edge.controls.reload(new)
    assert edge.config is old and edge.node.config is old
    monkeypatch.undo()

    # a step that fails all the same says what was applied and what not
    monkeypatch.setattr(edge.pull, "set_parents", broken)
    with pytest.raises(PartlyApplied) as info:
        await edge.controls.reload(new)
    assert info.value.done == [
        "config and secrets",
        "limits",
        "play checks and snapshots",
        "pull and HLS settings",
    ]
    assert info.value.failed == "parents and tls_ca"
    assert "the rest not applied" in str(info.value)
    assert edge.config is new and edge.node.slots.limit == 5
