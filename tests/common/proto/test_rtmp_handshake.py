"""Tests for common.proto.rtmp.handshake: in-memory pairs, malformed input, and real ffmpeg."""

from __future__ import annotations

import hashlib
import hmac
import random
import shutil
import subprocess
from collections.abc import Callable

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from common.proto.errors import ProtocolError
from common.proto.rtmp.handshake import (
    HANDSHAKE_SIZE,
    ClientHandshake,
    HandshakeError,
    ServerHandshake,
)

# Independent copies of the well-known keys, so the tests cross-check the module.
KEY_TAIL = bytes.fromhex("F0EEC24A8068BEE82E00D0D1029E7E576EEC5D2D29806FAB93B8E636CFEB31AE")
FP_KEY = b"Genuine Adobe Flash Player 001" + KEY_TAIL
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + KEY_TAIL

CHUNK_AFTER = b"\x03\x00\x00\x00\x00\x00\x10\x14\x00\x00\x00\x00connect..."


def seeded_random(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return rng.randbytes


def digest_pos(packet: bytes, schema: int) -> int:
    off = 8 if schema == 0 else 772
    return sum(packet[off : off + 4]) % 728 + off + 4


def packet_hmac(packet: bytes, pos: int, key: bytes) -> bytes:
    return hmac.new(key, packet[:pos] + packet[pos + 32 :], hashlib.sha256).digest()


def make_c1(schema: int, seed: int = 1, version: bytes = b"\x09\x00\x7c\x02") -> bytes:
    """A digest-form C1 built independently of the module."""
    c1 = bytearray(bytes(4) + version + random.Random(seed).randbytes(HANDSHAKE_SIZE - 8))
    pos = digest_pos(bytes(c1), schema)
    c1[pos : pos + 32] = packet_hmac(bytes(c1), pos, FP_KEY[:30])
    return bytes(c1)


def pump(
    client: ClientHandshake,
    server: ServerHandshake,
    *,
    step: int,
    client_extra: bytes = b"",
    server_extra: bytes = b"",
) -> None:
    """Shuttle bytes between the two sides ``step`` bytes at a time until both complete."""
    c_extra, s_extra = client_extra, server_extra
    for _ in range(100_000):
        to_server = client.data_to_send()
        if client.complete and c_extra:
            to_server, c_extra = to_server + c_extra, b""
        to_client = server.data_to_send()
        if server.complete and s_extra:
            to_client, s_extra = to_client + s_extra, b""
        for i in range(0, len(to_server), step):
            server.receive_data(to_server[i : i + step])
        for i in range(0, len(to_client), step):
            client.receive_data(to_client[i : i + step])
        if client.complete and server.complete and not (to_server or to_client):
            return
    raise AssertionError("handshake did not finish")


# --- in-memory pairs -----------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 7, 1537, 100_000])
def test_digest_pair(step: int) -> None:
    client = ClientHandshake(random_bytes=seeded_random(1))
    server = ServerHandshake(random_bytes=seeded_random(2))
    pump(client, server, step=step, client_extra=CHUNK_AFTER, server_extra=b"\x02server")
    assert server.digest is True
    assert client.digest is True
    assert client.server_digest_valid is True
    assert server.leftover() == CHUNK_AFTER
    assert client.leftover() == b"\x02server"
    assert server.leftover() == b"" and client.leftover() == b""


@pytest.mark.parametrize("step", [1, 1000, 100_000])
def test_plain_pair(step: int) -> None:
    client = ClientHandshake(digest=False, random_bytes=seeded_random(3), epoch_ms=1234)
    c0c1 = client.data_to_send()
    assert c0c1[0] == 3 and len(c0c1) == 1 + HANDSHAKE_SIZE
    assert c0c1[1:5] == (1234).to_bytes(4, "big") and c0c1[5:9] == bytes(4)

    server = ServerHandshake(random_bytes=seeded_random(4), epoch_ms=99)
    for i in range(0, len(c0c1), step):
        server.receive_data(c0c1[i : i + step])
    out = server.data_to_send()
    assert len(out) == 1 + 2 * HANDSHAKE_SIZE
    s1, s2 = out[1 : 1 + HANDSHAKE_SIZE], out[1 + HANDSHAKE_SIZE :]
    assert out[0] == 3
    assert s1[:4] == (99).to_bytes(4, "big") and s1[4:8] == bytes(4)
    assert s2 == c0c1[1:]  # S2 echoes C1
    assert server.digest is False

    for i in range(0, len(out), step):
        client.receive_data(out[i : i + step])
    assert client.complete
    assert client.data_to_send() == s1  # C2 echoes S1
    assert client.server_digest_valid is None and client.digest is False
    server.receive_data(s1 + b"\x03rest")
    assert server.complete and server.leftover() == b"\x03rest"


@pytest.mark.parametrize("schema", [0, 1])
def test_server_answers_with_clients_schema(schema: int) -> None:
    c1 = make_c1(schema)
    server = ServerHandshake(random_bytes=seeded_random(5), epoch_ms=7)
    server.receive_data(b"\x03" + c1)
    assert server.digest is True
    out = server.data_to_send()
    s1, s2 = out[1 : 1 + HANDSHAKE_SIZE], out[1 + HANDSHAKE_SIZE :]
    assert s1[:4] == (7).to_bytes(4, "big") and s1[4] >= 3  # ffmpeg wants version byte >= 3
    pos = digest_pos(s1, schema)
    assert s1[pos : pos + 32] == packet_hmac(s1, pos, FMS_KEY[:36])

    client_digest = c1[digest_pos(c1, schema) :][:32]
    key = hmac.new(FMS_KEY, client_digest, hashlib.sha256).digest()
    assert s2[-32:] == hmac.new(key, s2[:-32], hashlib.sha256).digest()
    assert not server.complete
    server.receive_data(bytes(HANDSHAKE_SIZE))  # C2 content is not checked
    assert server.complete and server.leftover() == b""


def test_client_c1_and_signed_c2() -> None:
    client = ClientHandshake(random_bytes=seeded_random(6), epoch_ms=5)
    c1 = client.data_to_send()[1:]
    assert c1[:4] == (5).to_bytes(4, "big") and c1[4:8] == b"\x80\x00\x07\x02"
    pos = digest_pos(c1, 0)
    assert c1[pos : pos + 32] == packet_hmac(c1, pos, FP_KEY[:30])

    server = ServerHandshake(random_bytes=seeded_random(7))
    server.receive_data(b"\x03" + c1)
    out = server.data_to_send()
    s1 = out[1 : 1 + HANDSHAKE_SIZE]
    client.receive_data(out[: 1 + HANDSHAKE_SIZE])  # C2 is queued as soon as S1 is in
    assert not client.complete and client.server_digest_valid is None
    c2 = client.data_to_send()
    server_digest = s1[digest_pos(s1, 0) :][:32]
    key = hmac.new(FP_KEY, server_digest, hashlib.sha256).digest()
    assert c2[-32:] == hmac.new(key, c2[:-32], hashlib.sha256).digest()
    client.receive_data(out[1 + HANDSHAKE_SIZE :])
    assert client.complete and client.server_digest_valid is True


def test_client_detects_bad_s2_signature_but_completes() -> None:
    client = ClientHandshake(random_bytes=seeded_random(8))
    server = ServerHandshake(random_bytes=seeded_random(9))
    server.receive_data(client.data_to_send())
    out = bytearray(server.data_to_send())
    out[-1] ^= 0xFF
    client.receive_data(bytes(out))
    assert client.complete and client.digest is True
    assert client.server_digest_valid is False


def test_client_against_plain_server() -> None:
    client = ClientHandshake(random_bytes=seeded_random(10))
    client.data_to_send()
    s1 = bytes(8) + random.Random(11).randbytes(HANDSHAKE_SIZE - 8)
    s2 = random.Random(12).randbytes(HANDSHAKE_SIZE)
    client.receive_data(b"\x03" + s1 + s2 + b"\x02x")
    assert client.complete
    assert client.data_to_send() == s1
    assert client.digest is False and client.server_digest_valid is None
    assert client.leftover() == b"\x02x"


@pytest.mark.parametrize(
    "c1",
    [
        bytes(4) + b"\x09\x00\x7c\x02" + random.Random(13).randbytes(HANDSHAKE_SIZE - 8),
        bytes(8) + make_c1(0)[8:],  # a digest, but version zero means plain
        make_c1(0)[:-1] + b"\x00",  # digest broken by the last byte
    ],
    ids=["no-digest", "zero-version", "corrupt"],
)
def test_server_falls_back_to_plain(c1: bytes) -> None:
    server = ServerHandshake()
    server.receive_data(b"\x03" + c1)
    out = server.data_to_send()
    assert server.digest is False
    assert out[1 + 4 : 1 + 8] == bytes(4)
    assert out[1 + HANDSHAKE_SIZE :] == c1


def test_server_waits_for_full_c1_and_data_to_send_clears() -> None:
    server = ServerHandshake()
    server.receive_data(b"\x03" + make_c1(0)[:-1])
    assert server.data_to_send() == b""
    assert server.leftover() == b""  # not complete yet
    server.receive_data(make_c1(0)[-1:])
    assert len(server.data_to_send()) == 1 + 2 * HANDSHAKE_SIZE
    assert server.data_to_send() == b""


def test_buffer_is_bounded() -> None:
    server = ServerHandshake()
    for b in b"\x03" + make_c1(1) + bytes(HANDSHAKE_SIZE - 1):
        server.receive_data(bytes([b]))
        assert len(server._buffer) < HANDSHAKE_SIZE
    assert not server.complete


# --- malformed input -----------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 6, 0x10, 0xFF])
def test_bad_c0_version(version: int) -> None:
    server = ServerHandshake()
    with pytest.raises(HandshakeError, match="version"):
        server.receive_data(bytes([version]) + make_c1(0))
    assert isinstance(HandshakeError("x"), ProtocolError)
    assert server.data_to_send() == b""
    with pytest.raises(HandshakeError):  # sticky
        server.receive_data(b"\x03")


def test_bad_s0_version() -> None:
    client = ClientHandshake()
    with pytest.raises(HandshakeError, match="RTMPE"):
        client.receive_data(b"\x06")
    with pytest.raises(HandshakeError):
        client.receive_data(b"\x03")
    assert not client.complete


@st.composite
def chunked(draw: st.DrawFn) -> list[bytes]:
    first = draw(st.sampled_from([b"\x03", b"\x06", b""]))
    data = first + draw(st.binary(max_size=4000))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(max_examples=200, deadline=None)
@given(pieces=chunked())
def test_fuzz_server(pieces: list[bytes]) -> None:
    server = ServerHandshake()
    failed = False
    for piece in pieces:
        try:
            server.receive_data(piece)
        except HandshakeError:
            failed = True
        else:
            assert not failed, "accepted data after an error"
        server.data_to_send()
    if server.complete:
        server.leftover()


@settings(max_examples=200, deadline=None)
@given(pieces=chunked(), digest=st.booleans())
def test_fuzz_client(pieces: list[bytes], digest: bool) -> None:
    client = ClientHandshake(digest=digest)
    failed = False
    for piece in pieces:
        try:
            client.receive_data(piece)
        except HandshakeError:
            failed = True
        else:
            assert not failed, "accepted data after an error"
        client.data_to_send()
    if client.complete:
        assert client.server_digest_valid in (None, False)
        client.leftover()


# --- real ffmpeg ---------------------------------------------------------------------------

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed")
HANDSHAKE_FAILURES = (
    "Server response validating failed",
    "Signature mismatch",
    "Cannot read RTMP handshake response",
    "RTMP Handshake",
    "Erroneous",
)


async def run_ffmpeg(args: list[str], result: dict[str, str]) -> None:
    assert FFMPEG is not None
    proc = await trio.run_process(
        [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "debug", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        capture_stderr=True,
        check=False,
    )
    result["stderr"] = proc.stderr.decode(errors="replace")


async def serve_one(
    args_for_url: Callable[[str], list[str]],
    tamper: Callable[[bytearray], None] | None = None,
) -> tuple[ServerHandshake, bytes, str]:
    """Accept one ffmpeg connection, run our server handshake, and return what followed."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    result: dict[str, str] = {}
    server = ServerHandshake()
    following = b""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_ffmpeg, args_for_url(f"rtmp://127.0.0.1:{port}/live/x"), result)
            stream = await listener.accept()
            await listener.aclose()
            async with stream:
                while True:
                    data = await stream.receive_some()
                    if not data:
                        break
                    if not server.complete:
                        server.receive_data(data)
                        out = bytearray(server.data_to_send())
                        if out and tamper is not None:
                            tamper(out)
                        await stream.send_all(out)
                        if not server.complete:
                            continue
                        data = server.leftover()
                    following += data
                    if b"connect" in following or len(following) > 4096:
                        break
    return server, following, result["stderr"]


def publish_args(url: str) -> list[str]:
    return ["-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-t", "1", "-f", "flv", url]


def play_args(url: str) -> list[str]:
    return ["-i", url, "-f", "null", "-"]


def assert_connect_follows(following: bytes) -> None:
    # Basic header: fmt 0 (full message header), csid 3 (ffmpeg's system channel), then the
    # AMF0 "connect" command name.
    assert following[0] & 0xC0 == 0 and following[0] & 0x3F == 3
    assert following[7] == 0x14  # message type 20: AMF0 command
    assert b"\x02\x00\x07connect" in following


@pytest.mark.slow
@needs_ffmpeg
async def test_ffmpeg_publisher() -> None:
    server, following, stderr = await serve_one(publish_args)
    assert server.complete and server.digest is True
    assert_connect_follows(following)
    assert "Server version 13.14.10.13" in stderr
    for failure in HANDSHAKE_FAILURES:
        assert failure not in stderr


@pytest.mark.slow
@needs_ffmpeg
async def test_ffmpeg_player_validates_our_digest() -> None:
    # As a reader ffmpeg checks S1's digest and S2's signature before it sends C2.
    server, following, stderr = await serve_one(play_args)
    assert server.complete and server.digest is True
    assert_connect_follows(following)
    assert "Server version 13.14.10.13" in stderr
    for failure in HANDSHAKE_FAILURES:
        assert failure not in stderr


def _flip_s1(out: bytearray) -> None:
    out[1 + 700] ^= 0xFF


def _flip_s2(out: bytearray) -> None:
    out[-1] ^= 0xFF


@pytest.mark.slow
@needs_ffmpeg
@pytest.mark.parametrize(
    ("tamper", "message"),
    [(_flip_s1, "Server response validating failed"), (_flip_s2, "Signature mismatch")],
)
async def test_ffmpeg_player_rejects_tampered_answer(
    tamper: Callable[[bytearray], None], message: str
) -> None:
    # Control for the test above: ffmpeg really does check what we send.
    server, following, stderr = await serve_one(play_args, tamper)
    assert not server.complete and following == b""
    assert message in stderr


@pytest.mark.slow
@needs_ffmpeg
@pytest.mark.parametrize("digest", [True, False])
async def test_client_against_ffmpeg_listener(digest: bool, held_ports) -> None:
    # ffmpeg's own server does the plain handshake and warns if C2 does not echo S1.
    port = held_ports.take()
    url = f"rtmp://127.0.0.1:{port}/live/x"
    result: dict[str, str] = {}
    client = ClientHandshake(digest=digest)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_ffmpeg, ["-listen", "1", *play_args(url)], result)
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    break
                except OSError:
                    await trio.sleep(0.05)
            async with stream:
                await stream.send_all(client.data_to_send())
                while not client.complete:
                    data = await stream.receive_some()
                    assert data, "ffmpeg closed during the handshake"
                    client.receive_data(data)
                    await stream.send_all(client.data_to_send())
    assert client.digest is False and client.server_digest_valid is None
    stderr = result["stderr"]
    assert "Proto = rtmp" in stderr
    for failure in HANDSHAKE_FAILURES:
        assert failure not in stderr
