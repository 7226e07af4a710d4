"""HTTP hooks at the origin, against a real hook server (tests/hookserver.py): on_publish
allows, refuses, times out, is down; on_play for HTTP-FLV, RTMP and HLS, its cache; the
on_unpublish and on_play_done notifications and their fields."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from wsproto.events import AcceptConnection, BytesMessage, RejectConnection

from common.net.hooks import HookClient
from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto import flv
from common.proto.hooks import HookCall, HookEvent
from common.proto.rtmp import session as rs
from common.serve.refusal import Refusal
from tests.common.serve.test_wsflv import Client as WsClient
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_origin, wait_for_stream
from tests.hookserver import start_hooks
from tests.media import publish_synthetic, replay_clip


def sockname(client: RtmpClient) -> str:
    """The client's address as the origin sees it."""
    host, port = client.conn.sock.getsockname()[:2]
    return f"{host}:{port}"


def refused(server, reason: Refusal) -> float:
    return server.node.metrics.counters[("connections_refused_total", (reason,))]


def hook_calls(server, hook: str, result: str) -> float:
    return server.node.metrics.counters[("hook_calls_total", (hook, result))]


def by_name(body: dict) -> int | None:
    """200 for names starting "ok", None (never answers) for "slow", else 403."""
    name = body.get("name", "")
    return 200 if name.startswith("ok") else None if name.startswith("slow") else 403


async def rtmp_frames(url: str, count: int) -> None:
    """Play `url` over RTMP until `count` video frames came (a hang guard of 10 s)."""
    client = await RtmpClient.connect(url)
    try:
        await client.play()
        seen = 0
        with trio.fail_after(10):
            while seen < count:
                for event in await client.next_events():
                    seen += isinstance(event, rs.Media) and event.type_id == flv.TAG_VIDEO
    finally:
        client.close()


async def test_on_publish_allows_refuses_and_is_told_of_the_unpublish(
    autojump_clock, nursery, caplog
):
    hooks = await start_hooks(nursery, by_name)
    server, addr = await start_origin(
        nursery, on_publish=hooks.url("/pub"), on_unpublish=hooks.url("/unpub")
    )
    base = f"rtmp://127.0.0.1:{addr.rtmp_port}/live"
    pub = await publish_synthetic(nursery, f"{base}/ok1?user=alice")
    [call] = hooks.of("on_publish")
    assert call == {
        "action": "on_publish", "app": "live", "name": "ok1", "addr": "127.0.0.1",
        "client_id": sockname(pub), "protocol": "rtmp", "query": {"user": "alice"},
    }  # fmt: skip
    await rtmp_frames(f"{base}/ok1", 5)

    stranger = await RtmpClient.connect(f"{base}/nope?user=mallory")
    with pytest.raises(RtmpClientError) as err:
        await stranger.publish()
    assert err.value.code == "NetStream.Publish.Denied"
    assert "on_publish" in str(err.value) and "answered 403" in str(err.value)
    assert server.registry.get("live", "nope") is None
    assert refused(server, Refusal.HOOK) == 1
    assert hook_calls(server, "on_publish", "refused") == 1
    assert any("hook on_publish for 127.0.0.1:" in r.message and "403" in r.message
               for r in caplog.records)  # fmt: skip
    assert hooks.of("on_unpublish") == []  # a refused publish never was one

    pub.close()
    [done] = await hooks.wait_for("on_unpublish")
    assert done == {**call, "action": "on_unpublish"}


async def test_a_silent_hook_refuses_after_hook_timeout_and_others_go_on(autojump_clock, nursery):
    hooks = await start_hooks(nursery, by_name)
    server, addr = await start_origin(nursery, on_publish=hooks.url(), hook_timeout=2.0)
    base = f"rtmp://127.0.0.1:{addr.rtmp_port}/live"
    await publish_synthetic(nursery, f"{base}/ok1")
    outcome: list[str] = []

    async def slow_publish() -> None:
        client = await RtmpClient.connect(f"{base}/slow")
        try:
            await client.publish()
            outcome.append("accepted")
        except RtmpClientError as exc:
            outcome.append(f"{exc.code} after {trio.current_time() - start:.1f} s")

    start = trio.current_time()
    nursery.start_soon(slow_publish)
    await hooks.wait_for("on_publish", 2)  # the slow one's hook is asked, and hangs
    # meanwhile the origin serves the live stream and accepts another publisher
    await rtmp_frames(f"{base}/ok1", 5)
    await publish_synthetic(nursery, f"{base}/ok2")
    with trio.fail_after(10):
        while not outcome:
            await trio.sleep(0.1)
    [text] = outcome
    code, seconds = text.split(" after ")
    assert code == "NetStream.Publish.Denied"
    assert 2.0 <= float(seconds.split()[0]) < 3.0
    assert hook_calls(server, "on_publish", "timeout") == 1
    assert server.registry.get("live", "slow") is None
    assert server.registry.get("live", "ok2") is not None


async def test_a_hook_server_that_is_down_refuses(nursery, caplog, held_ports):
    port = held_ports.take()  # a port nothing listens on
    server, addr = await start_origin(nursery, on_publish=f"http://127.0.0.1:{port}/hook")
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/any")
    with pytest.raises(RtmpClientError) as err:
        await client.publish()
    assert err.value.code == "NetStream.Publish.Denied"
    assert hook_calls(server, "on_publish", "error") == 1
    assert refused(server, Refusal.HOOK) == 1
    assert any(f"127.0.0.1:{port}/hook failed" in r.message for r in caplog.records)


async def test_notifications_to_a_silent_hook_are_bounded(autojump_clock, nursery):
    hooks = await start_hooks(nursery, lambda body: None)
    results: list[str] = []
    client = HookClient(
        {HookEvent.PLAY_DONE: hooks.url()}, timeout=2.0, max_notifications=2,
        count=lambda event, result: results.append(f"{event} {result}"),
    )  # fmt: skip
    client.nursery = nursery
    done = HookCall.of(HookEvent.PLAY_DONE, "live", "s", "127.0.0.1:1", "flv", {})
    for _ in range(5):
        client.notify(done)  # never waits
    assert client.in_flight == 2 and results == ["on_play_done dropped"] * 3
    await trio.sleep(2.5)
    assert client.in_flight == 0 and len(hooks.calls) == 2
    assert results[3:] == ["on_play_done timeout"] * 2


async def test_a_hook_answering_garbage_refuses_and_notifications_survive_it(nursery, caplog):
    async def garbage(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)
            await stream.send_all(b"\x00\xffnot http at all\r\n\r\n")

    listeners = await nursery.start(partial(trio.serve_tcp, garbage, 0, host="127.0.0.1"))
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/hook"
    server, addr = await start_origin(nursery, on_publish=url, on_play_done=url)
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/any")
    with pytest.raises(RtmpClientError) as err:
        await client.publish()
    assert err.value.code == "NetStream.Publish.Denied"
    assert hook_calls(server, "on_publish", "error") == 1
    done = HookCall.of(HookEvent.PLAY_DONE, "live", "any", "127.0.0.1:1", "flv", {})
    server.hooks.client.notify(done)
    with trio.fail_after(5):
        while hook_calls(server, "on_play_done", "error") < 1:
            await trio.sleep(0.01)
    assert (await fetch("GET", f"http://127.0.0.1:{addr.http_port}/healthz")).status == 200


async def flv_status(url: str) -> int:
    resp = await open_request("GET", url)
    resp.close()
    return resp.status


async def test_on_play_decides_for_flv_rtmp_and_hls_and_hears_the_end(autojump_clock, nursery):
    hooks = await start_hooks(nursery, lambda body: 200 if body["query"].get("t") == "ok" else 403)
    server, addr = await start_origin(
        nursery, on_play=hooks.url("/play"), on_play_done=hooks.url("/done")
    )
    rtmp = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/s"
    http = f"http://127.0.0.1:{addr.http_port}/live/s"
    await publish_synthetic(nursery, rtmp)
    await wait_for_stream(server, "live", "s")

    assert await flv_status(f"{http}.flv?t=bad") == 403
    assert (await fetch("GET", f"{http}.m3u8")).status == 403
    client = await RtmpClient.connect(rtmp)
    with pytest.raises(RtmpClientError) as err:
        await client.play("s?t=bad")
    assert err.value.code == "NetStream.Play.Failed" and "on_play refused" in str(err.value)
    assert refused(server, Refusal.HOOK) == 3
    assert [c["protocol"] for c in hooks.of("on_play")] == ["flv", "hls", "rtmp"]
    assert hooks.of("on_play_done") == []  # refused plays never started

    resp = await open_request("GET", f"{http}.flv?t=ok")
    assert resp.status == 200
    async for _ in resp.chunks():
        break
    resp.close()
    await rtmp_frames(f"{rtmp}?t=ok", 3)
    done = await hooks.wait_for("on_play_done", 2)
    assert sorted(c["protocol"] for c in done) == ["flv", "rtmp"]
    for call in done:
        assert call["app"] == "live" and call["name"] == "s" and call["query"] == {"t": "ok"}
        play = next(c for c in hooks.of("on_play") if c["client_id"] == call["client_id"])
        assert play == {**call, "action": "on_play"}


async def test_on_play_decides_for_websocket_flv(autojump_clock, nursery):
    hooks = await start_hooks(nursery, lambda body: 200 if body["query"].get("t") == "ok" else 403)
    server, addr = await start_origin(nursery, on_play=hooks.url(), on_play_done=hooks.url())
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/w")
    await wait_for_stream(server, "live", "w")
    refused_ws = await WsClient.open(addr.http_port, "/live/w.flv?t=no")
    answer = await refused_ws.next_event()
    assert isinstance(answer, RejectConnection) and answer.status_code == 403
    viewer = await WsClient.open(addr.http_port, "/live/w.flv?t=ok")
    assert isinstance(await viewer.next_event(), AcceptConnection)
    assert isinstance(await viewer.next_event(), BytesMessage)
    await viewer.stream.aclose()
    [done] = await hooks.wait_for("on_play_done")
    assert [c["protocol"] for c in hooks.of("on_play")] == ["ws", "ws"]
    assert done["protocol"] == "ws" and done["query"] == {"t": "ok"}


async def test_on_play_answers_are_cached_per_request(autojump_clock, nursery):
    hooks = await start_hooks(nursery)
    server, addr = await start_origin(nursery, on_play=hooks.url(), hook_cache_seconds=30)
    rtmp = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/c"
    http = f"http://127.0.0.1:{addr.http_port}/live/c.flv"
    await publish_synthetic(nursery, rtmp)
    await wait_for_stream(server, "live", "c")
    assert await flv_status(f"{http}?u=1") == 200
    assert await flv_status(f"{http}?u=1") == 200  # within the cache time: no call
    assert len(hooks.of("on_play")) == 1
    assert hook_calls(server, "on_play", "cached") == 1
    assert await flv_status(f"{http}?u=2") == 200  # another query: another decision
    assert len(hooks.of("on_play")) == 2
    await trio.sleep(31)
    assert await flv_status(f"{http}?u=1") == 200  # the answer expired
    assert len(hooks.of("on_play")) == 3


async def test_an_hls_viewer_is_one_play_until_it_stops_asking(
    autojump_clock, nursery, clip, inline_threads
):
    hooks = await start_hooks(nursery)
    server, addr = await start_origin(
        nursery, on_play=hooks.url(), on_play_done=hooks.url(), hls_target_duration=1.0
    )
    nursery.start_soon(replay_clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/h", clip)
    base = f"http://127.0.0.1:{addr.http_port}/live"
    with trio.fail_after(30):
        while (await fetch("GET", f"{base}/h.m3u8?t=1")).status != 200:
            await trio.sleep(0.5)
    for _ in range(4):  # a player: playlist with its query, segments without
        playlist = (await fetch("GET", f"{base}/h.m3u8?t=1")).body.decode()
        segment = next(line for line in playlist.splitlines() if line.endswith(".ts"))
        assert (await fetch("GET", f"{base}/{segment}")).status == 200
        await trio.sleep(1)
    [play] = hooks.of("on_play")
    assert play["protocol"] == "hls" and play["query"] == {"t": "1"}
    assert hooks.of("on_play_done") == []
    await trio.sleep(server.node.hls_viewers.window + 2)  # it stopped asking
    [done] = hooks.of("on_play_done")
    assert done == {**play, "action": "on_play_done"}


@pytest.mark.slow
@needs_ffmpeg
async def test_ffmpeg_publishes_only_when_on_publish_allows(nursery, clip):
    hooks = await start_hooks(nursery, by_name)
    server, addr = await start_origin(nursery, on_publish=hooks.url())
    base = f"rtmp://127.0.0.1:{addr.rtmp_port}/live"
    refused_run = await ffmpeg_publish(nursery, clip, f"{base}/denied", loop=False)
    await ffmpeg_publish(nursery, clip, f"{base}/ok")
    await wait_for_stream(server, "live", "ok", keyframes=2)
    await rtmp_frames(f"{base}/ok", 10)
    with trio.fail_after(20):
        await refused_run.wait()
    assert refused_run.returncode != 0
    assert server.registry.get("live", "denied") is None
    assert {c["name"] for c in hooks.of("on_publish")} == {"denied", "ok"}
