"""Signed play URLs at the balancer: with a play_secret it routes only signed requests,
carries the token through its 302 (and /api/route), and turns a class the token grants into
the class token the edge shapes by; stripping that class token gains nothing at the player."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
import trio

from common.net.conn import open_connection
from common.net.httpclient import fetch
from common.proto import auth, playtoken
from tests.balancer.test_balancer import beat, start
from tests.conftest import QOS_SECRET
from tests.edge.test_qos import CLASSES, classed_cdn, received_rate
from tests.metrics import metric, scrape
from tests.origin.test_play_tokens import SECRET, refused_tokens, signed


def granted(secret: str, path: str, klass: str, ttl: int = 60) -> str:
    return playtoken.play_query(secret, path, int(time.time()) + ttl, klass)


async def test_only_signed_requests_are_routed_and_the_token_rides_the_302(nursery, caplog) -> None:
    b, base, control = await start(nursery, check_interval=60.0, play_secret=SECRET,
                                   qos_secret=QOS_SECRET, classes=CLASSES)  # fmt: skip
    ctl = await open_connection("127.0.0.1", control)
    await ctl.send_all(beat("e1", 1000))
    with trio.fail_after(5):
        while not b.edges:
            await trio.sleep(0.05)

    for why, bad in refused_tokens("live/x").items():
        for url in (f"{base}/live/x.flv?{bad}", f"{base}/live/x.m3u8?{bad}",
                    f"{base}/api/route?app=live&name=x&proto=rtmp&{bad}"):  # fmt: skip
            assert (await fetch("GET", url)).status == 403, (why, url)
    assert metric(await scrape(base), "livecdn_routes_total", default=0.0) == 0, "no room taken"

    async def redirected(query: str) -> dict[str, str]:
        reply = await fetch("GET", f"{base}/live/x.flv?{query}")
        assert reply.status == 302, (query, reply.status, reply.body)
        location = urlsplit(reply.headers["location"])
        assert location.path == "/live/x.flv"
        return dict(parse_qsl(location.query))

    token = signed("live/x")
    given = await redirected(token)
    assert playtoken.check(SECRET, "live/x", given, time.time()) is None, "the token is carried"
    assert (
        auth.check_class(QOS_SECRET, "live/x", given, time.time()) == "basic"
    )  # no class: default
    # a class granted by the play token becomes the class token the edge checks
    premium = granted(SECRET, "live/x", "premium")
    given = await redirected(premium)
    assert auth.check_class(QOS_SECRET, "live/x", given, time.time()) == "premium"
    assert playtoken.check(SECRET, "live/x", given, time.time()) is None
    routed = metric(await scrape(base), "livecdn_routes_total")
    for bad in (
        premium.replace("pcls=premium", "pcls=basic"),  # tampered
        granted("another-secret-0123456789", "live/x", "premium"),
        granted(SECRET, "live/x", "gold"),  # signed, but not a class offered here
        f"{token}&{auth.class_query('k', 'live/x', 'premium', int(time.time()) - 1)}",
    ):
        assert (await fetch("GET", f"{base}/live/x.flv?{bad}")).status == 403, bad
    assert metric(await scrape(base), "livecdn_routes_total") == routed, "no room taken"
    assert any(
        r.getMessage().startswith("route live/x for 127.0.0.1:")
        and r.getMessage().endswith("refused: the play token's class is not offered here: 'gold'")
        for r in caplog.records
    )
    # /api/route: the edge URL carries the play token and the class token
    reply = await fetch("GET", f"{base}/api/route?app=live&name=x&proto=rtmp&{premium}")
    url = json.loads(reply.body)["url"]
    assert reply.status == 200 and url.startswith("rtmp://127.0.0.1:1001/live/x?")
    given = dict(parse_qsl(urlsplit(url).query))
    assert auth.check_class(QOS_SECRET, "live/x", given, time.time()) == "premium"
    assert playtoken.check(SECRET, "live/x", given, time.time()) is None


@pytest.mark.slow
async def test_a_granted_class_is_felt_at_the_player_and_stripping_it_gains_nothing(
    autojump_clock, nursery
):
    """Origin, edge and balancer all require play tokens; players follow the balancer's
    302. On trio's MockClock: the rates are the shaper's decisions in virtual time."""
    bhttp, _ = await classed_cdn(nursery, play_secret=SECRET)

    async def location(query: str) -> str:
        reply = await fetch("GET", f"http://127.0.0.1:{bhttp}/live/q.flv?{query}")
        assert reply.status == 302, reply.status
        return reply.headers["location"]

    premium_url = await location(granted(SECRET, "live/q", "premium"))
    basic_url = await location(signed("live/q"))
    parts = dict(parse_qsl(urlsplit(premium_url).query))
    stripped = premium_url.split("?")[0] + "?" + playtoken.carried(parts)  # the play token only
    assert "lc=" not in stripped and (await fetch("GET", premium_url.split("?")[0])).status == 403
    rates: dict[str, float] = {}

    async def measure(name: str, url: str) -> None:
        rates[name] = await received_rate(url, 1.5, 4.0)

    async with trio.open_nursery() as n:
        for name, url in (("premium", premium_url), ("basic", basic_url), ("stripped", stripped)):
            n.start_soon(measure, name, url)
    ceil = CLASSES["basic"]["ceil_mbps"] * 125_000
    assert rates["basic"] + rates["stripped"] <= 1.03 * ceil, f"both held to basic: {rates}"
    assert rates["premium"] > 3 * ceil, f"the granted class is felt: {rates}"
    assert rates["stripped"] < rates["premium"] / 3, f"stripping gains nothing: {rates}"
