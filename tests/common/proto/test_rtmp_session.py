"""Tests for common.proto.rtmp.session: ServerSession and ClientSession talking in memory.

Where the exact bytes a peer sees matter, a raw client (a handshake plus our own
ChunkReader/encode_message) talks to the ServerSession instead of a ClientSession.
"""

from __future__ import annotations

import contextlib
import math
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.proto import amf0
from common.proto.errors import ProtocolError
from common.proto.rtmp import messages as m
from common.proto.rtmp.chunk import ChunkReader, Message, encode_message
from common.proto.rtmp.handshake import HANDSHAKE_SIZE, ClientHandshake, ServerHandshake
from common.proto.rtmp.session import (
    ClientSession,
    Command,
    Connect,
    Connected,
    DeleteStream,
    Media,
    Metadata,
    Play,
    Publish,
    ServerSession,
    SessionError,
    Status,
    StreamCreated,
    StreamEOF,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TC_URL = "rtmp://127.0.0.1:1935/live"


# ----------------------------------------------------------------------------- helpers


def pump(client: ClientSession, server: ServerSession) -> tuple[list, list]:
    """Shuttle bytes both ways until neither side has anything to send."""
    client_events: list = []
    server_events: list = []
    for _ in range(1000):
        up = client.data_to_send()
        if up:
            server_events += server.receive_data(up)
        down = server.data_to_send()
        if down:
            client_events += client.receive_data(down)
        if not up and not down:
            return client_events, server_events
    raise AssertionError("sessions never went quiet")


def connected_pair(app: str = "live") -> tuple[ClientSession, ServerSession]:
    client = ClientSession(app, TC_URL)
    server = ServerSession()
    c_ev, s_ev = pump(client, server)
    assert c_ev == []
    assert [type(e) for e in s_ev] == [Connect]
    server.accept_connect(app)
    c_ev, s_ev = pump(client, server)
    assert [type(e) for e in c_ev] == [Connected]
    assert s_ev == []
    return client, server


def created_stream(client: ClientSession, server: ServerSession) -> int:
    client.create_stream()
    c_ev, s_ev = pump(client, server)
    assert s_ev == []
    assert len(c_ev) == 1 and isinstance(c_ev[0], StreamCreated)
    return c_ev[0].stream_id


def statuses(events: list) -> list[tuple[int, str, str]]:
    return [(e.stream_id, e.level, e.code) for e in events if isinstance(e, Status)]


class RawClient:
    """A hand-driven RTMP client: plain handshake, then chunks we encode and decode."""

    def __init__(self, server: ServerSession, *, chunk_size: int = 128) -> None:
        self.server = server
        self.chunk_size = chunk_size
        self.reader = ChunkReader(max_message_size=64 * 1024 * 1024)
        self.sent = 0
        hs = ClientHandshake(digest=False)
        assert server.receive_data(hs.data_to_send()) == []
        hs.receive_data(server.data_to_send())
        assert hs.complete
        c2 = hs.data_to_send()
        assert len(c2) == HANDSHAKE_SIZE
        assert server.receive_data(c2) == []
        assert server.handshake_complete
        if chunk_size != 128:
            self.send(2, m.SET_CHUNK_SIZE, 0, 0, m.u32(chunk_size), chunk_size=128)

    def send(
        self,
        csid: int,
        type_id: int,
        stream_id: int,
        ts: int,
        payload: bytes,
        *,
        chunk_size: int | None = None,
    ) -> list:
        data = encode_message(csid, type_id, stream_id, ts, payload, chunk_size or self.chunk_size)
        self.sent += len(data)
        return self.server.receive_data(data)

    def command(self, stream_id: int, *values: object) -> list:
        return self.send(3, m.COMMAND_AMF0, stream_id, 0, amf0.encode(*values))

    def receive(self) -> list[Message]:
        """Parse what the server sent, applying Set Chunk Size exactly where it appears."""
        data = self.server.data_to_send()
        out: list[Message] = []
        for i in range(len(data)):
            for msg in self.reader.feed(data[i : i + 1]):
                if msg.type_id == m.SET_CHUNK_SIZE:
                    self.reader.set_chunk_size(struct.unpack(">I", msg.payload)[0])
                out.append(msg)
        return out

    def connect(self, app: str = "live") -> list[Message]:
        events = self.command(
            0, "connect", 1, {"app": app, "tcUrl": f"rtmp://h/{app}", "objectEncoding": 0}
        )
        assert [type(e) for e in events] == [Connect]
        self.server.accept_connect(app)
        return self.receive()


def decode_command(msg: Message) -> list:
    assert msg.type_id == m.COMMAND_AMF0
    return amf0.decode_all(msg.payload)


def aggregate_part(type_id: int, ts: int, body: bytes) -> bytes:
    """One FLV-tag-shaped sub-message of an aggregate message, with its back pointer."""
    header = (
        bytes([type_id])
        + len(body).to_bytes(3, "big")
        + (ts & 0xFFFFFF).to_bytes(3, "big")
        + bytes([(ts >> 24) & 0xFF])
        + b"\x00\x00\x00"
    )
    return header + body + (11 + len(body)).to_bytes(4, "big")


# ----------------------------------------------------------------------------- connect


def test_connect_event_and_connected() -> None:
    client = ClientSession("live", TC_URL)
    server = ServerSession()
    _, s_ev = pump(client, server)
    assert server.handshake_complete and client.handshake_complete
    (connect,) = s_ev
    assert connect.app == "live"
    assert connect.tc_url == TC_URL
    assert connect.transaction_id == 1.0
    assert connect.properties["flashVer"].startswith("FMLE/3.0")
    assert server.tc_url == TC_URL
    server.accept_connect("live")
    c_ev, _ = pump(client, server)
    (connected,) = c_ev
    assert connected.info["code"] == "NetConnection.Connect.Success"
    assert connected.info["level"] == "status"
    assert server.app == "live"


def test_connect_app_slashes_are_stripped() -> None:
    client = ClientSession("/live/", TC_URL)
    server = ServerSession()
    _, s_ev = pump(client, server)
    assert s_ev[0].app == "live"


def test_plain_handshake_client() -> None:
    client = ClientSession("live", TC_URL, digest_handshake=False)
    server = ServerSession()
    _, s_ev = pump(client, server)
    assert [type(e) for e in s_ev] == [Connect]
    assert not server.digest_handshake


def test_digest_handshake_client() -> None:
    client = ClientSession("live", TC_URL)
    server = ServerSession()
    pump(client, server)
    assert server.digest_handshake


def test_server_sends_window_bandwidth_chunk_size_then_result() -> None:
    server = ServerSession()
    raw = RawClient(server)
    msgs = raw.connect()
    assert [(x.type_id, x.stream_id) for x in msgs] == [
        (m.WINDOW_ACK_SIZE, 0),
        (m.SET_PEER_BANDWIDTH, 0),
        (m.SET_CHUNK_SIZE, 0),
        (m.COMMAND_AMF0, 0),
    ]
    assert msgs[0].payload == struct.pack(">I", 2_500_000)
    assert msgs[1].payload == struct.pack(">IB", 2_500_000, 2)
    assert msgs[2].payload == struct.pack(">I", 4096)
    assert all(x.csid == 2 for x in msgs[:3])
    name, txn, props, info = decode_command(msgs[3])
    assert (name, txn) == ("_result", 1.0)
    assert props["fmsVer"].startswith("FMS/")
    assert info["code"] == "NetConnection.Connect.Success"
    assert server.chunk_size == 4096


def test_reject_connect() -> None:
    client = ClientSession("live", TC_URL)
    server = ServerSession()
    pump(client, server)
    server.reject_connect("go away")
    c_ev, _ = pump(client, server)
    assert statuses(c_ev) == [(0, "error", "NetConnection.Connect.Rejected")]
    assert c_ev[0].description == "go away"


def test_large_messages_after_chunk_size_change_both_ways() -> None:
    client, server = connected_pair()
    assert server.chunk_size == 4096 and client.chunk_size == 4096
    big = random.Random(1).randbytes(100_000)
    server.send_message(m.VIDEO, 1, 1234, big)
    # 4096-byte chunks: the first continuation header sits right after 4096 bytes.
    down = server.data_to_send()
    assert len(down) == 12 + 100_000 + (100_000 - 1) // 4096
    assert down[12 + 4096] == 0xC0 | m.CSID_VIDEO
    c_ev = client.receive_data(down)
    assert c_ev == [Media(1, m.VIDEO, 1234, big)]
    client.send_message(m.VIDEO, 1, 99, big)
    up = client.data_to_send()
    assert len(up) == 12 + 100_000 + (100_000 - 1) // 4096
    assert server.receive_data(up) == [Media(1, m.VIDEO, 99, big)]


def test_server_accepts_any_client_chunk_size() -> None:
    server = ServerSession()
    raw = RawClient(server, chunk_size=77)
    raw.connect()
    big = bytes(range(256)) * 40
    assert raw.send(6, m.AUDIO, 0, 5, big) == [Media(0, m.AUDIO, 5, big)]


def test_set_chunk_size_and_big_message_in_one_segment() -> None:
    """Like ffmpeg: Set Chunk Size, connect and more in a single TCP read."""
    server = ServerSession()
    RawClient(server)  # handshake only
    big = random.Random(3).randbytes(20_000)
    data = (
        encode_message(2, m.SET_CHUNK_SIZE, 0, 0, m.u32(60_000), 128)
        + encode_message(3, m.COMMAND_AMF0, 0, 0, amf0.encode("connect", 1, {"app": "a"}), 60_000)
        + encode_message(6, m.AUDIO, 0, 3, big, 60_000)
    )
    events = server.receive_data(data)
    assert [type(e) for e in events] == [Connect]
    assert server.accept_connect("a") == [Media(0, m.AUDIO, 3, big)]


# ----------------------------------------------------------------------------- publish


def test_create_stream_ids_count_up() -> None:
    client, server = connected_pair()
    assert created_stream(client, server) == 1
    assert created_stream(client, server) == 2


def test_publish_flow() -> None:
    client, server = connected_pair()
    sid = created_stream(client, server)
    client.publish(sid, "demo?token=x")
    c_ev, s_ev = pump(client, server)
    assert s_ev == [Publish(1, "demo?token=x", "live")]
    assert c_ev == []  # releaseStream / FCPublish results are absorbed
    server.accept_publish(sid, "demo")
    c_ev, _ = pump(client, server)
    assert statuses(c_ev) == [(1, "status", "NetStream.Publish.Start")]

    values = {"width": 1280.0, "height": 720.0, "videocodecid": 7.0, "encoder": "test"}
    client.send_metadata(sid, values)
    _, s_ev = pump(client, server)
    (meta,) = s_ev
    assert isinstance(meta, Metadata)
    assert meta.stream_id == 1
    assert meta.values == values
    assert meta.payload.startswith(amf0.encode("onMetaData"))
    assert b"@setDataFrame" not in meta.payload
    assert amf0.decode_all(meta.payload) == ["onMetaData", values]

    rng = random.Random(7)
    sent = [
        (m.VIDEO, 0, bytes([0x17, 0]) + rng.randbytes(40)),
        (m.AUDIO, 0, bytes([0xAF, 0, 0x12, 0x10])),
        (m.VIDEO, 0, bytes([0x17, 1, 0, 0, 0]) + rng.randbytes(100_000)),
        (m.AUDIO, 23, bytes([0xAF, 1]) + rng.randbytes(300)),
        (m.VIDEO, 40, bytes([0x27, 1, 0, 0, 0]) + rng.randbytes(5000)),
        (m.AUDIO, 0xFFFFFF, b"\xaf\x01x"),
        (m.VIDEO, 0x1234567, b"\x27\x01\x00\x00\x00y"),
    ]
    for type_id, ts, payload in sent:
        client.send_message(type_id, sid, ts, payload)
    _, s_ev = pump(client, server)
    assert s_ev == [Media(1, t, ts, p) for t, ts, p in sent]


def test_reject_publish_and_fc_results() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    assert raw.command(0, "releaseStream", 2, None, "demo") == []
    assert raw.command(0, "FCPublish", 3, None, "demo") == []
    assert raw.command(0, "createStream", 4, None) == []
    results = [decode_command(x) for x in raw.receive()]
    assert results == [
        ["_result", 2.0, None, amf0.UNDEFINED],
        ["_result", 3.0, None, amf0.UNDEFINED],
        ["_result", 4.0, None, 1.0],
    ]
    server.reject_publish(1, "NetStream.Publish.BadName", "taken")
    (msg,) = raw.receive()
    assert msg.stream_id == 1
    name, _, _, info = decode_command(msg)
    assert name == "onStatus"
    assert (info["level"], info["code"]) == ("error", "NetStream.Publish.BadName")


def test_data_messages_that_are_not_metadata() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    raw.command(0, "createStream", 2, None)
    body = amf0.encode("onCuePoint", {"name": "x"})
    assert raw.send(5, m.DATA_AMF0, 1, 77, body) == [Media(1, m.DATA_AMF0, 77, body)]
    assert raw.send(5, m.DATA_AMF0, 1, 0, amf0.encode("|RtmpSampleAccess", True, True)) == []
    # AMF3 data (type 15) carries one leading format byte.
    meta = amf0.encode("onMetaData", amf0.ECMAArray(duration=0.0))
    (event,) = raw.send(5, m.DATA_AMF3, 1, 0, b"\x00" + meta)
    assert event == Metadata(1, 0, meta, {"duration": 0.0})


def test_delete_stream_and_unknown_command() -> None:
    client, server = connected_pair()
    sid = created_stream(client, server)
    client.delete_stream(sid)
    _, s_ev = pump(client, server)
    assert s_ev == [DeleteStream(1)]
    client.publish(sid, "x")  # deleted: publishing on it is now an error
    with pytest.raises(SessionError):
        pump(client, server)
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    events = raw.command(0, "someCall", 9, None, "arg", 1)
    assert events == [Command(0, "someCall", 9.0, ["arg", 1.0])]


# ----------------------------------------------------------------------------- play


def playing_pair(name: str = "demo") -> tuple[ClientSession, ServerSession, int]:
    client, server = connected_pair()
    sid = created_stream(client, server)
    client.play(sid, name)
    c_ev, s_ev = pump(client, server)
    assert c_ev == []
    assert s_ev == [Play(sid, name, -2000.0)]
    return client, server, sid


def test_play_accept_media_and_end() -> None:
    client, server, sid = playing_pair()
    assert server._flow.buffer_ms == {1: 1000}
    server.accept_play(sid, "demo")
    c_ev, _ = pump(client, server)
    assert statuses(c_ev) == [
        (1, "status", "NetStream.Play.Reset"),
        (1, "status", "NetStream.Play.Start"),
    ]
    assert len(c_ev) == 2
    server.send_message(m.DATA_AMF0, sid, 0, amf0.encode("onMetaData", {"a": 1.0}))
    server.send_message(m.VIDEO, sid, 40, b"\x17\x01\x00\x00\x00abc")
    c_ev, _ = pump(client, server)
    assert c_ev == [
        Metadata(1, 0, amf0.encode("onMetaData", {"a": 1.0}), {"a": 1.0}),
        Media(1, m.VIDEO, 40, b"\x17\x01\x00\x00\x00abc"),
    ]
    server.end_play(sid, "demo")
    c_ev, _ = pump(client, server)
    assert StreamEOF(1) in c_ev
    assert statuses(c_ev)[-1] == (1, "status", "NetStream.Play.Stop")
    assert c_ev.index(StreamEOF(1)) < len(c_ev) - 1


def test_accept_play_raw_bytes() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    raw.command(0, "createStream", 2, None)
    raw.receive()
    assert raw.command(1, "play", 0, None, "demo", -1000) == [Play(1, "demo", -1000.0)]
    server.accept_play(1, "demo")
    msgs = raw.receive()
    assert msgs[0].type_id == m.USER_CONTROL
    assert msgs[0].payload == struct.pack(">HI", m.UC_STREAM_BEGIN, 1)
    assert [decode_command(x)[3]["code"] for x in msgs[1:3]] == [
        "NetStream.Play.Reset",
        "NetStream.Play.Start",
    ]
    assert msgs[3].type_id == m.DATA_AMF0
    assert amf0.decode_all(msgs[3].payload) == ["|RtmpSampleAccess", True, True]


def test_play_without_start_argument() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    raw.command(0, "createStream", 2, None)
    assert raw.command(1, "play", 0, None, "x") == [Play(1, "x", -2.0)]


def test_play_not_found() -> None:
    client, server, sid = playing_pair("nope")
    server.play_not_found(sid, "nope")
    c_ev, _ = pump(client, server)
    assert statuses(c_ev) == [(1, "error", "NetStream.Play.StreamNotFound")]


# ----------------------------------------------------------------------------- control


def test_ping_request_gets_response() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    assert raw.send(2, m.USER_CONTROL, 0, 0, struct.pack(">HI", 6, 0xDEADBEEF)) == []
    (msg,) = raw.receive()
    assert msg.type_id == m.USER_CONTROL
    assert msg.payload == struct.pack(">HI", 7, 0xDEADBEEF)


def test_client_answers_server_ping() -> None:
    client, server = connected_pair()
    server.user_control(m.UC_PING_REQUEST, 12345)
    assert client.receive_data(server.data_to_send()) == []
    (msg,) = ChunkReader().feed(client.data_to_send())
    assert (msg.type_id, msg.payload) == (m.USER_CONTROL, struct.pack(">HI", 7, 12345))


def test_server_acknowledges_after_announced_window() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    raw.send(2, m.WINDOW_ACK_SIZE, 0, 0, m.u32(1000))
    start = raw.sent
    assert raw.receive() == []
    raw.send(6, m.AUDIO, 0, 0, b"\xaf\x01" + bytes(400))
    assert raw.receive() == []  # not yet 1000 bytes since the window
    raw.send(6, m.AUDIO, 0, 0, b"\xaf\x01" + bytes(800))
    (ack,) = raw.receive()
    assert ack.type_id == m.ACKNOWLEDGEMENT
    (seq,) = struct.unpack(">I", ack.payload)
    assert 1000 <= seq <= raw.sent
    assert seq >= raw.sent - start
    raw.send(6, m.AUDIO, 0, 0, b"\xaf\x01" + bytes(100))
    assert raw.receive() == []
    raw.send(6, m.AUDIO, 0, 0, b"\xaf\x01" + bytes(1000))
    (ack2,) = raw.receive()
    assert ack2.type_id == m.ACKNOWLEDGEMENT
    assert struct.unpack(">I", ack2.payload)[0] >= seq + 1000


def test_default_window_flow_both_ways() -> None:
    """Server announces 2.5 MB; the client answers Set Peer Bandwidth with its own window,
    then each side acknowledges after 2.5 MB from the other."""
    client, server = connected_pair()
    assert server._flow.ack_window == 2_500_000  # the client's Window Ack Size arrived
    assert client._flow.ack_window == 2_500_000
    frame = bytes(100_000)
    for i in range(26):
        client.send_message(m.VIDEO, 1, i, frame)
        server.send_message(m.VIDEO, 1, i, frame)
    up = client.data_to_send()
    down = server.data_to_send()
    server.receive_data(up)
    client.receive_data(down)
    acks = [x for x in ChunkReader().feed(server.data_to_send()) if x.type_id == 3]
    assert len(acks) == 1
    assert 2_500_000 <= struct.unpack(">I", acks[0].payload)[0] <= len(up) + 3073
    acks = [x for x in ChunkReader().feed(client.data_to_send()) if x.type_id == 3]
    assert len(acks) == 1
    assert 2_500_000 <= struct.unpack(">I", acks[0].payload)[0] <= len(down) + 3073
    assert client._flow.peer_acked == 0
    client.receive_data(b"")  # nothing new


def test_set_chunk_size_from_peer_is_validated() -> None:
    server = ServerSession()
    raw = RawClient(server)
    for bad in (0, 0x80000000, 0x1000000):
        server2 = ServerSession()
        raw2 = RawClient(server2)
        with pytest.raises(ProtocolError):
            raw2.send(2, m.SET_CHUNK_SIZE, 0, 0, m.u32(bad))
    with pytest.raises(ProtocolError):
        raw.send(2, m.SET_CHUNK_SIZE, 0, 0, b"\x00\x10")


def test_abort_message_from_peer() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    partial = encode_message(6, m.AUDIO, 0, 0, bytes(300), 128)[: 12 + 128]
    assert server.receive_data(partial) == []
    raw.send(2, m.ABORT, 0, 0, m.u32(6))
    # fmt 0 is now allowed on csid 6 again (it would be an error mid-message).
    assert raw.send(6, m.AUDIO, 0, 9, b"\xaf\x01z") == [Media(0, m.AUDIO, 9, b"\xaf\x01z")]
    # Abort and the next message on that chunk stream in one read.
    data = (
        encode_message(6, m.AUDIO, 0, 0, bytes(300), 128)[: 12 + 128]
        + encode_message(2, m.ABORT, 0, 0, m.u32(6), 128)
        + encode_message(6, m.AUDIO, 0, 10, b"\xaf\x01y", 128)
    )
    assert server.receive_data(data) == [Media(0, m.AUDIO, 10, b"\xaf\x01y")]


# ----------------------------------------------------------------------------- out of order


def test_create_stream_before_connect_accepted_waits_for_it() -> None:
    client = ClientSession("live", TC_URL)
    server = ServerSession()
    pump(client, server)
    client.create_stream()
    c_ev, s_ev = pump(client, server)
    assert c_ev == [] and s_ev == []
    assert server.accept_connect("live") == []
    c_ev, _ = pump(client, server)
    assert [type(e) for e in c_ev] == [Connected, StreamCreated]


@pytest.mark.parametrize(
    "values",
    [
        ("createStream", 2, None),
        ("publish", 0, None, "demo", "live"),
        ("play", 0, None, "demo"),
        ("deleteStream", 0, None, 1),
    ],
)
def test_commands_before_connect(values: tuple) -> None:
    server = ServerSession()
    raw = RawClient(server)
    with pytest.raises(SessionError) as info:
        raw.command(1 if values[0] in ("publish", "play") else 0, *values)
    assert isinstance(info.value, ProtocolError)


def test_connect_twice() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    with pytest.raises(SessionError):
        raw.command(0, "connect", 2, {"app": "live"})
    # also twice before it was accepted
    server = ServerSession()
    raw = RawClient(server)
    raw.command(0, "connect", 1, {"app": "live"})
    raw.command(0, "connect", 2, {"app": "live"})  # held until the first is answered
    with pytest.raises(SessionError):
        server.accept_connect("live")


def test_accept_connect_without_connect() -> None:
    with pytest.raises(SessionError):
        ServerSession().accept_connect("live")


def test_publish_on_stream_never_created() -> None:
    client, server = connected_pair()
    client.publish(5, "demo")
    with pytest.raises(SessionError):
        pump(client, server)


def test_play_on_stream_never_created() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    with pytest.raises(SessionError):
        raw.command(3, "play", 0, None, "demo")


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x02\x00\x10abc",  # truncated string
        b"\x02\x00\x07connect\x00\x3f",  # truncated number
        b"\x02\x00\x07connect\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x03\x00",  # open object
        b"\x99",
        amf0.encode("connect"),  # no transaction id
        amf0.encode(1.0, 1.0),  # name not a string
        amf0.encode("connect", "1"),  # transaction id not a number
        amf0.encode("connect", True),
    ],
)
def test_invalid_amf_in_command(payload: bytes) -> None:
    server = ServerSession()
    raw = RawClient(server)
    with pytest.raises(ProtocolError):
        raw.send(3, m.COMMAND_AMF0, 0, 0, payload)


def test_connect_with_non_string_app() -> None:
    server = ServerSession()
    raw = RawClient(server)
    with pytest.raises(SessionError):
        raw.command(0, "connect", 1, {"app": 5})


def test_publish_without_name() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    raw.command(0, "createStream", 2, None)
    with pytest.raises(SessionError):
        raw.command(1, "publish", 0, None)
    with pytest.raises(SessionError):
        raw.command(1, "publish", 0, None, 12)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_delete_stream_with_non_finite_id(bad: float) -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    raw.command(0, "createStream", 2, None)
    try:
        events = raw.command(0, "deleteStream", 0, None, bad)
    except ProtocolError:
        return
    assert all(isinstance(e, DeleteStream) for e in events)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.5, 2.0**40])
def test_create_stream_result_with_bad_id(bad: float) -> None:
    client, server = connected_pair()
    client.create_stream()
    server.receive_data(client.data_to_send())
    server.data_to_send()
    # Answer createStream (transaction 2) ourselves with a bogus stream id.
    data = encode_message(3, m.COMMAND_AMF0, 0, 0, amf0.encode("_result", 2.0, None, bad), 4096)
    try:
        events = client.receive_data(data)
    except ProtocolError:
        return
    assert not any(isinstance(e, StreamCreated) for e in events)
    assert statuses(events) == [(0, "error", "NetConnection.Call.Failed")]


def test_create_stream_error_result() -> None:
    client, server = connected_pair()
    client.create_stream()
    server.receive_data(client.data_to_send())
    data = encode_message(
        3, m.COMMAND_AMF0, 0, 0, amf0.encode("_error", 2.0, None, {"code": "x"}), 4096
    )
    assert statuses(client.receive_data(data)) == [(0, "error", "NetConnection.Call.Failed")]


def test_too_many_streams() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.connect()
    for i in range(16):
        raw.command(0, "createStream", 2 + i, None)
    raw.command(0, "createStream", 100, None)
    msgs = raw.receive()
    assert [decode_command(x)[0] for x in msgs] == ["_result"] * 16 + ["_error"]
    assert decode_command(msgs[-1])[3]["code"] == "NetConnection.Call.Failed"


# ----------------------------------------------------------------------------- aggregate


def test_aggregate_is_split_with_rebased_timestamps() -> None:
    client, server = connected_pair()
    sid = created_stream(client, server)
    client.publish(sid, "demo")
    pump(client, server)
    parts = [
        (m.VIDEO, 0x01000010, b"\x17\x01\x00\x00\x00key"),
        (m.AUDIO, 0x01000010 + 23, b"\xaf\x01aud"),
        (m.VIDEO, 0x01000010 + 40, b"\x27\x01\x00\x00\x00inter"),
        (m.COMMAND_AMF0, 0x01000010 + 41, amf0.encode("ignored", 0)),  # not media: dropped
        (m.DATA_AMF0, 0x01000010 + 50, amf0.encode("onCuePoint", 1)),
    ]
    payload = b"".join(aggregate_part(t, ts, b) for t, ts, b in parts)
    client.send_message(m.AGGREGATE, sid, 5000, payload)
    _, s_ev = pump(client, server)
    assert s_ev == [
        Media(sid, m.VIDEO, 5000, parts[0][2]),
        Media(sid, m.AUDIO, 5023, parts[1][2]),
        Media(sid, m.VIDEO, 5040, parts[2][2]),
        Media(sid, m.DATA_AMF0, 5050, parts[4][2]),
    ]


def test_aggregate_to_client_and_truncated_aggregate() -> None:
    client, server, sid = playing_pair()
    payload = aggregate_part(m.AUDIO, 100, b"\xaf\x01a") + aggregate_part(
        m.AUDIO, 120, b"\xaf\x01b"
    )
    server.send_message(m.AGGREGATE, sid, 100, payload)
    c_ev, _ = pump(client, server)
    assert c_ev == [Media(1, m.AUDIO, 100, b"\xaf\x01a"), Media(1, m.AUDIO, 120, b"\xaf\x01b")]
    server.send_message(m.AGGREGATE, sid, 100, payload[:-10])
    with pytest.raises(ProtocolError):
        pump(client, server)


def test_split_aggregate_without_final_back_pointer() -> None:
    payload = aggregate_part(m.VIDEO, 7, b"v")[:-4]
    assert m.split_aggregate(0, payload) == [(m.VIDEO, 0, b"v")]


# ----------------------------------------------------------------------------- fuzzing


def _capture_client_stream() -> bytes:
    """Everything a publishing-then-playing ClientSession sends after the handshake."""
    client = ClientSession("live", TC_URL, digest_handshake=False)
    server = ServerSession()
    sent = bytearray()

    def go() -> None:
        while True:
            up = client.data_to_send()
            sent.extend(up)
            events = server.receive_data(up) if up else []
            for e in events:
                if isinstance(e, Connect):
                    server.accept_connect("live")
                elif isinstance(e, Publish):
                    server.accept_publish(e.stream_id, e.name)
            down = server.data_to_send()
            if down:
                client.receive_data(down)
            if not up and not down:
                return

    go()
    client.create_stream()
    go()
    client.publish(1, "demo?k=v")
    client.send_metadata(1, {"width": 640.0, "videocodecid": 7.0})
    client.send_message(m.VIDEO, 1, 0, b"\x17\x00\x00\x00\x00" + bytes(30))
    client.send_message(m.VIDEO, 1, 0, b"\x17\x01\x00\x00\x00" + bytes(5000))
    client.send_message(m.AUDIO, 1, 0xFFFFFF, b"\xaf\x01" + bytes(20))
    client.send_message(m.AGGREGATE, 1, 9, aggregate_part(m.AUDIO, 3, b"\xaf\x01x"))
    client.user_control(m.UC_PING_REQUEST, 5)
    client.create_stream()
    go()
    client.play(2, "other")
    client.delete_stream(1)
    go()
    return bytes(sent[2 * HANDSHAKE_SIZE + 1 :])


def _capture_server_stream() -> bytes:
    """Everything a ServerSession sends to a player after the handshake."""
    client = ClientSession("live", TC_URL, digest_handshake=False)
    server = ServerSession()
    got = bytearray()

    def go() -> None:
        while True:
            up = client.data_to_send()
            for e in server.receive_data(up) if up else []:
                if isinstance(e, Connect):
                    server.accept_connect("live")
                elif isinstance(e, Play):
                    server.accept_play(e.stream_id, e.name)
            down = server.data_to_send()
            got.extend(down)
            if down:
                client.receive_data(down)
            if not up and not down:
                return

    go()
    client.create_stream()
    go()
    client.play(1, "demo")
    go()
    server.send_message(m.DATA_AMF0, 1, 0, amf0.encode("onMetaData", {"w": 1.0}))
    server.send_message(m.VIDEO, 1, 0, b"\x17\x01\x00\x00\x00" + bytes(5000))
    server.send_message(m.AGGREGATE, 1, 9, aggregate_part(m.AUDIO, 3, b"\xaf\x01x"))
    server.user_control(m.UC_PING_REQUEST, 5)
    server.play_not_found(1, "x")
    server.end_play(1, "demo")
    go()
    return bytes(got[2 * HANDSHAKE_SIZE + 1 :])


CLIENT_STREAM = _capture_client_stream()
SERVER_STREAM = _capture_server_stream()


def _handshaken_server() -> ServerSession:
    server = ServerSession(max_message_size=64 * 1024)
    hs = ClientHandshake(digest=False)
    server.receive_data(hs.data_to_send())
    hs.receive_data(server.data_to_send())
    server.receive_data(hs.data_to_send())
    assert server.handshake_complete
    return server


def _handshaken_client() -> ClientSession:
    client = ClientSession("live", TC_URL, digest_handshake=False, max_message_size=64 * 1024)
    hs = ServerHandshake()
    hs.receive_data(client.data_to_send())
    client.receive_data(hs.data_to_send())
    assert client.handshake_complete
    client.data_to_send()
    return client


def _feed_server(server: ServerSession, data: bytes, step: int) -> list:
    events: list = []
    for i in range(0, len(data), step):
        for e in server.receive_data(data[i : i + step]):
            events.append(e)
            if isinstance(e, Connect):
                server.accept_connect(e.app)
            elif isinstance(e, Publish):
                server.accept_publish(e.stream_id, e.name)
            elif isinstance(e, Play):
                server.accept_play(e.stream_id, e.name)
        server.data_to_send()
    return events


def _feed_client(client: ClientSession, data: bytes, step: int) -> list:
    events: list = []
    for i in range(0, len(data), step):
        events += client.receive_data(data[i : i + step])
        client.data_to_send()
    return events


def test_captured_streams_replay_cleanly() -> None:
    # Byte by byte, so that every message completes in its own receive_data() and the
    # server accepts connect before createStream arrives (as with a real client).
    server = _handshaken_server()
    events = _feed_server(server, CLIENT_STREAM, 1)
    assert [type(e).__name__ for e in events] == [
        "Connect", "Publish", "Metadata", "Media", "Media", "Media", "Media", "Play",
        "DeleteStream",
    ]  # fmt: skip
    assert events[1] == Publish(1, "demo?k=v", "live")
    client = _handshaken_client()  # never sent createStream: its _result is ignored
    events = _feed_client(client, SERVER_STREAM, 1000)
    assert [type(e).__name__ for e in events] == [
        "Connected", "Status", "Status", "Metadata", "Media", "Media",
        "Status", "Status", "StreamEOF", "Status",
    ]  # fmt: skip


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    buf = bytearray(data)
    for pos, value in flips:
        buf[pos % len(buf)] = value
    return bytes(buf[: cut % (len(buf) + 1)])


_flips = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6)


@FUZZ
@given(data=st.binary(max_size=1500), step=st.integers(1, 600))
def test_server_random_bytes_raise_only_protocol_errors(data: bytes, step: int) -> None:
    server = _handshaken_server()
    with contextlib.suppress(ProtocolError):
        _feed_server(server, data, step)


@FUZZ
@given(flips=_flips, cut=st.integers(0, 10**6), step=st.integers(50, 3000))
def test_server_mutated_stream_raises_only_protocol_errors(flips, cut, step) -> None:
    server = _handshaken_server()
    with contextlib.suppress(ProtocolError):
        _feed_server(server, _mutate(CLIENT_STREAM, flips, cut), step)


@FUZZ
@given(data=st.binary(max_size=1500), step=st.integers(1, 600))
def test_client_random_bytes_raise_only_protocol_errors(data: bytes, step: int) -> None:
    client = _handshaken_client()
    with contextlib.suppress(ProtocolError):
        _feed_client(client, data, step)


@FUZZ
@given(flips=_flips, cut=st.integers(0, 10**6), step=st.integers(50, 3000))
def test_client_mutated_stream_raises_only_protocol_errors(flips, cut, step) -> None:
    client = _handshaken_client()
    with contextlib.suppress(ProtocolError):
        _feed_client(client, _mutate(SERVER_STREAM, flips, cut), step)


@FUZZ
@given(
    name=st.sampled_from(
        ["deleteStream", "createStream", "publish", "play", "_result", "onStatus"]
    ),
    args=st.lists(
        st.one_of(
            st.none(),
            st.booleans(),
            st.floats(allow_nan=True, allow_infinity=True),
            st.text(max_size=5),
            st.dictionaries(st.text(max_size=3), st.floats(), max_size=2),
        ),
        max_size=3,
    ),
    txn=st.floats(allow_nan=True, allow_infinity=True),
    stream_id=st.integers(0, 3),
)
def test_well_formed_commands_with_odd_arguments(name, args, txn, stream_id) -> None:
    """Valid AMF, wrong shapes: both sides raise at most a ProtocolError."""
    server = _handshaken_server()
    # One receive_data per message: the server answers connect between them.
    _feed_server(
        server, encode_message(3, 20, 0, 0, amf0.encode("connect", 1, {"app": "live"}), 128), 1000
    )
    _feed_server(
        server, encode_message(3, 20, 0, 0, amf0.encode("createStream", 2, None), 128), 1000
    )
    payload = amf0.encode(name, txn, None, *args)
    with contextlib.suppress(ProtocolError):
        _feed_server(server, encode_message(3, 20, stream_id, 0, payload, 128), 10_000)
    client = _handshaken_client()
    with contextlib.suppress(ProtocolError):
        client.receive_data(encode_message(3, 20, stream_id, 0, payload, 128))
        client.receive_data(
            encode_message(3, 20, stream_id, 0, amf0.encode(name, 1.0, None, *args), 128)
        )


def test_commands_pipelined_behind_connect_wait_for_the_answer() -> None:
    """A client that sends createStream and publish without waiting for connect's _result."""
    client = ClientSession("live", TC_URL)
    server = ServerSession()
    server.receive_data(client.data_to_send())  # C0+C1
    client.receive_data(server.data_to_send())  # S0+S1+S2 -> C2 + connect queued
    client.create_stream()
    client.publish(1, "piped")
    events = server.receive_data(client.data_to_send())
    assert [type(e) for e in events] == [Connect]
    held = server.accept_connect("live")
    assert [type(e) for e in held] == [Publish]
    assert held[0].name == "piped" and held[0].stream_id == 1
    replies = client.receive_data(server.data_to_send())
    assert [type(e) for e in replies] == [Connected, StreamCreated]
