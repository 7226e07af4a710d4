"""The JSON description of a live stream on the origin (its API, and what it announces)."""

from __future__ import annotations

import time

from common.media.stream import Stream
from origin.live import Publisher


def describe(stream: Stream, pub: Publisher | None, viewers: dict[str, int]) -> dict:
    """`stream` as the API shows it: tracks, input rate, `viewers` by protocol (and their
    total), its publisher (None while it has none) and its counters."""
    meta = stream.metadata_values
    measured = stream.measured()
    width, height = stream.dimensions or (meta.get("width"), meta.get("height"))
    fps = measured["fps"] or meta.get("framerate") or meta.get("fps")
    return {
        "app": stream.app,
        "name": stream.name,
        "video": {
            "codec": stream.video_codec,
            "width": int(width) if isinstance(width, (int, float)) else None,
            "height": int(height) if isinstance(height, (int, float)) else None,
            "fps": fps,
        }
        if stream.has_video
        else None,
        "audio": {
            "codec": stream.audio_codec,
            "sample_rate": stream.audio_rate,
            "channels": stream.audio_channels,
        }
        if stream.audio_codec
        else None,
        "bitrate_in": measured["bitrate"],
        "viewers": {**viewers, "total": sum(viewers.values())},
        "publisher": {
            "address": pub.rtmp.conn.peer,
            "since": pub.since,
            "uptime_s": round(time.time() - pub.since, 1),
        }
        if pub
        else None,
        "frames_in": stream.stats.frames_in,
        "bytes_in": stream.stats.bytes_in,
        "dropped_frames": stream.stats.dropped_frames,
        "gop_cache": {
            "frames": sum(1 for _ in stream.iter_frames()),
            "bytes": stream.ring_bytes,
        },
    }
