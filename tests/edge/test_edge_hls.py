"""HLS through an edge: the object cache in front of a real origin, and a parent that breaks."""

from __future__ import annotations

import pytest
import trio

from common.net.httpclient import fetch
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_edge, start_origin, wait_for_stream
from tests.hls_validator import LiveValidator
from tests.media import replay_clip
from tests.metrics import metric, scrape
from tests.origin.test_hls import play_hls

pytestmark = [pytest.mark.slow, needs_ffmpeg]


async def test_pyav_plays_hls_through_the_edge(nursery, clip):
    server, addr = await start_origin(nursery, hls_target_duration=1.0)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/e")
    await wait_for_stream(server, "live", "e")
    _, eaddr = await start_edge(nursery, [f"http://127.0.0.1:{addr.http_port}"])
    result = await trio.to_thread.run_sync(
        play_hls, f"http://127.0.0.1:{eaddr.http_port}/live/e.m3u8", 3.0
    )
    assert result["span"] >= 3.0 and result["decoded"] >= 60


async def test_three_hundred_players_cost_the_origin_one_fetch_per_object(
    autojump_clock, inline_threads, nursery, clip
):
    """In-process (the clip replayed by our RTMP client) on the MockClock: the playlist's
    max-age is counted in virtual time."""
    server, addr = await start_origin(nursery)  # default 2 s target: playlist max-age=1
    nursery.start_soon(replay_clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/many", clip)
    await wait_for_stream(server, "live", "many")
    edge, eaddr = await start_edge(nursery, [f"rtmp://127.0.0.1:{addr.rtmp_port}"],
                                   hls_parents=[f"http://127.0.0.1:{addr.http_port}"])  # fmt: skip
    url = f"http://127.0.0.1:{eaddr.http_port}/live/many.m3u8"
    with trio.fail_after(10):
        while (await fetch("GET", url)).status != 200:
            await trio.sleep(0.2)
    fetched_segments: set[str] = set()
    got = [0] * 300
    validator = LiveValidator()
    duration = 7.0

    async def player(i: int) -> None:
        seen: set[str] = set()
        end = trio.current_time() + duration
        while trio.current_time() < end:
            reply = await fetch("GET", url)
            status, body = reply.status, reply.body
            assert status == 200
            text = body.decode()
            if i == 0:
                validator.add(text)
            for line in text.splitlines():
                if line.endswith(".ts") and line not in seen:
                    seen.add(line)
                    reply = await fetch("GET", f"http://127.0.0.1:{eaddr.http_port}/live/{line}")
                    status, data = reply.status, reply.body
                    assert status == 200 and data[:1] == b"\x47"
                    got[i] += 1
                    fetched_segments.add(line)
            await trio.sleep(0.5)

    start = trio.current_time()
    async with trio.open_nursery() as n:
        for i in range(300):
            n.start_soon(player, i)
    elapsed = trio.current_time() - start
    assert min(got) >= 3
    origin_metrics = await scrape(addr.http_port)
    segment_requests = metric(origin_metrics, "livecdn_hls_requests_total", kind="segment")
    playlist_requests = metric(origin_metrics, "livecdn_hls_requests_total", kind="playlist")
    # each segment reached the origin once; the newest of the last playlist fetched may
    # have been prefetched with it and asked for by no player before the end
    assert len(fetched_segments) <= segment_requests <= len(fetched_segments) + 1
    # max-age=1 s in virtual time: the first fetch, then one a second (round: float error)
    assert playlist_requests <= round(elapsed / 1.0) + 1, "playlists at most once per max-age"
    edge_metrics = await scrape(eaddr.http_port)
    assert metric(edge_metrics, "livecdn_hls_cache_hits_total") > 1000
    assert metric(edge_metrics, "livecdn_viewers", protocol="hls") >= 1
    info = (await fetch("GET", f"http://127.0.0.1:{eaddr.http_port}/api/streams/live/many")).body
    assert b'"objects"' in info


async def truncating_parent(task_status=trio.TASK_STATUS_IGNORED) -> None:
    """An HTTP server that promises 100000 bytes and closes after 1000: a broken network peer."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    connections = []

    async def handle(stream: trio.SocketStream) -> None:
        connections.append(1)
        await stream.receive_some(65536)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: video/mp2t\r\ncache-control: max-age=3600\r\n"
            b"content-length: 100000\r\n\r\n" + b"\x47" * 1000
        )
        await stream.aclose()

    task_status.started((listeners[0].socket.getsockname()[1], connections))
    await trio.serve_listeners(handle, listeners)


async def test_a_parent_failing_mid_body_is_not_cached(nursery):
    port, connections = await nursery.start(truncating_parent)
    _, eaddr = await start_edge(nursery, [f"http://127.0.0.1:{port}"])
    url = f"http://127.0.0.1:{eaddr.http_port}/live/x-1-0.ts"
    for expected in (1, 2):
        reply = await fetch("GET", url)
        status, body = reply.status, reply.body
        assert status == 502 and b"upstream failed" in body
        assert len(connections) == expected, "a truncated object must be fetched again"
    text = await scrape(eaddr.http_port)
    assert metric(text, "livecdn_hls_cache_errors_total") == 2
    assert metric(text, "livecdn_hls_cache_bytes") == 0


async def test_missing_playlist_is_cached_briefly(nursery, origin):
    _, addr = origin
    _, eaddr = await start_edge(nursery, [f"http://127.0.0.1:{addr.http_port}"], not_found_ttl=2.0)
    for _ in range(3):
        assert (
            await fetch("GET", f"http://127.0.0.1:{eaddr.http_port}/live/none.m3u8")
        ).status == 404
    assert metric(await scrape(addr.http_port), "livecdn_hls_requests_total", kind="playlist") == 1
    assert metric(await scrape(eaddr.http_port), "livecdn_hls_cache_negative_hits_total") == 2


def test_the_newest_segment_of_a_playlist_is_its_last_uri():
    from edge.hls import newest_uri

    text = b"#EXTM3U\n#EXTINF:2.0,\na-s-1.ts\n#EXTINF:2.0,\na-s-2.ts?t=x\n\n"
    assert newest_uri(text) == "a-s-2.ts?t=x"
    assert newest_uri(b"#EXTM3U\n#EXT-X-ENDLIST\n") is None
