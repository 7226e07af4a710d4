"""The single-flight upstream lifecycle, on trio's MockClock with a programmable parent.

The parent here is a test double of the *network* (a feed of events), not of our servers;
the same lifecycle runs against real origins in test_edge_real.py.
"""

from __future__ import annotations

from collections import Counter

import pytest
import trio
import trio.testing

from common.media.stream import Stream
from common.proto import amf0
from common.proto.rtmp import session as rs
from common.proto.streamkey import StreamKeyError
from common.serve.feeds import END, NotFound, ParentError, Tracks
from common.serve.play import Fanout, PlayStats
from edge.pull import PullManager, PullSettings, StopReason, TooManyStreams, Upstream
from tests.media import aac_frame, aac_header, avc_header, interframe, keyframe

SETTINGS = PullSettings(
    linger=10, not_found_ttl=2, connect_timeout=5, stall_timeout=5, retry_seconds=10
)


def media(type_id: int, timestamp: int, payload: bytes) -> rs.Media:
    """An audio (8) or video (9) message from the parent."""
    return rs.Media(1, type_id, timestamp, payload)


class FakeFeed:
    """An upstream whose events the test sends (an Exception breaks it); with `auto`,
    it also produces a frame every 40 ms of (mock) time like a live stream."""

    def __init__(self, parent: str, auto: bool) -> None:
        self.parent = parent
        self.auto = auto
        self.bytes_in = 0
        self.closed = False
        self.send, self._recv = trio.open_memory_channel(1000)
        self._ts = 0

    async def receive(self):
        item = None
        with trio.move_on_after(0.04) if self.auto else trio.CancelScope():
            item = await self._recv.receive()
        if item is None:
            self._ts += 40
            return [media(9, self._ts, interframe())]
        if isinstance(item, Exception):
            raise item
        return [item]

    def close(self) -> None:
        self.closed = True


class FakeParents:
    """Parents that have some streams, can be down, and take `delay` to answer."""

    def __init__(self, streams=("live/a",), delay: float = 0.5) -> None:
        self.auto = True
        self.streams = set(streams)
        self.delay = delay
        self.down: set[str] = set()
        self.connects: Counter = Counter()
        self.feeds: list[FakeFeed] = []
        self.initial: list = [media(9, 0, avc_header()), media(8, 0, aac_header())]

    async def connect(self, parent: str, app: str, name: str) -> FakeFeed:
        self.connects[parent] += 1
        await trio.sleep(self.delay)
        if parent in self.down:
            raise ParentError(f"{parent} is down")
        if f"{app}/{name}" not in self.streams:
            raise NotFound(f"{parent}/{app}/{name}")
        feed = FakeFeed(parent, self.auto)
        for item in self.initial:
            feed.send.send_nowait(item)
        self.feeds.append(feed)
        return feed


async def start_manager(nursery, parents=None, **options) -> PullManager:
    parents = parents or FakeParents()
    mgr = PullManager(
        ["rtmp://p1", "rtmp://p2"],
        SETTINGS,
        make_stream=lambda app, name: Stream(app, name),
        make_fanout=lambda stream: Fanout(stream, PlayStats()),
        connector=parents.connect,
        **options,
    )
    await nursery.start(mgr.run)
    mgr.fake = parents
    return mgr


@pytest.fixture
async def manager(nursery):
    return await start_manager(nursery)


async def subscribe_at_once(manager: PullManager, name: str, viewers: int) -> list:
    """What `viewers` concurrent subscribe() calls for live/`name` returned."""
    results = []

    async def viewer() -> None:
        results.append(await manager.subscribe("live", name))

    async with trio.open_nursery() as n:
        for _ in range(viewers):
            n.start_soon(viewer)
    return results


async def test_first_viewer_starts_one_upstream_and_concurrent_viewers_share_it(
    manager, autojump_clock
):
    subs = await subscribe_at_once(manager, "a", 20)
    assert manager.fake.connects == {"rtmp://p1": 1}
    assert len({id(s.fanout) for s in subs}) == 1
    up = manager.upstreams[("live", "a")]
    assert up.viewers == 20 and up.state == "live" and up.parent == "rtmp://p1"
    assert manager.stats.started == 1


async def test_a_viewer_of_a_held_stream_joins_without_waiting_a_scheduler_round(
    manager, autojump_clock
):
    first = await manager.subscribe("live", "a")
    # on a busy edge a round is milliseconds: one more per join adds to every new viewer
    with trio.testing.assert_no_checkpoints():
        again = await manager.subscribe("live", "a")
    assert again.fanout is first.fanout
    assert manager.upstreams[("live", "a")].viewers == 2
    again.release()
    first.release()


async def test_rejoin_within_linger_reuses_and_expiry_closes(manager, autojump_clock):
    sub = await manager.subscribe("live", "a")
    up = manager.upstreams[("live", "a")]
    sub.release()
    assert up.state == "lingering"
    await trio.sleep(9)
    again = await manager.subscribe("live", "a")
    assert manager.upstreams[("live", "a")] is up and up.state == "live"
    assert manager.fake.connects["rtmp://p1"] == 1
    again.release()
    again.release()  # idempotent
    assert up.viewers == 0
    await trio.sleep(9.9)
    assert ("live", "a") in manager.upstreams
    await trio.sleep(0.2)
    assert ("live", "a") not in manager.upstreams
    assert manager.fake.feeds[0].closed
    assert up.stream.closed
    assert manager.stats.stopped == {"linger expired": 1}
    third = await manager.subscribe("live", "a")
    assert third is not None and manager.fake.connects["rtmp://p1"] == 2


async def test_each_state_change_is_logged_once_with_its_reason(manager, autojump_clock, caplog):
    caplog.set_level("INFO", logger="livecdn.edge")
    sub = await manager.subscribe("live", "a")
    sub.release()
    again = await manager.subscribe("live", "a")
    again.release()
    await trio.sleep(SETTINGS.linger + 1)
    lines = [r.getMessage() for r in caplog.records if " -> " in r.getMessage()]
    assert lines == [
        "upstream live/a: connecting -> live (playing from rtmp://p1)",
        "upstream live/a: live -> lingering (no viewers, lingering 10 s)",
        "upstream live/a: lingering -> live (viewer back within the linger, reusing it)",
        "upstream live/a: live -> lingering (no viewers, lingering 10 s)",
        "upstream live/a: lingering -> closed (linger expired)",
    ]


async def test_viewers_leaving_during_connect_start_the_linger(manager, autojump_clock):
    with trio.move_on_after(0.1):
        await manager.subscribe("live", "a")  # gives up while connecting
    up = manager.upstreams[("live", "a")]
    assert up.viewers == 0
    await trio.sleep(11)
    assert ("live", "a") not in manager.upstreams


async def test_missing_stream_is_answered_promptly_and_cached_briefly(manager, autojump_clock):
    results = await subscribe_at_once(manager, "missing", 10)
    assert results == [None] * 10
    assert manager.fake.connects == {"rtmp://p1": 1}
    start = trio.current_time()
    assert await manager.subscribe("live", "missing") is None
    assert trio.current_time() == start, "a cached 404 must not wait"
    assert manager.stats.not_found_cached == 1
    await trio.sleep(2.1)
    assert await manager.subscribe("live", "missing") is None
    assert manager.fake.connects == {"rtmp://p1": 2}


async def test_publisher_stop_ends_viewers_and_upstream(manager, autojump_clock):
    sub = await manager.subscribe("live", "a")
    feed = manager.fake.feeds[0]
    await feed.send.send(media(9, 40, keyframe()))
    await feed.send.send(END)
    await trio.sleep(0.1)
    assert sub.fanout.stream.closed
    assert ("live", "a") not in manager.upstreams
    assert manager.stats.stopped == {"publisher stopped": 1}
    assert feed.closed


async def test_broken_upstream_fails_over_and_keeps_timestamps_continuous(manager, autojump_clock):
    manager.fake.auto = False
    sub = await manager.subscribe("live", "a")
    stream = sub.fanout.stream
    await trio.testing.wait_all_tasks_blocked()  # the first parent's headers are in
    assert stream.video_header is not None and stream.audio_header is not None
    reader = stream.add_reader("flv")
    feed = manager.fake.feeds[0]
    for i in range(5):
        await feed.send.send(media(9, 1000 + i * 40, keyframe() if i == 0 else interframe()))
    await trio.sleep(0.1)
    manager.fake.down.add("rtmp://p1")
    await feed.send.send(ParentError("connection reset"))
    await trio.sleep(1)
    assert manager.fake.connects == {"rtmp://p1": 1, "rtmp://p2": 1}
    up = manager.upstreams[("live", "a")]
    assert up.parent == "rtmp://p2" and up.failovers == 1 and manager.stats.failovers == 1
    second = manager.fake.feeds[1]
    for i in range(3):  # the new parent's timestamps start elsewhere
        await second.send.send(media(9, 50 + i * 40, keyframe() if i == 0 else interframe()))
    await trio.sleep(0.1)
    frames = stream.pending(reader)
    pieces = [f for f in frames if not f.header]
    ts = [f.timestamp for f in pieces]
    assert ts == sorted(ts) and len(ts) == 8
    headers = [f for f in frames if f.header]
    assert headers == [], "identical sequence headers from the new parent are not repeated"
    assert not sub.fanout.stream.closed


async def test_stalled_upstream_fails_over(manager, autojump_clock):
    manager.fake.auto = False
    await manager.subscribe("live", "a")
    feed = manager.fake.feeds[0]
    await feed.send.send(media(9, 0, keyframe()))
    await trio.sleep(4.9)
    assert manager.fake.connects == {"rtmp://p1": 1}
    await trio.sleep(0.2 + SETTINGS.connect_timeout)
    assert manager.fake.connects == {"rtmp://p1": 1, "rtmp://p2": 1}
    assert feed.closed
    assert manager.upstreams[("live", "a")].parent == "rtmp://p2"


async def test_first_parent_down_uses_the_next(manager, autojump_clock):
    manager.fake.down.add("rtmp://p1")
    sub = await manager.subscribe("live", "a")
    assert sub is not None
    assert manager.upstreams[("live", "a")].parent == "rtmp://p2"


async def test_all_parents_down_fails_the_viewers(manager, autojump_clock):
    manager.fake.down |= {"rtmp://p1", "rtmp://p2"}
    assert await manager.subscribe("live", "a") is None
    await trio.testing.wait_all_tasks_blocked()
    assert manager.stats.stopped == {"no parent reachable": 1}


async def test_parents_gone_for_good_end_the_stream_after_retry_seconds(manager, autojump_clock):
    sub = await manager.subscribe("live", "a")
    manager.fake.down |= {"rtmp://p1", "rtmp://p2"}
    await manager.fake.feeds[0].send.send(ParentError("reset"))
    await trio.sleep(SETTINGS.retry_seconds - 1)
    assert not sub.fanout.stream.closed, "viewers wait while parents may come back"
    await trio.sleep(3)
    assert sub.fanout.stream.closed
    assert ("live", "a") not in manager.upstreams


async def test_publisher_takeover_at_the_parent_keeps_the_upstream(manager, autojump_clock):
    """The origin keeps the stream across a takeover; if the new publisher's encoder differs,
    its new sequence header reaches the edge's viewers in order, on the same upstream."""
    manager.fake.auto = False
    sub = await manager.subscribe("live", "a")
    stream = sub.fanout.stream
    await trio.testing.wait_all_tasks_blocked()
    reader = stream.add_reader("flv")
    feed = manager.fake.feeds[0]
    await feed.send.send(media(9, 1000, keyframe()))
    new_header = avc_header()[:-1] + b"\x2d"
    await feed.send.send(media(9, 1020, new_header))
    await feed.send.send(media(9, 1020, keyframe(fill=0x66)))
    await trio.sleep(0.1)
    frames = stream.pending(reader)
    assert [f.header for f in frames] == [False, True, False]
    assert frames[1].payload == new_header and stream.video_header == new_header
    assert manager.fake.connects == {"rtmp://p1": 1}
    assert manager.upstreams[("live", "a")].state == "live"


# ---------------------------------------------------------------------- a parent restarting


async def test_parent_restarting_without_the_stream_yet_keeps_viewers(manager, autojump_clock):
    """A live stream that a parent no longer has (it restarted; its publisher is not back
    yet) is retried like a broken parent, within retry_seconds; the viewers stay."""
    sub = await manager.subscribe("live", "a")
    manager.fake.streams.clear()
    await manager.fake.feeds[0].send.send(ParentError("connection reset"))
    await trio.sleep(6)
    assert not sub.fanout.stream.closed
    assert manager.stats.failures["not_found"] >= 4
    assert manager.stats.stopped == {}
    manager.fake.streams.add("live/a")  # the publisher is back
    await trio.sleep(2)
    up = manager.upstreams[("live", "a")]
    assert up.state == "live" and up.failovers == 1 and len(manager.fake.feeds) == 2
    assert not sub.fanout.stream.closed
    head = sub.fanout.stream.head
    await trio.sleep(1)
    assert sub.fanout.stream.head > head, "frames flow again"


async def test_stream_missing_everywhere_for_retry_seconds_ends(manager, autojump_clock):
    sub = await manager.subscribe("live", "a")
    manager.fake.streams.clear()
    await manager.fake.feeds[0].send.send(ParentError("connection reset"))
    await trio.sleep(SETTINGS.retry_seconds - 1)
    assert not sub.fanout.stream.closed
    await trio.sleep(3)
    assert sub.fanout.stream.closed
    assert ("live", "a") not in manager.upstreams
    assert manager.stats.stopped == {StopReason.PARENTS_GONE: 1}


async def test_a_parent_that_breaks_right_after_connecting_is_not_hammered(nursery, autojump_clock):
    """Connections that break before the stream has flowed for a while do not reset the
    outage: rounds of parents are paced, and the pull ends after retry_seconds."""

    class Breaking(FakeParents):
        async def connect(self, parent, app, name):
            feed = await super().connect(parent, app, name)
            feed.send.send_nowait(ParentError("reset right away"))
            return feed

    mgr = await start_manager(nursery, Breaking())
    sub = await mgr.subscribe("live", "a")
    await trio.sleep(SETTINGS.retry_seconds + 3)
    assert sub.fanout.stream.closed
    # a round: two connects of 0.5 s, then retry_pause
    assert sum(mgr.fake.connects.values()) <= 2 * (SETTINGS.retry_seconds / 1.5 + 2)
    assert mgr.stats.failures["broken"] == sum(mgr.fake.connects.values())


# ---------------------------------------------------------------------- containment


async def test_garbage_from_a_parent_fails_over_and_is_counted(manager, autojump_clock):
    manager.fake.auto = False
    sub = await manager.subscribe("live", "a")
    await manager.fake.feeds[0].send.send(media(9, 40, b"\x17"))  # truncated AVC tag
    await trio.sleep(1)
    up = manager.upstreams[("live", "a")]
    assert up.parent == "rtmp://p2" and up.failovers == 1
    assert manager.stats.failures == {"bad_data": 1}
    assert not sub.fanout.stream.closed


async def test_unexpected_errors_in_a_pull_end_only_that_pull(manager, autojump_clock, caplog):
    sub_a = await manager.subscribe("live", "a")
    await manager.fake.feeds[0].send.send(RuntimeError("a bug in a feed"))
    await trio.sleep(1)
    assert manager.upstreams[("live", "a")].parent == "rtmp://p2", "failed over"
    assert manager.stats.failures["unexpected"] == 1
    assert "upstream live/a from rtmp://p1 failed: RuntimeError: a bug in a feed" in caplog.text

    async def broken_connector(parent, app, name):
        raise KeyError("connector bug")

    manager.connector = broken_connector
    manager.fake.streams.add("live/b")
    assert await manager.subscribe("live", "b") is None
    assert manager.stats.failures["unexpected"] == 3  # once per parent
    assert manager.stats.stopped["no parent reachable"] == 1
    assert not sub_a.fanout.stream.closed


async def test_a_pull_that_crashes_is_contained(manager, autojump_clock, monkeypatch, caplog):
    async def crash(self):
        await trio.sleep(0.1)
        raise ValueError("crash inside the pull")

    monkeypatch.setattr(Upstream, "_pull", crash)
    assert await manager.subscribe("live", "a") is None
    assert manager.stats.stopped == {"failed": 1}
    assert manager.stats.failures == {"unexpected": 1}
    assert "upstream live/a from - failed: ValueError: crash inside the pull" in caplog.text
    monkeypatch.undo()
    assert await manager.subscribe("live", "a") is not None, "the manager still runs"


# ---------------------------------------------------------------------- bounded tables


async def test_subscribe_refuses_keys_outside_the_grammar(manager, autojump_clock):
    for app, name in [("live", "a b"), ("live", ""), ("..", "x"), ("live", "a/b"),
                      ("live", "x" * 129), ("live", ".hidden"), ("live", "caf\u00e9")]:  # fmt: skip
        with pytest.raises(StreamKeyError):
            await manager.subscribe(app, name)
    assert manager.upstreams == {} and manager.fake.connects == {}
    assert manager.stats.refused == {"bad_key": 7}


async def test_not_found_table_is_bounded_and_pruned(nursery, autojump_clock):
    mgr = await start_manager(nursery, FakeParents(delay=0), max_not_found=50)
    for i in range(120):
        assert await mgr.subscribe("live", f"x{i}") is None
    assert len(mgr.not_found) == 50
    assert ("live", "x119") in mgr.not_found and ("live", "x69") not in mgr.not_found
    await trio.sleep(SETTINGS.not_found_ttl + 0.1)
    assert await mgr.subscribe("live", "y") is None
    assert list(mgr.not_found) == [("live", "y")], "expired entries are pruned on insert"


async def test_new_streams_beyond_max_streams_are_refused(nursery, autojump_clock):
    parents = FakeParents(streams=("live/a", "live/b", "live/c"))
    mgr = await start_manager(nursery, parents, max_streams=2)
    sub_a = await mgr.subscribe("live", "a")
    await mgr.subscribe("live", "b")
    with pytest.raises(TooManyStreams, match="too many streams"):
        await mgr.subscribe("live", "c")
    assert mgr.stats.refused == {"too_many_streams": 1}
    again = await mgr.subscribe("live", "a")
    assert again is not None, "held streams take more viewers"
    assert parents.connects == {"rtmp://p1": 2}
    sub_a.release()
    again.release()
    await trio.sleep(SETTINGS.linger + 1)
    assert await mgr.subscribe("live", "c") is not None, "room again once one has gone"


# ---------------------------------------------------------------------- tracks before viewers


def metadata(**values: float) -> rs.Metadata:
    body = amf0.encode("onMetaData") + amf0.encode(values)
    return rs.Metadata(0, 0, body, values)


@pytest.mark.parametrize(
    ("initial", "wait", "tracks"),
    [
        # the parent's FLV header says video only, and the video header comes: go at once
        ([Tracks(False, True), media(9, 0, avc_header())], 0, (False, True)),
        ([Tracks(True, False), media(8, 0, aac_header())], 0, (True, False)),
        # onMetaData names both codecs: wait for both tracks' first messages
        (
            [
                metadata(videocodecid=7.0, audiocodecid=10.0),
                media(9, 0, avc_header()),
                media(8, 0, aac_header()),
            ],
            0,
            (True, True),
        ),  # fmt: skip
        # onMetaData wins over FLV flags that say both (a parent that did not know yet)
        (
            [Tracks(True, True), metadata(videocodecid=7.0), media(9, 0, avc_header())],
            0,
            (False, True),
        ),  # fmt: skip
        # declared audio never comes: go after tracks_wait with what was declared
        (
            [metadata(videocodecid=7.0, audiocodecid=10.0), media(9, 0, avc_header())],
            1,
            (True, True),
        ),  # fmt: skip
        # nothing declared: both kinds seen is enough; one kind waits for tracks_wait
        ([media(9, 0, avc_header()), media(8, 0, aac_frame())], 0, (True, True)),
        ([media(9, 0, avc_header())], 1, (False, True)),
        # nothing at all: go after tracks_wait, tracks unknown
        ([], 1, None),
    ],
)
async def test_first_viewers_wait_until_the_tracks_are_known(
    nursery, autojump_clock, initial, wait, tracks
):
    parents = FakeParents()
    parents.auto = False
    parents.initial = initial
    mgr = await start_manager(nursery, parents)
    start = trio.current_time()
    sub = await mgr.subscribe("live", "a")
    assert sub is not None
    assert trio.current_time() - start == pytest.approx(parents.delay + wait)
    assert getattr(sub.fanout.stream, "tracks", None) == tracks


async def test_a_break_before_the_tracks_are_known_lets_viewers_in(manager, autojump_clock):
    manager.fake.auto = False
    manager.fake.initial = [Tracks(True, True), media(9, 0, avc_header()),
                            ParentError("reset")]  # fmt: skip
    sub = await manager.subscribe("live", "a")
    assert sub is not None and sub.fanout.stream.tracks == (True, True)
    assert trio.current_time() == pytest.approx(manager.fake.delay)
