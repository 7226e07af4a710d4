"""The players' lean RTMP play reader sees the messages the full chunk reader reassembles,
however the bytes are split and whichever chunk header formats the server uses."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from common.proto.errors import ProtocolError
from common.proto.flvscan import FlvScanner
from common.proto.rtmp import messages as m
from common.proto.rtmp.chunk import ChunkReader, encode_message
from common.proto.rtmpscan import Handover, RtmpPlayScanner


class Recorder:
    """Stands in for the FlvScanner: records every media message it is told of (once
    keyed, as the scanner sees them: a timestamp, by `media` or as the new `last`)."""

    def __init__(self, keyed: bool) -> None:
        self.keyed = keyed
        self.scripts: list = []
        self.media_calls: list = []
        self.first: int | None = None

    def media(self, tag_type, ts, b0, b1, size) -> None:
        self.media_calls.append((ts,) if self.keyed else (tag_type, ts, size, b0, b1))

    @property
    def last(self) -> int:
        return 0

    @last.setter
    def last(self, word: int) -> None:  # an FLV tag header's ts24 << 8 | ts_ext
        self.first = word
        self.media_calls.append((word >> 8 | (word & 0xFF) << 24,))


def basic(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1, (csid - 64) & 0xFF, (csid - 64) >> 8])


def encode(msgs, chunk_size: int, compress: bool) -> bytes:
    """Chunk (csid, type, ts, payload) messages, with fmt 1/2/3 headers where they fit when
    `compress` (as a server that saves header bytes does), extended timestamps as needed."""
    out, last = [], {}
    for csid, type_id, ts, payload in msgs:
        prev = last.get(csid)
        delta = ts - prev[1] if prev else None
        if not compress or prev is None or delta < 0 or delta >= 0xFFFFFF or ts >= 0xFFFFFF:
            out.append(encode_message(csid, type_id, 1, ts, payload, chunk_size))
            last[csid] = (type_id, ts, len(payload), None)
            continue
        ext = b""
        if prev[0] == type_id and prev[2] == len(payload) and prev[3] == delta:
            head = basic(3, csid)
        elif prev[0] == type_id and prev[2] == len(payload):
            head = basic(2, csid) + delta.to_bytes(3, "big")
        else:
            head = basic(1, csid) + delta.to_bytes(3, "big") + len(payload).to_bytes(3, "big")
            head += bytes([type_id])
        parts = [head + ext, payload[:chunk_size]]
        for off in range(chunk_size, len(payload), chunk_size):
            parts += [basic(3, csid), payload[off : off + chunk_size]]
        out.append(b"".join(parts))
        last[csid] = (type_id, ts, len(payload), delta)
    return b"".join(out)


def reference(data: bytes, keyed: bool) -> list:
    calls = []
    for msg in ChunkReader().feed(data):
        if msg.type_id in (8, 9):
            p = msg.payload
            b = (p[0] if p else 0, p[1] if len(p) > 1 else 0)
            calls.append((msg.timestamp,) if keyed else (msg.type_id, msg.timestamp, len(p), *b))
    return calls


MESSAGE = st.tuples(
    st.sampled_from([4, 6, 7, 70, 400]),  # chunk stream ids (one- to three-byte headers)
    st.sampled_from([8, 9, 9]),
    st.integers(0, 2000),  # timestamp step
    st.binary(max_size=300),
)


@given(
    msgs=st.lists(MESSAGE, max_size=25),
    cuts=st.lists(st.integers(0, 8000), max_size=15),
    compress=st.booleans(),
    keyed=st.booleans(),
    big_ts=st.booleans(),
)
def test_lean_reader_matches_the_chunk_reader_however_split(msgs, cuts, compress, keyed, big_ts):
    ts, timed = (0xFFFFF0 if big_ts else 0), []
    for csid, type_id, step, payload in msgs:
        ts += step
        timed.append((csid, type_id, ts, payload))
    data = encode(timed, 128, compress)
    want = reference(data, keyed)
    rec = Recorder(keyed)
    scanner = RtmpPlayScanner(rec)  # type: ignore[arg-type]
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    media = 0
    buf = bytearray(data)
    for a, b in zip(bounds, bounds[1:], strict=False):
        media += scanner.feed(buf, a, b)
    assert rec.media_calls == want
    assert media == sum(len(p) for *_, p in timed)


def test_control_messages_acks_pings_and_the_end() -> None:
    flv = FlvScanner()
    scanner = RtmpPlayScanner(flv, Handover(out_chunk_size=4096))
    data = b"".join([
        encode_message(2, m.WINDOW_ACK_SIZE, 0, 0, m.u32(1000), 128),
        encode_message(2, m.SET_CHUNK_SIZE, 0, 0, m.u32(4096), 128),
        encode_message(2, m.USER_CONTROL, 0, 0, m.user_control(m.UC_PING_REQUEST, 7), 4096),
        encode_message(6, 9, 1, 40, bytes([0x17, 1]) + b"k" * 3000, 4096),
        encode_message(5, m.DATA_AMF0, 1, 40, b"\x02\x00\x0eonLivecdnClock", 4096),
    ])  # fmt: skip
    assert scanner.feed(data, 0, len(data)) == 3002
    reader = ChunkReader()
    reader.feed(scanner.replies())  # an acknowledgement and a pong, as the server reads them
    scan = flv.take()
    assert scan.keyframe_ts == 40 and scan.first_ts == 40
    assert scan.scripts == [(40, b"\x02\x00\x0eonLivecdnClock")]
    assert not scanner.ended
    status = m.command("onStatus", 0, None, {"level": "status", "code": "NetStream.Play.Stop"})
    end = encode_message(3, m.COMMAND_AMF0, 1, 0, status, 4096)
    scanner.feed(end, 0, len(end))
    assert scanner.ended == "NetStream.Play.Stop"


def test_taking_over_in_the_middle_of_a_message() -> None:
    """A handover from a session whose reader stopped inside a message and a chunk."""
    data = encode_message(6, 9, 1, 80, bytes([0x27, 1]) + b"p" * 500, 128) + encode_message(
        6, 9, 1, 120, bytes([0x27, 1]) + b"q" * 10, 128
    )
    for cut in range(0, len(data), 37):
        reader = ChunkReader()
        reader.feed(data[:cut])
        from common.net.rtmpclient import RtmpClient  # the handover reads the session's state

        client = RtmpClient.__new__(RtmpClient)
        client.session = type("S", (), {"_reader": reader, "chunk_size": 128,
                                        "_flow": type("F", (), {"ack_window": 0, "last_ack": 0,
                                                                "window_sent": 0})()})()  # fmt: skip
        client._queued = []
        start, _ = client.handover()
        rec = Recorder(keyed=True)
        got = [(t.timestamp,) for t in ChunkReader().feed(data[:cut])]
        scanner = RtmpPlayScanner(rec, start)  # type: ignore[arg-type]
        scanner.feed(data, cut, len(data))
        assert got + rec.media_calls == [(80,), (120,)]


@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=6))
def test_arbitrary_bytes_raise_only_protocol_errors(data, cuts) -> None:
    scanner = RtmpPlayScanner(FlvScanner())
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    with contextlib.suppress(ProtocolError):
        for a, b in zip(bounds, bounds[1:], strict=False):
            scanner.feed(data, a, b)


def test_interleaved_chunks_of_two_messages() -> None:
    """A message whose next chunk is another stream's (chunks interleaved) is not taken as
    here whole: both messages are read chunk by chunk."""
    a = encode_message(4, 9, 1, 40, b"v" * 300, 128)  # 3 chunks: 12 + 128, 1 + 128, 1 + 44
    b = encode_message(6, 8, 1, 50, b"a" * 200, 128)  # 2 chunks: 12 + 128, 1 + 72
    data = a[:140] + b[:140] + a[140:269] + b[140:] + a[269:]
    for cut in (0, 139, 141, 280, len(data)):
        rec = Recorder(keyed=True)
        scanner = RtmpPlayScanner(rec)  # type: ignore[arg-type]
        media = scanner.feed(data, 0, cut) + scanner.feed(data, cut, len(data))
        assert media == 500
        assert rec.media_calls == [(50,), (40,)]  # each when its last chunk came
