"""Clock stamps ride on their keyframe, out of the ring: only readers that ask get them."""

from __future__ import annotations

from common.media.stream import Stream
from common.proto import flv
from common.proto.clock import asking_stamps, read_stamp, stamp_payload
from common.proto.flvscan import FlvScanner
from common.proto.rtmp import messages as m
from common.serve.play import Player
from tests.media import avc_header, interframe, keyframe


def _stamps_in(data: bytes) -> list[float]:
    scan = FlvScanner().feed(flv.file_header(audio=False, video=True) + data)
    return [w for _, body in scan.scripts if (w := read_stamp(body)) is not None]


def test_only_readers_that_ask_get_the_stamps() -> None:
    stream = Stream("live", "x")
    plain, stamped = stream.add_reader("flv"), stream.add_reader("flv", stamps=True)
    stream.push(m.VIDEO, 0, avc_header())
    key = stream.push(m.VIDEO, 0, keyframe())
    assert stream.push(m.DATA_AMF0, 0, stamp_payload(1234.5)) is None  # not a frame of its own
    inter = stream.push(m.VIDEO, 40, interframe())
    stream.push(m.DATA_AMF0, 40, stamp_payload(1234.6))  # not after a keyframe: dropped
    assert inter is not None and inter.stamp is None
    assert key is not None and key.stamp is not None and key.stamp.timestamp == key.timestamp
    assert all(read_stamp(f.payload) is None for f in stream.iter_frames())
    sent = {}
    for reader in (plain, stamped):
        sent[reader.stamps] = Player(None, reader, "flv").encode(stream.pending(reader))  # type: ignore[arg-type]
    # the HTTP chunk framing aside, each body is FLV tags
    bodies = {k: v.split(b"\r\n", 1)[1].rsplit(b"\r\n", 1)[0] for k, v in sent.items()}
    assert _stamps_in(bodies[False]) == []
    assert _stamps_in(bodies[True]) == [1234.5]


def test_asking_stamps_adds_the_query() -> None:
    assert asking_stamps("http://h/live/x.flv") == "http://h/live/x.flv?stamps=1"
    assert asking_stamps("rtmp://h/live/x?t=1") == "rtmp://h/live/x?t=1&stamps=1"
