"""An edge against hostile or failing parents and viewers, with real sockets.

The origins are ours, started in-process; the "bad parents" are raw TCP servers written
here that speak broken HTTP-FLV or RTMP (the network, not our servers, is what is faked).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from common.config import OriginConfig, build
from common.net.conn import Conn
from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto import amf0, flv
from common.proto.paths import Media, hls_target
from common.proto.streamkey import StreamKeyError
from common.serve.feeds import upstream_url
from edge.pacedbody import paced_body
from origin.server import Origin
from tests.conftest import (
    FFMPEG,
    ffmpeg_publish,
    needs_ffmpeg,
    start_edge,
    start_killable,
    start_origin,
    wait_for_stream,
)
from tests.edge.test_edge_real import FlvViewer
from tests.media import aac_frame, aac_header, avc_header, interframe, keyframe, publish_synthetic
from tests.metrics import metric, scrape

FFPROBE = FFMPEG and str(Path(FFMPEG).with_name("ffprobe"))


async def healthy(port: int) -> bool:
    status = (await fetch("GET", f"http://127.0.0.1:{port}/healthz")).status
    return status == 200


async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """Send exactly `target` (no client-side normalising); the status and some body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode("latin-1"))
        data = b""
        with trio.fail_after(15):
            while b"\r\n\r\n" not in data:
                got = await stream.receive_some(65536)
                if not got:
                    break
                data += got
        status = int(data.split(b" ", 2)[1])
        return status, data.partition(b"\r\n\r\n")[2]


# ---------------------------------------------------------------------- bad parents

Script = Callable[[trio.SocketStream], Awaitable[None]]


async def start_fake_parent(nursery: trio.Nursery, script: Script) -> int:
    """A TCP server on a free port that runs `script` on every connection."""

    async def handler(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await script(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def read_request(stream: trio.SocketStream) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        got = await stream.receive_some(4096)
        if not got:
            return
        data += got


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


FLV_200 = b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\r\n"


def http_script(response: bytes, *, reset: bool = False) -> Script:
    """Answer any request with `response`, then hold the connection (or reset it)."""

    async def script(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await stream.send_all(response)
        if reset:
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
            return
        await trio.sleep_forever()

    return script


async def rtmp_garbage(stream: trio.SocketStream) -> None:
    await stream.receive_some(4096)
    await stream.send_all(b"\x07" + bytes(range(256)) * 12)  # not RTMP version 3
    await trio.sleep_forever()


async def rtmp_bad_chunk(stream: trio.SocketStream) -> None:
    """A plain handshake, then a message header declaring 16 MB (over the 8 MB limit)."""
    await stream.receive_some(4096)
    s1 = bytes(8) + bytes(range(256)) * 6
    await stream.send_all(b"\x03" + s1[:1536] + s1[:1536])
    await stream.receive_some(4096)
    await stream.send_all(b"\x03" + bytes(3) + b"\xff\xff\xff" + b"\x14" + bytes(4) + b"\x02")
    await trio.sleep_forever()


META = flv.build_tag(flv.TAG_SCRIPT, 0, amf0.encode("onMetaData") + amf0.encode({"duration": 0.0}))
VIDEO_TAG = flv.build_tag(flv.TAG_VIDEO, 0, b"\x17\x01\x00\x00\x00" + b"\x65" * 100)

BAD_PARENTS = {
    # the body is not FLV at all
    "not_flv": ("http", http_script(FLV_200 + chunk(b"<html>an error page</html>")), "bad_data"),
    # a video tag the stream cannot take (one byte of AVC: common/proto/flv.py refuses it)
    "truncated_tag": (
        "http",
        http_script(FLV_200 + chunk(flv.file_header() + flv.build_tag(flv.TAG_VIDEO, 0, b"\x17"))),
        "bad_data",
    ),
    # reset in the middle of a tag (and of an HTTP chunk)
    "reset_mid_message": (
        "http",
        http_script(
            FLV_200 + b"%x\r\n" % 500 + flv.file_header() + META + VIDEO_TAG[:40], reset=True
        ),
        "broken",
    ),
    # not HTTP
    "bad_status_line": ("http", http_script(b"HTTP/1.1 2OO OK\r\n\r\n"), "bad_data"),
    # broken chunked framing
    "bad_chunking": ("http", http_script(FLV_200 + b"zz\r\nFLV\r\n"), "bad_data"),
    # a 500 from the parent
    "http_500": ("http", http_script(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"), "refused"),
    # an RTMP "server" whose handshake is garbage
    "rtmp_garbage": ("rtmp", rtmp_garbage, "bad_data"),
    "rtmp_bad_chunk": ("rtmp", rtmp_bad_chunk, "bad_data"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARENTS))
async def test_a_bad_parent_is_failed_over_and_the_edge_stays_up(nursery, case, caplog):
    scheme, script, reason = BAD_PARENTS[case]
    origin, addr = await start_origin(nursery)
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/s")
    await trio.sleep(0.3)
    bad = await start_fake_parent(nursery, script)
    edge, eaddr = await start_edge(
        nursery, [f"{scheme}://127.0.0.1:{bad}", f"rtmp://127.0.0.1:{addr.rtmp_port}"]
    )
    viewer = FlvViewer(f"http://127.0.0.1:{eaddr.http_port}/live/s.flv")
    with trio.fail_after(10):
        await nursery.start(viewer.run)
    with trio.fail_after(10):
        while len(viewer.video) < 10:
            await trio.sleep(0.1)
    assert viewer.error is None and viewer.monotonic()
    assert edge.pull.upstreams[("live", "s")].parent.endswith(str(addr.rtmp_port))
    text = await scrape(eaddr.http_port)
    assert metric(text, "livecdn_pull_failures_total", reason=reason) == 1
    assert await healthy(eaddr.http_port)
    lines = [r.getMessage() for r in caplog.records if f"127.0.0.1:{bad}" in r.getMessage()]
    assert any("live/s" in line and f"({reason})" in line for line in lines), lines


async def test_a_bad_only_parent_ends_the_pull_and_nothing_else(nursery):
    """With garbage from its only parent, a viewer gets the end of the stream once
    retry_seconds have passed; the edge goes on serving."""
    script = BAD_PARENTS["truncated_tag"][1]
    bad = await start_fake_parent(nursery, script)
    edge, eaddr = await start_edge(nursery, [f"http://127.0.0.1:{bad}"], retry_seconds=1.0)
    viewer = FlvViewer(f"http://127.0.0.1:{eaddr.http_port}/live/s.flv")
    with trio.fail_after(10):
        await nursery.start(viewer.run)
        while not viewer.ended_cleanly:
            await trio.sleep(0.1)
    assert ("live", "s") not in edge.pull.upstreams
    assert edge.pull.stats.failures["bad_data"] >= 2
    assert await healthy(eaddr.http_port)
    status, _ = await raw_get(eaddr.http_port, "/live/other.flv")
    assert status == 200  # the parent "has" every stream (it answers 200 to all)


# ---------------------------------------------------------------------- stream keys


@needs_ffmpeg
async def test_one_stream_one_upstream_whatever_the_spelling(nursery, clip):
    server, addr = await start_origin(nursery, hls_target_duration=1.0)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/demo")
    await wait_for_stream(server, "live", "demo")
    edge, eaddr = await start_edge(
        nursery,
        [f"rtmp://127.0.0.1:{addr.rtmp_port}"],
        hls_parents=[f"http://127.0.0.1:{addr.http_port}"],
    )
    port = eaddr.http_port
    expected = {  # the same stream, however spelled; a malformed key 400; no such path 404
        "/live/demo.flv": 200, "/live/demo%2Eflv": 200, "/live/%64emo.flv": 200,
        "/live/demo.flv?x=1": 200, "/live/demo%2e%66lv": 200,
        "/live//demo.flv": 400, "//live/demo.flv": 400, "/live/./demo.flv": 400,
        "/live/demo%00.flv": 400, "/live/demo%20.flv": 400, "/live/de%2Fmo.flv": 400,
        "/./live/demo.flv": 400, "/live/../live/demo.flv": 400, "/live/demo%0d%0a.flv": 400,
        "/live/d%C3%A9mo.flv": 400,
        "/live/demo.flv/": 404,
    }  # fmt: skip
    for target, status in expected.items():
        got, body = await raw_get(port, target)
        assert got == status, (target, got, body)
    assert list(edge.pull.upstreams) == [("live", "demo")]
    assert edge.pull.stats.started == 1
    # HLS: one cached playlist whatever the spelling, 400 for the others
    hls = [
        "/live/demo.m3u8", "/live/%64emo.m3u8", "/live/demo%2Em3u8", "/live/dem%6F.m3u8?x=1",
        "//live/demo.m3u8",  # a network-path reference: path /demo.m3u8
        "/live//demo.m3u8", "/live/demo%20.m3u8", "/live/.m3u8", "/live/x/demo.m3u8",
        "/live/demo-1.ts", "/live/demo%00-1-2.ts", "/live/../demo.m3u8",
    ]  # fmt: skip
    with trio.fail_after(10):
        while (await raw_get(port, "/live/demo.m3u8"))[0] != 200:
            await trio.sleep(0.2)
    fetched: list[str] = []
    fetch_from_parent = edge.hls.cache._fetch

    async def recording(path: str):
        fetched.append(path)
        return await fetch_from_parent(path)

    edge.hls.cache._fetch = recording
    for target in hls:
        status, body = await raw_get(port, target)
        want = 200 if target in hls[:4] else 400
        assert status == want, (target, status, body)
    assert set(fetched) <= {"/live/demo.m3u8"}, "asked of the parent in one spelling only"
    # the API's key is validated too
    assert (await raw_get(port, "/api/streams/live/demo"))[0] == 200
    assert (await raw_get(port, "/api/streams/live/de%20mo"))[0] == 400
    assert (await raw_get(port, "/api/streams/live"))[0] == 400
    assert (await raw_get(port, "/api/streams/live/nothing"))[0] == 404


def test_upstream_urls_are_built_from_validated_quoted_parts():
    assert upstream_url("rtmp://h:1/", "live", "a~b.c_d-e") == "rtmp://h:1/live/a~b.c_d-e"
    assert upstream_url("http://h:2", "app", "n", ".flv") == "http://h:2/app/n.flv"
    for app, name in [("live", "a b"), ("live", "a/b"), ("li?ve", "x"), ("live", "%41")]:
        with pytest.raises(StreamKeyError):
            upstream_url("http://h", app, name)


def test_hls_targets():
    t = hls_target("/live/demo.m3u8")
    assert (str(t.key), t.file, t.path, t.media) == (
        "live/demo",
        "demo.m3u8",
        "/live/demo.m3u8",
        Media.PLAYLIST,
    )
    t = hls_target("/live/my-cam-18c2f-12.ts")
    assert (str(t.key), t.path, t.media) == (
        "live/my-cam",
        "/live/my-cam-18c2f-12.ts",
        Media.SEGMENT,
    )
    for bad in ["/live/a b.m3u8", "/live/demo-1.ts", "/live/.m3u8", "/a/b/c.m3u8", "/live/x.mp4",
                "/live/" + "x" * 300 + "-1-2.ts", "/live/x-1-2%.ts", "/live/-x-1-2.ts"]:  # fmt: skip
        with pytest.raises(StreamKeyError):
            hls_target(bad)


# ---------------------------------------------------------------------- bounded resources


async def test_new_streams_beyond_max_streams_get_503(nursery):
    _, addr = await start_origin(nursery)
    for name in ("one", "two"):
        await publish_synthetic(nursery, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/{name}")
    await trio.sleep(0.3)
    edge, eaddr = await start_edge(nursery, [f"rtmp://127.0.0.1:{addr.rtmp_port}"], max_streams=1)
    viewer = FlvViewer(f"http://127.0.0.1:{eaddr.http_port}/live/one.flv")
    await nursery.start(viewer.run)
    status, body = await raw_get(eaddr.http_port, "/live/two.flv")
    assert status == 503 and b"too many streams" in body
    player = await RtmpClient.connect(f"rtmp://127.0.0.1:{eaddr.rtmp_port}/live/two")
    with pytest.raises(RtmpClientError) as err:
        await player.play()
    assert err.value.code == "NetStream.Play.Failed" and "too many streams" in str(err.value)
    second = FlvViewer(f"http://127.0.0.1:{eaddr.http_port}/live/one.flv")
    await nursery.start(second.run)  # a held stream still takes viewers
    text = await scrape(eaddr.http_port)
    assert metric(text, "livecdn_pulls_refused_total", reason="too_many_streams") == 2
    assert edge.pull.stats.started == 1


async def test_a_slow_class_viewer_of_a_segment_is_cut_off(autojump_clock):
    class Unpaced:
        def start(self, now: float) -> None:
            pass

        def delay_for(self, size: int, now: float) -> float:
            return 0.0

    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    slow = []
    conn = Conn(a)
    body = paced_body(bytes(4 << 20), Unpaced(), timeout=10.0, on_slow=slow.append)
    start = trio.current_time()
    with trio.fail_after(60):
        await body(conn)  # b never reads
    assert slow == [conn] and conn.closed
    assert trio.current_time() - start == pytest.approx(10.0, abs=0.1)
    b.close()


# ---------------------------------------------------------------------- tracks of a cold edge


async def publish_tracks(nursery: trio.Nursery, clip: Path, url: str, drop: str) -> None:
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
           "-i", str(clip), "-c", "copy", drop, "-f", "flv", url]  # fmt: skip
    await nursery.start(
        partial(
            trio.run_process, cmd, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )  # fmt: skip
    )


async def flv_flags(url: str) -> int:
    resp = await open_request("GET", url)
    try:
        data = b""
        async for piece in resp.chunks():
            data += piece
            if len(data) >= 13:
                return data[4]
    finally:
        resp.close()
    raise AssertionError("no FLV header")


async def ffprobe_kinds(url: str) -> list[str]:
    # a second of analysis: ffprobe would wait five for a track the stream does not have
    cmd = [FFPROBE, "-v", "error", "-analyzeduration", "1000000",
           "-show_entries", "stream=codec_type", "-of", "json", url]  # fmt: skip
    with trio.fail_after(30):
        done = await trio.run_process(cmd, capture_stdout=True, stdin=subprocess.DEVNULL)
    return sorted(s["codec_type"] for s in json.loads(done.stdout)["streams"])


@needs_ffmpeg
@pytest.mark.parametrize("scheme", ["rtmp", "http"])
async def test_a_cold_edge_announces_the_tracks_the_stream_has(nursery, clip, scheme):
    server, addr = await start_origin(nursery)
    cases = {"vonly": ("-an", 0x01, ["video"]), "aonly": ("-vn", 0x04, ["audio"])}
    for name, (drop, _, _) in cases.items():
        await publish_tracks(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/{name}", drop)
    with trio.fail_after(10):
        while not all(server.registry.get("live", n) for n in cases):
            await trio.sleep(0.1)
    await trio.sleep(1.5)
    parent = f"rtmp://127.0.0.1:{addr.rtmp_port}"
    if scheme == "http":
        parent = f"http://127.0.0.1:{addr.http_port}"
    for name, (_, flags, kinds) in cases.items():
        _, cold = await start_edge(nursery, [parent])
        assert await flv_flags(f"http://127.0.0.1:{cold.http_port}/live/{name}.flv") == flags
        _, cold = await start_edge(nursery, [parent])
        assert await ffprobe_kinds(f"http://127.0.0.1:{cold.http_port}/live/{name}.flv") == kinds


# ---------------------------------------------------------------------- a parent restarting


@needs_ffmpeg
@pytest.mark.parametrize("scheme", ["rtmp", "http"])
async def test_viewers_stay_while_the_origin_restarts(nursery, clip, scheme, caplog):
    """The origin is killed and started again on the same ports; its publisher comes back
    a while later. The edge's HTTP-FLV viewer keeps its connection and gets frames again."""
    values = {"host": "127.0.0.1", "rtmp_port": 0, "http_port": 0}
    first = Origin(build(OriginConfig, values))
    addr, kill = await start_killable(nursery, first)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/r")
    await wait_for_stream(first, "live", "r")
    port = addr.rtmp_port if scheme == "rtmp" else addr.http_port
    edge, eaddr = await start_edge(nursery, [f"{scheme}://127.0.0.1:{port}"])
    viewer = FlvViewer(f"http://127.0.0.1:{eaddr.http_port}/live/r.flv")
    await nursery.start(viewer.run)
    await viewer.wait_frames(11)
    kill.cancel()
    await trio.sleep(0.5)
    values.update(rtmp_port=addr.rtmp_port, http_port=addr.http_port)
    second = Origin(build(OriginConfig, values))
    await start_killable(nursery, second)
    with trio.fail_after(8):  # the edge finds the origin back, but not the stream yet
        while not edge.pull.stats.failures["not_found"]:
            await trio.sleep(0.1)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/r")
    await wait_for_stream(second, "live", "r")
    back = trio.current_time()
    with trio.fail_after(8):
        while viewer.frames_after(back) < 10:
            await trio.sleep(0.1)
    assert viewer.error is None and not viewer.ended_cleanly
    assert viewer.monotonic()
    up = edge.pull.upstreams[("live", "r")]
    assert up.failovers == 1 and up.state == "live"
    assert edge.pull.stats.stopped == {}


async def publish_one_track(client: RtmpClient, video: bool) -> None:
    """onMetaData naming one codec, its sequence header, then its frames in real time."""
    if video:
        await client.send_metadata({"width": 1920.0, "height": 1080.0, "videocodecid": 7.0})
        await client.send(9, 0, avc_header())
    else:
        await client.send_metadata({"audiocodecid": 10.0, "audiosamplerate": 44100.0})
        await client.send(8, 0, aac_header())
    start = trio.current_time()
    for n in range(100_000):
        ts = n * 40
        await trio.sleep_until(start + ts / 1000)
        if video:
            await client.send(9, ts, keyframe() if n % 25 == 0 else interframe())
        else:
            await client.send(8, ts, aac_frame())


@pytest.mark.parametrize("scheme", ["rtmp", "http"])
@pytest.mark.parametrize(("video", "flags"), [(True, 0x01), (False, 0x04)])
async def test_a_cold_edge_waits_for_the_tracks_of_a_stream_just_started(
    nursery, scheme, video, flags
):
    """The first viewer reaches the edge while the publisher has connected but sent
    nothing yet: the edge connects upstream at once, but answers only when the tracks
    are known, so its FLV header names just the one track."""
    _, addr = await start_origin(nursery)
    pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/one")
    await pub.publish()
    port = addr.rtmp_port if scheme == "rtmp" else addr.http_port
    edge, eaddr = await start_edge(nursery, [f"{scheme}://127.0.0.1:{port}"])
    got: list[int] = []

    async def first_viewer() -> None:
        got.append(await flv_flags(f"http://127.0.0.1:{eaddr.http_port}/live/one.flv"))

    nursery.start_soon(first_viewer)
    with trio.fail_after(5):
        while ("live", "one") not in edge.pull.upstreams or not edge.pull.upstreams[
            ("live", "one")
        ].parent:
            await trio.sleep(0.02)
    await trio.sleep(0.2)  # the upstream is connected; the publisher starts only now
    assert got == []
    nursery.start_soon(publish_one_track, pub, video)
    with trio.fail_after(5):
        while not got:
            await trio.sleep(0.02)
    assert got == [flags]


async def start_cutting_proxy(nursery: trio.Nursery, port: int, cut_after: int) -> int:
    """A TCP proxy to 127.0.0.1:`port` that forwards `cut_after` bytes of the answer and
    then resets both connections (a parent dying in the middle of a message)."""

    def reset(stream: trio.SocketStream) -> None:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def script(down: trio.SocketStream) -> None:
        up = await trio.open_tcp_stream("127.0.0.1", port)
        async with up, down:
            async with trio.open_nursery() as pumps:

                async def requests() -> None:
                    while data := await down.receive_some(65536):
                        await up.send_all(data)

                pumps.start_soon(requests)
                sent = 0
                while data := await up.receive_some(65536):
                    if sent + len(data) >= cut_after:
                        await down.send_all(data[: cut_after - sent])
                        break
                    sent += len(data)
                    await down.send_all(data)
                pumps.cancel_scope.cancel()
            reset(down)
            reset(up)

    return await start_fake_parent(nursery, script)


@pytest.mark.parametrize("scheme", ["rtmp", "http"])
async def test_a_parent_reset_in_the_middle_of_a_message_fails_over(nursery, scheme):
    _, addr = await start_origin(nursery)
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/s")
    await trio.sleep(1.5)  # a GOP and more in the origin's cache
    port = addr.rtmp_port if scheme == "rtmp" else addr.http_port
    proxy = await start_cutting_proxy(nursery, port, cut_after=30_001)
    edge, eaddr = await start_edge(
        nursery, [f"{scheme}://127.0.0.1:{proxy}", f"{scheme}://127.0.0.1:{port}"]
    )
    viewer = FlvViewer(f"http://127.0.0.1:{eaddr.http_port}/live/s.flv")
    await nursery.start(viewer.run)
    with trio.fail_after(10):
        while not edge.pull.stats.failovers:
            await trio.sleep(0.05)
    switched = trio.current_time()
    with trio.fail_after(10):
        while viewer.frames_after(switched) < 10:
            await trio.sleep(0.05)
    assert viewer.error is None and viewer.monotonic()
    assert edge.pull.stats.failures == {"broken": 1}
    assert edge.pull.upstreams[("live", "s")].parent.endswith(f":{port}")
