"""A worker of an origin with `workers = N` answers HLS of a stream another worker owns with
the owner's objects: each asked of the owner about once per worker (a segment kept, a
playlist for a moment), the requests that come meanwhile waiting for that one fetch."""

from __future__ import annotations

from collections import OrderedDict

import trio

from origin.workers import OBJECTS_KEPT, PLAYLIST_FRESH, OriginWorkers


def worker(asked: list[str], owner: int | None = 1) -> OriginWorkers:
    w = OriginWorkers.__new__(OriginWorkers)
    w.objects, w.fetching = OrderedDict(), {}
    w.ctx = type("Ctx", (), {"index": 0})()

    async def lookup(app: str, name: str) -> int | None:
        return owner

    async def forward(i, method, target, headers, *, body=b""):
        asked.append(target)
        await trio.sleep(0.1)
        return 200, target.encode(), {"content-type": "x/y", "cache-control": "max-age=1"}

    w.lookup, w.forward = lookup, forward  # type: ignore[method-assign]
    return w


async def test_concurrent_requests_for_a_segment_share_one_fetch(autojump_clock):
    asked: list[str] = []
    w = worker(asked)
    got = []

    async def get() -> None:
        got.append(await w.hls_object("/live/a-s-1.ts", True))

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(get)
    assert asked == ["/live/a-s-1.ts"]
    assert got == [(200, b"/live/a-s-1.ts", "x/y", "max-age=1")] * 10
    assert await w.hls_object("/live/a-s-1.ts", True) == got[0]  # kept
    assert asked == ["/live/a-s-1.ts"]


async def test_a_playlist_is_asked_again_once_it_is_not_fresh(autojump_clock):
    asked: list[str] = []
    w = worker(asked)
    await w.hls_object("/live/a.m3u8", False)
    await w.hls_object("/live/a.m3u8", False)
    assert asked == ["/live/a.m3u8"]
    await trio.sleep(PLAYLIST_FRESH)
    await w.hls_object("/live/a.m3u8", False)
    assert asked == ["/live/a.m3u8"] * 2


async def test_objects_of_streams_nobody_else_owns_are_not_fetched(autojump_clock):
    asked: list[str] = []
    assert await worker(asked, owner=None).hls_object("/live/a.m3u8", False) is None
    assert await worker(asked, owner=0).hls_object("/live/a.m3u8", False) is None  # its own
    assert asked == []


async def test_the_kept_objects_are_bounded(autojump_clock):
    asked: list[str] = []
    w = worker(asked)
    for n in range(OBJECTS_KEPT + 10):
        await w.hls_object(f"/live/a-s-{n}.ts", True)
    assert len(w.objects) == OBJECTS_KEPT
    assert "/live/a-s-0.ts" not in w.objects
