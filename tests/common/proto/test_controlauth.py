"""The control plane's handshake and MAC'd records: both sides in memory, every way to get it
wrong, and a fuzz of the balancer's side (nothing but ProtocolError, never authenticated
without the secret)."""

from __future__ import annotations

import hashlib
import hmac

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.proto.control import ControlError, Heartbeat, Rejection, StreamsAnnouncement
from common.proto.controlauth import (
    HANDSHAKE_FRAME,
    NONCE_BYTES,
    AuthError,
    ClientSession,
    ServerSession,
    check_secret,
)
from common.proto.errors import ProtocolError
from common.proto.wire import Decoder, WireError, encode

SECRET = "correct horse battery staple"
OTHER = "another secret of 16+ chars"


def nonce(n: int) -> bytes:
    return bytes([n]) * NONCE_BYTES


def heartbeat(node: str = "edge-1") -> dict:
    return Heartbeat(node=node, http="http://127.0.0.1:8081").to_wire()


def pair(
    server_secret: str = SECRET, client_secret: str = SECRET, node: str = "edge-1", n: int = 1
) -> tuple[ServerSession, ClientSession]:
    """A server and a client after the handshake (which raises AuthError if it fails)."""
    server = ServerSession(server_secret, nonce(100 + n))
    client = ClientSession(client_secret, node, nonce(n))
    client.feed(server.hello())
    assert server.feed(client.take_outgoing()) == []
    client.feed(server.take_outgoing())
    return server, client


def frames(data: bytes) -> list[dict]:
    return Decoder(HANDSHAKE_FRAME).feed(data)


def test_the_right_secret_authenticates_both_ways_and_binds_the_node() -> None:
    server, client = pair()
    assert client.ready and client.authenticated and server.node == "edge-1"
    sent = client.seal(heartbeat()) + client.seal(heartbeat())
    got = server.feed(sent)
    assert [m.node for m in got] == ["edge-1", "edge-1"]
    # byte by byte too
    one = client.seal(heartbeat())
    assert [m for b in one for m in server.feed(bytes([b]))] == [Heartbeat.from_wire(heartbeat())]


def test_no_secret_on_either_side_is_plain_frames_as_before() -> None:
    server, client = pair("", "")
    assert client.ready and not client.authenticated and server.node is None
    assert client.seal(heartbeat()) == encode(heartbeat())
    # a balancer without a secret takes anyone's frames, for any node
    assert len(server.feed(encode(heartbeat("a")) + encode(heartbeat("b")))) == 2


def test_a_node_without_the_secret_is_refused_and_says_why() -> None:
    server = ServerSession(SECRET, nonce(9))
    client = ClientSession("", "edge-1", nonce(1))
    with pytest.raises(AuthError, match="requires a cluster_secret"):
        client.feed(server.hello())
    # and a node that sends heartbeats straight away is refused by the balancer
    with pytest.raises(AuthError, match="expected an auth message") as info:
        server.feed(encode(heartbeat()))
    assert info.value.code is Rejection.AUTH


def test_a_node_with_a_secret_will_not_report_to_an_open_balancer() -> None:
    with pytest.raises(AuthError, match="has no cluster_secret"):
        pair("", SECRET)


def test_a_wrong_secret_is_refused_by_the_balancer() -> None:
    server = ServerSession(SECRET, nonce(9))
    client = ClientSession(OTHER, "edge-1", nonce(1))
    client.feed(server.hello())
    with pytest.raises(AuthError, match="wrong cluster_secret") as info:
        server.feed(client.take_outgoing())
    assert info.value.code is Rejection.AUTH and server.node is None


def test_a_balancer_without_the_secret_cannot_fake_the_welcome() -> None:
    challenge = nonce(9)
    client = ClientSession(SECRET, "edge-1", nonce(1))
    client.feed(encode({"type": "hello", "auth": "hmac-sha256", "challenge": challenge}))
    client.take_outgoing()
    with pytest.raises(AuthError, match="welcome"):
        client.feed(encode({"type": "welcome", "mac": b"\0" * 32}))
    assert not client.ready


def test_a_refusal_reaches_the_node_with_its_reason() -> None:
    client = ClientSession(SECRET, "edge-1", nonce(1))
    with pytest.raises(AuthError, match="refused: edge table full"):
        client.feed(encode({"type": "refused", "reason": "edge table full"}))
    with pytest.raises(AuthError) as info:  # the balancer's text is not trusted either
        client.feed(encode({"type": "refused", "reason": "\x1b[2J" + "x" * 300}))
    assert str(info.value) == "refused: " + ascii("\x1b[2J" + "x" * 196)
    with pytest.raises(AuthError, match="a bad frame"):
        ClientSession(SECRET, "edge-1", nonce(1)).feed(b"\xff" * 8)


def test_a_captured_handshake_replayed_on_a_new_connection_fails() -> None:
    first = ServerSession(SECRET, nonce(10))
    client = ClientSession(SECRET, "edge-1", nonce(1))
    client.feed(first.hello())
    captured = client.take_outgoing()
    first.feed(captured)
    client.feed(first.take_outgoing())
    captured += client.seal(heartbeat())
    second = ServerSession(SECRET, nonce(11))  # a fresh challenge
    with pytest.raises(AuthError, match="wrong cluster_secret"):
        second.feed(captured)
    assert second.node is None


def test_records_replayed_dropped_altered_or_injected_are_refused() -> None:
    server, client = pair()
    first = client.seal(heartbeat())
    assert server.feed(first)
    with pytest.raises(AuthError, match="wrong MAC"):  # replayed
        server.feed(first)
    server, client = pair()
    client.seal(heartbeat())
    with pytest.raises(AuthError, match="wrong MAC"):  # the first one dropped
        server.feed(client.seal(heartbeat()))
    server, client = pair()
    record = bytearray(client.seal(heartbeat()))
    record[20] ^= 1
    with pytest.raises(AuthError, match="wrong MAC"):  # altered
        server.feed(bytes(record))
    server, _ = pair()
    with pytest.raises(AuthError, match="wrong MAC"):  # injected without the key
        server.feed(encode(heartbeat()) + b"\0" * 32)
    # records sealed for one connection mean nothing on another (another session key)
    server, _ = pair(n=1)
    _, client = pair(n=2)
    with pytest.raises(AuthError):
        server.feed(client.seal(heartbeat()))


def test_an_authenticated_node_cannot_speak_for_another() -> None:
    server, client = pair(node="edge-1")
    with pytest.raises(AuthError, match="edge-1 sent a message for edge-2") as info:
        server.feed(client.seal(heartbeat("edge-2")))
    assert info.value.code is Rejection.IMPERSONATION
    server, client = pair(node="origin")
    assert server.feed(client.seal(StreamsAnnouncement("origin").to_wire()))
    with pytest.raises(AuthError) as info:
        server.feed(client.seal(StreamsAnnouncement("origin-2").to_wire()))
    assert info.value.code is Rejection.IMPERSONATION


def test_invalid_content_in_an_authentic_record_is_a_control_error() -> None:
    server, client = pair()
    with pytest.raises(ControlError) as info:
        server.feed(client.seal(heartbeat() | {"viewers": -1}))
    assert info.value.code is Rejection.RANGE


def test_before_authenticating_a_peer_can_make_the_balancer_buffer_little() -> None:
    server = ServerSession(SECRET, nonce(9))
    with pytest.raises(WireError, match="exceeds 1024"):
        server.feed((HANDSHAKE_FRAME + 1).to_bytes(4, "big"))


def test_auth_fields_are_checked() -> None:
    def auth(**fields: object) -> bytes:
        msg = {"type": "auth", "node": "edge-1", "nonce": nonce(1), "mac": b"m" * 32}
        return encode({**msg, **fields})

    for bad, why in (
        (auth(node="bad node"), "auth: node id"),
        (auth(node=None), "auth: node must be a string"),
        (auth(nonce=b"short"), "32-byte 'nonce'"),
        (auth(mac="text"), "32-byte 'mac'"),
        (auth(), "wrong cluster_secret"),
    ):
        with pytest.raises(AuthError, match=why):
            ServerSession(SECRET, nonce(9)).feed(bad)


def test_the_macs_are_domain_separated_hmac_sha256() -> None:
    """The auth MAC, recomputed from the documented construction."""
    challenge, client_nonce = nonce(9), nonce(1)
    server = ServerSession(SECRET, challenge)
    client = ClientSession(SECRET, "edge-1", client_nonce)
    client.feed(server.hello())
    (sent,) = frames(client.take_outgoing())
    h = hmac.new(SECRET.encode(), b"livecdn-control-v1/auth\0", hashlib.sha256)
    for part in (challenge, client_nonce, b"edge-1"):
        h.update(len(part).to_bytes(4, "big") + part)
    assert sent["mac"] == h.digest() and sent["node"] == "edge-1"


def test_hello_and_unexpected_balancer_frames() -> None:
    (hello,) = frames(ServerSession(SECRET, nonce(9)).hello())
    assert hello["auth"] == "hmac-sha256" and hello["challenge"] == nonce(9)
    assert frames(ServerSession("", nonce(9)).hello())[0]["auth"] == "none"
    for bad, why in (
        ({"type": "welcome", "mac": b"x" * 32}, "expected a hello"),
        ({"type": "hello", "auth": "rot13"}, "unknown auth mode"),
        ({"type": "hello", "auth": "hmac-sha256", "challenge": b"x"}, "32-byte 'challenge'"),
    ):
        with pytest.raises(AuthError, match=why):
            ClientSession(SECRET, "edge-1", nonce(1)).feed(encode(bad))
    with pytest.raises(RuntimeError):
        ClientSession(SECRET, "edge-1", nonce(1)).seal(heartbeat())


def test_short_secrets_are_refused_by_the_config_check() -> None:
    assert check_secret(SECRET) == SECRET
    with pytest.raises(ValueError, match="at least 16"):
        check_secret("short")


def _frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=70),
    st.binary(min_size=30, max_size=34),
)
_auth_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["auth", "heartbeat", "hello", "x"]), "v": st.sampled_from([1, 2])},
    optional={"node": _values, "nonce": _values, "mac": _values},
)


@settings(max_examples=400, deadline=None)
@given(
    chunks=st.lists(
        st.one_of(st.binary(max_size=80), _auth_like.map(_frame)), min_size=1, max_size=6
    ),
    secret=st.sampled_from([SECRET, ""]),
)
def test_fuzz_the_balancer_side(chunks: list[bytes], secret: str) -> None:
    """Any bytes: only ProtocolError escapes, and nobody authenticates without the secret."""
    server = ServerSession(secret, nonce(9))
    for chunk in chunks:
        try:
            messages = server.feed(chunk)
        except ProtocolError:
            break
        assert server.node is None
        if secret:
            assert messages == []
