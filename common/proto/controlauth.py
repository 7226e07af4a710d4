"""The control plane's authentication (sans-IO): a challenge-response handshake over the
shared `cluster_secret`, then every frame from the node MAC'd with a per-connection key.

    balancer -> node   hello    {auth: "hmac-sha256", challenge: 32 fresh random bytes}
                                (auth: "none" when the balancer has no secret: open, as before)
    node -> balancer   auth     {node, nonce: 32 fresh random bytes, mac}
    balancer -> node   welcome  {mac}   or   refused {reason}, and the connection closes
    node -> balancer   records: a wire frame, then HMAC(session key, sequence number | frame)

Each MAC is HMAC-SHA256 keyed with the secret over a label (domain separation: the auth, the
welcome and the session key never sign the same bytes) and the length-prefixed challenge,
nonce and node id. The challenge is new on every connection, so captured handshake bytes
replayed on another connection fail; the welcome proves the balancer holds the secret too;
the sequence number in each record's MAC refuses a record replayed, dropped, reordered or
injected into the TCP stream; every message must name the node that authenticated.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import Enum, StrEnum
from typing import Any

from common.proto.control import (
    MAX_FRAME,
    ControlDecoder,
    ControlError,
    ControlMessage,
    Rejection,
    check_node_id,
)
from common.proto.streamkey import shown
from common.proto.wire import Decoder, WireError, encode

DOMAIN = b"livecdn-control-v1"
NONCE_BYTES = 32
TAG_BYTES = 32
MIN_SECRET = 16
MAX_REASON = 200  # characters of a refusal's reason
HANDSHAKE_FRAME = 1024
"""The largest frame read before the node authenticated (hello, auth, welcome, refused)."""


class AuthMode(StrEnum):
    """What a balancer's hello asks for."""

    NONE = "none"  # no cluster_secret: plain frames, anyone may report
    HMAC = "hmac-sha256"


class AuthError(ControlError):
    """A failed handshake, a record with a wrong MAC, or a message for another node."""

    def __init__(self, reason: str, code: StrEnum = Rejection.AUTH) -> None:
        super().__init__(reason, code)


def check_secret(secret: str) -> str:
    """`secret` if it is long enough to stand an offline guess from a captured handshake."""
    if len(secret) < MIN_SECRET:
        raise ValueError(
            f"must be at least {MIN_SECRET} characters (e.g. python -c "
            "'import secrets; print(secrets.token_urlsafe(24))')"
        )
    return secret


def _mac(key: bytes, label: bytes, *parts: bytes) -> bytes:
    h = hmac.new(key, DOMAIN + b"/" + label + b"\0", hashlib.sha256)
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def _proofs(secret: bytes, challenge: bytes, nonce: bytes, node: str) -> tuple[bytes, ...]:
    """The node's auth MAC, the balancer's welcome MAC and the session key."""
    parts = (challenge, nonce, node.encode())
    return tuple(_mac(secret, label, *parts) for label in (b"auth", b"welcome", b"session"))


def _record_tag(key: bytes, seq: int, frame: bytes | memoryview) -> bytes:
    return _mac(key, b"frame", seq.to_bytes(8, "big"), bytes(frame))


def refusal(reason: str) -> bytes:
    """The frame a balancer sends before closing a connection it refused."""
    return encode({"type": "refused", "reason": reason[:MAX_REASON]})


def _take(buf: bytearray, max_frame: int, trailer: int = 0) -> bytes | None:
    """Remove one complete frame (and `trailer` bytes after it) from `buf`, or None."""
    if len(buf) < 4:
        return None
    size = int.from_bytes(buf[:4], "big")
    if size > max_frame:
        raise WireError(f"control frame of {size} bytes exceeds {max_frame}")
    end = 4 + size + trailer
    if len(buf) < end:
        return None
    record = bytes(buf[:end])
    del buf[:end]
    return record


def _one_map(frame: bytes) -> dict[str, Any]:
    (raw,) = Decoder(HANDSHAKE_FRAME).feed(frame)
    return raw


def _field(raw: dict[str, Any], key: str, size: int) -> bytes:
    value = raw.get(key)
    if not isinstance(value, bytes) or len(value) != size:
        raise AuthError(f"{raw['type']} without a {size}-byte {key!r}")
    return value


class ServerSession:
    """The balancer's side of one control connection: `hello()` to send first, then bytes
    in, validated messages out (`feed`), replies to send (`take_outgoing`). With a secret,
    the first frame must be a valid auth; each later record must carry its MAC and name
    the authenticated node (AuthError otherwise). Without one, plain frames, as before."""

    def __init__(self, secret: str, challenge: bytes, max_frame: int = MAX_FRAME) -> None:
        self._secret = secret.encode()
        self.challenge = challenge
        self.max_frame = max_frame
        self.node: str | None = None
        """The node that authenticated (None before, and always without a secret)."""
        self._messages = ControlDecoder(max_frame)
        self._buf = bytearray()
        self._out = bytearray()
        self._key = b""
        self._seq = 0

    @property
    def required(self) -> bool:
        """True if nodes must authenticate."""
        return bool(self._secret)

    def hello(self) -> bytes:
        """The first frame on the connection."""
        if not self.required:
            return encode({"type": "hello", "auth": AuthMode.NONE.value})
        return encode({"type": "hello", "auth": AuthMode.HMAC.value, "challenge": self.challenge})

    def take_outgoing(self) -> bytes:
        """Bytes to send to the node now (the welcome), or b""."""
        out, self._out = bytes(self._out), bytearray()
        return out

    def feed(self, data: bytes) -> list[ControlMessage]:
        """Consume bytes; the complete, valid, authentic messages. ProtocolError (AuthError,
        ControlError, WireError) on anything else: the connection is then closed."""
        if not self.required:
            return self._messages.feed(data)
        buf = self._buf
        buf += data
        if self.node is None:
            frame = _take(buf, HANDSHAKE_FRAME)
            if frame is None:
                return []
            self._authenticate(_one_map(frame))
        out: list[ControlMessage] = []
        while (record := _take(buf, self.max_frame, TAG_BYTES)) is not None:
            frame = memoryview(record)[:-TAG_BYTES]
            if not hmac.compare_digest(
                record[-TAG_BYTES:], _record_tag(self._key, self._seq, frame)
            ):
                raise AuthError(
                    f"record {self._seq} has a wrong MAC (altered, replayed or injected)"
                )
            self._seq += 1
            for msg in self._messages.feed(bytes(frame)):
                if msg.node != self.node:
                    raise AuthError(
                        f"{self.node} sent a message for {msg.node}", Rejection.IMPERSONATION
                    )
                out.append(msg)
        return out

    def _authenticate(self, raw: dict[str, Any]) -> None:
        if raw["type"] != "auth":
            raise AuthError(
                f"expected an auth message, got {shown(raw['type'])}: "
                "the node has no cluster_secret?"
            )
        try:
            node = check_node_id(raw.get("node"))
        except ControlError as exc:
            raise AuthError(f"auth: {exc}") from None
        nonce, mac = _field(raw, "nonce", NONCE_BYTES), _field(raw, "mac", TAG_BYTES)
        expected, welcome, key = _proofs(self._secret, self.challenge, nonce, node)
        if not hmac.compare_digest(mac, expected):
            raise AuthError(f"node {node}: wrong cluster_secret (its auth MAC does not match)")
        self.node, self._key = node, key
        self._out += encode({"type": "welcome", "mac": welcome})


class _Stage(Enum):
    HELLO = "waiting for the hello"
    WELCOME = "waiting for the welcome"
    READY = "ready"


class ClientSession:
    """A node's side of one control connection: `feed` the balancer's bytes until `ready`
    (sending `take_outgoing()` as it appears), then `seal` each message. AuthError when
    the two sides disagree: one has a cluster_secret and the other none, or another one."""

    def __init__(self, secret: str, node: str, nonce: bytes) -> None:
        self._secret = secret.encode()
        self.node = check_node_id(node)
        self.nonce = nonce
        self._stage = _Stage.HELLO
        self._frames = Decoder(HANDSHAKE_FRAME)
        self._out = bytearray()
        self._welcome = b""
        self._key = b""
        self._seq = 0

    @property
    def ready(self) -> bool:
        """True once the handshake is over: messages may be sent."""
        return self._stage is _Stage.READY

    @property
    def authenticated(self) -> bool:
        """True if the balancer proved it holds the secret (records are MAC'd)."""
        return self.ready and bool(self._key)

    def take_outgoing(self) -> bytes:
        """Bytes to send to the balancer now (the auth), or b""."""
        out, self._out = bytes(self._out), bytearray()
        return out

    def feed(self, data: bytes) -> None:
        """Consume the balancer's bytes; AuthError if it refused, the secrets disagree or
        its frames are malformed."""
        try:
            frames = self._frames.feed(data)
        except WireError as exc:
            raise AuthError(f"a bad frame: {exc}") from None
        for raw in frames:
            if raw["type"] == "refused":
                reason = raw.get("reason")
                text = reason[:MAX_REASON] if isinstance(reason, str) else "?"
                raise AuthError(f"refused: {text if text.isprintable() else ascii(text)}")
            if self._stage is _Stage.HELLO:
                self._hello(raw)
            elif self._stage is _Stage.WELCOME:
                if raw["type"] != "welcome" or not hmac.compare_digest(
                    _field(raw, "mac", TAG_BYTES), self._welcome
                ):
                    raise AuthError("its welcome does not prove the same cluster_secret")
                self._stage = _Stage.READY

    def _hello(self, raw: dict[str, Any]) -> None:
        if raw["type"] != "hello":
            raise AuthError(f"expected a hello, got {shown(raw['type'])}")
        mode = raw.get("auth")
        if mode == AuthMode.NONE:
            if self._secret:
                raise AuthError(
                    "it has no cluster_secret (its control plane is open); not sending "
                    "unauthenticated reports: give it the same cluster_secret"
                )
            self._stage = _Stage.READY
        elif mode == AuthMode.HMAC:
            if not self._secret:
                raise AuthError("it requires a cluster_secret: set the same one on this node")
            challenge = _field(raw, "challenge", NONCE_BYTES)
            mac, self._welcome, key = _proofs(self._secret, challenge, self.nonce, self.node)
            self._out += encode(
                {"type": "auth", "node": self.node, "nonce": self.nonce, "mac": mac}
            )
            self._key = key
            self._stage = _Stage.WELCOME
        else:
            raise AuthError(f"unknown auth mode {shown(str(mode))} in its hello")

    def seal(self, msg: dict[str, Any]) -> bytes:
        """One message as it goes on the wire: its frame, and the frame's MAC once
        authenticated."""
        if not self.ready:
            raise RuntimeError(f"sealing a message while {self._stage.value}")
        frame = encode(msg)
        if not self._key:
            return frame
        tag = _record_tag(self._key, self._seq, frame)
        self._seq += 1
        return frame + tag
