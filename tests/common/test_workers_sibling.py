"""Only the private port's connection task serves a sibling: a task it starts (a cache
fill, an upstream pull) is nobody's sibling request, though trio copies its context."""

from __future__ import annotations

import trio

from common.net.http import Request, Response
from common.serve.workerctx import SECRET_HEADER, WorkerContext
from common.serve.workermerge import is_sibling, private_route
from common.serve.workershls import not_for_siblings

CTX = WorkerContext(1, 2, [], -1, [40000, 40001], "s3cret")


async def test_a_task_started_by_a_siblings_request_is_no_sibling() -> None:
    seen: dict[str, object] = {}
    counted = not_for_siblings(lambda: "counted", "not counted")

    async def later() -> None:
        seen["spawned"] = is_sibling()
        seen["spawned counts"] = counted()

    async def local(req: Request) -> Response:
        seen["request"] = is_sibling()
        seen["request counts"] = counted()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
        return Response.text(200, "ok")

    assert not is_sibling()
    sibling = Request("GET", "/x", "/x", {}, {SECRET_HEADER: "s3cret"}, b"", "127.0.0.1:5555")
    assert (await private_route(CTX, local)(sibling)).status == 200
    assert seen == {
        "request": True,
        "request counts": "not counted",
        "spawned": False,
        "spawned counts": "counted",
    }
