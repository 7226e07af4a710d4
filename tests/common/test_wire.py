"""Control-plane framing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ProtocolError
from common.wire import Decoder, WireError, encode


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
