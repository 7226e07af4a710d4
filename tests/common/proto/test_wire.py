"""Control-plane framing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.proto.errors import ProtocolError
from common.proto.wire import Decoder, WireError, encode


def test_round_trip_in_pieces() -> None:
    msgs = [{"type": "heartbeat", "node": "e1", "viewers": 3, "streams": {"live/a": 3}},
            {"type": "announce", "event": "start", "app": "live", "name": "a"}]  # fmt: skip
    data = b"".join(encode(m) for m in msgs)
    d = Decoder()
    got = []
    for i in range(len(data)):
        got += d.feed(data[i : i + 1])
    assert [{k: v for k, v in g.items() if k != "v"} for g in got] == msgs
    assert all(g["v"] == 1 for g in got)


def test_oversized_and_malformed_frames() -> None:
    with pytest.raises(WireError):
        Decoder(max_frame=10).feed((100).to_bytes(4, "big"))
    with pytest.raises(WireError):
        Decoder().feed((3).to_bytes(4, "big") + b"\xc1\xc1\xc1")
    with pytest.raises(WireError):
        Decoder().feed(b"\x00\x00\x00\x01\x01")  # a number, not a map
    import msgpack

    body = msgpack.packb({"type": "x", "v": 99})
    with pytest.raises(WireError):
        Decoder().feed(len(body).to_bytes(4, "big") + body)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(1, 40))
def test_garbage_only_raises_protocol_errors(data: bytes, step: int) -> None:
    d = Decoder(max_frame=256)
    try:
        for i in range(0, len(data), step):
            d.feed(data[i : i + step])
    except ProtocolError:
        pass


def frame(obj: object) -> bytes:
    import msgpack

    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "heartbeat", "v": 1, "streams": {f"k{i}": 0 for i in range(10_001)}},
        {"type": "heartbeat", "v": 1, "streams": list(range(10_001))},
        {"type": "heartbeat", "v": 1, "region": "r" * (64 * 1024 + 1)},
        {"type": "heartbeat", "v": 1, "blob": b"\0" * (64 * 1024 + 1)},
        {"type": "heartbeat", "v": True},
        {"type": "heartbeat", "v": 1.0},
        {"type": "heartbeat"},
        {"type": 7, "v": 1},
        {1: "integer keys", "type": "x", "v": 1},
    ],
    ids=["huge map", "huge array", "huge string", "huge binary", "v bool", "v float",
         "no v", "type not a string", "integer key"],
)  # fmt: skip
def test_frames_beyond_the_limits_or_badly_typed_are_refused(obj: object) -> None:
    with pytest.raises(WireError):
        Decoder().feed(frame(obj))


def test_a_frame_at_the_item_limit_passes() -> None:
    (msg,) = Decoder().feed(frame({"type": "x", "v": 1, "m": {f"k{i}": 0 for i in range(9_998)}}))
    assert len(msg["m"]) == 9_998
