"""TLS over Conn (common/net/tls.py): real sockets, certificates made at test time."""

from __future__ import annotations

import logging
import os
from functools import partial

import pytest
import trio

from common.config import ConfigError, EdgeConfig, OriginConfig, build
from common.net.conn import Conn, accept_loop, listen_socket, open_connection
from common.net.tls import TlsConn, TlsError, client_context, connect, server_context, tls_handler
from tests.tlscerts import Certs


async def echo(conn: TlsConn) -> None:
    while data := await conn.recv():
        conn.write(data)
        await conn.drain()
    await conn.close_gracefully()


async def start_echo(nursery: trio.Nursery, cert: str, key: str, *, timeout: float = 10.0) -> int:
    """A TLS echo server on a free port; returns the port."""
    sock = listen_socket("127.0.0.1", 0)
    handler = tls_handler(echo, server_context(cert, key), timeout=timeout)
    nursery.start_soon(partial(accept_loop, sock, handler, max_connections=16))
    return sock.getsockname()[1]


async def read_until_closed(conn: Conn | TlsConn, timeout: float = 5.0) -> bytes:
    got = bytearray()
    with trio.fail_after(timeout):
        while data := await conn.recv():
            got += data
    return bytes(got)


async def test_verified_echo_with_non_awaiting_writes(nursery: trio.Nursery, tls_certs: Certs):
    port = await start_echo(nursery, tls_certs.cert, tls_certs.key)
    for host in ("127.0.0.1", "localhost"):
        conn = await connect(host, port, client_context(tls_certs.ca))
        assert isinstance(conn, TlsConn)
        payload = os.urandom(1 << 20)
        for i in range(0, len(payload), 10_000):  # as a fan-out writes: no await per write
            conn.write(payload[i : i + 10_000])
        conn.writev([b"end", b"s"])
        expected = payload + b"ends"
        got = bytearray()
        async with trio.open_nursery() as inner:
            inner.start_soon(conn.drain)
            with trio.fail_after(10):
                while len(got) < len(expected):
                    data = await conn.recv()
                    assert data, "closed early"
                    got += data
        assert bytes(got) == expected
        assert conn.bytes_out > len(expected)  # records on the wire: more than the plaintext
        conn.shutdown_write()  # close_notify: the echo ends and closes cleanly
        assert await read_until_closed(conn) == b""
        conn.close()


async def test_wrong_ca_and_wrong_name_are_refused(
    nursery: trio.Nursery, tls_certs: Certs, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, "livecdn.tls")
    port = await start_echo(nursery, tls_certs.cert, tls_certs.key)
    with pytest.raises(TlsError, match="certificate verify failed"):
        await connect("127.0.0.1", port, client_context(tls_certs.other_ca))
    wrong = await start_echo(nursery, tls_certs.wrong_name_cert, tls_certs.wrong_name_key)
    with pytest.raises(TlsError, match="certificate verify failed: .*mismatch"):
        await connect("127.0.0.1", wrong, client_context(tls_certs.ca))
    with trio.fail_after(5):
        while sum("TLS handshake with 127.0.0.1:" in r.message for r in caplog.records) < 2:
            await trio.sleep(0.01)  # the server's side: one line each, naming the peer
    conn = await connect("127.0.0.1", port, client_context(tls_certs.ca))
    conn.close()


@pytest.mark.parametrize(
    "garbage, reason",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "http request"),
        (b"\x03" + bytes(1536), "wrong version number"),
    ],
    ids=["http", "rtmp"],
)
async def test_plain_client_on_the_tls_port_ends_only_its_connection(
    nursery: trio.Nursery,
    tls_certs: Certs,
    caplog: pytest.LogCaptureFixture,
    garbage: bytes,
    reason: str,
):
    caplog.set_level(logging.INFO, "livecdn.tls")
    port = await start_echo(nursery, tls_certs.cert, tls_certs.key)
    survivor = await connect("127.0.0.1", port, client_context(tls_certs.ca))
    plain = await open_connection("127.0.0.1", port)
    await plain.send_all(garbage)
    await read_until_closed(plain)
    lines = [r.message for r in caplog.records if r.name == "livecdn.tls"]
    assert lines == [f"TLS handshake with {plain_peer(plain)} failed: {reason}"]
    await survivor.send_all(b"still here")
    assert await survivor.recv() == b"still here"
    survivor.close()


def plain_peer(conn: Conn) -> str:
    host, port = conn.sock.getsockname()[:2]
    return f"{host}:{port}"


async def test_a_silent_handshake_is_bounded(
    nursery: trio.Nursery, tls_certs: Certs, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, "livecdn.tls")
    port = await start_echo(nursery, tls_certs.cert, tls_certs.key, timeout=0.3)
    silent = await open_connection("127.0.0.1", port)
    assert await read_until_closed(silent) == b""
    assert any(
        r.message == f"TLS handshake with {plain_peer(silent)}: none within 0.3 s"
        for r in caplog.records
    )


def test_unusable_files_are_named(tls_certs: Certs, tmp_path):
    with pytest.raises(TlsError, match="cannot read tls_cert /nonexistent"):
        server_context("/nonexistent", tls_certs.key)
    with pytest.raises(TlsError, match="cannot use tls_cert .* with tls_key .*mismatch"):
        server_context(tls_certs.cert, tls_certs.wrong_name_key)
    with pytest.raises(TlsError, match="cannot read tls_ca"):
        client_context(str(tmp_path / "missing.pem"))


@pytest.mark.parametrize("model", [OriginConfig, EdgeConfig])
def test_cert_and_key_come_together(model, tls_certs: Certs):
    parents = {"parents": ["https://127.0.0.1:8443"]} if model is EdgeConfig else {}
    with pytest.raises(ConfigError, match="tls_cert and tls_key must be set together"):
        build(model, {"tls_cert": tls_certs.cert, **parents})
    build(model, {"tls_cert": tls_certs.cert, "tls_key": tls_certs.key, **parents})
