"""A sibling's request on a worker's private port is judged as the request it forwards (the
admin rule sees that request's peer and headers): a loopback peer on a private port is a
sibling, never by itself an admin."""

from __future__ import annotations

from common.net.http import Request, Response
from common.serve.admin import is_admin
from common.serve.workerctx import SECRET_HEADER, WorkerContext
from common.serve.workermerge import auth_headers, private_route

CTX = WorkerContext(1, 2, [], -1, [40000, 40001], "s3cret")


def request(headers: dict[str, str], peer: str) -> Request:
    return Request("GET", "/api/relays", "/api/relays", {}, headers, b"", peer)


async def admin_on_sibling(original: Request | None) -> bool:
    """Whether worker 1's private port takes a sibling's forward of `original` (None: a
    request of no client, as a mirror's pull) as an admin's, with no admin_token."""
    seen: list[bool] = []

    async def local(req: Request) -> Response:
        seen.append(is_admin(req, ""))
        return Response.text(200, "ok")

    headers = {SECRET_HEADER: "s3cret", "host": "127.0.0.1:40001"}
    if original is not None:
        headers.update(dict(auth_headers(original)))
    sibling = request(headers, "127.0.0.1:5555")
    assert (await private_route(CTX, local)(sibling)).status == 200
    return seen[0]


async def test_a_forwarded_remote_request_is_no_admins_on_the_sibling() -> None:
    remote = request({"host": "192.0.2.2:8080"}, "192.0.2.7:4000")
    assert not await admin_on_sibling(remote)
    loopback_peer_remote_host = request({"host": "cdn.example:8080"}, "127.0.0.1:4000")
    assert not await admin_on_sibling(loopback_peer_remote_host)
    cross_site = request(
        {"host": "127.0.0.1:8080", "origin": "https://evil.example"}, "127.0.0.1:4000"
    )
    assert not await admin_on_sibling(cross_site)


async def test_a_forwarded_local_admin_request_stays_an_admins() -> None:
    local = request({"host": "127.0.0.1:8080"}, "127.0.0.1:4000")
    assert await admin_on_sibling(local)


async def test_a_siblings_own_request_is_no_admins() -> None:
    assert not await admin_on_sibling(None)


async def test_the_forwarded_peer_is_trusted_only_with_the_secret() -> None:
    async def local(req: Request) -> Response:
        raise AssertionError("served without the secret")

    forged = request({"x-livecdn-peer": "127.0.0.1:1", "host": "127.0.0.1"}, "192.0.2.7:4000")
    assert (await private_route(CTX, local)(forged)).status == 403
