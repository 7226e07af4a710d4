"""The sans-IO HTTP/1.1 request parser and response heads."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ProtocolError
from common.http1 import HttpError, RequestParser, response_head

GET = b"GET /live/a.m3u8?x=1 HTTP/1.1\r\nHost: e\r\nUser-Agent: t\r\n\r\n"


def test_get_then_pipelined_post_in_pieces() -> None:
    p = RequestParser()
    data = GET + b"POST /api HTTP/1.1\r\nHost: e\r\nContent-Length: 5\r\n\r\nhello"
    got = []
    for i in range(len(data)):
        p.feed(data[i : i + 1])
        while (r := p.next_request()) is not None:
            got.append(r)
    (h1, b1), (h2, b2) = got
    assert (h1.method, h1.target, h1.http11, h1.keep_alive, b1) == (
        "GET",
        "/live/a.m3u8?x=1",
        True,
        True,
        b"",
    )
    assert h1.headers["user-agent"] == "t"
    assert (h2.method, b2) == ("POST", b"hello")


@pytest.mark.parametrize(
    ("raw", "keep"),
    [
        (b"GET / HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True),
    ],
)
def test_keep_alive_rules(raw: bytes, keep: bool) -> None:
    p = RequestParser()
    p.feed(raw)
    head, _ = p.next_request()
    assert head.keep_alive is keep


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: e\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: e\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: e\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: e\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: e\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: e\r\nX: \x00\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: e\r\nContent-Length: \xb2\r\n\r\n", 400),
    ],
)
def test_bad_requests_get_a_status(raw: bytes, status: int) -> None:
    p = RequestParser()
    p.feed(raw)
    with pytest.raises(HttpError) as err:
        p.next_request()
    assert err.value.status == status


def test_oversized_head_is_refused_before_it_ends() -> None:
    p = RequestParser(max_header_bytes=1024)
    p.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000)
    with pytest.raises(HttpError) as err:
        p.next_request()
    assert err.value.status == 431


def test_truncated_request_at_eof() -> None:
    p = RequestParser()
    p.feed(b"GET / HTTP/1.1\r\nHost")
    assert p.next_request() is None
    p.feed(b"")
    with pytest.raises(HttpError):
        p.next_request()


def test_response_head_parses_with_h11() -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "e")]))
    client.send(h11.EndOfMessage())
    head = response_head(200, [("content-type", "video/mp2t")], content_length=3, close=False)
    client.receive_data(head + b"abc")
    resp = client.next_event()
    assert resp.status_code == 200 and resp.reason == b"OK"
    assert (b"content-type", b"video/mp2t") in resp.headers
    assert client.next_event().data == b"abc"
    chunked = response_head(404, [], content_length=None, close=True)
    assert chunked.startswith(b"HTTP/1.1 404 Not Found\r\n") and chunked.endswith(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in chunked and b"connection: close" in chunked


@settings(max_examples=300)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_random_bytes_only_raise_protocol_errors(data: bytes, step: int) -> None:
    p = RequestParser(max_header_bytes=256, max_body_bytes=64)
    try:
        for i in range(0, len(data), step):
            p.feed(data[i : i + step])
            while p.next_request() is not None:
                pass
    except ProtocolError:
        pass


@settings(max_examples=300)
@given(st.data())
def test_mutated_requests_only_raise_protocol_errors(data: st.DataObject) -> None:
    raw = bytearray(GET + b"POST /x HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\n\r\nabc")
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    p = RequestParser()
    try:
        p.feed(bytes(raw))
        p.feed(b"")
        while p.next_request() is not None:
            pass
    except ProtocolError:
        pass
