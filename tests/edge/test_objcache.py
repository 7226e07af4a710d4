"""The edge's HLS object cache, on trio's MockClock with a programmable parent."""

from __future__ import annotations

from collections import Counter

import pytest
import trio
import trio.testing

from common.net.httpclient import FetchResult
from edge.objcache import (
    NEGATIVE_ENTRY_BYTES,
    CachedObject,
    CacheStats,
    FetchError,
    ObjectCache,
)

SEG = "/live/a/seg1.ts"


class FakeParent:
    """A fetcher: answers each path after `delay` with what was `put` there (404 otherwise),
    or raises what was put in `fail` (both as they were when the fetch began); `hang` makes
    it never answer."""

    def __init__(self, delay: float = 0.5) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self.responses: dict[str, FetchResult] = {}
        self.fail: dict[str, BaseException] = {}
        self.hang = False

    def put(
        self, path: str, body: bytes = b"x", *, status: int = 200, cache_control: str | None = None
    ) -> None:
        headers = {"content-type": "video/mp2t"}
        if cache_control is not None:
            headers["cache-control"] = cache_control
        self.responses[path] = FetchResult(status, headers, body)

    async def __call__(self, path: str) -> FetchResult:
        self.calls[path] += 1
        error = self.fail.get(path)
        response = self.responses.get(
            path, FetchResult(404, {"content-type": "text/plain"}, b"not found")
        )
        await trio.sleep(self.delay)
        if self.hang:
            await trio.sleep_forever()
        if error is not None:
            raise error
        return response


async def start(nursery: trio.Nursery, parent: FakeParent, **options: object) -> ObjectCache:
    cache = ObjectCache(parent, **options)  # type: ignore[arg-type]
    await nursery.start(cache.run)
    return cache


async def get_many(cache: ObjectCache, path: str, n: int) -> list[CachedObject | BaseException]:
    """`n` concurrent gets of `path`; each result is the object or the exception raised."""
    results: list[CachedObject | BaseException] = []

    async def one() -> None:
        try:
            results.append(await cache.get(path))
        except FetchError as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return results


def paths(cache: ObjectCache) -> list[str]:
    return [path for path, _ in cache.objects()]


# ---------------------------------------------------------------------- coalescing


async def test_concurrent_gets_share_one_fetch(autojump_clock, nursery):
    parent = FakeParent(delay=1.0)
    body = bytes(range(256)) * 40
    parent.put(SEG, body, cache_control="max-age=10")
    cache = await start(nursery, parent)

    results = await get_many(cache, SEG, 100)

    assert parent.calls[SEG] == 1
    assert len(results) == 100
    assert all(r is results[0] for r in results)
    first = results[0]
    assert isinstance(first, CachedObject)
    assert first.status == 200 and first.body == body
    assert first.content_type == "video/mp2t" and first.cache_control == "max-age=10"
    assert cache.stats.misses == 1
    assert cache.stats.coalesced == 99
    assert cache.stats.hits == 0
    assert cache.stats.bytes_from_parent == len(body)
    assert cache.size_bytes == len(body)

    # Afterwards it is a plain hit, no new fetch.
    assert await cache.get(SEG) is first
    assert parent.calls[SEG] == 1 and cache.stats.hits == 1


async def test_later_joiner_gets_the_in_flight_fetch(autojump_clock, nursery):
    parent = FakeParent(delay=1.0)
    parent.put(SEG, b"seg", cache_control="max-age=10")
    cache = await start(nursery, parent)
    results: list[CachedObject] = []

    async def viewer(after: float) -> None:
        await trio.sleep(after)
        results.append(await cache.get(SEG))

    async with trio.open_nursery() as viewers:
        viewers.start_soon(viewer, 0.0)
        viewers.start_soon(viewer, 0.7)
    assert parent.calls[SEG] == 1
    assert results[0] is results[1]
    assert cache.stats.coalesced == 1


# ---------------------------------------------------------------------- freshness


async def test_max_age(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    parent.put(SEG, b"v1", cache_control="max-age=1")
    cache = await start(nursery, parent)
    t0 = trio.current_time()

    first = await cache.get(SEG)
    assert first.fetched_at == t0 and first.expires_at == t0 + 1
    await trio.sleep(0.9)
    assert await cache.get(SEG) is first
    assert parent.calls[SEG] == 1 and cache.stats.hits == 1

    parent.put(SEG, b"v2", cache_control="max-age=1")
    await trio.sleep(0.2)  # 1.1 s after the fetch
    second = await cache.get(SEG)
    assert second.body == b"v2"
    assert parent.calls[SEG] == 2
    assert cache.stats.misses == 2
    assert paths(cache) == [SEG] and cache.size_bytes == 2


@pytest.mark.parametrize(
    "cache_control", ["no-store", "no-cache", "max-age=0", "private, max-age=10", "NO-STORE"]
)
async def test_uncacheable_is_returned_to_its_waiters_but_not_kept(
    autojump_clock, nursery, cache_control
):
    parent = FakeParent(delay=0.5)
    parent.put("/live/a/index.m3u8", b"#EXTM3U\n", cache_control=cache_control)
    cache = await start(nursery, parent, default_ttl=5.0)

    results = await get_many(cache, "/live/a/index.m3u8", 5)
    assert parent.calls["/live/a/index.m3u8"] == 1
    assert all(isinstance(r, CachedObject) and r.body == b"#EXTM3U\n" for r in results)
    assert all(r is results[0] for r in results)
    assert cache.objects() == [] and cache.size_bytes == 0

    await cache.get("/live/a/index.m3u8")
    assert parent.calls["/live/a/index.m3u8"] == 2


async def test_default_ttl_without_cache_control(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    parent.put(SEG, b"seg")
    cache = await start(nursery, parent, default_ttl=3.0)

    obj = await cache.get(SEG)
    assert obj.cache_control == ""
    await trio.sleep(2.9)
    assert await cache.get(SEG) is obj
    await trio.sleep(0.2)
    await cache.get(SEG)
    assert parent.calls[SEG] == 2


async def test_default_ttl_zero_keeps_nothing(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    parent.put(SEG, b"seg")
    cache = await start(nursery, parent)
    await cache.get(SEG)
    await cache.get(SEG)
    assert parent.calls[SEG] == 2
    assert cache.objects() == []


async def test_content_type_default(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    parent.responses[SEG] = FetchResult(200, {"cache-control": "max-age=5"}, b"seg")
    cache = await start(nursery, parent)
    assert (await cache.get(SEG)).content_type == "application/octet-stream"


# ---------------------------------------------------------------------- 404 and errors


async def test_404_is_cached_negatively(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    cache = await start(nursery, parent, negative_ttl=2.0)
    path = "/live/new/index.m3u8"

    miss = await cache.get(path)
    assert miss.status == 404 and miss.body == b""
    await trio.sleep(1.9)
    assert await cache.get(path) is miss
    assert parent.calls[path] == 1
    assert cache.stats.negative_hits == 1 and cache.stats.hits == 0
    assert cache.stats.bytes_from_parent == len(b"not found")

    parent.put(path, b"#EXTM3U\n", cache_control="max-age=1")
    await trio.sleep(0.2)
    found = await cache.get(path)
    assert found.status == 200 and found.body == b"#EXTM3U\n"
    assert parent.calls[path] == 2


@pytest.mark.parametrize("status", [500, 503, 302, 403, 206])
async def test_bad_status_fails_all_waiters_and_caches_nothing(autojump_clock, nursery, status):
    parent = FakeParent(delay=0.5)
    parent.put(SEG, b"oops", status=status, cache_control="max-age=10")
    cache = await start(nursery, parent)

    results = await get_many(cache, SEG, 10)
    assert parent.calls[SEG] == 1
    assert all(isinstance(r, FetchError) for r in results)
    assert str(status) in str(results[0])
    assert cache.stats.errors == 1
    assert cache.objects() == []

    parent.put(SEG, b"good", cache_control="max-age=10")
    assert (await cache.get(SEG)).body == b"good"
    assert parent.calls[SEG] == 2


@pytest.mark.parametrize(
    "error",
    [
        FetchError("body truncated at 1000 of 4000 bytes"),
        OSError("connection reset"),
        trio.TooSlowError(),
        RuntimeError("bug in the fetcher"),
    ],
)
async def test_fetch_failure_is_not_cached(autojump_clock, nursery, error):
    parent = FakeParent(delay=0.5)
    parent.put(SEG, b"good", cache_control="max-age=10")
    parent.fail[SEG] = error
    cache = await start(nursery, parent)

    results = await get_many(cache, SEG, 3)
    assert all(isinstance(r, FetchError) and r.__cause__ is error for r in results)
    assert len({id(r) for r in results}) == 3  # one exception object per waiter
    assert cache.stats.errors == 1 and cache.objects() == []

    del parent.fail[SEG]
    assert (await cache.get(SEG)).body == b"good"
    assert parent.calls[SEG] == 2
    assert cache.stats.misses == 2


async def test_failed_refetch_drops_the_stale_entry(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    parent.put(SEG, b"old", cache_control="max-age=1")
    cache = await start(nursery, parent)
    await cache.get(SEG)
    await trio.sleep(1.5)

    parent.fail[SEG] = FetchError("parent down")
    with pytest.raises(FetchError):
        await cache.get(SEG)
    assert cache.objects() == [] and cache.size_bytes == 0


async def test_fetch_timeout(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    parent.hang = True
    cache = await start(nursery, parent, fetch_timeout=5.0)
    t0 = trio.current_time()
    with pytest.raises(FetchError) as info:
        await cache.get(SEG)
    assert isinstance(info.value.__cause__, trio.TooSlowError)
    assert trio.current_time() - t0 == pytest.approx(5.0)
    assert cache.stats.errors == 1


# ---------------------------------------------------------------------- cancellation


async def test_cancelled_first_caller_does_not_break_the_others(autojump_clock, nursery):
    parent = FakeParent(delay=1.0)
    parent.put(SEG, b"seg", cache_control="max-age=10")
    cache = await start(nursery, parent)
    results: list[CachedObject] = []
    first_cancelled = False

    async def first(scope: trio.CancelScope) -> None:
        nonlocal first_cancelled
        with scope:
            await cache.get(SEG)
        first_cancelled = scope.cancelled_caught

    async def other(after: float) -> None:
        await trio.sleep(after)
        results.append(await cache.get(SEG))

    scope = trio.CancelScope()
    async with trio.open_nursery() as viewers:
        viewers.start_soon(first, scope)
        viewers.start_soon(other, 0.1)
        viewers.start_soon(other, 0.2)
        viewers.start_soon(other, 0.6)  # arrives after the first viewer left
        await trio.sleep(0.5)
        scope.cancel()

    assert first_cancelled
    assert len(results) == 3 and all(r.body == b"seg" for r in results)
    assert parent.calls[SEG] == 1
    # Not stuck: the object is cached and served.
    assert await cache.get(SEG) is results[0]
    assert parent.calls[SEG] == 1


async def test_fetch_completes_even_if_every_waiter_leaves(autojump_clock, nursery):
    parent = FakeParent(delay=1.0)
    parent.put(SEG, b"seg", cache_control="max-age=10")
    cache = await start(nursery, parent)

    with trio.move_on_after(0.5) as scope:
        await cache.get(SEG)
    assert scope.cancelled_caught
    await trio.sleep(1.0)
    assert paths(cache) == [SEG]
    await cache.get(SEG)
    assert parent.calls[SEG] == 1 and cache.stats.hits == 1


async def test_stopping_the_cache_fails_waiters(autojump_clock, nursery):
    parent = FakeParent(delay=10.0)
    cache = ObjectCache(parent)
    scope = trio.CancelScope()

    async def run_cache(task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await cache.run(task_status=task_status)

    await nursery.start(run_cache)
    results: list[BaseException] = []

    async def viewer() -> None:
        try:
            await cache.get(SEG)
        except FetchError as exc:
            results.append(exc)

    async with trio.open_nursery() as viewers:
        viewers.start_soon(viewer)
        await trio.sleep(1.0)
        scope.cancel()
    assert len(results) == 1 and "shutting down" in str(results[0])

    with pytest.raises(RuntimeError):
        await cache.get(SEG)


async def test_get_requires_run(autojump_clock):
    cache = ObjectCache(FakeParent())
    with pytest.raises(RuntimeError, match="run"):
        await cache.get(SEG)


# ---------------------------------------------------------------------- LRU, purge


async def test_lru_eviction_by_bytes_with_recency_refresh(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    for name in "abcd":
        parent.put(f"/{name}.ts", name.encode() * 100, cache_control="max-age=100")
    cache = await start(nursery, parent, max_bytes=300)

    for name in "abc":
        await cache.get(f"/{name}.ts")
    assert cache.size_bytes == 300 and cache.stats.evictions == 0
    await cache.get("/a.ts")  # a hit makes /a.ts the most recently used
    await cache.get("/d.ts")  # evicts /b.ts, the least recently used

    assert paths(cache) == ["/c.ts", "/a.ts", "/d.ts"]
    assert cache.size_bytes == 300
    assert cache.stats.evictions == 1
    await cache.get("/a.ts")
    assert parent.calls["/a.ts"] == 1
    await cache.get("/b.ts")
    assert parent.calls["/b.ts"] == 2


async def test_eviction_of_several_entries(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    for name in "abc":
        parent.put(f"/{name}.ts", b"x" * 100, cache_control="max-age=100")
    parent.put("/big.ts", b"y" * 250, cache_control="max-age=100")
    cache = await start(nursery, parent, max_bytes=300)
    for name in "abc":
        await cache.get(f"/{name}.ts")
    await cache.get("/big.ts")
    assert paths(cache) == ["/big.ts"]
    assert cache.stats.evictions == 3 and cache.size_bytes == 250


async def test_object_larger_than_the_cache_is_returned_not_stored(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    parent.put("/small.ts", b"s" * 100, cache_control="max-age=100")
    parent.put("/huge.ts", b"h" * 301, cache_control="max-age=100")
    cache = await start(nursery, parent, max_bytes=300)
    await cache.get("/small.ts")

    huge = await cache.get("/huge.ts")
    assert huge.body == b"h" * 301
    assert paths(cache) == ["/small.ts"] and cache.size_bytes == 100
    assert cache.stats.evictions == 0
    await cache.get("/huge.ts")
    assert parent.calls["/huge.ts"] == 2


async def test_max_entries_bounds_negative_entries(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    cache = await start(nursery, parent, max_entries=3)
    for i in range(5):
        assert (await cache.get(f"/missing/{i}")).status == 404
    assert paths(cache) == ["/missing/2", "/missing/3", "/missing/4"]
    assert cache.stats.evictions == 2


async def test_negative_entries_have_their_own_bound_and_cost_bytes(autojump_clock, nursery):
    """404s are keyed by what viewers ask for: at most max_negative of them, the oldest go
    first, and each is charged NEGATIVE_ENTRY_BYTES + its path, so they cannot crowd the
    byte budget for free; real objects stay."""
    parent = FakeParent(delay=0)
    parent.put(SEG, b"s" * 1000, cache_control="max-age=100")
    cache = await start(nursery, parent, max_negative=3, max_bytes=100_000)
    await cache.get(SEG)
    for i in range(6):
        assert (await cache.get(f"/live/m{i}.m3u8")).status == 404
    assert paths(cache) == [SEG, "/live/m3.m3u8", "/live/m4.m3u8", "/live/m5.m3u8"]
    assert cache.negative_entries == 3
    per_404 = NEGATIVE_ENTRY_BYTES + len("/live/m0.m3u8")
    assert cache.size_bytes == 1000 + 3 * per_404
    await trio.sleep(2.5)  # the 404s expire; a refetch of one replaces it
    assert (await cache.get("/live/m5.m3u8")).status == 404
    assert cache.negative_entries == 3 and cache.size_bytes == 1000 + 3 * per_404
    # and by bytes: a small cache keeps only the 404s that fit
    small = await start(nursery, parent, max_bytes=2 * per_404)
    for i in range(5):
        await small.get(f"/live/m{i}.m3u8")
    assert small.negative_entries == 2 and small.size_bytes == 2 * per_404


async def test_fetches_in_flight_are_bounded(autojump_clock, nursery):
    parent = FakeParent(delay=10)
    cache = await start(nursery, parent, max_inflight=4)
    results: list = []

    async def one(path: str) -> None:
        try:
            results.append(await cache.get(path))
        except FetchError as exc:
            results.append(exc)

    async with trio.open_nursery() as n:
        for i in range(6):
            n.start_soon(one, f"/live/s{i}.m3u8")
        await trio.testing.wait_all_tasks_blocked()
        assert sum(1 for r in results if isinstance(r, FetchError)) == 2
        assert "fetches in flight already" in str(results[0])
    assert sum(1 for r in results if isinstance(r, CachedObject)) == 4
    assert await cache.get("/live/s5.m3u8") is not None  # room again


async def test_a_broken_fetcher_result_fails_only_that_fetch(autojump_clock, nursery):
    async def odd(path: str):
        if path == "/bad.ts":
            return FetchResult(200, {"content-type": None}, None)  # a fetcher bug: not a body
        return FetchResult(200, {"cache-control": "max-age=10"}, b"ok")

    cache = await start(nursery, odd)
    results = await get_many(cache, "/bad.ts", 2)
    assert all(isinstance(r, FetchError) for r in results)
    assert cache.stats.errors == 1
    assert (await cache.get("/good.ts")).body == b"ok"


async def test_purge_prefix(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    for path in ("/live/a/1.ts", "/live/a/2.ts", "/live/ab/1.ts", "/live/b/1.ts"):
        parent.put(path, b"x" * 10, cache_control="max-age=100")
    cache = await start(nursery, parent)
    for path in ("/live/a/1.ts", "/live/a/2.ts", "/live/ab/1.ts", "/live/b/1.ts"):
        await cache.get(path)

    assert cache.purge("/live/a/") == 2
    assert paths(cache) == ["/live/ab/1.ts", "/live/b/1.ts"]
    assert cache.size_bytes == 20
    assert cache.purge("/nothing") == 0
    await cache.get("/live/a/1.ts")
    assert parent.calls["/live/a/1.ts"] == 2
    assert cache.purge("") == 3 and cache.size_bytes == 0


async def test_purge_during_fetch_does_not_store_the_old_result(autojump_clock, nursery):
    parent = FakeParent(delay=1.0)
    parent.put(SEG, b"old", cache_control="max-age=100")
    cache = await start(nursery, parent)
    results: list[CachedObject] = []

    async def viewer() -> None:
        results.append(await cache.get(SEG))

    async with trio.open_nursery() as viewers:
        viewers.start_soon(viewer)
        await trio.sleep(0.5)
        assert cache.purge("/live/") == 0
        parent.put(SEG, b"new", cache_control="max-age=100")
        viewers.start_soon(viewer)  # starts a fresh fetch
    assert sorted(r.body for r in results) == [b"new", b"old"]
    assert parent.calls[SEG] == 2
    assert (await cache.get(SEG)).body == b"new"


# ---------------------------------------------------------------------- stats


async def test_stats(autojump_clock, nursery):
    parent = FakeParent(delay=0.5)
    parent.put("/a.ts", b"a" * 100, cache_control="max-age=100")
    parent.put("/b.ts", b"b" * 150, cache_control="max-age=100")
    parent.put("/err.ts", b"e" * 7, status=502)
    parent.put("/cut.ts", b"c")
    parent.fail["/cut.ts"] = FetchError("truncated")
    # a (100) + the 404 of /missing.ts (NEGATIVE_ENTRY_BYTES + its path: 268) fit; b (150) does
    # only once a goes
    cache = await start(nursery, parent, max_bytes=450)

    await get_many(cache, "/a.ts", 4)  # 1 miss, 3 coalesced
    await cache.get("/a.ts")  # hit
    await cache.get("/missing.ts")  # miss (404)
    await cache.get("/missing.ts")  # negative hit
    await cache.get("/b.ts")  # miss; evicts /a.ts
    await get_many(cache, "/err.ts", 2)  # miss + coalesced, error
    await get_many(cache, "/cut.ts", 1)  # miss, error

    assert cache.stats == CacheStats(
        hits=1,
        misses=5,
        coalesced=4,
        negative_hits=1,
        bytes_from_parent=100 + len(b"not found") + 150 + 7,
        evictions=1,
        errors=2,
    )


async def test_a_parents_headers_reach_viewers_only_when_safe(autojump_clock, nursery):
    """A tab in Cache-Control is valid HTTP but not for our response heads: it is
    normalised; control characters, non-ASCII or overlong values are dropped."""
    parent = FakeParent(delay=0)
    parent.put(SEG, b"v", cache_control="max-age=30,\tpublic")
    parent.responses["/live/a.m3u8"] = FetchResult(200, {"content-type": "x\x01y"}, b"#EXTM3U")
    parent.responses["/live/b.m3u8"] = FetchResult(
        200, {"cache-control": "max-age=1\u00e9"}, b"#EXTM3U"
    )
    cache = await start(nursery, parent)
    assert (await cache.get(SEG)).cache_control == "max-age=30, public"
    assert (await cache.get("/live/a.m3u8")).content_type == "application/octet-stream"
    assert (await cache.get("/live/b.m3u8")).cache_control == ""


# ---------------------------------------------------------------------- stale-while-revalidate


async def test_stale_while_revalidate_serves_the_old_version_during_one_refresh(
    autojump_clock, nursery
):
    parent = FakeParent(delay=0.3)
    parent.put(SEG, b"v1", cache_control="max-age=1, stale-while-revalidate=1")
    cache = await start(nursery, parent)
    first = await cache.get(SEG)
    assert first.stale_until == first.expires_at + 1
    parent.put(SEG, b"v2", cache_control="max-age=1, stale-while-revalidate=1")
    await trio.sleep(1.1)  # stale, within its stale-while-revalidate

    assert cache.peek(SEG) is first  # answered at once; one refresh started
    assert await cache.get(SEG) is first
    assert cache.stats.stale == 2 and cache.stats.misses == 2  # one refresh for both
    await trio.sleep(0.4)  # the refresh is in
    assert (await cache.get(SEG)).body == b"v2"
    assert parent.calls[SEG] == 2


async def test_past_stale_while_revalidate_the_object_is_fetched_again(autojump_clock, nursery):
    parent = FakeParent(delay=0.3)
    parent.put(SEG, b"v1", cache_control="max-age=1, stale-while-revalidate=1")
    cache = await start(nursery, parent)
    await cache.get(SEG)
    parent.put(SEG, b"v2", cache_control="max-age=1")
    await trio.sleep(2.5)
    assert cache.peek(SEG) is None
    assert (await cache.get(SEG)).body == b"v2"
    assert cache.stats.stale == 0


async def test_a_cached_200_carries_its_shared_response(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    parent.put(SEG, b"seg", cache_control="max-age=10")
    cache = await start(nursery, parent)
    obj = await cache.get(SEG)
    assert obj.response is not None and obj.response.body is obj.body
    assert obj.response.headers == [("cache-control", "max-age=10")]
    assert cache.peek("/live/a/none.ts") is None
    assert (await cache.get("/live/a/none.ts")).response is None  # a 404: none
    assert cache.peek("/live/a/none.ts", negative=False) is None


async def test_an_age_from_the_parent_shortens_freshness(autojump_clock, nursery):
    # A copy already 3 s old (e.g. worker 0's answer to a sibling) is fresh for 1 s more
    # of its max-age=4, its stale-while-revalidate counted from then, and says how old.
    parent = FakeParent(delay=0)
    parent.put(SEG, b"v1", cache_control="max-age=4, stale-while-revalidate=2")
    parent.responses[SEG].headers["age"] = "3"
    cache = await start(nursery, parent)
    t0 = trio.current_time()
    first = await cache.get(SEG)
    assert first.expires_at == t0 + 1 and first.stale_until == t0 + 3
    assert first.age_at(t0) == 3
    await trio.sleep(2)
    assert first.age_at(trio.current_time()) == 5


async def test_an_age_past_the_max_age_is_not_kept(autojump_clock, nursery):
    parent = FakeParent(delay=0)
    parent.put(SEG, b"v1", cache_control="max-age=4")
    parent.responses[SEG].headers["age"] = "9"
    cache = await start(nursery, parent)
    assert (await cache.get(SEG)).body == b"v1"  # answered, but too old to keep
    assert paths(cache) == []
