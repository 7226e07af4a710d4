"""Every response of every node carries CORS headers (errors and redirects too, so fetch-based
players work through the balancer), and OPTIONS preflights are answered."""

from __future__ import annotations

import trio

from common.net.httpclient import fetch
from tests.balancer.test_balancer import start as start_balancer
from tests.conftest import start_origin

ORIGIN = [("origin", "https://page.example")]


async def test_origin_answers_allow_any_page_even_for_errors(nursery) -> None:
    _, address = await start_origin(nursery)
    base = f"http://127.0.0.1:{address.http_port}"
    for path, status in (("/healthz", 200), ("/live/none.flv", 404), ("/live/a%00.flv", 400),
                         ("/api/streams", 200), ("/nothing", 404)):  # fmt: skip
        got = await fetch("GET", base + path, headers=ORIGIN)
        assert got.status == status, path
        assert got.headers["access-control-allow-origin"] == "*", path


async def test_balancer_redirects_and_refusals_allow_any_page(nursery) -> None:
    _, base, _ = await start_balancer(nursery)
    got = await fetch("GET", f"{base}/live/x.flv", headers=ORIGIN)
    assert got.status in (302, 404, 503)
    assert got.headers["access-control-allow-origin"] == "*"


async def test_a_preflight_is_answered_and_the_connection_goes_on(nursery) -> None:
    _, address = await start_origin(nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", address.http_port)
    async with stream:
        await stream.send_all(
            b"OPTIONS /live/x.flv HTTP/1.1\r\nHost: x\r\nOrigin: null\r\n"
            b"Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: range\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: null\r\n\r\n"
        )
        data = b""
        with trio.fail_after(5):
            while data.count(b"HTTP/1.1 ") < 2 or not data.rstrip().endswith(b"}"):
                data += await stream.receive_some(65536)
    preflight, rest = data.split(b"\r\n\r\n", 1)
    assert preflight.startswith(b"HTTP/1.1 204 ")
    lines = preflight.lower().split(b"\r\n")
    assert b"access-control-allow-origin: *" in lines
    assert any(x.startswith(b"access-control-allow-headers:") and b"range" in x for x in lines)
    assert not any(x.startswith(b"content-length") for x in lines)
    assert rest.startswith(b"HTTP/1.1 200 ")


async def test_a_configured_list_allows_its_pages_and_redirected_ones(nursery) -> None:
    _, address = await start_origin(nursery, cors_origins=["https://page.example", "null"])
    url = f"http://127.0.0.1:{address.http_port}/healthz"
    for origin, want in (("https://page.example", "https://page.example"), ("null", "null"),
                         ("https://evil.example", None)):  # fmt: skip
        got = await fetch("GET", url, headers=[("origin", origin)])
        assert got.headers.get("access-control-allow-origin") == want, origin
        assert got.headers["vary"] == "origin"


async def test_an_allowed_page_is_told_why_its_bad_request_failed(nursery) -> None:
    _, address = await start_origin(nursery, cors_origins=["https://page.example"])
    stream = await trio.open_tcp_stream("127.0.0.1", address.http_port)
    async with stream:
        await stream.send_all(
            b"GET //[ HTTP/1.1\r\nHost: x\r\nOrigin: https://page.example\r\n\r\n"
        )
        with trio.fail_after(5):
            head = await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"access-control-allow-origin: https://page.example" in head.lower()
