"""Our own RTMP client publishes and plays; takeover, reject, auth, API, 404s and metrics."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import av
import pytest
import trio

from common.net.conn import ConnClosed
from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto import auth, flv
from common.proto.flv import FlvParser
from common.proto.rtmp import session as rs
from tests.conftest import start_origin

pytestmark = pytest.mark.slow


def clip_tags(clip: Path) -> list[flv.FlvTag]:
    """All tags of the test clip."""
    return FlvParser().feed(clip.read_bytes())


async def publish_tags(client: RtmpClient, tags: list[flv.FlvTag], *, realtime: bool = True,
                       offset_ms: int = 0) -> None:  # fmt: skip
    """Send the clip's tags like a live encoder (metadata first, paced by timestamps);
    stops quietly when the server drops the connection."""
    with contextlib.suppress(ConnClosed):
        await _publish_tags(client, tags, realtime=realtime, offset_ms=offset_ms)


async def _publish_tags(client: RtmpClient, tags: list[flv.FlvTag], *, realtime: bool,
                        offset_ms: int) -> None:  # fmt: skip
    start = trio.current_time()
    for tag in tags:
        if tag.tag_type == flv.TAG_SCRIPT:
            await client.send_metadata({"width": 320.0, "height": 240.0, "videocodecid": 7.0})
            continue
        if realtime:
            await trio.sleep_until(start + tag.timestamp / 1000)
        await client.send(tag.tag_type, tag.timestamp + offset_ms, tag.body)


async def play_until(client: RtmpClient, count: int) -> list[rs.Event]:
    """Collect media/metadata events until `count` media messages arrived."""
    got: list[rs.Event] = []
    while sum(isinstance(e, rs.Media) for e in got) < count:
        got += await client.next_events()
    return got


async def test_own_publisher_and_player_round_trip(nursery, origin, clip):
    server, addr = origin
    tags = clip_tags(clip)
    pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/own")
    await pub.publish()
    nursery.start_soon(publish_tags, pub, tags)
    with trio.fail_after(10):
        while (s := server.registry.get("live", "own")) is None or s.video_header is None:
            await trio.sleep(0.02)
    player = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/own")
    await player.play()
    with trio.fail_after(10):
        events = await play_until(player, 60)
    meta = [e for e in events if isinstance(e, rs.Metadata)]
    assert meta and meta[0].values["width"] == 320.0
    media = [e for e in events if isinstance(e, rs.Media)]
    video = [e for e in media if e.type_id == 9]
    assert flv.video_info(video[0].payload).sequence_header
    assert flv.video_info(video[1].payload).keyframe
    sent = {(t.tag_type, t.timestamp): t.body for t in tags if t.tag_type in (8, 9)}
    for e in media:
        if not flv.is_sequence_header(e.type_id, e.payload):
            assert sent[(e.type_id, e.timestamp)] == e.payload

    # PyAV decodes what our client published, over HTTP-FLV.
    def decode(url: str) -> int:
        with av.open(url, options={"timeout": "5000000"}) as c:
            n = 0
            for _ in c.decode(video=0):
                n += 1
                if n >= 10:
                    break
            return n

    assert (
        await trio.to_thread.run_sync(decode, f"http://127.0.0.1:{addr.http_port}/live/own.flv")
        == 10
    )
    # HEAD answers the head of the live body: its type, chunked, no length
    head = await fetch("HEAD", f"http://127.0.0.1:{addr.http_port}/live/own.flv", timeout=5)
    assert head.status == 200 and head.headers["content-type"] == "video/x-flv"
    assert "content-length" not in head.headers and head.body == b""
    player.close()
    pub.close()


async def test_takeover_keeps_players_and_timestamps(nursery, clip):
    server, addr = await start_origin(nursery, on_republish="takeover")
    tags = clip_tags(clip)
    url = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/take"
    first = await RtmpClient.connect(url)
    await first.publish()
    nursery.start_soon(publish_tags, first, tags)
    with trio.fail_after(10):
        while (s := server.registry.get("live", "take")) is None or s.video_header is None:
            await trio.sleep(0.02)
    player = await RtmpClient.connect(url)
    await player.play()
    with trio.fail_after(10):
        before = await play_until(player, 30)

    second = await RtmpClient.connect(url)
    await second.publish()  # takeover: same headers, timestamps restart at 0
    nursery.start_soon(publish_tags, second, tags)
    with trio.fail_after(10):
        after = await play_until(player, 80)
    media = [e for e in before + after if isinstance(e, rs.Media)]
    headers = [e for e in media if flv.is_sequence_header(e.type_id, e.payload)]
    assert len(headers) == 2, "identical sequence headers must not be sent again"
    for kind in (8, 9):
        ts = [
            e.timestamp
            for e in media
            if e.type_id == kind and not flv.is_sequence_header(kind, e.payload)
        ]
        assert ts == sorted(ts), "timestamps must stay monotonic across the takeover"
    # the first publisher was disconnected
    with trio.fail_after(5), pytest.raises(RtmpClientError):
        while True:
            await first.next_events()
    assert server.registry.get("live", "take").stats.sources == 2


async def test_reject_mode_refuses_a_second_publisher(nursery, clip):
    server, addr = await start_origin(nursery, on_republish="reject")
    url = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/once"
    first = await RtmpClient.connect(url)
    await first.publish()
    second = await RtmpClient.connect(url)
    with pytest.raises(RtmpClientError) as err:
        await second.publish()
    assert err.value.code == "NetStream.Publish.BadName"
    host, port = first.conn.sock.getsockname()[:2]
    assert server.live[("live", "once")].publisher.rtmp.conn.peer == f"{host}:{port}"
    assert server.registry.get("live", "once").stats.sources == 1


async def test_publish_tokens(nursery, caplog):
    secret = "publish-secret-0123456789"
    server, addr = await start_origin(nursery, publish_secret=secret)
    base = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/secure"
    for query, why in (
        ("", "no token"),
        (auth.token_query(secret, "live", "secure", int(time.time()) - 5), "expired"),
        (auth.token_query("wrong", "live", "secure", int(time.time()) + 60), "does not match"),
        (auth.token_query(secret, "live", "other", int(time.time()) + 60), "does not match"),
    ):
        client = await RtmpClient.connect(f"{base}?{query}" if query else base)
        with pytest.raises(RtmpClientError) as err:
            await client.publish()
        assert err.value.code == "NetStream.Publish.Unauthorized"
        assert why in str(err.value)
        assert any(why in r.getMessage() for r in caplog.records)
    ok = await RtmpClient.connect(
        f"{base}?{auth.token_query(secret, 'live', 'secure', int(time.time()) + 60)}"
    )
    await ok.publish()
    assert server.registry.get("live", "secure") is not None
    body = (await fetch("GET", f"http://127.0.0.1:{addr.http_port}/metrics")).body
    assert 'livecdn_connections_refused_total{reason="auth"} 4.0' in body.decode()


async def test_unknown_streams_fail_at_once(autojump_clock, origin):
    server, addr = origin
    start = trio.current_time()
    reply = await fetch("GET", f"http://127.0.0.1:{addr.http_port}/live/nope.flv")
    status, body = reply.status, reply.body
    assert status == 404 and b"live/nope" in body
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/nope")
    with pytest.raises(RtmpClientError) as err:
        await client.play()
    assert err.value.code == "NetStream.Play.StreamNotFound"
    assert trio.current_time() == start, "answered without waiting for a timer (virtual time)"


async def test_api_metrics_and_kick(nursery, origin, clip):
    server, addr = origin
    http = f"http://127.0.0.1:{addr.http_port}"
    tags = clip_tags(clip)
    before = time.time()
    pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/api")
    await pub.publish()
    nursery.start_soon(publish_tags, pub, tags)
    with trio.fail_after(10):
        while (s := server.registry.get("live", "api")) is None or s.measured()["fps"] == 0:
            await trio.sleep(0.05)
    await trio.sleep(1.2)
    viewer = await open_request("GET", f"{http}/live/api.flv")
    player = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/api")
    await player.play()
    await trio.sleep(0.2)

    reply = await fetch("GET", f"{http}/api/streams")
    status, headers, body = reply.status, reply.headers, reply.body
    assert status == 200 and headers["content-type"] == "application/json"
    (info,) = json.loads(body)["streams"]
    assert info["name"] == "api" and info["app"] == "live"
    assert info["video"]["codec"] == "avc" and (
        info["video"]["width"],
        info["video"]["height"],
    ) == (320, 240)
    assert 20 <= info["video"]["fps"] <= 30
    assert info["audio"]["codec"] == "aac" and info["audio"]["sample_rate"] == 44100
    assert info["viewers"] == {"flv": 1, "ws": 0, "rtmp": 1, "hls": 0, "total": 2}
    assert 50_000 < info["bitrate_in"] < 2_000_000
    assert info["publisher"]["address"].startswith("127.0.0.1:")
    # seconds since it published (0.1 s steps): within the time it has existed
    assert 0 < info["publisher"]["uptime_s"] <= time.time() - before + 0.05
    reply = await fetch("GET", f"{http}/api/streams/live/api")
    status, body = reply.status, reply.body
    assert status == 200 and json.loads(body)["name"] == "api"
    assert (await fetch("GET", f"{http}/api/streams/live/none")).status == 404
    reply = await fetch("GET", f"{http}/healthz")
    status, body = reply.status, reply.body
    assert status == 200 and json.loads(body)["status"] == "ok"

    metrics = (await fetch("GET", f"{http}/metrics")).body
    text = metrics.decode()
    assert "livecdn_streams 1.0" in text
    assert "livecdn_publishers 1.0" in text
    assert 'livecdn_viewers{protocol="flv"} 1.0' in text
    assert 'livecdn_viewers{protocol="rtmp"} 1.0' in text
    assert "livecdn_bytes_in_total" in text and 'livecdn_bytes_out_total{protocol="flv"}' in text
    assert "livecdn_frames_dropped_total 0.0" in text
    # one join each, timed from its accept: an HTTP-FLV and an RTMP viewer
    for proto in ("flv", "rtmp"):
        assert f'livecdn_play_join_seconds_count{{protocol="{proto}"}} 1.0' in text
        assert f'livecdn_play_join_seconds_bucket{{le="10.0",protocol="{proto}"}} 1.0' in text

    # Kick with a ban: viewers get a clean end, the name cannot be published for a while.
    reply = await fetch("DELETE", f"{http}/api/streams/live/api?ban=30")
    status, body = reply.status, reply.body
    assert status == 200
    with trio.fail_after(5):
        data = await viewer.body()
    assert data.endswith(b"")  # the chunked body ended cleanly (no exception)
    with trio.fail_after(5):
        ended = []
        while not any(isinstance(e, rs.StreamEOF) for e in ended):
            ended += await player.next_events()
    assert server.registry.get("live", "api") is None
    again = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/api")
    with pytest.raises(RtmpClientError) as err:
        await again.publish()
    assert "banned" in str(err.value)
