"""The sans-IO HTTP/1.1 request parser and response heads."""

from __future__ import annotations

import contextlib

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.proto.errors import ProtocolError
from common.proto.http1 import ChunkedDecoder, HttpError, RequestParser, response_head

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


def chunked(pieces: list[bytes], trailer: bytes = b"") -> bytes:
    """A chunked body as h11 writes it."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.next_event()
    head = conn.send(h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
    out = b"".join(conn.send(h11.Data(data=p)) for p in pieces if p)
    end = conn.send(h11.EndOfMessage())
    if trailer:
        end = end[:-2] + trailer + b"\r\n"
    assert head.startswith(b"HTTP/1.1 200")
    return out + end


@given(
    pieces=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(0, 4000), max_size=10),
)
def test_chunked_body_comes_back_whole_however_it_is_split(pieces, cuts) -> None:
    raw = chunked(pieces, b"x-trailer: 1\r\n")
    bounds = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    decoder = ChunkedDecoder()
    got = b"".join(
        b"".join(decoder.feed(raw[a:b])) for a, b in zip(bounds, bounds[1:], strict=False)
    )
    assert got == b"".join(pieces) and decoder.done


def test_chunk_extensions_are_skipped_and_a_read_inside_a_chunk_is_not_copied() -> None:
    d = ChunkedDecoder()
    assert d.feed(b"a;name=value\r\n01234") == [b"01234"]
    data = b"56789"
    (out,) = d.feed(data)
    assert out is data
    assert d.feed(b"\r\n0\r\n\r\n") == [] and d.done


@pytest.mark.parametrize(
    "raw",
    [b"zz\r\n", b"-1\r\n", b"0x5\r\nhello\r\n", b"1_0\r\n", b"5\r\nhelloXX",
     b"0\r\n\r\nmore", b"1" * 5000],
)  # fmt: skip
def test_malformed_chunked_bodies_are_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ChunkedDecoder().feed(raw)


@given(st.binary(max_size=200))
def test_chunked_decoder_only_raises_protocol_errors(raw: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        ChunkedDecoder().feed(raw)


def test_identical_request_heads_are_parsed_once():
    from common.proto.http1 import RequestParser

    parser = RequestParser()
    raw = b"GET /live/a.m3u8 HTTP/1.1\r\nHost: x\r\nUser-Agent: p\r\n\r\n"
    parser.feed(raw * 2 + raw.replace(b"a.m3u8", b"b.m3u8"))
    first, second, other = (parser.next_request() for _ in range(3))
    assert first is not None and second is not None and other is not None
    assert first[0] is second[0]  # one parse, shared
    assert other[0].target == "/live/b.m3u8" and other[0] is not first[0]
    assert first[0].headers == {"host": "x", "user-agent": "p"}
