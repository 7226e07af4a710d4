"""The origin's admin routes (DELETE /api/streams/APP/NAME) and the publisher addresses of its
listings: loopback only without an admin_token, a bearer token with one."""

from __future__ import annotations

import json

import trio

from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient
from tests.conftest import start_origin
from tests.media import synthetic_publish

TOKEN = "adm-" + "x" * 28


async def live_stream(nursery, **overrides):
    """An origin with live/k publishing; its API base URL."""
    server, addr = await start_origin(nursery, **overrides)
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/k")
    await client.publish()
    nursery.start_soon(synthetic_publish, client)
    base = f"http://127.0.0.1:{addr.http_port}/api/streams"
    with trio.fail_after(5):
        while (await fetch("GET", f"{base}/live/k")).status != 200:
            await trio.sleep(0.05)
    return server, base


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def test_without_a_token_a_loopback_peer_may_kick_and_see_addresses(nursery):
    server, base = await live_stream(nursery)
    listing = json.loads((await fetch("GET", base)).body)
    assert listing["streams"][0]["publisher"]["address"].startswith("127.0.0.1:")
    reply = await fetch("DELETE", f"{base}/live/k?ban=0")
    assert reply.status == 200
    assert json.loads(reply.body) == {"kicked": "live/k", "ban_s": 0}


async def test_with_a_token_kicking_needs_the_right_bearer(nursery):
    server, base = await live_stream(nursery, admin_token=TOKEN)
    missing = await fetch("DELETE", f"{base}/live/k?ban=5")
    assert missing.status == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    for wrong in (bearer(TOKEN + "y"), bearer(TOKEN[:-1]), [("authorization", TOKEN)]):
        assert (await fetch("DELETE", f"{base}/live/k?ban=5", headers=wrong)).status == 403
    assert server.registry.get("live", "k") is not None  # nobody was kicked
    assert server.bans.until == {}
    reply = await fetch("DELETE", f"{base}/live/k?ban=0", headers=bearer(TOKEN))
    assert reply.status == 200
    assert json.loads(reply.body)["kicked"] == "live/k"


async def test_a_stranger_learns_nothing_of_which_names_live(nursery):
    _, base = await live_stream(nursery, admin_token=TOKEN)
    live = await fetch("DELETE", f"{base}/live/k?ban=5")
    absent = await fetch("DELETE", f"{base}/live/nobody?ban=5")
    assert live.status == absent.status == 401
    found = await fetch("DELETE", f"{base}/live/nobody?ban=5", headers=bearer(TOKEN))
    assert found.status == 404  # the admin is told


async def test_listings_show_publisher_addresses_only_to_admin_requests(nursery):
    _, base = await live_stream(nursery, admin_token=TOKEN)
    for url in (base, f"{base}/live/k"):
        for headers in (None, bearer("wrong")):
            info = json.loads((await fetch("GET", url, headers=headers)).body)
            pub = info["streams"][0]["publisher"] if "streams" in info else info["publisher"]
            assert "address" not in pub and "since" in pub
        info = json.loads((await fetch("GET", url, headers=bearer(TOKEN))).body)
        pub = info["streams"][0]["publisher"] if "streams" in info else info["publisher"]
        assert pub["address"].startswith("127.0.0.1:")


async def test_without_a_token_a_web_page_on_the_host_can_neither_kick_nor_read_addresses(
    nursery,
):
    server, base = await live_stream(nursery)
    page = [("origin", "https://evil.example")]
    reply = await fetch("DELETE", f"{base}/live/k?ban=60", headers=page)
    assert reply.status == 403 and b"evil.example" in reply.body
    assert server.registry.get("live", "k") is not None and server.bans.until == {}
    listing = json.loads((await fetch("GET", base, headers=page)).body)
    assert "address" not in listing["streams"][0]["publisher"]
    # DNS rebinding: a same-origin request (no Origin header) naming the page's own host
    port = int(base.split(":")[2].split("/")[0])
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(
            b"DELETE /api/streams/live/k?ban=60 HTTP/1.1\r\nHost: evil.example\r\n\r\n"
        )
        assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 403 ")
    assert server.registry.get("live", "k") is not None


async def test_the_stream_listing_refuses_other_methods(nursery):
    _, base = await live_stream(nursery)
    for method in ("POST", "DELETE", "PUT"):
        assert (await fetch(method, base)).status == 405
