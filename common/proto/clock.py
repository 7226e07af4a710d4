"""Ingest clock stamps: an AMF0 data message the origin may put after every video
keyframe, carrying its wall clock, so players can measure glass-to-viewer latency.

Only players that ask (`?stamps=1`, also on an RTMP play name) get them: to ffmpeg, ffprobe,
VLC or mpv an unknown data message is an extra stream that some cannot even copy."""

from __future__ import annotations

from common.proto import amf0
from common.proto.errors import ProtocolError

CLOCK_EVENT = "onLivecdnClock"
STAMPS_QUERY = "stamps"
"""A play asking (`?stamps=1`) for the clock stamps."""
_PREFIX = amf0.encode(CLOCK_EVENT)


def asking_stamps(url: str) -> str:
    """A play URL (HTTP-FLV or RTMP) that asks for the clock stamps."""
    return url + ("&" if "?" in url else "?") + f"{STAMPS_QUERY}=1"


def is_stamp(payload: bytes) -> bool:
    """Whether a data message body is a clock stamp (by its event name alone)."""
    return payload.startswith(_PREFIX)


def stamp_payload(wall: float) -> bytes:
    """The data message body for wall-clock time `wall` (seconds since the epoch)."""
    return _PREFIX + amf0.encode({"wall": round(wall * 1000.0, 3)})


def read_stamp(payload: bytes) -> float | None:
    """Wall-clock seconds from a data message body if it is a clock stamp, else None."""
    if not payload.startswith(_PREFIX):
        return None
    try:
        values = amf0.decode_all(payload)
    except ProtocolError:
        return None
    if len(values) < 2 or not isinstance(values[1], dict):
        return None
    wall = values[1].get("wall")
    return wall / 1000.0 if isinstance(wall, (int, float)) else None
