"""HLS of an HEVC stream published over Enhanced RTMP (FourCC hvc1): MPEG-TS segments whose
HEVC decodes alone (VPS/SPS/PPS in-band at the keyframe, from the hvcC sequence header)."""

from __future__ import annotations

import io

import av
import pytest
import trio

from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient
from common.proto.flv import FlvParser
from tests.conftest import start_origin
from tests.origin.test_snapshot import hevc_flv

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("libx265" not in av.codecs_available, reason="PyAV has no libx265"),
]

VPS, SPS, PPS = 32, 33, 34


def nal_types(ts: bytes) -> set[int]:
    """HEVC NAL unit types after Annex B start codes (a rough scan of the TS bytes)."""
    types, at = set(), ts.find(b"\x00\x00\x01")
    while at >= 0:
        if at + 3 < len(ts):
            types.add((ts[at + 3] >> 1) & 0x3F)
        at = ts.find(b"\x00\x00\x01", at + 3)
    return types


def decode_alone(segment: bytes) -> tuple[str, int]:
    """The segment's video codec and how many pictures it decodes to, read on its own."""
    with av.open(io.BytesIO(segment), format="mpegts") as ts:
        name = ts.streams.video[0].codec_context.name
        return name, sum(1 for _ in ts.decode(video=0))


async def test_an_hevc_stream_gets_hls_whose_segments_decode_alone(nursery, clip, tmp_path):
    _, addr = await start_origin(nursery, hls_target_duration=1.0)
    hevc = tmp_path / "hevc.flv"
    await trio.to_thread.run_sync(hevc_flv, clip, hevc, 100)  # 4 s, a keyframe each second
    tags = [t for t in FlvParser().feed(hevc.read_bytes()) if t.tag_type in (8, 9)]
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/hevc")
    try:
        await client.publish()
        for t in tags:
            await client.send(t.tag_type, t.timestamp, t.body)
        base = f"http://127.0.0.1:{addr.http_port}/live"
        playlist = await fetch("GET", f"{base}/hevc.m3u8")  # waits for the first segment
        assert playlist.status == 200, playlist.body
        lines = playlist.body.decode().splitlines()
        first = next(line for line in lines if line and not line.startswith("#"))
        segment = await fetch("GET", f"{base}/{first}")
        assert segment.status == 200, segment.body
    finally:
        client.close()
    assert {VPS, SPS, PPS} <= nal_types(segment.body)
    name, pictures = await trio.to_thread.run_sync(decode_alone, segment.body)
    assert name == "hevc" and pictures >= 25
