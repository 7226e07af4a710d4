"""Sans-IO RTMP handshake (C0/C1/C2 and S0/S1/S2), in both the plain and the digest form.

The plain form is the one in Adobe's RTMP specification: every packet after the one-byte
version is 1536 bytes (time, four zero bytes, random), and each side echoes the other's.

The digest ("complex") form is the Flash-era scheme used by Flash Player, FMS, librtmp, ffmpeg,
nginx-rtmp and SRS: C1/S1 carry an HMAC-SHA256 digest of the rest of the packet at a position
derived from four bytes of the packet (schema 0 or 1), keyed with the first 30 bytes of the
Flash Player key (C1) or the first 36 bytes of the Media Server key (S1). C2/S2 end with an
HMAC-SHA256 of their first 1504 bytes, keyed with HMAC-SHA256(full peer-side key, peer digest).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable

from common.proto.errors import ProtocolError

__all__ = ["HANDSHAKE_SIZE", "ClientHandshake", "HandshakeError", "ServerHandshake"]

HANDSHAKE_SIZE = 1536
RTMP_VERSION = 3

_DIGEST_SIZE = 32
_SIGNED_SIZE = HANDSHAKE_SIZE - _DIGEST_SIZE  # C2/S2: signed random part, then the signature

_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
_FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL  # 62 bytes
_FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL  # 68 bytes
_FP_KEY_PART = _FP_KEY[:30]
_FMS_KEY_PART = _FMS_KEY[:36]

_SERVER_VERSION = bytes((0x0D, 0x0E, 0x0A, 0x0D))  # what nginx-rtmp announces
_CLIENT_VERSION = bytes((0x80, 0x00, 0x07, 0x02))

# Schema -> offset of the four bytes whose sum locates the digest.
_SCHEMA_OFFSETS = {0: 8, 1: 772}


class HandshakeError(ProtocolError):
    """The peer's handshake is malformed (e.g. an unsupported RTMP version)."""


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _digest_pos(packet: bytes | bytearray, schema: int) -> int:
    off = _SCHEMA_OFFSETS[schema]
    return sum(packet[off : off + 4]) % 728 + off + 4


def _packet_digest(packet: bytes | bytearray, pos: int, key: bytes) -> bytes:
    """HMAC of a C1/S1 packet with the 32 digest bytes at ``pos`` left out."""
    return _hmac(key, bytes(packet[:pos]) + bytes(packet[pos + _DIGEST_SIZE :]))


def _imprint_digest(packet: bytearray, schema: int, key: bytes) -> bytes:
    """Write the digest into ``packet`` (in place) and return it."""
    pos = _digest_pos(packet, schema)
    digest = _packet_digest(packet, pos, key)
    packet[pos : pos + _DIGEST_SIZE] = digest
    return digest


def _find_digest(packet: bytes | bytearray, key: bytes) -> tuple[int, bytes] | None:
    """Return ``(schema, digest)`` if ``packet`` carries a valid digest under either schema."""
    for schema in (0, 1):
        pos = _digest_pos(packet, schema)
        found = bytes(packet[pos : pos + _DIGEST_SIZE])
        if hmac.compare_digest(found, _packet_digest(packet, pos, key)):
            return schema, found
    return None


def _signed_response(random: bytes, full_key: bytes, peer_digest: bytes) -> bytes:
    """C2/S2 of the digest form: random(1504) + HMAC(HMAC(full_key, peer_digest), random)."""
    return random + _hmac(_hmac(full_key, peer_digest), random)


def _random(random_bytes: Callable[[int], bytes], n: int) -> bytes:
    data = random_bytes(n)
    if len(data) != n:
        raise ValueError(f"random_bytes({n}) returned {len(data)} bytes")
    return data


def _check_version(version: int, what: str) -> None:
    if version == RTMP_VERSION:
        return
    if version == 6:
        raise HandshakeError(f"{what} asks for RTMPE (version 6), which is not supported")
    raise HandshakeError(f"{what} has unsupported RTMP version {version} (expected 3)")


class _Handshake:
    """Shared buffering: version byte, two 1536-byte packets, then leftover bytes."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._outgoing = bytearray()
        self._error: HandshakeError | None = None
        self._stage = 0  # 0: version byte, 1: peer's first packet, 2: peer's second packet
        self.complete = False

    def _expected(self) -> int:
        return 1 if self._stage == 0 else HANDSHAKE_SIZE

    def _handle(self, chunk: bytes) -> None:
        raise NotImplementedError

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer (any split); raises HandshakeError on bad input.

        Bytes after the end of the handshake (including any fed once ``complete``) are kept
        for ``leftover()``; the caller should hand them to the chunk stream parser.
        """
        if self._error is not None:
            raise self._error
        self._buffer += data
        try:
            while not self.complete:
                need = self._expected()
                if len(self._buffer) < need:
                    break
                chunk = bytes(self._buffer[:need])
                del self._buffer[:need]
                self._handle(chunk)
        except HandshakeError as exc:
            self._error = exc
            self._buffer.clear()
            raise

    def data_to_send(self) -> bytes:
        """Return and clear the bytes that should be sent to the peer."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def leftover(self) -> bytes:
        """Return and clear the bytes received after the handshake (b"" until complete)."""
        if not self.complete:
            return b""
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


class ServerHandshake(_Handshake):
    """Server side: reads C0+C1, answers S0+S1+S2, then reads C2.

    ``digest`` tells whether C1 carried a valid Flash Player digest and was answered in the
    digest form; otherwise the plain form is used (S2 echoes C1).
    """

    def __init__(
        self, *, random_bytes: Callable[[int], bytes] = os.urandom, epoch_ms: int = 0
    ) -> None:
        super().__init__()
        self._random_bytes = random_bytes
        self._epoch = struct.pack(">I", epoch_ms & 0xFFFFFFFF)
        self.digest = False

    def _handle(self, chunk: bytes) -> None:
        if self._stage == 0:
            _check_version(chunk[0], "C0")
            self._stage = 1
        elif self._stage == 1:
            self._answer(chunk)
            self._stage = 2
        else:
            # C2 is not checked: real clients disagree on what it should contain.
            self.complete = True

    def _answer(self, c1: bytes) -> None:
        found = _find_digest(c1, _FP_KEY_PART) if any(c1[4:8]) else None
        if found is None:
            s1 = self._epoch + bytes(4) + _random(self._random_bytes, HANDSHAKE_SIZE - 8)
            s2 = c1
        else:
            schema, client_digest = found
            packet = bytearray(
                self._epoch + _SERVER_VERSION + _random(self._random_bytes, HANDSHAKE_SIZE - 8)
            )
            _imprint_digest(packet, schema, _FMS_KEY_PART)
            s1 = bytes(packet)
            s2 = _signed_response(
                _random(self._random_bytes, _SIGNED_SIZE), _FMS_KEY, client_digest
            )
            self.digest = True
        self._outgoing += bytes((RTMP_VERSION,)) + s1 + s2


class ClientHandshake(_Handshake):
    """Client side: queues C0+C1 at construction, reads S0+S1 (then queues C2) and S2.

    With ``digest=True`` C1 is sent in the digest form (schema 0). If S1 carries a valid
    Media Server digest, C2 is signed; otherwise C2 echoes S1.

    ``server_digest_valid`` is None until S2 is in, and stays None if the handshake was plain
    (we sent a plain C1, or S1's version field is zero). Otherwise it is True only if S1 had a
    valid digest and S2 the matching signature. It is informational: a bad value never fails.
    """

    def __init__(
        self,
        *,
        digest: bool = True,
        random_bytes: Callable[[int], bytes] = os.urandom,
        epoch_ms: int = 0,
    ) -> None:
        super().__init__()
        self._random_bytes = random_bytes
        self._client_digest: bytes | None = None
        self._s1_version = b""
        self._s1_digest_ok = False
        self.digest = False  # True once a valid S1 digest was found and C2 was signed
        self.server_digest_valid: bool | None = None
        epoch = struct.pack(">I", epoch_ms & 0xFFFFFFFF)
        rand = _random(random_bytes, HANDSHAKE_SIZE - 8)
        if digest:
            c1 = bytearray(epoch + _CLIENT_VERSION + rand)
            self._client_digest = _imprint_digest(c1, 0, _FP_KEY_PART)
        else:
            c1 = bytearray(epoch + bytes(4) + rand)
        self._outgoing += bytes((RTMP_VERSION,)) + c1

    def _handle(self, chunk: bytes) -> None:
        if self._stage == 0:
            _check_version(chunk[0], "S0")
            self._stage = 1
        elif self._stage == 1:
            self._answer(chunk)
            self._stage = 2
        else:
            if self._client_digest is not None and any(self._s1_version):
                expected = _signed_response(chunk[:_SIGNED_SIZE], _FMS_KEY, self._client_digest)
                self.server_digest_valid = self._s1_digest_ok and hmac.compare_digest(
                    expected, chunk
                )
            self.complete = True

    def _answer(self, s1: bytes) -> None:
        self._s1_version = s1[4:8]
        found = None
        if self._client_digest is not None and any(self._s1_version):
            found = _find_digest(s1, _FMS_KEY_PART)
        if found is None:
            c2 = s1
        else:
            _, server_digest = found
            self._s1_digest_ok = True
            self.digest = True
            c2 = _signed_response(_random(self._random_bytes, _SIGNED_SIZE), _FP_KEY, server_digest)
        self._outgoing += c2
