"""Hostile HTTP clients against every HTTP listener (origin, both edges, balancer): generated
requests (odd methods and versions, targets with spaces, non-ASCII, %-escapes, `..`, `?`,
`#`, header floods, bad Content-Length, chunked bodies, pipelining), and peers that reset
in the middle of large responses."""

from __future__ import annotations

import collections
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from hypothesis import example, given
from hypothesis import strategies as st

from tests.robustness.conftest import (
    Cluster,
    connect,
    read_for,
    reset,
    send_and_end,
    strict_json,
)
from tests.robustness.strategies import fuzz_settings, http_exchange

FUZZ = fuzz_settings(max_examples=150)


def _status_codes(data: bytes) -> list[int]:
    codes = []
    for line in data.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 ") and line[9:12].isdigit():
            codes.append(int(line[9:12]))
    return codes


def test_generated_http_requests(cluster: Cluster) -> None:
    """No request, alone or pipelined, may stop a node or get a 500."""
    since = time.monotonic()
    history: collections.deque = collections.deque(maxlen=3)
    internal: list[str] = []
    targets = cluster.http_targets()

    def attack(target, exchange) -> None:
        requests, ending = exchange
        history.append((target[0], ending, requests))
        read = 0 if ending == "reset" else 0.1
        data = send_and_end(target[1], b"".join(requests), ending, read=read, limit=256 * 1024)
        if 500 in _status_codes(data):
            internal.append(f"{target[0]}: {requests!r}"[:400])
        time.sleep(0.01)
        dead = cluster.alive()
        assert not dead, (
            f"{dead} stopped; the last inputs were (newest last):\n"
            + "\n".join(repr(h)[:2000] for h in history)
            + "\n\n"
            + "\n".join(str(cluster.node(n).error) for n in dead)
        )

    fuzz = given(target=st.sampled_from(targets), exchange=http_exchange)(attack)
    for target in targets:  # known killers first (targets urlsplit cannot parse)
        for line in (
            b"GET //[ HTTP/1.1",
            b"GET /live/x.flv?a=1 HTTP/1.1",
            b"GET //[::1]:x/ HTTP/1.1",
        ):
            fuzz = example(target=target, exchange=([line + b"\r\nHost: x\r\n\r\n"], "read"))(fuzz)
    FUZZ(fuzz)()
    cluster.check(since)
    assert not internal, "requests answered 500 internal error:\n" + "\n".join(internal[:20])


def _reset_after(port: int, request: bytes, nbytes: int, rcvbuf: int = 4096) -> int:
    """Send `request`, read about `nbytes` of the answer, then reset; bytes read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(0.5)
    sock.connect(("127.0.0.1", port))
    got = 0
    try:
        sock.sendall(request)
        while got < nbytes:
            data = sock.recv(min(4096, nbytes - got))
            if not data:
                break
            got += len(data)
    except OSError:
        pass
    finally:
        reset(sock)
    return got


def test_resets_in_the_middle_of_large_writes(cluster: Cluster) -> None:
    """Viewers that reset after a little of the FLV, HLS segments or pipelined /metrics and
    /api/streams answers; readers that stall with a tiny window, then reset."""
    since = time.monotonic()
    app, name = "live", "canary"
    flv = f"GET /{app}/{name}.flv HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    many = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        for path in ["/metrics", "/api/streams", "/api/edges", "/healthz"] * 40
    )
    ports = [port for _, port in cluster.http_targets()]

    def rounds(port: int) -> None:
        for round_ in range(6):
            _reset_after(port, flv, 1 + round_ * 3000)
            _reset_after(port, many, 1 + round_ * 5000)
            _reset_after(port, f"GET /{app}/{name}.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 10)

    with ThreadPoolExecutor(len(ports)) as pool:  # every node at once: each mostly waits
        list(pool.map(rounds, ports))
    # stalled readers: a tiny receive window, nothing read for a while, then a reset
    stalled = []
    for port in ports:
        for request in (flv, many):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect(("127.0.0.1", port))
            sock.sendall(request)
            stalled.append(sock)
    cluster.wait_frames(2.5)
    for sock in stalled:
        reset(sock)
    # HLS segments of the canary, reset after the first bytes
    for _, port in cluster.http_targets()[:3]:
        sock = connect(port)
        sock.sendall(
            f"GET /{app}/{name}.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        playlist = read_for(sock, 1.0)
        sock.close()
        for line in playlist.split(b"\n"):
            if line.endswith(b".ts"):
                seg = line.decode()
                path = seg if seg.startswith("/") else f"/{app}/{seg}"
                _reset_after(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 2000)
    cluster.wait_frames(1.0)
    cluster.check(since)
    for node, port in cluster.http_targets():
        status, body = _plain_get(port, "/api/streams" if node != "balancer" else "/api/edges")
        assert status == 200, f"{node}: {status}"
        strict_json(body)


def _plain_get(port: int, path: str) -> tuple[int, bytes]:
    from tests.robustness.conftest import http_get

    status, _, body = http_get(port, path)
    return status, body
