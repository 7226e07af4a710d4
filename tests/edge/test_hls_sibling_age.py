"""Worker 0 answers a sibling's HLS request with the object's Age, so worker i > 0 keeps it
only for what is left of its freshness; viewers get the shared answer, without Age."""

from __future__ import annotations

import trio

from common.config import EdgeConfig, build
from common.net.http import Request, SharedResponse
from common.net.httpclient import FetchResult
from common.serve.hlsviewers import HlsViewers
from common.serve.workerctx import SECRET_HEADER, WorkerContext
from common.serve.workermerge import private_route
from edge.hls import HlsProxy
from edge.objcache import ObjectCache
from edge.qos import Qos

CTX = WorkerContext(0, 2, [], -1, [40000, 40001], "s3cret")
PLAYLIST = "/live/a.m3u8"


async def test_a_siblings_answer_says_how_old_the_copy_is(autojump_clock, nursery) -> None:
    async def parent(path: str) -> FetchResult:
        headers = {"content-type": "application/vnd.apple.mpegurl", "cache-control": "max-age=4"}
        return FetchResult(200, headers, b"#EXTM3U\n")

    async def admit(play: object) -> None:
        return None

    config = build(EdgeConfig, {"parents": ["rtmp://127.0.0.1:1"]})
    hls = HlsProxy(
        ["http://127.0.0.1:1"],
        qos=Qos(config),
        viewers=HlsViewers(),
        refuse=lambda reason: None,
        admit=admit,
        refuse_play=lambda play, reason, exc: None,  # type: ignore[arg-type,return-value]
        on_slow=lambda: None,
        on_failover=lambda: None,
        cache_bytes=1 << 20,
        not_found_ttl=1.0,
        connect_timeout=1.0,
        slow_timeout=1.0,
    )
    hls.cache = ObjectCache(parent)
    await nursery.start(hls.cache.run)

    def request(headers: dict[str, str]) -> Request:
        return Request("GET", PLAYLIST, PLAYLIST, {}, headers, b"", "127.0.0.1:5555")

    viewer = await hls.handle(request({}))
    assert isinstance(viewer, SharedResponse) and "age" not in dict(viewer.headers)
    await trio.sleep(3)
    sibling = await private_route(CTX, hls.handle)(request({SECRET_HEADER: "s3cret"}))
    assert sibling.status == 200 and dict(sibling.headers)["age"] == "3"
