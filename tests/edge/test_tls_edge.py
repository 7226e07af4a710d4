"""Edges pull from https:// and rtmps:// parents and verify them; ffmpeg publishes over
rtmps://; players get media over HTTPS-FLV (PyAV) and RTMPS (our client)."""

from __future__ import annotations

import logging

import pytest
import trio

from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient
from common.net.tls import client_context
from common.proto.rtmp import session as rs
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_edge, wait_for_stream
from tests.media import publish_synthetic
from tests.origin.test_play_real_clients import read_with_pyav
from tests.origin.test_tls_origin import start_tls_origin
from tests.tlscerts import Certs

pytestmark = [pytest.mark.slow, needs_ffmpeg]


def tls_keys(certs: Certs, **more: object) -> dict:
    """An edge's TLS listeners and trust in the test CA."""
    return {
        "tls_cert": certs.cert,
        "tls_key": certs.key,
        "rtmps_port": 0,
        "https_port": 0,
        "tls_ca": certs.ca,
        **more,
    }


async def test_edges_pull_over_tls_and_serve_over_tls(
    nursery: trio.Nursery, tls_certs: Certs, clip
):
    origin, oaddr = await start_tls_origin(nursery, tls_certs)
    await ffmpeg_publish(nursery, clip, f"rtmps://127.0.0.1:{oaddr.rtmps_port}/live/sec")
    await wait_for_stream(origin, "live", "sec", keyframes=2, timeout=20)

    https_parent = f"https://127.0.0.1:{oaddr.https_port}"
    _, e1 = await start_edge(nursery, [https_parent], **tls_keys(tls_certs))
    result = await trio.to_thread.run_sync(
        read_with_pyav, f"https://localhost:{e1.https_port}/live/sec.flv", 25, tls_certs.ca
    )
    assert result["first_video_key"] and result["decoded"] >= 25 and result["audio_packets"]
    # HLS comes from the https:// parent too: playlist and segments over HTTPS (and HTTP)
    trust = client_context(tls_certs.ca)
    hls = f"https://localhost:{e1.https_port}/live"
    playlist = await fetch("GET", f"{hls}/sec.m3u8", timeout=20, tls=trust)
    assert playlist.status == 200 and b"#EXTM3U" in playlist.body
    uri = next(x for x in playlist.body.decode().splitlines() if x and not x.startswith("#"))
    segment = await fetch("GET", f"{hls}/{uri}", timeout=20, tls=trust)
    assert segment.status == 200 and segment.body[:1] == b"\x47"  # MPEG-TS sync byte
    plain = await fetch("GET", f"http://127.0.0.1:{e1.http_port}/live/sec.m3u8", timeout=20)
    assert plain.status == 200

    _, e2 = await start_edge(
        nursery, [f"rtmps://localhost:{oaddr.rtmps_port}"], **tls_keys(tls_certs)
    )
    player = await RtmpClient.connect(f"rtmps://127.0.0.1:{e2.rtmps_port}/live/sec", tls=trust)
    await player.play()
    with trio.fail_after(15):
        media = 0
        while media < 50:
            media += sum(isinstance(e, rs.Media) for e in await player.next_events())
    player.close()


@pytest.mark.parametrize("scheme", ["https", "rtmps"])
async def test_a_parent_the_edge_cannot_verify_is_not_pulled(
    nursery: trio.Nursery,
    tls_certs: Certs,
    caplog: pytest.LogCaptureFixture,
    scheme: str,
):
    caplog.set_level(logging.INFO, "livecdn.edge")
    origin, oaddr = await start_tls_origin(nursery, tls_certs)
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{oaddr.rtmp_port}/live/sec")
    await wait_for_stream(origin, "live", "sec")
    port = oaddr.https_port if scheme == "https" else oaddr.rtmps_port
    parent = f"{scheme}://127.0.0.1:{port}"
    _, e = await start_edge(nursery, [parent], tls_ca=tls_certs.other_ca, retry_seconds=0.5)
    got = await fetch("GET", f"http://127.0.0.1:{e.http_port}/live/sec.flv", timeout=15)
    assert got.status != 200
    lines = [r.message for r in caplog.records if "upstream live/sec from" in r.message]
    assert lines and all(
        "certificate verify failed: unable to get local issuer certificate" in line
        for line in lines
    ), lines
