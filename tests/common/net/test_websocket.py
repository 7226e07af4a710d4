"""The WebSocket glue: handshake answers, frame headers, and what a client may send (any
bytes end in a ProtocolError at worst)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping

from common.net.http import Request
from common.net.websocket import Inbound, handshake, wants_websocket
from common.proto.errors import ProtocolError
from common.proto.wsframe import binary_frame, binary_header

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request(**headers: str) -> Request:
    return Request("GET", "/live/s.flv", "/live/s.flv", {}, headers, b"", "1.2.3.4:5")


def test_the_rfc_example_handshake() -> None:
    req = request(upgrade="websocket", connection="keep-alive, Upgrade",
                  **{"sec-websocket-key": KEY, "sec-websocket-version": "13"})  # fmt: skip
    assert wants_websocket(req)
    assert ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in handshake(req)


@pytest.mark.parametrize(
    "headers",
    [{"sec-websocket-version": "13"}, {"sec-websocket-key": KEY},
     {"sec-websocket-key": "short", "sec-websocket-version": "13"}],
)  # fmt: skip
def test_a_bad_handshake_says_why(headers: dict[str, str]) -> None:
    with pytest.raises(ProtocolError):
        handshake(request(upgrade="websocket", connection="upgrade", **headers))


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 1 << 20])
def test_frame_headers_read_back_with_wsproto(size: int) -> None:
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(binary_frame(b"x" * size))
    events = list(client.events())
    assert sum(len(e.data) for e in events if isinstance(e, BytesMessage)) == size
    assert len(binary_header(size)) == {0: 2, 125: 2, 126: 4, 65535: 4}.get(size, 10)


def test_pings_are_answered_and_a_close_ends_it() -> None:
    client = Connection(ConnectionType.CLIENT)
    inbound = Inbound()
    reply = inbound.feed(client.send(Ping(b"p")))
    assert struct.unpack("!B", reply[:1])[0] == 0x8A  # a pong
    reply = inbound.feed(client.send(CloseConnection(code=1000)))
    assert inbound.closed and reply[:1] == b"\x88"
    assert inbound.close() == b""  # already closing: nothing more to send


@given(st.binary(max_size=512))
def test_any_bytes_from_a_client_are_taken_or_refused(data: bytes) -> None:
    inbound = Inbound()
    try:
        inbound.feed(data)
        inbound.feed(data)
    except ProtocolError:
        pass
