"""The edge's HLS packagers over the real pull manager, on trio's MockClock with the
programmable parent of test_pull_lifecycle.py (a double of the network, not of our servers):
when packaging starts, what it holds, and when it lets go. Real media: test_edge_hls_package.py.
"""

from __future__ import annotations

import pytest
import trio

from common.serve.feeds import END
from common.serve.hlsstore import HlsSettings, HlsStore
from edge.hlspackage import EdgePackagers
from edge.pull import PullManager, StopReason, TooManyStreams, UpstreamState
from tests.edge.test_pull_lifecycle import SETTINGS, FakeParents, start_manager

IDLE = 16.0  # 3 target durations of 2 s + the linger of 10 s


async def start_packagers(nursery, manager: PullManager, max_streams: int = 10) -> EdgePackagers:
    store = HlsStore(HlsSettings(target=2.0, grace=30.0))
    packagers = EdgePackagers(store, manager.subscribe, idle=IDLE, max_streams=max_streams)
    await nursery.start(packagers.run)
    return packagers


@pytest.fixture
async def manager(nursery):
    return await start_manager(nursery, FakeParents(streams=("live/a", "live/b")))


async def test_hls_holds_the_upstream_until_its_viewers_stop_asking(
    nursery, manager, autojump_clock
):
    packagers = await start_packagers(nursery, manager)
    assert await packagers.ensure("live", "a")
    up = manager.upstreams[("live", "a")]
    assert up.viewers == 1 and ("live", "a") in packagers.store.playlists
    start = trio.current_time()
    await trio.sleep(10)
    packagers.asked(("live", "a"))  # a segment request
    await trio.sleep_until(start + 10 + IDLE - 0.1)
    assert ("live", "a") in packagers.active and up.viewers == 1
    await trio.sleep(0.2)
    assert not packagers.active and not packagers.store.playlists
    assert up.viewers == 0 and up.state is UpstreamState.LINGERING
    await trio.sleep(SETTINGS.linger + 0.1)
    assert not manager.upstreams
    assert manager.stats.stopped[StopReason.LINGER_EXPIRED] == 1
    assert (packagers.started, packagers.stopped) == (1, 1)


async def test_a_crowd_of_first_requests_starts_one_packager(nursery, manager, autojump_clock):
    packagers = await start_packagers(nursery, manager)
    found: list[bool] = []

    async def request() -> None:
        found.append(await packagers.ensure("live", "a"))

    async with trio.open_nursery() as n:
        for _ in range(50):
            n.start_soon(request)
    assert found == [True] * 50
    assert packagers.started == 1 and manager.stats.started == 1
    assert manager.upstreams[("live", "a")].viewers == 1


async def test_a_missing_stream_is_refused_and_remembered(nursery, manager, autojump_clock):
    packagers = await start_packagers(nursery, manager)
    assert not await packagers.ensure("live", "nope")
    assert not await packagers.ensure("live", "nope")
    assert manager.stats.not_found_cached == 1
    assert not packagers.active and not packagers.store.playlists


async def test_streams_beyond_max_streams_are_refused(nursery, manager, autojump_clock):
    packagers = await start_packagers(nursery, manager, max_streams=1)
    assert await packagers.ensure("live", "a")
    with pytest.raises(TooManyStreams):
        await packagers.ensure("live", "b")
    assert ("live", "b") not in manager.upstreams, "refused before pulling"
    assert await packagers.ensure("live", "a"), "the packaged one is still served"


async def test_a_publisher_back_continues_the_playlist_on_a_new_upstream(
    nursery, manager, autojump_clock
):
    packagers = await start_packagers(nursery, manager)
    assert await packagers.ensure("live", "a")
    playlist = packagers.store.playlists[("live", "a")]
    first = manager.upstreams[("live", "a")]
    manager.fake.feeds[-1].send.send_nowait(END)  # the publisher stopped
    await trio.sleep(1)
    assert first.state is UpstreamState.CLOSED and playlist.ended
    assert await packagers.ensure("live", "a")  # a viewer asks: the parent has it again
    second = manager.upstreams[("live", "a")]
    assert second is not first and second.viewers == 1
    assert packagers.store.playlists[("live", "a")] is playlist and not playlist.ended
    assert packagers.active[("live", "a")].stream is second.stream
    assert packagers.started == 1 and manager.stats.started == 2
