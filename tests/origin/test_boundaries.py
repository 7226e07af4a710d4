"""Untrusted values are checked where they enter the origin; limits answer with a reason;
a publisher that comes back within publisher_grace keeps its viewers."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import trio

from common.net.conn import ConnClosed, open_connection
from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto import flv
from common.proto.flv import FlvParser
from origin.live import StreamState
from origin.server import Origin
from tests.conftest import start_origin
from tests.media import synthetic_publish


async def publisher(port: int, key: str) -> RtmpClient:
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{port}/{key}")
    await client.publish()
    return client


@pytest.mark.parametrize(
    "name", ["a b", "..", ".hidden", "x%2F..", "caf\u00e9", "a#b", "x" * 129, "a\\b"]
)
async def test_bad_names_are_refused_with_the_reason(nursery, name):
    server, addr = await start_origin(nursery)
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/ok")
    with pytest.raises(RtmpClientError) as err:
        await client.publish(name)
    assert err.value.code == "NetStream.Publish.BadName"
    assert "bad stream key" in str(err.value)
    player = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/ok")
    with pytest.raises(RtmpClientError) as err:
        await player.play(name)
    assert err.value.code == "NetStream.Play.Failed"
    assert len(server.registry) == 0


async def test_bad_keys_in_http_paths_get_400(nursery):
    _, addr = await start_origin(nursery)
    base = f"http://127.0.0.1:{addr.http_port}"
    for path in (
        "/live/a%20b.flv",
        "/live/%2E%2E.flv",
        "/live/caf%C3%A9.flv",
        "/x/y/z.flv",
        "/live/a%3Fb.m3u8",
        "/%2E%2E/x.m3u8",
    ):
        reply = await fetch("GET", base + path)
        status, body = reply.status, reply.body
        assert status == 400, path
        assert b"bad stream key" in body
    for path in ("/api/streams/live/%2E%2E", "/api/streams/live/a%0Ab"):
        status = (await fetch("GET", base + path)).status
        assert status == 400, path


async def test_ban_accepts_only_plain_whole_seconds(nursery):
    _, addr = await start_origin(nursery)
    pub = await publisher(addr.rtmp_port, "live/k")
    nursery.start_soon(synthetic_publish, pub)
    api = f"http://127.0.0.1:{addr.http_port}/api/streams/live/k"
    with trio.fail_after(5):
        while (await fetch("GET", api)).status != 200:
            await trio.sleep(0.05)
    for ban in ("1e9", "-1", "nan", "inf", "\u0661\u0662", "1_0", " 5", "99999999999"):
        status = (await fetch("DELETE", f"{api}?ban={quote(ban)}")).status
        assert status == 400, ban
    reply = await fetch("DELETE", f"{api}?ban=60")
    status, body = reply.status, reply.body
    assert status == 200 and b'"ban_s": 60' in body
    again = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/k")
    with pytest.raises(RtmpClientError, match="banned"):
        await again.publish()


async def test_stream_and_per_address_publisher_limits(nursery):
    server, addr = await start_origin(nursery, max_streams=3, max_publishers_per_ip=2)
    held = [await publisher(addr.rtmp_port, "live/a"), await publisher(addr.rtmp_port, "live/b")]
    with pytest.raises(RtmpClientError, match="max_publishers_per_ip") as err:
        await publisher(addr.rtmp_port, "live/c")
    assert err.value.code == "NetStream.Publish.Denied"
    server2, addr2 = await start_origin(nursery, max_streams=2)
    held += [await publisher(addr2.rtmp_port, "live/a"), await publisher(addr2.rtmp_port, "live/b")]
    with pytest.raises(RtmpClientError, match="max_streams"):
        await publisher(addr2.rtmp_port, "live/c")
    assert server.publisher_count() == 2 and len(held) == 4
    body = (await fetch("GET", f"http://127.0.0.1:{addr2.http_port}/metrics")).body
    assert 'livecdn_connections_refused_total{reason="stream_limit"} 1.0' in body.decode()


def waiting(server: Origin, key: tuple[str, str]) -> bool:
    """True while `key`'s viewers wait for its publisher to come back."""
    live = server.live.get(key)
    return live is not None and live.state is StreamState.WAITING


async def read_video_tags(resp, out: list[int], done: trio.Event) -> None:
    parser = FlvParser()
    async for data in resp.chunks():
        for tag in parser.feed(data):
            if tag.tag_type == flv.TAG_VIDEO:
                out.append(tag.timestamp)
    done.set()


async def test_a_publisher_back_within_the_grace_keeps_its_viewers(nursery):
    server, addr = await start_origin(nursery, publisher_grace=1.5)
    first = await publisher(addr.rtmp_port, "live/g")
    async with trio.open_nursery() as feeding:
        feeding.start_soon(synthetic_publish, first)
        resp = await open_request("GET", f"http://127.0.0.1:{addr.http_port}/live/g.flv")
        assert resp.status == 200
        tags: list[int] = []
        ended = trio.Event()
        nursery.start_soon(read_video_tags, resp, tags, ended)
        with trio.fail_after(5):
            while len(tags) < 10:
                await trio.sleep(0.05)
        feeding.cancel_scope.cancel()
    first.close()  # an encoder restart: the connection drops
    with trio.fail_after(5):
        while not waiting(server, ("live", "g")):
            await trio.sleep(0.02)
    before = len(tags)
    second = await publisher(addr.rtmp_port, "live/g")  # back within the grace
    assert not ended.is_set()
    async with trio.open_nursery() as feeding:
        feeding.start_soon(synthetic_publish, second)
        with trio.fail_after(5):
            while len(tags) < before + 10:
                await trio.sleep(0.05)
        assert tags == sorted(tags)  # timestamps continue across the new source
        feeding.cancel_scope.cancel()
    second.close()
    # gone for good: after the grace the viewer gets the end of the stream
    with trio.fail_after(5):
        await ended.wait()
    assert server.registry.get("live", "g") is None


async def test_kicking_during_the_grace_ends_the_stream_at_once(nursery):
    server, addr = await start_origin(nursery, publisher_grace=30)
    pub = await publisher(addr.rtmp_port, "live/k")
    await pub.send(9, 0, bytes([0x17, 0x01, 0, 0, 0, 0x65]))
    pub.close()
    with trio.fail_after(5):
        while not waiting(server, ("live", "k")):
            await trio.sleep(0.02)
    status = (
        await fetch("DELETE", f"http://127.0.0.1:{addr.http_port}/api/streams/live/k?ban=0")
    ).status
    assert status == 200
    assert server.registry.get("live", "k") is None and not server.live


async def test_the_publisher_grace_lasts_its_length_in_virtual_time(autojump_clock, nursery):
    """On the MockClock: a stream whose publisher left waits publisher_grace for it, not
    less, then ends (the real-clock tests with ffmpeg assert only what happens)."""
    server, addr = await start_origin(nursery, publisher_grace=2.0)
    pub = await publisher(addr.rtmp_port, "live/t")
    await pub.send(9, 0, bytes([0x17, 0x01, 0, 0, 0, 0x65]))
    left = trio.current_time()
    pub.close()
    with trio.fail_after(1):
        while not waiting(server, ("live", "t")):
            await trio.sleep(0.001)
    noticed = trio.current_time()  # the grace started between `left` and now
    await trio.sleep_until(left + 1.99)
    assert waiting(server, ("live", "t")) and server.registry.get("live", "t") is not None
    await trio.sleep_until(noticed + 2.01)
    assert server.registry.get("live", "t") is None and not server.live


async def test_a_flooding_publisher_does_not_starve_other_streams(autojump_clock, nursery):
    """One publisher sends as fast as it can; another stream's viewer keeps getting frames
    and /healthz keeps answering, and the cap holds the flood to its rate. On the MockClock,
    so the gaps and the rate are the origin's decisions in virtual time (the rate on this
    machine's real clock: bench/ingest_cap.py)."""
    server, addr = await start_origin(nursery, max_ingest_mbps=20)
    canary = await publisher(addr.rtmp_port, "live/canary")
    nursery.start_soon(synthetic_publish, canary)
    resp = await open_request("GET", f"http://127.0.0.1:{addr.http_port}/live/canary.flv")
    arrivals: list[float] = []
    ended = trio.Event()

    async def watch() -> None:
        parser = FlvParser()
        async for data in resp.chunks():
            if any(t.tag_type == flv.TAG_VIDEO for t in parser.feed(data)):
                arrivals.append(trio.current_time())
        ended.set()

    nursery.start_soon(watch)
    flood = await publisher(addr.rtmp_port, "live/flood")

    async def send_flood() -> None:
        await flood.send(9, 0, bytes([0x17, 0x00, 0, 0, 0]) + bytes(30))
        ts = 0
        while True:
            ts += 1
            await flood.send(9, ts, bytes([0x17, 0x01, 0, 0, 0]) + bytes(200_000))

    start = trio.current_time()
    async with trio.open_nursery() as flooding:
        flooding.start_soon(send_flood)
        for _ in range(6):
            with trio.fail_after(2):  # a liveness bound, not a speed target
                status = (await fetch("GET", f"http://127.0.0.1:{addr.http_port}/healthz")).status
            assert status == 200
            await trio.sleep(0.5)
        flooding.cancel_scope.cancel()
    seen = [t for t in arrivals if t >= start]
    gaps = [b - a for a, b in zip(seen, seen[1:], strict=False)]
    assert not ended.is_set() and len(seen) > 20 and max(gaps) < 1.0
    cap = 20 * 125_000  # bytes/s; the bucket starts full with max(cap, 1 MiB)
    flooded = server.registry.get("live", "flood").stats.bytes_in
    assert cap < flooded <= cap + cap * (trio.current_time() - start) + 65536


def test_token_numbers_are_plain_ascii_digits():
    from common.proto import auth

    secret = "s"
    good = auth.sign(secret, "live", "x", 2_000_000_000)
    ok = {"expires": "2000000000", "token": good}
    assert auth.check(secret, "live", "x", ok, 1.0) is None
    for expires in ("\u0662000000000", "+2000000000", "2_000_000_000", " 2000000000", "9" * 30):
        why = auth.check(secret, "live", "x", {"expires": expires, "token": good}, 1.0)
        assert why is not None and "plain digits" in why
    query = dict(kv.split("=") for kv in auth.class_query(secret, "live/x", "gold", 5).split("&"))
    assert auth.check_class(secret, "live/x", query, 1.0) == "gold"
    query["lexp"] = "\u0665"
    assert auth.check_class(secret, "live/x", query, 1.0) is None
    # a signature that is not ASCII is a mismatch, not an error
    query = {"lc": "gold", "lexp": "99999999999", "lsig": "\u2603"}
    assert auth.check_class(secret, "live/x", query, 1.0) is None
    forged = {"expires": "2000000000", "token": "\u2603"}
    assert auth.check(secret, "live", "x", forged, 1.0) == "token does not match"


@pytest.mark.parametrize(
    "values",
    [
        {"node_id": "bad id"},
        {"node_id": "x" * 65},
        {"balancer": "nohost"},
        {"balancer": "host:99999"},
        {"kick_ban_seconds": 1e12},
        {"publisher_grace": -1.0},
    ],
)
def test_origin_config_refuses_what_the_balancer_would_refuse(values):
    from common.config import ConfigError, OriginConfig, build

    with pytest.raises(ConfigError):
        build(OriginConfig, values)


async def test_a_target_urlsplit_refuses_gets_400(nursery):
    _, addr = await start_origin(nursery)
    conn = await open_connection("127.0.0.1", addr.http_port)
    await conn.send_all(b"GET //[ HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = b""
    while data := await conn.recv():
        reply += data
    assert reply.startswith(b"HTTP/1.1 400")


def test_an_unknown_http_version_is_shown_escaped():
    from common.proto.http1 import HttpError, RequestParser

    parser = RequestParser()
    parser.feed(b"GET / HTTP/9\nforged\x1b[2J\r\n\r\n")
    with pytest.raises(HttpError) as err:
        parser.next_request()
    assert "\n" not in err.value.reason and "\x1b" not in err.value.reason


async def test_more_than_four_plays_on_one_connection_are_refused(nursery):
    _, addr = await start_origin(nursery)
    pub = await publisher(addr.rtmp_port, "live/p")
    nursery.start_soon(synthetic_publish, pub)
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/p")
    for _ in range(4):
        await client.play()
    with pytest.raises(RtmpClientError) as err:
        await client.play()
    assert err.value.code == "NetStream.Play.Failed"


async def test_a_player_that_floods_commands_but_reads_nothing_is_closed(nursery, caplog):
    """The answers to its commands would pile up without bound: once 1 MiB waits, its
    commands are not read, and after slow_timeout it is closed."""
    from common.proto.rtmp import messages as m
    from common.proto.rtmp.chunk import encode_message

    server, addr = await start_origin(nursery, slow_timeout=1.0)
    idle = await publisher(addr.rtmp_port, "live/idle")  # live, but sends nothing
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/idle")
    await client.play()  # and never reads again
    ping = encode_message(2, m.USER_CONTROL, 0, 0, (6).to_bytes(2, "big") + bytes(4), 128)
    with trio.move_on_after(8):
        while True:
            try:
                await client.conn.send_all(ping * 2000)
            except ConnClosed:
                break
            if client.conn.closed:
                break
    assert any("read nothing" in r.getMessage() for r in caplog.records)
    assert idle is not None
