"""Tests for common.proto.rtmp.chunk: ChunkReader and encode_message.

Hand-built chunk sequences are written with an encoder independent of the module
(`raw_chunk`), so the reader is checked against the RTMP specification's layout.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.proto.errors import ProtocolError
from common.proto.rtmp.chunk import (
    DEFAULT_CHUNK_SIZE,
    ChunkError,
    ChunkReader,
    Message,
    encode_message,
)

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- helpers


def basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1, (csid - 64) & 0xFF, (csid - 64) >> 8])


def raw_chunk(
    fmt: int,
    csid: int,
    *,
    ts: int = 0,
    length: int = 0,
    type_id: int = 0,
    stream_id: int = 0,
    ext: int | None = None,
    body: bytes = b"",
) -> bytes:
    """One chunk, spelled out byte by byte as in the RTMP spec (section 5.3.1)."""
    out = basic_header(fmt, csid)
    if fmt <= 2:
        out += (0xFFFFFF if ext is not None else ts).to_bytes(3, "big")
    if fmt <= 1:
        out += length.to_bytes(3, "big") + bytes([type_id])
    if fmt == 0:
        out += struct.pack("<I", stream_id)
    if ext is not None:
        out += struct.pack(">I", ext)
    return out + body


def feed_all(reader: ChunkReader, data: bytes, pieces: list[int] | None = None) -> list[Message]:
    """Feed `data` in pieces of the given sizes (cycled), or in one piece."""
    out: list[Message] = []
    if not pieces:
        return reader.feed(data)
    pos = 0
    i = 0
    while pos < len(data):
        n = max(1, pieces[i % len(pieces)])
        out += reader.feed(data[pos : pos + n])
        pos += n
        i += 1
    return out


def summary(msgs: list[Message]) -> list[tuple[int, int, int, bytes, int]]:
    return [(m.type_id, m.stream_id, m.timestamp, m.payload, m.csid) for m in msgs]


def payload_of(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + n).randbytes(n)


# ----------------------------------------------------------------------------- encoder layout


def test_encode_small_message_exact_bytes() -> None:
    data = encode_message(3, 20, 1, 0x010203, b"abc", 128)
    assert data == bytes.fromhex("03 010203 000003 14 01000000") + b"abc"


def test_encode_splits_into_fmt3_continuations() -> None:
    payload = payload_of(300)
    data = encode_message(6, 8, 1, 40, payload, 128)
    assert len(data) == 12 + 300 + 2
    assert data[0] == 0x06
    assert data[12 : 12 + 128] == payload[:128]
    assert data[140] == 0xC6
    assert data[141 : 141 + 128] == payload[128:256]
    assert data[269] == 0xC6
    assert data[270:] == payload[256:]


def test_encode_exact_multiple_of_chunk_size_has_no_empty_chunk() -> None:
    data = encode_message(4, 9, 1, 0, bytes(256), 128)
    assert len(data) == 12 + 256 + 1


def test_encode_extended_timestamp_repeated_on_continuations() -> None:
    payload = bytes(range(200))
    data = encode_message(4, 9, 1, 0x01234567, payload, 128)
    assert data[:12] == bytes.fromhex("04 ffffff 0000c8 09 01000000")
    assert data[12:16] == bytes.fromhex("01234567")
    assert data[16 : 16 + 128] == payload[:128]
    cont = 16 + 128
    assert data[cont : cont + 5] == bytes.fromhex("c4 01234567")
    assert data[cont + 5 :] == payload[128:]


def test_encode_timestamp_just_below_extended_is_not_extended() -> None:
    data = encode_message(4, 9, 1, 0xFFFFFE, b"x", 128)
    assert data[1:4] == b"\xff\xff\xfe"
    assert len(data) == 13


@pytest.mark.parametrize(
    ("csid", "prefix"),
    [(2, b"\x02"), (63, b"\x3f"), (64, b"\x00\x00"), (319, b"\x00\xff"), (320, b"\x01\x00\x01")],
)
def test_encode_basic_header_forms(csid: int, prefix: bytes) -> None:
    assert encode_message(csid, 8, 0, 0, b"", 128).startswith(prefix)


def test_encode_basic_header_max_csid() -> None:
    assert encode_message(65599, 8, 0, 0, b"", 128)[:3] == b"\x01\xff\xff"
    with pytest.raises(ValueError):
        encode_message(65600, 8, 0, 0, b"", 128)


def test_encode_accepts_memoryview() -> None:
    payload = payload_of(1000)
    assert encode_message(5, 18, 1, 7, memoryview(payload), 128) == encode_message(
        5, 18, 1, 7, payload, 128
    )


# ----------------------------------------------------------------------------- round trips

SIZES = [0, 1, 127, 128, 129, 255, 256, 257, 1000, 4095, 4096, 4097, 65536, 100_000]
CHUNK_SIZES = [1, 7, 128, 4096, 65536]
CSIDS = [2, 3, 63, 64, 200, 319, 320, 1000, 65599]
TIMESTAMPS = [0, 1, 1000, 0xFFFFFE, 0xFFFFFF, 0x1000000, 0xFFFFFFFF]


def _messages(chunk_size: int) -> list[tuple[int, int, int, int, bytes]]:
    out = []
    rng = random.Random(chunk_size)
    for i, size in enumerate(SIZES):
        if chunk_size == 1 and size > 5000:
            continue  # keep the one-byte chunk case fast
        out.append(
            (
                CSIDS[i % len(CSIDS)],
                rng.choice([8, 9, 18, 20]),
                rng.randrange(0, 2**32),
                TIMESTAMPS[i % len(TIMESTAMPS)],
                payload_of(size, i),
            )
        )
    return out


def _encode_all(msgs, chunk_size: int) -> bytes:
    return b"".join(encode_message(c, t, s, ts, p, chunk_size) for c, t, s, ts, p in msgs)


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_round_trip_one_piece(chunk_size: int) -> None:
    msgs = _messages(chunk_size)
    reader = ChunkReader(max_message_size=1 << 20)
    reader.set_chunk_size(chunk_size)
    got = reader.feed(_encode_all(msgs, chunk_size))
    assert summary(got) == [(t, s, ts, p, c) for c, t, s, ts, p in msgs]
    assert reader._buf == b""


@pytest.mark.parametrize("chunk_size", [1, 128, 4096])
def test_round_trip_byte_by_byte(chunk_size: int) -> None:
    msgs = [m for m in _messages(chunk_size) if len(m[4]) <= 5000]
    data = _encode_all(msgs, chunk_size)
    reader = ChunkReader()
    reader.set_chunk_size(chunk_size)
    got: list[Message] = []
    for i in range(len(data)):
        new = reader.feed(data[i : i + 1])
        assert len(new) <= 1
        got += new
    assert summary(got) == [(t, s, ts, p, c) for c, t, s, ts, p in msgs]
    assert reader.bytes_received == len(data)


@FUZZ
@given(
    chunk_size=st.sampled_from([1, 2, 3, 128, 129, 1000, 4096]),
    msgs=st.lists(
        st.tuples(
            st.sampled_from(CSIDS),
            st.integers(3, 255),  # not Set Chunk Size (1) or Abort (2): the reader applies those
            st.integers(0, 2**32 - 1),
            st.one_of(st.sampled_from(TIMESTAMPS), st.integers(0, 2**32 - 1)),
            st.binary(max_size=3000),
        ),
        min_size=1,
        max_size=6,
    ),
    pieces=st.lists(st.integers(1, 700), max_size=20),
)
def test_round_trip_random_splits(chunk_size, msgs, pieces) -> None:
    reader = ChunkReader()
    reader.set_chunk_size(chunk_size)
    got = feed_all(reader, _encode_all(msgs, chunk_size), pieces)
    assert summary(got) == [(t, s, ts, p, c) for c, t, s, ts, p in msgs]


def test_chunk_size_change_between_messages() -> None:
    reader = ChunkReader()
    a, b = payload_of(500, 1), payload_of(9000, 2)
    assert summary(reader.feed(encode_message(3, 20, 0, 0, a, DEFAULT_CHUNK_SIZE))) == [
        (20, 0, 0, a, 3)
    ]
    reader.set_chunk_size(4096)
    assert summary(reader.feed(encode_message(7, 9, 1, 10, b, 4096))) == [(9, 1, 10, b, 7)]


def test_set_chunk_size_applies_to_the_next_chunk_in_the_same_feed() -> None:
    """ffmpeg sends Set Chunk Size and then a big message in one TCP segment."""
    big = payload_of(10_000, 3)
    data = encode_message(2, 1, 0, 0, struct.pack(">I", 4096), 128) + encode_message(
        3, 20, 0, 0, big, 4096
    )
    for pieces in (None, [1], [13, 4000]):
        reader = ChunkReader()
        got = feed_all(reader, data, pieces)
        assert summary(got) == [(1, 0, 0, struct.pack(">I", 4096), 2), (20, 0, 0, big, 3)]
        assert reader.chunk_size == 4096


@pytest.mark.parametrize("value", [0, 0x80000000, 0x80001000, 0x1000000])
def test_set_chunk_size_message_with_bad_value(value: int) -> None:
    with pytest.raises(ChunkError):
        ChunkReader().feed(encode_message(2, 1, 0, 0, struct.pack(">I", value), 128))


def test_abort_message_applies_to_the_next_chunk_in_the_same_feed() -> None:
    partial = raw_chunk(0, 6, ts=10, length=300, type_id=8, stream_id=1, body=bytes(128))
    data = (
        partial
        + encode_message(2, 2, 0, 0, struct.pack(">I", 6), 128)
        + raw_chunk(0, 6, ts=50, length=2, type_id=8, stream_id=1, body=b"ok")
    )
    got = ChunkReader().feed(data)
    assert summary(got)[1:] == [(8, 1, 50, b"ok", 6)]


def test_wrong_chunk_size_does_not_reassemble_the_message() -> None:
    """A reader still at 128 reads a 4096-chunked message as garbage: chunk size matters."""
    payload = bytes([0x47]) * 300  # bytes look like fmt 1 chunk headers on csid 7
    reader = ChunkReader()
    try:
        got = reader.feed(encode_message(7, 9, 1, 0, payload, 4096))
    except ChunkError:
        return
    assert summary(got) != [(9, 1, 0, payload, 7)]


# ----------------------------------------------------------------------------- hand-built headers


def test_fmt1_fmt2_fmt3_timestamp_deltas_accumulate() -> None:
    """The audio example of RTMP spec 5.3.2.1, then fmt 1 with a new length and type."""
    data = (
        raw_chunk(0, 3, ts=1000, length=4, type_id=8, stream_id=1, body=b"aaaa")
        + raw_chunk(2, 3, ts=20, body=b"bbbb")
        + raw_chunk(3, 3, body=b"cccc")  # new message: reuses delta 20
        + raw_chunk(3, 3, body=b"dddd")
        + raw_chunk(1, 3, ts=33, length=2, type_id=9, body=b"ee")
        + raw_chunk(3, 3, body=b"ff")  # reuses delta 33, length 2, type 9
    )
    got = ChunkReader().feed(data)
    assert [(m.type_id, m.stream_id, m.timestamp, m.payload) for m in got] == [
        (8, 1, 1000, b"aaaa"),
        (8, 1, 1020, b"bbbb"),
        (8, 1, 1040, b"cccc"),
        (8, 1, 1060, b"dddd"),
        (9, 1, 1093, b"ee"),
        (9, 1, 1126, b"ff"),
    ]


def test_fmt1_multi_chunk_message_then_fmt3_new_message() -> None:
    """Spec 5.3.2.2: a 307-byte message in 3 chunks; fmt 3 headers continue it."""
    body = payload_of(307)
    data = (
        raw_chunk(0, 4, ts=1000, length=307, type_id=9, stream_id=1, body=body[:128])
        + raw_chunk(3, 4, body=body[128:256])
        + raw_chunk(3, 4, body=body[256:])
    )
    reader = ChunkReader()
    assert summary(reader.feed(data)) == [(9, 1, 1000, body, 4)]
    # A fmt 1 message on the same csid, then fmt 3 starting a message: same delta.
    body2 = payload_of(200, 2)
    data = (
        raw_chunk(1, 4, ts=40, length=200, type_id=9, body=body2[:128])
        + raw_chunk(3, 4, body=body2[128:])
        + raw_chunk(3, 4, body=body2[:128])
        + raw_chunk(3, 4, body=body2[128:])
    )
    got = reader.feed(data)
    assert [(m.timestamp, m.payload) for m in got] == [(1040, body2), (1080, body2)]


def test_fmt2_keeps_length_type_and_stream() -> None:
    data = raw_chunk(0, 5, ts=7, length=3, type_id=18, stream_id=9, body=b"abc") + raw_chunk(
        2, 5, ts=3, body=b"xyz"
    )
    got = ChunkReader().feed(data)
    assert summary(got) == [(18, 9, 7, b"abc", 5), (18, 9, 10, b"xyz", 5)]


def test_timestamp_deltas_wrap_at_32_bits() -> None:
    data = raw_chunk(0, 5, ext=0xFFFFFFF0, length=1, type_id=8, body=b"a") + raw_chunk(
        2, 5, ts=0x20, body=b"b"
    )
    got = ChunkReader().feed(data)
    assert [m.timestamp for m in got] == [0xFFFFFFF0, 0x10]


def test_interleaved_messages_on_two_chunk_streams() -> None:
    audio = payload_of(300, 1)
    video = payload_of(400, 2)
    data = (
        raw_chunk(0, 6, ts=100, length=300, type_id=8, stream_id=1, body=audio[:128])
        + raw_chunk(0, 7, ts=90, length=400, type_id=9, stream_id=1, body=video[:128])
        + raw_chunk(3, 6, body=audio[128:256])
        + raw_chunk(3, 7, body=video[128:256])
        + raw_chunk(3, 7, body=video[256:384])
        + raw_chunk(3, 6, body=audio[256:])
        + raw_chunk(3, 7, body=video[384:])
    )
    got = ChunkReader().feed(data)
    assert summary(got) == [(8, 1, 100, audio, 6), (9, 1, 90, video, 7)]


@pytest.mark.parametrize(
    ("header", "csid"),
    [
        (b"\x00\x00", 64),
        (b"\x00\xff", 319),
        (b"\x01\x00\x01", 320),
        (b"\x01\x01\x00", 65),
        (b"\x01\x34\x12", 64 + 0x1234),
        (b"\x01\xff\xff", 65599),
    ],
)
def test_two_and_three_byte_basic_headers(header: bytes, csid: int) -> None:
    data = header + bytes.fromhex("000010 000002 08 01000000") + b"hi"
    cont_header = bytes([header[0] | 0xC0]) + header[1:]
    data += cont_header + b"yo"  # fmt 3, new message, delta 16
    reader = ChunkReader()
    got = feed_all(reader, data, [1])
    assert summary(got) == [(8, 1, 16, b"hi", csid), (8, 1, 32, b"yo", csid)]


def test_csid_64_and_320_are_distinct_streams() -> None:
    reader = ChunkReader()
    reader.set_chunk_size(1)
    data = (
        raw_chunk(0, 64, ts=1, length=2, type_id=8, body=b"a")
        + raw_chunk(0, 320, ts=2, length=1, type_id=9, body=b"b")
        + raw_chunk(3, 64, body=b"c")
    )
    got = reader.feed(data)
    assert summary(got) == [(9, 0, 2, b"b", 320), (8, 0, 1, b"ac", 64)]


# ----------------------------------------------------------------------------- extended timestamps


def test_extended_timestamp_on_fmt0_and_repeated_on_continuations() -> None:
    body = payload_of(300)
    data = (
        raw_chunk(0, 4, ext=0x12345678, length=300, type_id=9, stream_id=1, body=body[:128])
        + raw_chunk(3, 4, ext=0x12345678, body=body[128:256])
        + raw_chunk(3, 4, ext=0x12345678, body=body[256:])
    )
    reader = ChunkReader()
    assert summary(feed_all(reader, data, [5, 1, 13])) == [(9, 1, 0x12345678, body, 4)]
    assert reader._buf == b""


def test_extended_timestamp_exactly_0xffffff() -> None:
    data = raw_chunk(0, 4, ext=0xFFFFFF, length=1, type_id=9, stream_id=1, body=b"z")
    assert ChunkReader().feed(data)[0].timestamp == 0xFFFFFF


def test_extended_delta_on_fmt1_and_fmt3_new_message() -> None:
    big = 0x01000000
    data = (
        raw_chunk(0, 4, ts=5, length=1, type_id=9, stream_id=1, body=b"a")
        + raw_chunk(1, 4, ext=big, length=2, type_id=9, body=b"bb")
        # fmt 3 starting a new message after an extended delta: the field is repeated.
        + raw_chunk(3, 4, ext=big, body=b"cc")
        + raw_chunk(2, 4, ts=10, body=b"dd")  # back to a small delta: no extended field
        + raw_chunk(3, 4, body=b"ee")
    )
    got = ChunkReader().feed(data)
    assert [(m.timestamp, m.payload) for m in got] == [
        (5, b"a"),
        (5 + big, b"bb"),
        (5 + 2 * big, b"cc"),
        (15 + 2 * big, b"dd"),
        (25 + 2 * big, b"ee"),
    ]


def test_encoder_output_with_extended_timestamps_round_trips_split() -> None:
    """As ffmpeg writes it: the extended field on every chunk of the message."""
    payload = payload_of(1000)
    data = encode_message(7, 9, 1, 0x7FFFFFFF, payload, 128) + encode_message(
        7, 9, 1, 0x80000000, payload[:10], 128
    )
    for piece in (1, 3, 4, 5, 129, 133):
        reader = ChunkReader()
        got = feed_all(reader, data, [piece])
        assert [(m.timestamp, m.payload) for m in got] == [
            (0x7FFFFFFF, payload),
            (0x80000000, payload[:10]),
        ]


# ----------------------------------------------------------------------------- abort


def test_abort_drops_the_partial_message() -> None:
    body = payload_of(300)
    reader = ChunkReader()
    assert (
        reader.feed(raw_chunk(0, 6, ts=10, length=300, type_id=8, stream_id=1, body=body[:128]))
        == []
    )
    reader.abort(6)
    # The next chunk on csid 6 starts a fresh message (fmt 3: same header, delta 10).
    fresh = payload_of(300, 9)
    got = reader.feed(
        raw_chunk(3, 6, body=fresh[:128])
        + raw_chunk(3, 6, body=fresh[128:256])
        + raw_chunk(3, 6, body=fresh[256:])
    )
    assert summary(got) == [(8, 1, 20, fresh, 6)]


def test_abort_then_fmt0_is_accepted() -> None:
    reader = ChunkReader()
    reader.feed(raw_chunk(0, 6, ts=10, length=300, type_id=8, stream_id=1, body=bytes(128)))
    with pytest.raises(ChunkError):  # without abort, a fmt 0 mid-message is an error
        ChunkReader().feed(
            raw_chunk(0, 6, ts=10, length=300, type_id=8, stream_id=1, body=bytes(128))
            + raw_chunk(0, 6, ts=10, length=1, type_id=8, stream_id=1, body=b"x")
        )
    reader.abort(6)
    got = reader.feed(raw_chunk(0, 6, ts=50, length=1, type_id=9, stream_id=2, body=b"x"))
    assert summary(got) == [(9, 2, 50, b"x", 6)]


def test_abort_of_other_or_unknown_csid_changes_nothing() -> None:
    body = payload_of(200)
    reader = ChunkReader()
    reader.feed(raw_chunk(0, 6, ts=1, length=200, type_id=8, stream_id=1, body=body[:128]))
    reader.abort(7)
    reader.abort(12345)
    got = reader.feed(raw_chunk(3, 6, body=body[128:]))
    assert summary(got) == [(8, 1, 1, body, 6)]


# ----------------------------------------------------------------------------- errors


def test_oversized_message_rejected_at_the_header() -> None:
    reader = ChunkReader(max_message_size=1000)
    header = raw_chunk(0, 4, ts=0, length=1001, type_id=9, stream_id=1)
    with pytest.raises(ChunkError):
        reader.feed(header)  # no body byte fed: must not wait for it


def test_oversized_message_rejected_at_extended_header() -> None:
    reader = ChunkReader(max_message_size=1000)
    with pytest.raises(ChunkError):
        reader.feed(raw_chunk(0, 4, ext=0x1000000, length=0xFFFFFF, type_id=9, stream_id=1))


def test_oversized_fmt1_header_rejected() -> None:
    reader = ChunkReader(max_message_size=1000)
    reader.feed(raw_chunk(0, 4, ts=0, length=1, type_id=9, stream_id=1, body=b"a"))
    with pytest.raises(ChunkError):
        reader.feed(raw_chunk(1, 4, ts=0, length=5000, type_id=9))


def test_message_of_exactly_max_size_is_accepted() -> None:
    reader = ChunkReader(max_message_size=1000)
    reader.set_chunk_size(4096)
    payload = payload_of(1000)
    assert reader.feed(encode_message(4, 9, 1, 0, payload, 4096))[0].payload == payload


@pytest.mark.parametrize("size", [0, -1, 0x1000000, 0x7FFFFFFF])
def test_absurd_chunk_size_rejected(size: int) -> None:
    reader = ChunkReader()
    with pytest.raises(ChunkError):
        reader.set_chunk_size(size)
    assert reader.chunk_size == DEFAULT_CHUNK_SIZE


@pytest.mark.parametrize("size", [1, 0xFFFFFF])
def test_extreme_valid_chunk_sizes(size: int) -> None:
    reader = ChunkReader()
    reader.set_chunk_size(size)
    assert reader.chunk_size == size


@pytest.mark.parametrize("fmt", [1, 2, 3])
def test_first_chunk_on_new_csid_must_be_fmt0(fmt: int) -> None:
    data = raw_chunk(fmt, 9, ts=1, length=1, type_id=8, body=b"x")
    with pytest.raises(ChunkError):
        ChunkReader().feed(data)


def test_fmt1_in_the_middle_of_a_message_rejected() -> None:
    data = raw_chunk(0, 4, ts=0, length=200, type_id=9, stream_id=1, body=bytes(128))
    data += raw_chunk(1, 4, ts=0, length=72, type_id=9, body=bytes(72))
    with pytest.raises(ChunkError):
        ChunkReader().feed(data)


def test_too_many_chunk_streams() -> None:
    reader = ChunkReader(max_chunk_streams=4)
    for csid in range(2, 6):
        reader.feed(raw_chunk(0, csid, ts=0, length=200, type_id=8, stream_id=1, body=bytes(128)))
    with pytest.raises(ChunkError):
        reader.feed(raw_chunk(0, 6, ts=0, length=200, type_id=8, stream_id=1, body=bytes(128)))


def test_a_bad_chunk_stream_is_a_protocol_error_saying_why() -> None:
    """What the servers catch to close the connection and log the reason."""
    with pytest.raises(ProtocolError, match="chunk stream 3 starts with fmt 3, not fmt 0"):
        ChunkReader().feed(b"\xc3" + bytes(10))


# ----------------------------------------------------------------------------- fuzzing

FUZZ_MAX_MESSAGE = 64 * 1024
MAX_HEADER = 3 + 11 + 4


def _check_bounded(reader: ChunkReader, fed: int) -> None:
    assert len(reader._buf) <= fed
    # Whatever is left is at most one incomplete chunk.
    assert len(reader._buf) <= MAX_HEADER + min(reader.chunk_size, FUZZ_MAX_MESSAGE)
    for state in reader._states.values():
        if state.parts is not None:
            assert state.received < state.length <= FUZZ_MAX_MESSAGE
            assert sum(len(p) for p in state.parts) == state.received


@FUZZ
@given(
    data=st.binary(max_size=2000),
    pieces=st.lists(st.integers(1, 300), max_size=10),
    chunk_size=st.sampled_from([1, 2, 128, 4096]),
)
def test_random_bytes_raise_only_protocol_errors(data, pieces, chunk_size) -> None:
    reader = ChunkReader(max_message_size=FUZZ_MAX_MESSAGE, max_chunk_streams=8)
    reader.set_chunk_size(chunk_size)
    fed = 0
    try:
        for piece in pieces or [len(data)]:
            part, data = data[:piece], data[piece:]
            fed += len(part)
            for msg in reader.feed(part):
                assert len(msg.payload) <= FUZZ_MAX_MESSAGE
            _check_bounded(reader, fed)
        if data:
            fed += len(data)
            reader.feed(data)
            _check_bounded(reader, fed)
    except ProtocolError:
        pass


@FUZZ
@given(
    seed=st.integers(0, 2**32),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.integers(0, 10**6),
)
def test_mutated_valid_stream_raises_only_protocol_errors(seed, flips, cut) -> None:
    rng = random.Random(seed)
    msgs = [
        (rng.choice([2, 3, 6, 7, 70, 400]), rng.choice([8, 9, 20]), 1, rng.randrange(2**32),
         rng.randbytes(rng.randrange(0, 3000)))
        for _ in range(4)
    ]  # fmt: skip
    data = bytearray(_encode_all(msgs, 128))
    for pos, value in flips:
        data[pos % len(data)] = value
    data = bytes(data[: cut % (len(data) + 1)])
    reader = ChunkReader(max_message_size=FUZZ_MAX_MESSAGE, max_chunk_streams=8)
    try:
        fed = 0
        for i in range(0, len(data), 97):
            fed += len(data[i : i + 97])
            reader.feed(data[i : i + 97])
            _check_bounded(reader, fed)
    except ProtocolError:
        pass


def test_reader_is_not_fooled_into_buffering_beyond_the_cap() -> None:
    """Many chunk streams each declaring a big message still stay under their caps."""
    reader = ChunkReader(max_message_size=FUZZ_MAX_MESSAGE, max_chunk_streams=8)
    for csid in range(2, 10):
        reader.feed(raw_chunk(0, csid, ts=0, length=FUZZ_MAX_MESSAGE, type_id=9, body=bytes(128)))
    with pytest.raises(ChunkError):
        reader.feed(raw_chunk(0, 10, ts=0, length=FUZZ_MAX_MESSAGE, type_id=9, body=bytes(128)))


def test_partial_messages_are_bounded_together() -> None:
    """Many chunk streams each holding a large partial message: refused past the cap."""
    reader = ChunkReader(max_message_size=100_000, max_pending_bytes=150_000)
    reader.set_chunk_size(50_000)
    data = b""
    for csid in range(3, 10):  # first chunk (50 000 bytes) of a 100 000-byte message each
        data += encode_message(csid, 9, 1, 0, bytes(100_000), 50_000)[: 12 + 50_000]
    with pytest.raises(ChunkError, match="together"):
        reader.feed(data)


def test_pending_bytes_return_to_zero() -> None:
    reader = ChunkReader()
    msgs = reader.feed(encode_message(4, 9, 1, 0, bytes(10_000), 128))
    assert len(msgs) == 1 and reader.pending_bytes == 0
