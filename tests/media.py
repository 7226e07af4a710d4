"""FLV media for tests: hand-made audio/video payloads for tests that need no real codec
data, in-process publishers (made-up frames, or the test clip replayed) and a PyAV player."""

from __future__ import annotations

AVC_CONFIG = bytes.fromhex(
    "0164001fffe1001967640028acd940780227e5c044000003000400000300c83c60c65801000568ebecb22c"
)


def avc_header() -> bytes:
    """An AVC sequence header (AVCDecoderConfigurationRecord of a 1920x1080 High profile SPS)."""
    return bytes([0x17, 0x00, 0, 0, 0]) + AVC_CONFIG


def keyframe(size: int = 2000, fill: int = 0x65) -> bytes:
    """An AVC keyframe NALU packet of `size` bytes."""
    return bytes([0x17, 0x01, 0, 0, 0]) + bytes([fill]) * (size - 5)


def interframe(size: int = 500, fill: int = 0x41) -> bytes:
    """An AVC inter frame NALU packet of `size` bytes."""
    return bytes([0x27, 0x01, 0, 0, 0]) + bytes([fill]) * (size - 5)


def aac_header() -> bytes:
    """AAC sequence header: AAC-LC, 44100 Hz, stereo."""
    return bytes([0xAF, 0x00, 0x12, 0x10])


def aac_frame(size: int = 200) -> bytes:
    """A raw AAC frame."""
    return bytes([0xAF, 0x01]) + b"\x21" * (size - 2)


async def synthetic_publish(client, *, fps: int = 25, gop: int = 25, key_size: int = 4000,
                            inter_size: int = 800, seconds: float = 3600) -> None:  # fmt: skip
    """Publish made-up AVC+AAC on an RtmpClient in real time until cancelled or closed."""
    import contextlib

    import trio

    from common.net.conn import ConnClosed

    with contextlib.suppress(ConnClosed):
        await client.send_metadata({"width": 1920.0, "height": 1080.0, "videocodecid": 7.0})
        await client.send(9, 0, avc_header())
        await client.send(8, 0, aac_header())
        start = trio.current_time()
        n = 0
        while n < seconds * fps:
            ts = n * 1000 // fps
            await trio.sleep_until(start + ts / 1000)
            frame = keyframe(key_size) if n % gop == 0 else interframe(inter_size)
            await client.send(9, ts, frame)
            await client.send(8, ts, aac_frame())
            n += 1


async def publish_synthetic(nursery, url: str, tls=None):
    """Publish to the RTMP `url` (rtmps:// verified with the SSLContext `tls`) and keep sending
    made-up media (`synthetic_publish`) in `nursery`; returns the publishing RtmpClient."""
    from common.net.rtmpclient import RtmpClient

    pub = await RtmpClient.connect(url, tls=tls)
    await pub.publish()
    nursery.start_soon(synthetic_publish, pub)
    return pub


async def replay_clip(url: str, clip, task_status=None) -> None:
    """Publish the FLV file `clip` with our RTMP client, looped, paced by its timestamps,
    until cancelled; then close the connection (started once it publishes, under
    `nursery.start`).

    In-process (unlike ffmpeg -re), so on trio's MockClock it plays in virtual time."""
    import itertools

    import trio

    from common.net.rtmpclient import RtmpClient
    from common.proto import flv
    from common.proto.flv import FlvParser

    tags = [t for t in FlvParser().feed(clip.read_bytes()) if t.tag_type in (8, 9)]
    headers = [t for t in tags if flv.is_sequence_header(t.tag_type, t.body)]
    media = [t for t in tags if not flv.is_sequence_header(t.tag_type, t.body)]
    period = media[-1].timestamp + 40
    client = await RtmpClient.connect(url)
    try:
        await client.publish()
        if task_status is not None:
            task_status.started()
        for t in headers:
            await client.send(t.tag_type, t.timestamp, t.body)
        start = trio.current_time()
        for loop in itertools.count():
            for t in media:
                ts = t.timestamp + loop * period
                await trio.sleep_until(start + ts / 1000)
                await client.send(t.tag_type, ts, t.body)
    finally:
        client.close()


def play_video(url: str, seconds: float | None = None) -> dict:
    """Play `url` (a file, HLS, HTTP-FLV) with PyAV, decoding its video to its end or until
    `seconds` of video media time: {"span": seconds of video, "decoded": video frames,
    "kinds": its stream types}. Blocking: run in a thread."""
    import av

    with av.open(url, options={"timeout": "10000000"}) as c:
        kinds = {s.type for s in c.streams}
        first = last = None
        decoded = 0
        for packet in c.demux(video=0):
            if packet.pts is None:
                continue
            decoded += len(packet.decode())
            t = float(packet.pts * packet.time_base)
            end = t + float((packet.duration or 0) * packet.time_base)
            first = t if first is None else min(first, t)
            last = end if last is None else max(last, end)
            if seconds is not None and last - first >= seconds:
                break
    return {"span": (last or 0) - (first or 0), "decoded": decoded, "kinds": kinds}
