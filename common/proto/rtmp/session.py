"""Sans-IO RTMP sessions: `ServerSession` (ingest and play) and `ClientSession`.

Feed received bytes to `receive_data()`, act on the events it returns, and send what
`data_to_send()` hands back. Protocol control (chunk size, acknowledgements, ping) and the
simple commands (createStream, releaseStream, FCPublish, ...) are answered inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.proto import amf0
from common.proto.errors import ProtocolError
from common.proto.rtmp import messages as m
from common.proto.rtmp.chunk import DEFAULT_CHUNK_SIZE, ChunkReader, Message, encode_message
from common.proto.rtmp.handshake import ClientHandshake, ServerHandshake
from common.proto.streamkey import shown

MAX_STREAMS = 16


class SessionError(ProtocolError):
    """A well-formed message that breaks the RTMP conversation (e.g. out of order)."""


# ---------------------------------------------------------------------------- events


@dataclass(slots=True)
class Connect:
    """The client asked to connect to an application."""

    transaction_id: float
    app: str
    tc_url: str
    properties: dict


@dataclass(slots=True)
class Publish:
    """The client asked to publish `name` on message stream `stream_id`."""

    stream_id: int
    name: str
    publish_type: str


@dataclass(slots=True)
class Play:
    """The client asked to play `name` on message stream `stream_id`."""

    stream_id: int
    name: str
    start: float


@dataclass(slots=True)
class DeleteStream:
    """The peer deleted or closed message stream `stream_id`."""

    stream_id: int


@dataclass(slots=True)
class Media:
    """Audio (8), video (9) or data (18) from the peer; data here is not metadata."""

    stream_id: int
    type_id: int
    timestamp: int
    payload: bytes


@dataclass(slots=True)
class Metadata:
    """onMetaData: `payload` is the AMF0 body without any @setDataFrame prefix."""

    stream_id: int
    timestamp: int
    payload: bytes
    values: dict


@dataclass(slots=True)
class Command:
    """A command the session does not answer by itself (pause, seek, ...)."""

    stream_id: int
    name: str
    transaction_id: float
    args: list


@dataclass(slots=True)
class Connected:
    """Client side: the server accepted connect."""

    info: dict


@dataclass(slots=True)
class StreamCreated:
    """Client side: createStream succeeded."""

    stream_id: int


@dataclass(slots=True)
class Status:
    """Client side: onStatus from the server, or a failed connect/createStream."""

    stream_id: int
    level: str
    code: str
    description: str


@dataclass(slots=True)
class StreamEOF:
    """Client side: the server ended message stream `stream_id`."""

    stream_id: int


Event = (
    Connect
    | Publish
    | Play
    | DeleteStream
    | Media
    | Metadata
    | Command
    | Connected
    | StreamCreated
    | Status
    | StreamEOF
)


def _as_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise SessionError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _as_dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _as_stream_id(value: object) -> int | None:
    """A message stream id (a whole number in 0..2**32-1) from an AMF0 value, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not (0 <= value <= 0xFFFFFFFF) or value != int(value):  # also rejects NaN and inf
        return None
    return int(value)


# ---------------------------------------------------------------------------- base


@dataclass(slots=True)
class _Flow:
    ack_window: int = 0
    last_ack: int = 0
    window_sent: int = 0
    peer_acked: int = 0
    buffer_ms: dict[int, int] = field(default_factory=dict)


class _Session:
    __slots__ = (
        "_hs",
        "_digest",
        "_handshaking",
        "_reader",
        "_out",
        "chunk_size",
        "_target_chunk_size",
        "_flow",
        "closed",
        "_held",
    )

    def __init__(
        self,
        handshake: ServerHandshake | ClientHandshake,
        *,
        out_chunk_size: int,
        max_message_size: int,
    ) -> None:
        self._hs: ServerHandshake | ClientHandshake | None = handshake
        """The handshake, until it is complete (then only `_digest` is kept)."""
        self._digest = False
        self._handshaking = True
        self._reader = ChunkReader(max_message_size=max_message_size)
        self._out: list[bytes] = []
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._target_chunk_size = out_chunk_size
        self._flow = _Flow()
        self.closed = False
        # Messages that arrive while the application decides on connect wait here.
        self._held: list[Message] | None = None

    # -- bytes in / out

    def receive_data(self, data: bytes) -> list[Event]:
        """Consume bytes from the peer; return the events they complete."""
        events: list[Event] = []
        if self._handshaking:
            hs = self._hs
            assert hs is not None
            hs.receive_data(data)
            self._out.append(hs.data_to_send())
            if not hs.complete:
                return events
            self._handshaking = False
            data = hs.leftover()
            self._digest, self._hs = hs.digest, None
            self._on_handshake_done()
            if not data:
                return events
        for msg in self._reader.feed(data):
            if self._held is not None:
                self._held.append(msg)
            else:
                self._dispatch(msg, events)
        flow = self._flow
        received = self._reader.bytes_received
        if flow.ack_window and received - flow.last_ack >= flow.ack_window:
            flow.last_ack = received
            self._send(m.CSID_CONTROL, m.ACKNOWLEDGEMENT, 0, 0, m.u32(received))
        return events

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def handshake_complete(self) -> bool:
        """True once the handshake is done and chunks flow."""
        return not self._handshaking

    # -- sending

    def _send(self, csid: int, type_id: int, stream_id: int, ts: int, payload: bytes) -> None:
        self._out.append(encode_message(csid, type_id, stream_id, ts, payload, self.chunk_size))

    def send_message(self, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        """Queue any message (media goes on its own chunk stream)."""
        csid = {m.AUDIO: m.CSID_AUDIO, m.VIDEO: m.CSID_VIDEO, m.DATA_AMF0: m.CSID_DATA}.get(
            type_id, m.CSID_COMMAND
        )
        self._send(csid, type_id, stream_id, timestamp, payload)

    def _command(self, stream_id: int, name: str, txn: float, obj: object, *args: object) -> None:
        self._send(m.CSID_COMMAND, m.COMMAND_AMF0, stream_id, 0, m.command(name, txn, obj, *args))

    def _set_chunk_size(self, size: int) -> None:
        self._send(m.CSID_CONTROL, m.SET_CHUNK_SIZE, 0, 0, m.u32(size))
        self.chunk_size = size

    def _window_ack_size(self, size: int) -> None:
        self._flow.window_sent = size
        self._send(m.CSID_CONTROL, m.WINDOW_ACK_SIZE, 0, 0, m.u32(size))

    def user_control(self, event: int, value: int) -> None:
        """Queue a user control event (stream begin/EOF, ping, ...)."""
        self._send(m.CSID_CONTROL, m.USER_CONTROL, 0, 0, m.user_control(event, value))

    def send_status(
        self, stream_id: int, level: str, code: str, description: str, **extra: object
    ) -> None:
        """Queue an onStatus command on `stream_id`."""
        info = m.status_info(level, code, description, **extra)
        self._command(stream_id, "onStatus", 0, None, info)

    # -- receiving

    def _dispatch(self, msg: Message, events: list[Event]) -> None:
        t = msg.type_id
        if t in (m.AUDIO, m.VIDEO):
            events.append(Media(msg.stream_id, t, msg.timestamp, msg.payload))
        elif t in (m.COMMAND_AMF0, m.COMMAND_AMF3):
            payload = msg.payload[1:] if t == m.COMMAND_AMF3 else msg.payload
            values = amf0.decode_all(payload)
            if len(values) < 2:
                raise SessionError("command message without name and transaction id")
            name = _as_text(values[0], "command name")
            txn = values[1]
            if not isinstance(txn, (int, float)) or isinstance(txn, bool):
                raise SessionError(f"command {shown(name)} has a non-numeric transaction id")
            obj = values[2] if len(values) > 2 else None
            self._on_command(msg.stream_id, name, float(txn), obj, values[3:], events)
        elif t in (m.DATA_AMF0, m.DATA_AMF3):
            payload = msg.payload[1:] if t == m.DATA_AMF3 else msg.payload
            self._on_data(msg.stream_id, msg.timestamp, payload, events)
        elif t == m.AGGREGATE:
            for sub_type, ts, body in m.split_aggregate(msg.timestamp, msg.payload):
                sub = Message(sub_type, msg.stream_id, ts, body, msg.csid)
                if sub_type in (m.AUDIO, m.VIDEO, m.DATA_AMF0):
                    self._dispatch(sub, events)
        else:
            self._on_control(msg, events)

    def _on_data(self, stream_id: int, ts: int, payload: bytes, events: list[Event]) -> None:
        name, pos = amf0.decode_value(payload, 0)
        if name == "@setDataFrame":
            payload = payload[pos:]
            name, pos = amf0.decode_value(payload, 0)
        if name == "onMetaData":
            values = amf0.decode_all(payload)[1:]
            meta = dict(values[0]) if values and isinstance(values[0], dict) else {}
            events.append(Metadata(stream_id, ts, payload, meta))
        elif isinstance(name, str) and name.startswith("|RtmpSampleAccess") or name == "onStatus":
            return
        else:
            events.append(Media(stream_id, m.DATA_AMF0, ts, payload))

    def _on_control(self, msg: Message, events: list[Event]) -> None:
        t = msg.type_id
        p = msg.payload
        if t in (m.SET_CHUNK_SIZE, m.ABORT, m.ACKNOWLEDGEMENT, m.WINDOW_ACK_SIZE):
            if len(p) < 4:
                raise SessionError(f"protocol control message {t} shorter than 4 bytes")
            value = int.from_bytes(p[:4], "big")
            if t in (m.SET_CHUNK_SIZE, m.ABORT):
                pass  # applied by the ChunkReader as soon as parsed
            elif t == m.ACKNOWLEDGEMENT:
                self._flow.peer_acked = value
            else:
                self._flow.ack_window = value
        elif t == m.SET_PEER_BANDWIDTH:
            if len(p) < 5:
                raise SessionError("set peer bandwidth shorter than 5 bytes")
            value = int.from_bytes(p[:4], "big")
            if value != self._flow.window_sent:
                self._window_ack_size(value)
        elif t == m.USER_CONTROL:
            if len(p) < 6:
                raise SessionError("user control message shorter than 6 bytes")
            event = int.from_bytes(p[:2], "big")
            value = int.from_bytes(p[2:6], "big")
            if event == m.UC_PING_REQUEST:
                self.user_control(m.UC_PING_RESPONSE, value)
            elif event == m.UC_SET_BUFFER_LENGTH and len(p) >= 10:
                buffers = self._flow.buffer_ms
                if value in buffers or len(buffers) < MAX_STREAMS:  # bounded per connection
                    buffers[value] = int.from_bytes(p[6:10], "big")
            elif event == m.UC_STREAM_EOF:
                events.append(StreamEOF(value))
        # Shared objects and unknown types are ignored, as other servers do.

    def _on_handshake_done(self) -> None:
        pass

    def _on_command(
        self, stream_id: int, name: str, txn: float, obj: object, args: list, events: list[Event]
    ) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------- server


class ServerSession(_Session):
    """Server side of one RTMP connection (publisher or player)."""

    __slots__ = ("_window", "app", "tc_url", "_connect_txn", "_streams", "_next_stream")

    def __init__(
        self,
        *,
        out_chunk_size: int = 4096,
        window_ack_size: int = 2_500_000,
        max_message_size: int = 8 * 1024 * 1024,
    ) -> None:
        super().__init__(
            ServerHandshake(), out_chunk_size=out_chunk_size, max_message_size=max_message_size
        )
        self._window = window_ack_size
        self.app: str | None = None
        self.tc_url = ""
        self._connect_txn: float | None = None
        self._streams: set[int] = set()
        self._next_stream = 1

    @property
    def digest_handshake(self) -> bool:
        """Whether the client used the digest ("complex") handshake."""
        return self._digest

    def _on_command(
        self, stream_id: int, name: str, txn: float, obj: object, args: list, events: list[Event]
    ) -> None:
        if name == "connect":
            if self.app is not None or self._connect_txn is not None:
                raise SessionError("connect received twice")
            props = _as_dict(obj)
            app = props.get("app", "")
            if not isinstance(app, str):
                raise SessionError("connect: app is not a string")
            self._connect_txn = txn
            self._held = []
            self.tc_url = props.get("tcUrl", "") if isinstance(props.get("tcUrl"), str) else ""
            events.append(Connect(txn, app.strip("/"), self.tc_url, props))
            return
        if self.app is None:
            raise SessionError(f"command {shown(name)} before connect was accepted")
        if name == "createStream":
            if len(self._streams) >= MAX_STREAMS:
                self._command(
                    0,
                    "_error",
                    txn,
                    None,
                    m.status_info("error", "NetConnection.Call.Failed", "too many streams"),
                )
                return
            sid = self._next_stream
            self._next_stream += 1
            self._streams.add(sid)
            self._command(0, "_result", txn, None, float(sid))
        elif name in ("releaseStream", "FCPublish", "FCUnpublish", "FCSubscribe"):
            if txn:
                self._command(0, "_result", txn, None, amf0.UNDEFINED)
        elif name == "getStreamLength":
            self._command(0, "_result", txn, None, 0.0)
        elif name in ("publish", "play"):
            if stream_id not in self._streams:
                raise SessionError(f"{name} on message stream {stream_id}, never created")
            if not args:
                raise SessionError(f"{name} without a stream name")
            stream_name = _as_text(args[0], f"{name} stream name")
            if name == "publish":
                kind = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
                events.append(Publish(stream_id, stream_name, kind))
            else:
                start = args[1] if len(args) > 1 and isinstance(args[1], (int, float)) else -2
                events.append(Play(stream_id, stream_name, float(start)))
        elif name in ("deleteStream", "closeStream"):
            sid = stream_id
            if name == "deleteStream" and args:
                given = _as_stream_id(args[0])
                if given is not None:
                    sid = given
            self._streams.discard(sid)
            events.append(DeleteStream(sid))
        else:
            events.append(Command(stream_id, name, txn, args))

    def accept_connect(self, app: str) -> list[Event]:
        """Answer connect with success (window, bandwidth, chunk size, _result).

        Returns the events of messages the client sent right behind connect, without
        waiting for the answer (they were held until now).
        """
        if self._connect_txn is None:
            raise SessionError("accept_connect without a pending connect")
        self.app = app
        self._window_ack_size(self._window)
        self._send(m.CSID_CONTROL, m.SET_PEER_BANDWIDTH, 0, 0, m.peer_bandwidth(self._window))
        self._set_chunk_size(self._target_chunk_size)
        props = {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}
        info = m.status_info(
            "status", "NetConnection.Connect.Success", "Connection succeeded.", objectEncoding=0.0
        )
        self._command(0, "_result", self._connect_txn, props, info)
        held, self._held = self._held or [], None
        events: list[Event] = []
        for msg in held:
            self._dispatch(msg, events)
        return events

    def reject_connect(self, description: str) -> None:
        """Answer connect with NetConnection.Connect.Rejected."""
        info = m.status_info("error", "NetConnection.Connect.Rejected", description)
        self._command(0, "_error", self._connect_txn or 1.0, None, info)

    def accept_publish(self, stream_id: int, name: str) -> None:
        """Tell the publisher to start sending."""
        self.send_status(
            stream_id, "status", "NetStream.Publish.Start", f"{name} is now published."
        )

    def reject_publish(self, stream_id: int, code: str, description: str) -> None:
        """Refuse a publish with an error status such as NetStream.Publish.BadName."""
        self.send_status(stream_id, "error", code, description)

    def accept_play(self, stream_id: int, name: str) -> None:
        """Send StreamBegin, Play.Reset, Play.Start and |RtmpSampleAccess."""
        self.user_control(m.UC_STREAM_BEGIN, stream_id)
        self.send_status(
            stream_id, "status", "NetStream.Play.Reset", f"Playing and resetting {name}."
        )
        self.send_status(stream_id, "status", "NetStream.Play.Start", f"Started playing {name}.")
        self._send(
            m.CSID_DATA, m.DATA_AMF0, stream_id, 0, amf0.encode("|RtmpSampleAccess", True, True)
        )

    def play_not_found(self, stream_id: int, name: str) -> None:
        """Answer play of an unknown stream."""
        self.send_status(
            stream_id, "error", "NetStream.Play.StreamNotFound", f"No such stream: {name}."
        )

    def end_play(self, stream_id: int, name: str) -> None:
        """Tell a player its stream ended (unpublished)."""
        self.send_status(
            stream_id, "status", "NetStream.Play.UnpublishNotify", f"{name} is now unpublished."
        )
        self.user_control(m.UC_STREAM_EOF, stream_id)
        self.send_status(stream_id, "status", "NetStream.Play.Stop", f"Stopped playing {name}.")


# ---------------------------------------------------------------------------- client


class ClientSession(_Session):
    """Client side of an RTMP connection: connect, createStream, publish or play."""

    __slots__ = ("app", "tc_url", "flash_ver", "_txn", "_pending")

    def __init__(
        self,
        app: str,
        tc_url: str,
        *,
        flash_ver: str = "FMLE/3.0 (compatible; livecdn)",
        out_chunk_size: int = 4096,
        max_message_size: int = 8 * 1024 * 1024,
        digest_handshake: bool = True,
    ) -> None:
        super().__init__(
            ClientHandshake(digest=digest_handshake),
            out_chunk_size=out_chunk_size,
            max_message_size=max_message_size,
        )
        self.app = app
        self.tc_url = tc_url
        self.flash_ver = flash_ver
        self._txn = 1
        self._pending: dict[float, str] = {}
        assert self._hs is not None
        self._out.append(self._hs.data_to_send())

    def _next_txn(self, method: str) -> float:
        self._txn += 1
        txn = float(self._txn)
        self._pending[txn] = method
        return txn

    def _on_handshake_done(self) -> None:
        self._set_chunk_size(self._target_chunk_size)
        self._pending[1.0] = "connect"
        props = {
            "app": self.app,
            "type": "nonprivate",
            "flashVer": self.flash_ver,
            "tcUrl": self.tc_url,
            "fpad": False,
            "capabilities": 15.0,
            "audioCodecs": 4071.0,
            "videoCodecs": 252.0,
            "videoFunction": 1.0,
        }
        self._command(0, "connect", 1.0, props)

    def create_stream(self) -> None:
        """Ask for a message stream; a StreamCreated event follows."""
        self._command(0, "createStream", self._next_txn("createStream"), None)

    def publish(self, stream_id: int, name: str, publish_type: str = "live") -> None:
        """Start publishing `name` on `stream_id` (FMLE-style sequence)."""
        self._command(0, "releaseStream", self._next_txn("releaseStream"), None, name)
        self._command(0, "FCPublish", self._next_txn("FCPublish"), None, name)
        self._command(stream_id, "publish", 0, None, name, publish_type)

    def play(self, stream_id: int, name: str, start: float = -2000, buffer_ms: int = 1000) -> None:
        """Start playing `name` on `stream_id`."""
        self._command(stream_id, "play", 0, None, name, start)
        self._send(m.CSID_CONTROL, m.USER_CONTROL, 0, 0, m.set_buffer_length(stream_id, buffer_ms))

    def delete_stream(self, stream_id: int) -> None:
        """Close `stream_id` (deleteStream)."""
        self._command(0, "deleteStream", 0, None, float(stream_id))

    def send_metadata(self, stream_id: int, values: dict) -> None:
        """Send @setDataFrame onMetaData."""
        payload = amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray(values))
        self._send(m.CSID_DATA, m.DATA_AMF0, stream_id, 0, payload)

    def _on_command(
        self, stream_id: int, name: str, txn: float, obj: object, args: list, events: list[Event]
    ) -> None:
        if name in ("_result", "_error"):
            method = self._pending.pop(txn, None)
            info = _as_dict(args[0]) if args else {}
            if method == "connect":
                if name == "_result":
                    events.append(Connected(info))
                else:
                    events.append(
                        Status(
                            0,
                            "error",
                            str(info.get("code", "NetConnection.Connect.Failed")),
                            str(info.get("description", "")),
                        )
                    )
            elif method == "createStream":
                sid = _as_stream_id(args[0]) if args else None
                if name == "_result" and sid:
                    events.append(StreamCreated(sid))
                else:
                    events.append(
                        Status(0, "error", "NetConnection.Call.Failed", "createStream failed")
                    )
        elif name == "onStatus":
            info = _as_dict(args[0]) if args else {}
            events.append(
                Status(
                    stream_id,
                    str(info.get("level", "")),
                    str(info.get("code", "")),
                    str(info.get("description", "")),
                )
            )
        elif name in ("onBWDone", "onFCPublish", "onFCUnpublish", "_checkbw", "close"):
            if name == "close":
                events.append(Status(0, "status", "NetConnection.Connect.Closed", "server closed"))
        else:
            events.append(Command(stream_id, name, txn, args))
