"""Viewer classes: the balancer carries a viewer's signed class token into the redirect (or
signs the default class), the edge shapes each class's viewers together (HTB-like rate/ceil
per class per edge) and a viewer without a token as the default class.

Publishers, nodes and players all run in-process on trio's MockClock (autojump), so the
rates measured are the shaper's decisions in virtual time, not this machine's speed."""

from __future__ import annotations

import json
import time

import pytest
import trio

from balancer.server import Balancer
from common.config import BalancerConfig, build
from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClient
from common.proto import auth
from common.proto.rtmp import session as rs
from tests.conftest import QOS_SECRET, start_edge, start_origin, wait_for_stream
from tests.media import replay_clip, synthetic_publish

pytestmark = pytest.mark.slow

CLASSES = {
    "basic": {"rate_mbps": 0.2, "ceil_mbps": 0.25},
    "premium": {"rate_mbps": 2.0, "ceil_mbps": 4.0},
}


async def received_rate(url: str, warmup: float, seconds: float) -> float:
    """Bytes/s received after `warmup` seconds (the join burst), over `seconds`."""
    resp = await open_request("GET", url)
    assert resp.status == 200, resp.status
    total = 0
    start = trio.current_time()
    with trio.move_on_after(warmup + seconds):
        async for data in resp.chunks():
            if trio.current_time() - start >= warmup:
                total += len(data)
    resp.close()
    return total / seconds


async def classed_cdn(nursery, **common: object):
    """An origin, a balancer and an edge with CLASSES (qos_secret QOS_SECRET; `common` keys on all
    three) and live/q published at ~1 Mbit/s; the balancer's HTTP port and the edge's
    address, once the balancer knows the edge."""
    _, o = await start_origin(nursery, **common)
    b = Balancer(build(BalancerConfig, {"host": "127.0.0.1", "http_port": 0, "control_port": 0,
                                        "qos_secret": QOS_SECRET, "classes": CLASSES, **common}))  # fmt: skip
    bhttp, bctl = await nursery.start(b.run)
    _, e = await start_edge(nursery, [f"rtmp://127.0.0.1:{o.rtmp_port}"], qos_secret=QOS_SECRET,
                            classes=CLASSES, balancer=f"127.0.0.1:{bctl}", **common)  # fmt: skip
    pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{o.rtmp_port}/live/q")
    await pub.publish()
    nursery.start_soon(lambda: synthetic_publish(pub, key_size=30000, inter_size=5000))  # ~1 Mbit/s
    with trio.fail_after(10):
        while not b.edges:
            await trio.sleep(0.1)
    return bhttp, e


async def test_class_rates_at_the_player(autojump_clock, nursery):
    bhttp, e = await classed_cdn(nursery)
    base = f"http://127.0.0.1:{bhttp}"
    # asking is not enough: ?class= without a token gets the default (lowest-rate) class
    for ask in ("premium", "basic", "gold"):
        reply = await fetch("GET", f"{base}/live/q.flv?class={ask}")
        location = reply.headers["location"]
        assert reply.status == 302 and "lc=basic" in location and "lsig=" in location, ask
    basic_url = location
    forged = basic_url.replace("lc=basic", "lc=premium")
    assert (await fetch("GET", forged)).status == 403
    assert (await fetch("GET", base + forged[forged.index("/live/") :])).status == 403
    # a class is an entitlement: a token signed with qos_secret (by whoever sells it)
    premium = auth.class_query(QOS_SECRET, "live/q", "premium", int(time.time()) + 60)
    reply = await fetch("GET", f"{base}/live/q.flv?{premium}")
    assert reply.status == 302 and reply.headers["location"].endswith(f"/live/q.flv?{premium}")
    premium_url = reply.headers["location"]
    stripped = premium_url.split("?")[0]

    reply = await fetch("GET", f"{base}/api/route?app=live&name=q&proto=rtmp&class=premium")
    status, body = reply.status, reply.body
    rtmp_url = json.loads(body)["url"]
    assert status == 200 and rtmp_url.startswith(f"rtmp://127.0.0.1:{e.rtmp_port}/live/q?lc=basic")
    reply = await fetch("GET", f"{base}/api/route?app=live&name=q&proto=flv&{premium}")
    assert json.loads(reply.body)["url"] == premium_url
    rates = {}

    async def measure(name: str, url: str) -> None:
        rates[name] = await received_rate(url, 1.5, 4.0)

    async def measure_rtmp() -> None:
        client = await RtmpClient.connect(rtmp_url)
        await client.play()
        start = trio.current_time()
        total = 0
        with trio.move_on_after(5.5):
            while True:
                for ev in await client.next_events():
                    if isinstance(ev, rs.Media) and trio.current_time() - start >= 1.5:
                        total += len(ev.payload)
        client.close()
        rates["rtmp"] = total / 4.0

    async with trio.open_nursery() as n:
        n.start_soon(measure, "basic", basic_url)
        n.start_soon(measure, "premium", premium_url)
        n.start_soon(measure, "stripped", stripped)
        n.start_soon(measure_rtmp)
    # the three default-class viewers (HTTP-FLV, RTMP, and the one that dropped its premium
    # token) share basic's ceil on this edge; RTMP payload bytes exclude chunk headers (~1 %)
    ceil = CLASSES["basic"]["ceil_mbps"] * 125_000
    basic = rates["basic"] + rates["rtmp"] + rates["stripped"]
    assert abs(basic - ceil) <= 0.03 * ceil, f"basic got {basic * 8 / 1e6:.3f} Mbit/s"
    shares = (rates["basic"], rates["rtmp"], rates["stripped"])
    assert min(shares) > 0.2 * ceil, f"all get a share: {rates}"
    assert rates["premium"] > 3 * ceil, "a premium viewer is not held to basic"
    assert rates["stripped"] < rates["premium"] / 3, f"stripping gains nothing: {rates}"
    metrics = (await fetch("GET", f"http://127.0.0.1:{e.http_port}/metrics")).body.decode()
    assert 'livecdn_class_viewers_total{class="basic"} 3.0' in metrics  # FLV, RTMP, stripped
    assert 'livecdn_class_viewers_total{class="premium"} 1.0' in metrics
    assert 'livecdn_class_bytes_total{class="basic"}' in metrics


LINK_CLASSES = {
    "gold": {"rate_mbps": 0.6, "ceil_mbps": 1.0},
    "silver": {"rate_mbps": 0.3, "ceil_mbps": 1.0},
}


async def test_a_congested_edge_keeps_each_class_its_rate(autojump_clock, nursery):
    """Edge link 1 Mbit/s, four viewers of a ~1.2 Mbit/s stream: gold keeps 0.6, silver 0.3."""
    _, o = await start_origin(nursery)
    _, e = await start_edge(nursery, [f"rtmp://127.0.0.1:{o.rtmp_port}"], qos_secret=QOS_SECRET,
                            classes=LINK_CLASSES, capacity_mbps=1.0)  # fmt: skip
    pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{o.rtmp_port}/live/c")
    await pub.publish()
    nursery.start_soon(lambda: synthetic_publish(pub, key_size=30000, inter_size=5000))
    await trio.sleep(0.5)
    now = time.time()
    url = f"http://127.0.0.1:{e.http_port}/live/c.flv"
    rates: dict[str, float] = {}

    async def measure(name: str, klass: str) -> None:
        query = auth.class_query(QOS_SECRET, "live/c", klass, int(now) + 60)
        rates[name] = await received_rate(f"{url}?{query}", 1.5, 10.0)

    async with trio.open_nursery() as n:
        for i in range(2):
            n.start_soon(measure, f"gold{i}", "gold")
            n.start_soon(measure, f"silver{i}", "silver")
    mbit = {k: round(v * 8 / 1e6, 3) for k, v in rates.items()}
    print("class rates, Mbit/s:", mbit)
    gold = rates["gold0"] + rates["gold1"]
    silver = rates["silver0"] + rates["silver1"]
    # not above the link; the join bursts went over the link too, so borrowing above the
    # assured 0.9 Mbit/s waits until they are paid back
    assert 0.9 * 0.9 * 125_000 <= gold + silver <= 1.1 * 125_000, f"within the link: {mbit}"
    assert gold >= 0.9 * 0.6 * 125_000, f"gold keeps its rate: {mbit}"
    assert silver >= 0.9 * 0.3 * 125_000, f"silver keeps its rate: {mbit}"


async def test_hls_viewers_of_a_class_are_shaped_too(autojump_clock, nursery, clip, caplog):
    """The class token on the playlist is passed to its segments; segments are paced."""
    origin, o = await start_origin(nursery, hls_target_duration=2.0)
    slow = {"basic": {"rate_mbps": 0.1, "ceil_mbps": 0.2}}
    _, e = await start_edge(nursery, [f"http://127.0.0.1:{o.http_port}"], qos_secret=QOS_SECRET,
                            classes=slow)  # fmt: skip
    nursery.start_soon(replay_clip, f"rtmp://127.0.0.1:{o.rtmp_port}/live/h", clip)
    await wait_for_stream(origin, "live", "h")
    base = f"http://127.0.0.1:{e.http_port}/live/h.m3u8"
    token = auth.class_query(QOS_SECRET, "live/h", "basic", int(time.time()) + 60)
    with trio.fail_after(15):
        while True:
            reply = await fetch("GET", f"{base}?{token}")
            status, body = reply.status, reply.body
            uris = [ln for ln in body.decode().splitlines() if ln and not ln.startswith("#")]
            if status == 200 and uris:
                break
            await trio.sleep(0.5)
    assert all(token in uri for uri in uris), uris
    assert (await fetch("GET", f"{base}?{token.replace('basic', 'gold')}")).status == 403
    assert any(
        r.getMessage().startswith("hls play of live/h by 127.0.0.1:")
        and r.getMessage().endswith("refused: invalid or expired viewer class token")
        for r in caplog.records
    )
    reply = await fetch("GET", base)
    assert reply.status == 200 and b"lc=" not in reply.body, "no token to pass on"
    segment = f"http://127.0.0.1:{e.http_port}/live/{uris[0]}"
    t0 = trio.current_time()
    reply = await fetch("GET", f"http://127.0.0.1:{o.http_port}/live/{uris[0]}".split("?")[0])
    status, plain = reply.status, reply.body  # from the origin, which has no classes
    fast = trio.current_time() - t0
    t0 = trio.current_time()
    reply = await fetch("GET", segment, timeout=60)
    status, shaped = reply.status, reply.body
    took = trio.current_time() - t0
    assert status == 200 and shaped == plain, "the same bytes, only slower"
    ceil = slow["basic"]["ceil_mbps"] * 125_000
    burst = max(ceil * 0.05, 16384.0)  # the class's ceiling bucket starts full
    rate = (len(shaped) - burst) / took
    print(
        f"HLS segment {len(shaped)} B: {took:.2f} s shaped, {fast * 1000:.1f} ms plain, "
        f"{rate * 8 / 1e6:.3f} Mbit/s"
    )
    assert abs(rate - ceil) <= 0.03 * ceil, (len(shaped), took, rate * 8 / 1e6)
    assert fast < took / 5
    t0 = trio.current_time()
    reply = await fetch("GET", segment.split("?")[0], timeout=60)
    stripped = len(reply.body) / (trio.current_time() - t0)
    assert reply.status == 200 and stripped <= 1.03 * ceil, "no token: the default class"
