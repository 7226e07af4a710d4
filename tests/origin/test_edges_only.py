"""An origin with edges_only plays only to edges that sign their pulls with cluster_secret:
HTTP-FLV, WebSocket-FLV, HLS (playlist and segments) and RTMP refuse a missing, wrong,
expired, tampered or other stream's pull token, and edges with the secret pull over RTMP,
HTTP-FLV and HLS while an edge without it gets nothing (ffmpeg publishes)."""

from __future__ import annotations

import time

import pytest
import trio
from wsproto.events import AcceptConnection, RejectConnection

from common.config import ConfigError, OriginConfig, build
from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto import flv, playtoken
from tests.common.serve.test_wsflv import Client
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_edge, start_origin, wait_for_stream
from tests.metrics import metric, scrape
from tests.origin.test_hls import play_hls
from tests.origin.test_play_tokens import assert_refused, decode_frames, flv_tags, signed

CLUSTER = "cluster-secret-for-tests-0123"


def pulled(path: str, ttl: int = 60, secret: str = CLUSTER) -> str:
    """A pull token query for `path` ("app/name"), as an edge holding `secret` signs it."""
    return playtoken.pull_query(secret, path, int(time.time()) + ttl)


def refused_pulls(path: str) -> dict[str, str]:
    """What must not play `path` at an origin with edges_only, by what is wrong with it."""
    return {
        "none": "",
        "a valid play token": signed(path),
        "wrong secret": pulled(path, secret="another-secret-0123456789"),
        "expired": pulled(path, ttl=-5),
        "another stream's": pulled("live/other"),
        "tampered": pulled(path).replace("nsig=", "nsig=0"),
    }


async def live_origin(nursery, clip, name: str, **overrides: object):
    """An origin with edges_only publishing live/`name`; its address."""
    server, addr = await start_origin(nursery, cluster_secret=CLUSTER, edges_only=True,
                                      hls_target_duration=1.0, **overrides)  # fmt: skip
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/{name}")
    await wait_for_stream(server, "live", name)
    return addr


async def playlist(url: str) -> str:
    """The playlist at `url` once it has a segment."""
    with trio.fail_after(15):
        while (reply := await fetch("GET", url)).status != 200 or b".ts" not in reply.body:
            await trio.sleep(0.2)
    return reply.body.decode()


def test_edges_only_needs_a_cluster_secret() -> None:
    with pytest.raises(ConfigError, match="edges_only needs a cluster_secret"):
        build(OriginConfig, {"edges_only": True})
    assert build(OriginConfig, {"edges_only": True, "cluster_secret": CLUSTER}).edges_only


@pytest.mark.slow
@needs_ffmpeg
async def test_every_protocol_at_the_origin_needs_an_edges_pull_token(nursery, clip):
    addr = await live_origin(nursery, clip, "p")
    http = f"http://127.0.0.1:{addr.http_port}/live/p"
    rtmp = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/p"
    token = pulled("live/p")
    segments = [x for x in (await playlist(f"{http}.m3u8?{token}")).splitlines() if ".ts" in x]
    assert segments and not any("nsig" in line for line in segments)  # never handed on

    refused = refused_pulls("live/p")
    await assert_refused("live/p", [f"{http}.flv", f"{http}.m3u8"], rtmp, refused)
    segment = f"http://127.0.0.1:{addr.http_port}/live/{segments[-1].split('?')[0]}"
    for why, bad in refused.items():
        assert (await fetch("GET", f"{segment}?{bad}")).status == 403, why
    with trio.fail_after(10):
        client = await Client.open(addr.http_port, f"/live/p.flv?{signed('live/p')}")
        assert isinstance(await client.next_event(), RejectConnection)

    assert (await fetch("GET", f"{segment}?{token}")).status == 200
    tags = await flv_tags(f"{http}.flv?{token}", 25)
    assert any(t.tag_type == flv.TAG_VIDEO for t in tags)
    assert await trio.to_thread.run_sync(decode_frames, f"{rtmp}?{token}", 10) >= 10
    with trio.fail_after(10):
        client = await Client.open(addr.http_port, f"/live/p.flv?{token}")
        assert isinstance(await client.next_event(), AcceptConnection)
    refusals = metric(await scrape(addr.http_port), "livecdn_connections_refused_total",
                      reason="not_an_edge")  # fmt: skip
    assert refusals == len(refused) * 4 + 1  # FLV, playlist, RTMP, segment; WebSocket


@pytest.mark.slow
@needs_ffmpeg
async def test_edges_with_the_cluster_secret_pull_every_protocol_and_others_get_nothing(
    nursery, clip
):
    o = await live_origin(nursery, clip, "e", play_secret="play-secret-for-tests-0123")
    rtmp_parent, http_parent = f"rtmp://127.0.0.1:{o.rtmp_port}", f"http://127.0.0.1:{o.http_port}"
    both = {"cluster_secret": CLUSTER, "play_secret": "play-secret-for-tests-0123"}
    _, via_rtmp = await start_edge(nursery, [rtmp_parent], hls_parents=[http_parent], **both)
    _, via_http = await start_edge(nursery, [http_parent], **both)
    token = signed("live/e", secret=both["play_secret"])
    for e in (via_rtmp, via_http):
        tags = await flv_tags(f"http://127.0.0.1:{e.http_port}/live/e.flv?{token}", 25)
        assert any(t.tag_type == flv.TAG_VIDEO for t in tags), e
    rtmp = f"rtmp://127.0.0.1:{via_rtmp.rtmp_port}/live/e?{token}"
    assert await trio.to_thread.run_sync(decode_frames, rtmp, 10) >= 10
    hls = f"http://127.0.0.1:{via_rtmp.http_port}/live/e.m3u8?{token}"
    assert "nsig" not in await playlist(hls)  # the edge's pull token never reaches viewers
    result = await trio.to_thread.run_sync(play_hls, hls, 2.0)
    assert result["span"] >= 2.0 and result["decoded"] >= 40
    assert metric(await scrape(o.http_port), "livecdn_connections_refused_total",
                  reason="not_an_edge") == 0  # fmt: skip

    stranger = {"play_secret": both["play_secret"], "connect_timeout": 2.0}
    _, http_edge = await start_edge(nursery, [http_parent], **stranger)
    _, rtmp_edge = await start_edge(nursery, [rtmp_parent], hls_parents=[http_parent], **stranger)
    for path in ("live/e.flv", "live/e.m3u8"):
        url = f"http://127.0.0.1:{http_edge.http_port}/{path}?{token}"
        assert (await fetch("GET", url, timeout=30)).status >= 400, path
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{rtmp_edge.rtmp_port}/live/e?{token}")
    with pytest.raises(RtmpClientError):
        await client.play(timeout=30)
    client.close()
    refusals = metric(await scrape(o.http_port), "livecdn_connections_refused_total",
                      reason="not_an_edge")  # fmt: skip
    assert refusals >= 3
