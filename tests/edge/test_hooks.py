"""HTTP hooks at an edge, against a real hook server: on_play decides locally for HTTP-FLV,
RTMP and HLS (a refused viewer starts no pull), on_play_done hears the end."""

from __future__ import annotations

import pytest
import trio

from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.serve.refusal import Refusal
from tests.conftest import start_edge, start_origin, wait_for_stream
from tests.hookserver import start_hooks
from tests.media import replay_clip
from tests.origin.test_hooks import refused, rtmp_frames


def by_token(body: dict) -> int:
    return 200 if body["query"].get("t") == "ok" else 403


async def test_on_play_at_the_edge(autojump_clock, inline_threads, nursery, clip):
    server, addr = await start_origin(nursery, hls_target_duration=1.0)
    nursery.start_soon(replay_clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/e", clip)
    await wait_for_stream(server, "live", "e")
    hooks = await start_hooks(nursery, by_token)
    edge, eaddr = await start_edge(
        nursery,
        [f"rtmp://127.0.0.1:{addr.rtmp_port}"],
        hls_parents=[f"http://127.0.0.1:{addr.http_port}"],
        on_play=hooks.url("/play"),
        on_play_done=hooks.url("/done"),
    )
    http = f"http://127.0.0.1:{eaddr.http_port}/live/e"
    rtmp = f"rtmp://127.0.0.1:{eaddr.rtmp_port}/live/e"

    # refused: no media, and no pull from the origin
    resp = await open_request("GET", f"{http}.flv?t=no")
    resp.close()
    assert resp.status == 403
    assert (await fetch("GET", f"{http}.m3u8?t=no")).status == 403
    client = await RtmpClient.connect(rtmp)
    with pytest.raises(RtmpClientError) as err:
        await client.play("e?t=no")
    assert err.value.code == "NetStream.Play.Failed"
    assert refused(edge, Refusal.HOOK) == 3
    assert [c["protocol"] for c in hooks.of("on_play")] == ["flv", "hls", "rtmp"]
    assert edge.streams.describe() == {}
    assert not any(server.fanouts.viewers().values())  # the origin has no upstream of it

    # allowed: media, and on_play_done when the play ends
    await rtmp_frames(f"{rtmp}?t=ok", 5)
    [done] = await hooks.wait_for("on_play_done")
    assert done["protocol"] == "rtmp" and done["name"] == "e" and done["query"] == {"t": "ok"}
    with trio.fail_after(30):
        while (await fetch("GET", f"{http}.m3u8?t=ok")).status != 200:
            await trio.sleep(0.5)
    assert [c["query"] for c in hooks.of("on_play") if c["protocol"] == "hls"][-1] == {"t": "ok"}
