"""Relays between two of our origins (no nginx needed): a push over verified rtmps://, a push
whose target's certificate is not trusted, pulls over HTTP-FLV, a source that is missing at
first, and who may read the relays' URLs in the API."""

from __future__ import annotations

import contextlib
import logging
import socket
from functools import partial

import pytest
import trio

from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient
from common.proto import flv
from common.proto.streamkey import StreamKey
from origin import relaypush, relaystate
from origin.relays import FAILED_TTL, MAX_STARTING
from tests.conftest import start_origin, wait_for_stream
from tests.media import publish_synthetic, synthetic_publish
from tests.origin.test_relay_nginx import relays, wait_relay
from tests.origin.test_tls_origin import start_tls_origin
from tests.tlscerts import Certs

ADMIN = "admin-token-for-relay-tests"


async def test_push_over_rtmps(nursery: trio.Nursery, tls_certs: Certs) -> None:
    target, taddr = await start_tls_origin(nursery, tls_certs)
    url = f"rtmps://127.0.0.1:{taddr.rtmps_port}/live"
    origin, addr = await start_origin(nursery, push=[f"live={url}"], relay_tls_ca=tls_certs.ca)
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/cam")
    await wait_for_stream(target, "live", "cam")
    push = await wait_relay(addr.http_port, "pushes", lambda p: p["bytes"] > 1000)
    assert push["state"] == "active" and push["last_error"] is None


async def test_push_to_an_untrusted_target_fails_alone(
    nursery: trio.Nursery, tls_certs: Certs
) -> None:
    target, taddr = await start_tls_origin(nursery, tls_certs)
    url = f"rtmps://127.0.0.1:{taddr.rtmps_port}/live"
    origin, addr = await start_origin(
        nursery, push=[f"live={url}"], relay_tls_ca=tls_certs.other_ca
    )
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/cam")
    push = await wait_relay(addr.http_port, "pushes", lambda p: p["state"] == "retrying")
    assert "certificate" in push["last_error"]
    assert target.registry.get("live", "cam") is None
    # the stream itself is untouched
    assert await wait_for_stream(origin, "live", "cam", keyframes=2)


async def test_pull_http_flv_and_a_source_missing_at_first(nursery: trio.Nursery) -> None:
    source, saddr = await start_origin(nursery)
    flv = f"http://127.0.0.1:{saddr.http_port}/live/src.flv"
    origin, addr = await start_origin(nursery, pull_static=[f"live/copy={flv}"], admin_token=ADMIN)
    pull = await wait_relay(addr.http_port, "pulls", lambda p: p["state"] == "retrying")
    assert pull["last_error"] == "not_found"  # its kind: the text may echo the stream key
    assert "no such stream" in (await relays(addr.http_port, ADMIN))["pulls"][0]["last_error"]
    assert origin.registry.get("live", "copy") is None
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{saddr.rtmp_port}/live/src")
    await wait_for_stream(origin, "live", "copy", timeout=20)
    pull = await wait_relay(addr.http_port, "pulls", lambda p: p["state"] == "active")
    assert pull["reconnects"] >= 1 and pull["bytes"] > 0
    # full URLs for admin requests only
    assert pull["source"] == f"http://127.0.0.1:{saddr.http_port}/live/..."
    assert (await relays(addr.http_port, ADMIN))["pulls"][0]["source"] == flv


async def test_on_demand_pull_over_http_flv(nursery: trio.Nursery) -> None:
    source, saddr = await start_origin(nursery)
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{saddr.rtmp_port}/live/a")
    template = f"http://127.0.0.1:{saddr.http_port}/live/{{name}}.flv"
    origin, addr = await start_origin(
        nursery, pull_on_demand=[f"ext={template}"], pull_linger_seconds=0.5
    )
    assert (await relays(addr.http_port))["pulls"] == []
    resp = await fetch("GET", f"http://127.0.0.1:{addr.http_port}/api/streams/ext/a")
    assert resp.status == 404  # the API is no viewer: it starts no pull
    async with trio.open_nursery() as watching:
        from tests.edge.test_edge_real import FlvViewer

        viewer = FlvViewer(f"http://127.0.0.1:{addr.http_port}/ext/a.flv")
        await watching.start(viewer.run)
        await viewer.wait_frames(10)
        pull = (await relays(addr.http_port))["pulls"][0]
        assert pull["mode"] == "on_demand" and pull["state"] == "active"
        watching.cancel_scope.cancel()
    with trio.fail_after(15):
        while (await relays(addr.http_port))["pulls"]:
            await trio.sleep(0.1)
    assert origin.registry.get("ext", "a") is None


async def test_on_demand_pulls_connecting_are_bounded_and_not_found_is_remembered(
    nursery: trio.Nursery,
) -> None:
    async def hold(conn: trio.SocketStream) -> None:  # accepts, never answers
        await trio.sleep_forever()

    [silent] = await nursery.start(partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
    silent_port = silent.socket.getsockname()[1]
    source, saddr = await start_origin(nursery)  # has no stream at all
    origin, _ = await start_origin(
        nursery,
        pull_on_demand=[
            f"slow=http://127.0.0.1:{silent_port}/live/{{name}}.flv",
            f"ext=http://127.0.0.1:{saddr.http_port}/live/{{name}}.flv",
        ],
    )
    relays_ = origin.relays
    async with trio.open_nursery() as asking:
        for i in range(MAX_STARTING):
            asking.start_soon(relays_.demand, "slow", f"n{i}")
        with trio.fail_after(10):  # a hang guard only
            while relays_.starting("slow") < MAX_STARTING:
                await trio.sleep(0.05)
        await relays_.demand("slow", "one-more")  # turned away: no connection started
        key = StreamKey("slow", "one-more")
        assert key not in relays_.pulls and key not in relays_.failed
        assert relays_.starting("slow") == MAX_STARTING
        # another app's pulls are not held up; its source's "not found" is remembered
        await relays_.demand("ext", "missing")
        missing = StreamKey("ext", "missing")
        assert relays_.failed[missing] - trio.current_time() > FAILED_TTL
        await relays_.demand("ext", "missing")
        assert missing not in relays_.pulls
        asking.cancel_scope.cancel()


@pytest.mark.slow
async def test_a_slow_target_skips_ahead_and_never_holds_the_stream(
    nursery: trio.Nursery,
) -> None:
    # the target reads its publisher at 1 Mbit/s; we push about 13 Mbit/s
    target, taddr = await start_origin(nursery, max_ingest_mbps=1.0)
    origin, addr = await start_origin(
        nursery, push=[f"live=rtmp://127.0.0.1:{taddr.rtmp_port}/live"]
    )
    pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/big")
    await pub.publish()
    nursery.start_soon(partial(synthetic_publish, pub, key_size=240_000, inter_size=60_000))
    stream = await wait_for_stream(origin, "live", "big")
    push = await wait_relay(addr.http_port, "pushes", lambda p: p["dropped_frames"] > 0, seconds=90)
    assert push["state"] in ("active", "retrying")
    # the stream went on at full speed meanwhile: its ring is bounded and recent
    frames = [f for f in stream.iter_frames() if not f.header]
    assert frames[-1].timestamp - frames[0].timestamp < 8000
    assert stream.stats.frames_in > 25 * 2 * 5


async def test_a_static_pull_outlives_its_source(nursery: trio.Nursery) -> None:
    source, saddr = await start_origin(nursery, publisher_grace=0.0)
    url = f"rtmp://127.0.0.1:{saddr.rtmp_port}/live/src"
    origin, addr = await start_origin(
        nursery, pull_static=[f"live/copy={url}"], publisher_grace=0.5
    )
    pub = await publish_synthetic(nursery, url)
    first = await wait_for_stream(origin, "live", "copy", timeout=20)
    pub.close()  # the source's publisher dies: the pulled stream ends after the grace
    with trio.fail_after(20):
        while not first.closed:
            await trio.sleep(0.05)
    pull = await wait_relay(addr.http_port, "pulls", lambda p: p["state"] == "retrying")
    assert pull["last_error"]
    await publish_synthetic(nursery, url)  # back: pulled again, as a new stream
    again = await wait_for_stream(origin, "live", "copy", timeout=40)
    assert again is not first
    pull = await wait_relay(addr.http_port, "pulls", lambda p: p["state"] == "active")
    assert pull["reconnects"] >= 1


async def stalling_proxy(nursery: trio.Nursery, target_port: int, limit: int) -> int:
    """A TCP proxy to `target_port` that passes each client's first `limit` bytes, then never
    reads from it again (a push target that accepts a publisher and then takes nothing)."""

    async def pump(src: trio.SocketStream, dst: trio.SocketStream, most: int | None) -> None:
        got = 0
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while most is None or got < most:
                data = await src.receive_some(4096 if most is None else min(4096, most - got))
                if not data:
                    return
                got += len(data)
                await dst.send_all(data)
            await trio.sleep_forever()

    async def serve(client: trio.SocketStream) -> None:
        target = await trio.open_tcp_stream("127.0.0.1", target_port)
        async with client, target, trio.open_nursery() as inner:
            inner.start_soon(pump, client, target, limit)
            await pump(target, client, None)
            inner.cancel_scope.cancel()

    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await nursery.start(trio.serve_listeners, serve, [listener])
    return listener.socket.getsockname()[1]


@pytest.mark.slow
async def test_a_target_that_takes_nothing_backs_off_and_logs_once(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="livecdn.relay")
    # shorter times, the same rules: a target that takes nothing for 3 s has failed, a
    # connection is stable after 3 s, and active is logged at once (the first time); the
    # socket buffers take about a second of the stream (about 4 MB/s) before the stall shows
    monkeypatch.setattr(relaypush, "STALL_TIMEOUT", 3.0)
    for name, value in (
        ("STABLE", 3.0),
        ("SETTLE", 0.0),
        ("RETRY_FIRST", 0.1),
        ("RETRY_MOST", 0.8),
    ):
        monkeypatch.setattr(relaystate, name, value)
    # each reconnect replaces the stalled one at the target, however soon it comes
    target, taddr = await start_origin(nursery, on_republish="takeover")
    port = await stalling_proxy(nursery, taddr.rtmp_port, 50_000)
    origin, addr = await start_origin(nursery, push=[f"live=rtmp://127.0.0.1:{port}/live"])
    pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/cam")
    await pub.publish()
    nursery.start_soon(partial(synthetic_publish, pub, key_size=480_000, inter_size=120_000))
    push = await wait_relay(addr.http_port, "pushes", lambda p: p["reconnects"] >= 4, seconds=90)
    assert "took nothing" in push["last_error"]
    [pusher] = origin.relays.pushers.values()
    assert pusher.status.backoff.failed() == 0.8  # it grew to its most: 0.1, 0.2, 0.4, 0.8
    lines = [r.getMessage() for r in caplog.records if "push of live/cam" in r.getMessage()]
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == ["active", "retrying"], lines


async def garbage_flv_source(nursery: trio.Nursery) -> int:
    """An HTTP-FLV server that answers every request with an FLV header and then garbage."""

    async def serve(client: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async with client:
                await client.receive_some(4096)
                await client.send_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nConnection: close\r\n\r\n"
                    + flv.file_header()
                    + bytes([0x7F]) * 4096  # an unknown tag type
                )

    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(trio.serve_listeners, serve, [listener])
    return listener.socket.getsockname()[1]


async def test_a_source_that_sends_garbage_opens_no_stream_on_each_retry(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for name, value in (("RETRY_FIRST", 0.05), ("RETRY_MOST", 0.1)):
        monkeypatch.setattr(relaystate, name, value)
    port = await garbage_flv_source(nursery)
    url = f"http://127.0.0.1:{port}/live/src.flv"
    origin, addr = await start_origin(
        nursery, pull_static=[f"live/copy={url}"], publisher_grace=0.05
    )
    await wait_relay(addr.http_port, "pulls", lambda p: p["reconnects"] >= 5)
    assert origin.registry.get("live", "copy") is None
    lines = [r.getMessage() for r in caplog.records]
    streams = [r.getMessage() for r in caplog.records if r.name == "livecdn.origin"]
    assert not [line for line in streams if "live/copy" in line], lines  # no opened/ended
    assert len([line for line in lines if "pull of live/copy" in line]) == 1, lines
