"""Signed play URLs at an origin with a play_secret: HTTP-FLV, HLS (playlist and segments)
and RTMP refuse a missing, wrong, expired or other stream's token and play with the right one
(ffmpeg publishes; our clients and PyAV/ffmpeg play)."""

from __future__ import annotations

import time

import av
import pytest
import trio
from wsproto.events import AcceptConnection, BytesMessage, RejectConnection

from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto import flv, playtoken
from common.proto.flv import FlvParser
from tests.common.serve.test_wsflv import Client
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_origin, wait_for_stream
from tests.metrics import metric, scrape
from tests.origin.test_hls import play_hls

pytestmark = [pytest.mark.slow, needs_ffmpeg]

SECRET = "play-secret-for-tests-0123"


def signed(path: str, ttl: int = 60, secret: str = SECRET) -> str:
    """A play token query for `path` ("app/name")."""
    return playtoken.play_query(secret, path, int(time.time()) + ttl)


def refused_tokens(path: str) -> dict[str, str]:
    """What must not play `path`, by what is wrong with it."""
    other = "live/other" if path != "live/other" else "live/x"
    return {
        "none": "",
        "wrong secret": signed(path, secret="another-secret-0123456789"),
        "expired": signed(path, ttl=-5),
        "another stream's": signed(other),
        "tampered": signed(path).replace("psig=", "psig=0"),
    }


async def assert_refused(
    path: str, http: list[str], rtmp: str, refused: dict[str, str] | None = None
) -> None:
    """Every refused token of `path` (`refused`, default `refused_tokens`) gets 403 at each
    `http` URL and NetStream.Play.Failed at the `rtmp` URL."""
    for why, bad in (refused if refused is not None else refused_tokens(path)).items():
        for url in http:
            reply = await fetch("GET", f"{url}?{bad}")
            assert reply.status == 403, (why, url, reply.status)
        client = await RtmpClient.connect(f"{rtmp}?{bad}" if bad else rtmp)
        with pytest.raises(RtmpClientError, match="NetStream.Play.Failed"):
            await client.play()
        client.close()


async def flv_tags(url: str, count: int) -> list[flv.FlvTag]:
    """The first `count` media tags of an HTTP-FLV play."""
    resp = await open_request("GET", url)
    assert resp.status == 200, resp.status
    parser, tags = FlvParser(), []
    with trio.fail_after(10):
        async for data in resp.chunks():
            tags += [t for t in parser.feed(data) if t.tag_type != flv.TAG_SCRIPT]
            if len(tags) >= count:
                break
    resp.close()
    return tags


async def test_every_protocol_needs_a_signed_url_at_the_origin(nursery, clip):
    server, addr = await start_origin(nursery, play_secret=SECRET, hls_target_duration=1.0)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/p")
    await wait_for_stream(server, "live", "p")
    http = f"http://127.0.0.1:{addr.http_port}/live/p"
    rtmp = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/p"
    with trio.fail_after(10):
        while (await fetch("GET", f"{http}.m3u8?{signed('live/p')}")).status != 200:
            await trio.sleep(0.2)

    await assert_refused("live/p", [f"{http}.flv", f"{http}.m3u8"], rtmp)

    token = signed("live/p")
    tags = await flv_tags(f"{http}.flv?{token}", 25)
    assert any(t.tag_type == flv.TAG_VIDEO for t in tags)
    # the playlist's segment URIs carry the viewer's token; a segment without one is refused
    reply = await fetch("GET", f"{http}.m3u8?{token}")
    segments = [line for line in reply.body.decode().splitlines() if ".ts" in line]
    assert segments and all(line.endswith(f"?{token}") for line in segments)
    segment = f"http://127.0.0.1:{addr.http_port}/live/{segments[-1]}"
    assert (await fetch("GET", segment)).status == 200
    bare = segment.split("?")[0]
    for why, bad in refused_tokens("live/p").items():
        assert (await fetch("GET", f"{bare}?{bad}")).status == 403, why
    # real players: PyAV (ffmpeg's HLS demuxer follows the signed segment URIs) and ffmpeg's
    # RTMP, which passes the URL's query in the play name
    result = await trio.to_thread.run_sync(play_hls, f"{http}.m3u8?{token}", 2.0)
    assert result["span"] >= 2.0 and result["decoded"] >= 40
    frames = await trio.to_thread.run_sync(decode_frames, f"{rtmp}?{token}", 10)
    assert frames >= 10
    # WebSocket-FLV: the same check before the upgrade
    with trio.fail_after(10):
        client = await Client.open(addr.http_port, "/live/p.flv")
        assert isinstance(await client.next_event(), RejectConnection)
        client = await Client.open(addr.http_port, f"/live/p.flv?{token}")
        assert isinstance(await client.next_event(), AcceptConnection)
        assert isinstance(await client.next_event(), BytesMessage)
    metrics = await scrape(f"http://127.0.0.1:{addr.http_port}")
    refused = metric(metrics, "livecdn_connections_refused_total", reason="play_token")
    assert refused == 5 * 2 + 5 + 5 + 1  # FLV and playlist, RTMP, segments, WebSocket


def decode_frames(url: str, count: int) -> int:
    """Decode `count` video frames of `url` (PyAV: ffmpeg's own protocol clients)."""
    decoded = 0
    with av.open(url, options={"rw_timeout": "10000000"}) as c:
        for packet in c.demux(video=0):
            decoded += len(packet.decode())
            if decoded >= count:
                break
    return decoded


async def test_without_a_play_secret_anyone_plays(nursery):
    """Play is public by default (a CDN's): a token is neither needed nor checked."""
    _, addr = await start_origin(nursery)
    reply = await fetch("GET", f"http://127.0.0.1:{addr.http_port}/live/none.flv?pexp=1&psig=x")
    assert reply.status == 404  # not refused: just not live
