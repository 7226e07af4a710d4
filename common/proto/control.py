"""Typed control-plane messages: edges' heartbeats and origins' stream announcements.

Sans-IO. `common.proto.wire` frames msgpack maps; this module turns each map into a frozen,
validated message (`from_wire`) and back (`to_wire`). Anything a peer could get wrong (a
missing or mistyped field, NaN, a negative or absurd number, an oversized string or map, a
URL with a path or userinfo, a stream key outside the grammar) raises `ControlError` with
the reason and a `code` (a Rejection) for metrics; nothing else escapes `from_wire`. Messages
built in-process are validated the same way, so a bad one fails at the sender.

Unknown keys are ignored (a newer peer may send more); `ControlDecoder` also skips
messages of an unknown `type`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar

from common.proto.errors import ProtocolError
from common.proto.streamkey import StreamKey, StreamKeyError, check_part, shown
from common.proto.wire import Decoder, WireError, encode

MAX_NODE_ID = 64
MAX_STRING = 256
MAX_STREAMS = 1000
MAX_COUNT = 10**9  # viewers on one node or of one stream
MAX_RATE = 1e15  # bits/s: a petabit is no real edge
MAX_WEIGHT = 1e6
MAX_TIME = 1e11  # Unix seconds (year ~5138)
MAX_FRAME = 384 * 1024  # the largest valid message (1000 streams of longest keys) is ~310 KB

_NODE_ID = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_NODE_ID}}}")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]{2,45}\]")
_PORT = re.compile(r"[0-9]{1,5}")


class Rejection(StrEnum):
    """The rule an invalid control message broke: a `control_rejected_total{reason}` label."""

    INVALID = "invalid"  # none more precise (a bug while validating)
    TYPE = "type"
    SIZE = "size"
    SYNTAX = "syntax"
    RANGE = "range"
    MISSING = "missing"
    UNKNOWN_TYPE = "unknown_type"
    FRAME = "frame"  # the framing: an oversized frame, bad msgpack, a wrong version
    CONNECTION_LIMIT = "connection_limit"  # the accept loop: too many control connections
    AUTH = "auth"  # no, wrong or replayed credentials; a record whose MAC fails
    IMPERSONATION = "impersonation"  # a message naming another node than the one authenticated


class ControlError(ProtocolError):
    """An invalid or refused control message; `code` names the rule it broke (a metrics
    label: a Rejection, or the receiver's own reason, such as the balancer's full tables)."""

    def __init__(self, reason: str, code: StrEnum = Rejection.INVALID) -> None:
        super().__init__(reason)
        self.code = code


def rejection(exc: ProtocolError) -> StrEnum:
    """The `control_rejected_total{reason}` label of an error from `ControlDecoder`."""
    if isinstance(exc, ControlError):
        return exc.code
    if isinstance(exc, WireError):
        return Rejection.FRAME
    return Rejection.INVALID


# ---------------------------------------------------------------------- field checks


def _text(value: object, what: str, *, limit: int = MAX_STRING) -> str:
    if not isinstance(value, str):
        raise ControlError(f"{what} must be a string, not {type(value).__name__}", Rejection.TYPE)
    if len(value) > limit:
        raise ControlError(f"{what} is longer than {limit} characters", Rejection.SIZE)
    if not value.isprintable():
        raise ControlError(f"{what} {shown(value)} has control characters", Rejection.SYNTAX)
    return value


def parse_address(address: str) -> tuple[str, int]:
    """A control endpoint 'host:port' -> (host, port); ValueError otherwise."""
    host, _, port = address.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
        raise ValueError(f"balancer address {address!r} is not host:port")
    return host.removeprefix("[").removesuffix("]"), int(port)


def check_node_id(value: object, what: str = "node") -> str:
    """`value` if it is a node id (1-64 of A-Z a-z 0-9 _ . : -), else ControlError."""
    if not isinstance(value, str):
        raise ControlError(f"{what} must be a string, not {type(value).__name__}", Rejection.TYPE)
    if len(value) > MAX_NODE_ID:
        raise ControlError(f"{what} id is longer than {MAX_NODE_ID} characters", Rejection.SIZE)
    if _NODE_ID.fullmatch(value) is None:
        raise ControlError(
            f"{what} id {shown(value)} is empty or has characters outside [A-Za-z0-9_.:-]",
            Rejection.SYNTAX,
        )
    return value


def _count(value: object, what: str, *, limit: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ControlError(f"{what} must be an integer, not {type(value).__name__}", Rejection.TYPE)
    if not 0 <= value <= limit:
        raise ControlError(f"{what} {value} is outside 0..{limit}", Rejection.RANGE)
    return value


def _number(value: object, what: str, *, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlError(f"{what} must be a number, not {type(value).__name__}", Rejection.TYPE)
    if isinstance(value, int) and abs(value) > limit:
        raise ControlError(f"{what} {value} is outside 0..{limit:g}", Rejection.RANGE)
    number = float(value)
    if not math.isfinite(number):
        raise ControlError(f"{what} is not finite ({number})", Rejection.RANGE)
    if not 0.0 <= number <= limit:
        raise ControlError(f"{what} {number:g} is outside 0..{limit:g}", Rejection.RANGE)
    return number


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ControlError(
            f"{what} must be true or false, not {type(value).__name__}", Rejection.TYPE
        )
    return value


def check_url(value: object, scheme: str, what: str) -> str:
    """`value` if it is a base URL `scheme://host:port` (ASCII, explicit port, no userinfo,
    path, query or fragment, a host that is not 0.0.0.0 or ::), else ControlError."""
    url = _text(value, what)
    prefix = scheme + "://"
    if not url.isascii():
        raise ControlError(f"{what} {shown(url)} is not ASCII", Rejection.SYNTAX)
    if not url.startswith(prefix):
        raise ControlError(f"{what} {shown(url)} is not a {prefix} URL", Rejection.SYNTAX)
    netloc = url[len(prefix) :]
    for bad, why in (("@", "userinfo"), ("/", "a path"), ("?", "a query"), ("#", "a fragment")):
        if bad in netloc:
            raise ControlError(
                f"{what} {shown(url)} has {why}; expected {prefix}host:port", Rejection.SYNTAX
            )
    if any(c.isspace() for c in netloc):
        raise ControlError(f"{what} {shown(url)} has whitespace", Rejection.SYNTAX)
    host, sep, port = netloc.rpartition(":")
    if not sep or _PORT.fullmatch(port) is None or not 1 <= int(port) <= 65535:
        raise ControlError(f"{what} {shown(url)} has no port in 1..65535", Rejection.SYNTAX)
    if _HOSTNAME.fullmatch(host) is None and _IPV6.fullmatch(host) is None:
        raise ControlError(f"{what} {shown(url)} has no valid host", Rejection.SYNTAX)
    if _unspecified(host):
        raise ControlError(
            f"{what} {shown(url)} names no host (an unspecified address)", Rejection.SYNTAX
        )
    return url


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_unspecified
    except ValueError:
        return False


def check_stream_key(value: object, what: str = "stream") -> str:
    """`value` if it is 'app/name' with both parts in the stream-key grammar."""
    if not isinstance(value, str):
        raise ControlError(
            f"{what} key must be a string, not {type(value).__name__}", Rejection.TYPE
        )
    try:
        StreamKey.from_text(value)
    except StreamKeyError as exc:
        raise ControlError(f"{what} key: {exc}", Rejection.SYNTAX) from None
    return value


def _stream_part(value: object, what: str) -> str:
    try:
        return check_part(value, what)
    except StreamKeyError as exc:
        raise ControlError(f"stream {exc}", Rejection.SYNTAX) from None


def _fields(raw: object, kind: str) -> Mapping[Any, Any]:
    if not isinstance(raw, Mapping):
        raise ControlError(f"{kind} must be a map, not {type(raw).__name__}", Rejection.TYPE)
    return raw


# ---------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Heartbeat:
    """An edge's load, sent every second: who it is, where viewers reach it, how busy it is,
    the streams it holds ("app/name" -> viewers) and what it can take."""

    TYPE: ClassVar[str] = "heartbeat"

    node: str
    http: str
    rtmp: str = ""
    viewers: int = 0
    egress_bps: float = 0.0
    streams: Mapping[str, int] = field(default_factory=dict)
    capacity_viewers: int = 0  # 0 = unlimited
    capacity_bps: float = 0.0  # 0 = unlimited
    weight: float = 1.0
    region: str = ""
    draining: bool = False
    https: str = ""
    """The edge's TLS listeners ("": none); viewers who came over TLS are sent there."""
    rtmps: str = ""

    def __post_init__(self) -> None:
        check_node_id(self.node)
        check_url(self.http, "http", "http URL")
        for scheme in ("rtmp", "https", "rtmps"):
            if getattr(self, scheme) != "":
                check_url(getattr(self, scheme), scheme, f"{scheme} URL")
        _count(self.viewers, "viewers")
        _count(self.capacity_viewers, "capacity_viewers")
        for name in ("egress_bps", "capacity_bps"):
            object.__setattr__(self, name, _number(getattr(self, name), name, limit=MAX_RATE))
        object.__setattr__(self, "weight", _number(self.weight, "weight", limit=MAX_WEIGHT))
        _text(self.region, "region")
        _flag(self.draining, "draining")
        streams = _fields(self.streams, "streams")
        if len(streams) > MAX_STREAMS:
            raise ControlError(f"{len(streams)} streams exceed {MAX_STREAMS}", Rejection.SIZE)
        checked = {check_stream_key(k): _count(v, f"viewers of {k}") for k, v in streams.items()}
        object.__setattr__(self, "streams", MappingProxyType(checked))

    def to_wire(self) -> dict[str, Any]:
        """The msgpack map (without `v`, which `wire.encode` adds)."""
        return {
            "type": self.TYPE,
            "node": self.node,
            "http": self.http,
            "rtmp": self.rtmp,
            "viewers": self.viewers,
            "egress_bps": self.egress_bps,
            "streams": dict(self.streams),
            "capacity_viewers": self.capacity_viewers,
            "capacity_bps": self.capacity_bps,
            "weight": self.weight,
            "region": self.region,
            "draining": self.draining,
            **{k: getattr(self, k) for k in ("https", "rtmps") if getattr(self, k)},
        }

    @classmethod
    def from_wire(cls, raw: object) -> Heartbeat:
        """Validate a decoded map; ControlError with the reason otherwise."""
        d = _fields(raw, "heartbeat")
        for key in ("node", "http"):
            if key not in d:
                raise ControlError(f"heartbeat without {key!r}", Rejection.MISSING)
        kwargs = {k: d[k] for k in _HEARTBEAT_KEYS if k in d}
        streams = kwargs.get("streams")
        if streams is not None and not isinstance(streams, dict):
            raise ControlError(
                f"streams must be a map, not {type(streams).__name__}", Rejection.TYPE
            )
        return cls(**kwargs)


_HEARTBEAT_KEYS = (
    "node",
    "http",
    "rtmp",
    "viewers",
    "egress_bps",
    "streams",
    "capacity_viewers",
    "capacity_bps",
    "weight",
    "region",
    "draining",
    "https",
    "rtmps",
)


@dataclass(frozen=True)
class StreamInfo:
    """One live stream at an origin: its key, measured bitrate (bits/s), viewers there and
    when its publisher started (Unix time, None if unknown)."""

    app: str
    name: str
    bitrate: float = 0.0
    viewers: int = 0
    since: float | None = None

    def __post_init__(self) -> None:
        _stream_part(self.app, "app")
        _stream_part(self.name, "name")
        object.__setattr__(self, "bitrate", _number(self.bitrate, "bitrate", limit=MAX_RATE))
        _count(self.viewers, "viewers")
        if self.since is not None:
            object.__setattr__(self, "since", _number(self.since, "since", limit=MAX_TIME))

    @property
    def key(self) -> str:
        """'app/name'."""
        return f"{self.app}/{self.name}"

    def to_wire(self) -> dict[str, Any]:
        """The msgpack map of one stream."""
        return {
            "app": self.app,
            "name": self.name,
            "bitrate": self.bitrate,
            "viewers": self.viewers,
            "since": self.since,
        }

    @classmethod
    def from_wire(cls, raw: object) -> StreamInfo:
        """Validate one decoded stream map; ControlError otherwise."""
        d = _fields(raw, "stream")
        for key in ("app", "name"):
            if key not in d:
                raise ControlError(f"stream without {key!r}", Rejection.MISSING)
        return cls(**{k: d[k] for k in ("app", "name", "bitrate", "viewers", "since") if k in d})


@dataclass(frozen=True)
class StreamsAnnouncement:
    """An origin's live streams, sent every second (an empty list: none live)."""

    TYPE: ClassVar[str] = "streams"

    node: str
    streams: tuple[StreamInfo, ...] = ()

    def __post_init__(self) -> None:
        check_node_id(self.node)
        if not isinstance(self.streams, Iterable) or isinstance(self.streams, str | bytes):
            raise ControlError("streams must be a list", Rejection.TYPE)
        streams = tuple(self.streams)
        if len(streams) > MAX_STREAMS:
            raise ControlError(f"{len(streams)} streams exceed {MAX_STREAMS}", Rejection.SIZE)
        for s in streams:
            if not isinstance(s, StreamInfo):
                raise ControlError(f"streams holds a {type(s).__name__}", Rejection.TYPE)
        object.__setattr__(self, "streams", streams)

    def to_wire(self) -> dict[str, Any]:
        """The msgpack map (without `v`)."""
        return {
            "type": self.TYPE,
            "node": self.node,
            "streams": [s.to_wire() for s in self.streams],
        }

    @classmethod
    def from_wire(cls, raw: object) -> StreamsAnnouncement:
        """Validate a decoded map; ControlError with the reason otherwise."""
        d = _fields(raw, "announcement")
        if "node" not in d:
            raise ControlError("announcement without 'node'", Rejection.MISSING)
        streams = d.get("streams", [])
        if not isinstance(streams, list):
            raise ControlError(
                f"streams must be a list, not {type(streams).__name__}", Rejection.TYPE
            )
        if len(streams) > MAX_STREAMS:
            raise ControlError(f"{len(streams)} streams exceed {MAX_STREAMS}", Rejection.SIZE)
        return cls(check_node_id(d["node"]), tuple(StreamInfo.from_wire(s) for s in streams))


ControlMessage = Heartbeat | StreamsAnnouncement

MESSAGE_TYPES: dict[str, type[Heartbeat] | type[StreamsAnnouncement]] = {
    Heartbeat.TYPE: Heartbeat,
    StreamsAnnouncement.TYPE: StreamsAnnouncement,
}


class UnknownType(ControlError):
    """A well-formed map whose `type` this version does not know (skipped, not fatal)."""

    def __init__(self, type_: str) -> None:
        super().__init__(f"unknown control message type {shown(type_)}", Rejection.UNKNOWN_TYPE)


def from_wire(raw: object) -> ControlMessage:
    """A decoded map -> its typed message. ControlError (UnknownType for a `type` this
    version does not know) on anything invalid; no other exception escapes."""
    d = _fields(raw, "control message")
    kind = d.get("type")
    if not isinstance(kind, str):
        raise ControlError("control message without a string 'type'", Rejection.MISSING)
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise UnknownType(kind)
    try:
        return cls.from_wire(d)
    except ControlError:
        raise
    except Exception as exc:  # a bug here must still end only that peer's connection
        raise ControlError(f"invalid {kind}: {exc!r}") from exc


def encode_message(msg: ControlMessage) -> bytes:
    """One framed message."""
    return encode(msg.to_wire())


class ControlDecoder:
    """Bytes in, typed messages out; messages of an unknown type are counted and skipped.
    Raises WireError (framing) or ControlError (content), both ProtocolError."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._frames = Decoder(max_frame)
        self.skipped = 0

    def feed(self, data: bytes) -> list[ControlMessage]:
        """Consume bytes; return the complete, valid messages."""
        out: list[ControlMessage] = []
        for raw in self._frames.feed(data):
            try:
                out.append(from_wire(raw))
            except UnknownType:
                self.skipped += 1
        return out
