"""An origin with workers = 2 (real processes): when a stream moves to another worker (its
publisher back within publisher_grace, landing on the other worker), the new owner's HLS
playlist continues the old owner's, as one origin's does for a returning publisher: the
media sequence never goes back, no segment number names another segment, the discontinuity
sequence counts on, the first segment after the move is marked EXT-X-DISCONTINUITY, and
segments decode on both sides of the move. The return is counted in
publishers_resumed_total."""

from __future__ import annotations

import contextlib
import json

import pytest
import trio

from common.media.stream import Stream
from common.net.conn import ConnClosed
from common.proto.flv import FlvParser
from common.serve.hlsstore import Continuation, HlsSettings, HlsStore
from tests.edge.test_edge_hls_keepalive import read_response
from tests.edge.test_workers import Playing, metrics, open_until_both
from tests.hls_validator import LiveValidator
from tests.media import replay_clip
from tests.origin.test_hls_robust import Tag, decode, feed, looped
from tests.origin.test_workers import HANG, start_node

RETURNS = 24  # publisher returns tried at most until one lands on the other worker


class PlaylistWatch:
    """One HLS viewer on one keep-alive connection (so one worker): every playlist it gets,
    checked across reloads, and each segment's bytes once."""

    def __init__(self, http: int) -> None:
        self.http = http
        self.validator = LiveValidator()
        self.data: dict[int, bytes] = {}
        self.missing = 0
        self.targets: list[int] = []

    async def get(self, sock, buf: bytearray, target: str) -> tuple[bytes, bytes]:
        await sock.send(f"GET {target} HTTP/1.1\r\nHost: o\r\nUser-Agent: w\r\n\r\n".encode())
        return await read_response(sock, buf)

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", self.http))
        buf = bytearray()
        task_status.started()
        with sock:
            while True:
                head, body = await self.get(sock, buf, "/live/m.m3u8")
                if head.startswith(b"HTTP/1.1 200"):
                    text = body.decode()
                    target = int(text.split("#EXT-X-TARGETDURATION:")[1].split()[0])
                    assert target >= max(self.targets, default=0), f"lowered: {text}"
                    self.targets.append(target)
                    # a return on the same worker may make one segment longer than the
                    # target (as on one origin): checked above that it is never lowered
                    p = self.validator.add(
                        text.replace(f"TARGETDURATION:{target}\n", "TARGETDURATION:99\n")
                    )
                    for seq, _, uri, _ in p.segments:
                        if seq not in self.data:
                            head, data = await self.get(sock, buf, f"/live/{uri}")
                            if head.startswith(b"HTTP/1.1 200"):
                                self.data[seq] = data
                            else:  # an old owner's last segment, gone with the move
                                self.missing += 1
                else:  # between the old owner's playlist and the new one's
                    self.missing += 1
                await trio.sleep(0.25)

    def segments(self) -> dict[int, tuple[str, bool]]:
        v = self.validator
        return {seq: (v.uris[seq], v.discontinuities[seq]) for seq in v.uris}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "viewers"),
    [("back", False), ("back", True), ("takeover", False)],
    ids=["back-no-viewers", "back-flv-viewers-on-both", "takeover"],
)
async def test_hls_continues_when_the_stream_moves_to_another_worker(nursery, clip, how, viewers):
    """With FLV viewers on both workers the new owner takes its mirror's stream, whose
    segment clock follows the old owner's; without, its stream is new and its clock resumes
    the old owner's numbers. Either way the playlist carries on; so it does when a new
    publisher takes the stream over (on_republish = "takeover") on the other worker."""
    args = ["--publisher-grace", "10"]
    if how == "takeover":
        args += ["--on-republish", "takeover"]
    moved = "is back on another worker" if how == "back" else "is taken over on another worker"
    proc, log, rtmp, http = await start_node(nursery, *args)
    try:
        url = f"rtmp://127.0.0.1:{rtmp}/live/m"
        async with trio.open_nursery() as running:
            publisher = trio.CancelScope()

            async def publish(scope: trio.CancelScope, task_status=trio.TASK_STATUS_IGNORED):
                with scope, contextlib.suppress(ConnClosed):  # taken over
                    await replay_clip(url, clip, task_status=task_status)

            await running.start(publish, publisher)
            await log.wait_for("publish live/m from")
            plays: list[Playing] = []
            if viewers:
                await open_until_both(running, f"http://127.0.0.1:{http}/live/m.flv", http, plays)
            watches = [PlaylistWatch(http) for _ in range(4)]  # on either worker, or both
            for watch in watches:
                await running.start(watch.run)
            with trio.fail_after(HANG):
                while min(len(w.data) for w in watches) < 3:
                    await trio.sleep(0.2)
            returns = 0
            for _ in range(RETURNS):  # the publisher drops and comes back, until elsewhere
                before = max(max(w.data) for w in watches)
                if how == "back":
                    publisher.cancel()
                    await trio.sleep(0.3)
                publisher = trio.CancelScope()
                await running.start(publish, publisher)
                returns += 1
                if moved in log.text:
                    break
                with trio.fail_after(HANG):  # a segment of this publisher, then again
                    while max(max(w.data) for w in watches) <= before + 1:
                        await trio.sleep(0.2)
            else:
                pytest.skip("the publisher came back on the same worker every time")
            await log.wait_for("moved to worker")
            with trio.fail_after(HANG):  # three segments of the new owner on every watch
                while min(max(w.data) for w in watches) < before + 4:
                    await trio.sleep(0.2)
            ended = sum(p.ended for p in plays)
            running.cancel_scope.cancel()
        m = await metrics(http)
    finally:
        proc.kill()
    assert "continues another worker's playlist" in log.text
    for watch in watches:
        segs = watch.segments()
        # the validator checked every reload: media sequence never back, the discontinuity
        # sequence counting those removed, no number naming another segment
        old = [seq for seq in segs if seq <= before]
        new = sorted(seq for seq in watch.data if seq > before + 1)
        assert old and new
        first_new = min(seq for seq in segs if seq > before)
        assert segs[first_new][1] or segs[new[0]][1], f"no discontinuity at the move: {segs}"
        for seq in (max(s for s in old if s in watch.data), new[-1]):
            assert decode(watch.data[seq])["first_key"], f"segment {seq} does not decode"
    assert m.get("livecdn_publishers_resumed_total", 0) == (returns if how == "back" else 0)
    assert ended == 0, f"{ended} of {len(plays)} FLV viewers cut off by the move"


# ------------------------------------------------------------ in one process, two stores


@pytest.fixture(scope="module")
def clip_tags(clip) -> list[Tag]:
    return [Tag(t.tag_type, t.timestamp, t.body) for t in FlvParser().feed(clip.read_bytes())]


async def test_a_store_continues_another_stores_playlist(nursery, clip_tags):
    """What one worker's store hands over (`handover`, as JSON and back), another's stream
    continues: numbered on in the same session, the discontinuity sequence carried, its
    first segment marked discontinuous (a fresh stream's clock resumes the numbers)."""
    old, new = (HlsStore(HlsSettings(target=1.0, window=20)) for _ in range(2))
    a = Stream("live", "h")
    nursery.start_soon(old.package, a)
    headers = [t for t in clip_tags if t.header]
    await feed(a, headers + looped(clip_tags, 1))
    validator = LiveValidator()
    before = validator.add(old.playlists[("live", "h")].playlist())
    handed = old.handover(("live", "h"))
    assert handed is not None
    c = Continuation.from_json(json.loads(json.dumps(handed.to_json())))
    assert c == handed and c.next_seq == before.segments[-1][0] + 1
    b = Stream("live", "h")
    new.prepare(b, c)
    nursery.start_soon(new.package, b)
    await feed(b, headers + looped(clip_tags, 1))
    after = validator.add(new.playlists[("live", "h")].playlist())
    assert after.media_sequence == c.next_seq
    assert after.segments[0][3], "the first segment after the move is discontinuous"
    assert after.discontinuity_sequence == c.discontinuities
    assert all(uri.startswith(f"h-{c.session}-") for _, _, uri, _ in after.segments)
    seg = new.playlists[("live", "h")].segment(after.segments[0][2])
    assert seg is not None and decode(seg.data)["first_key"]
    a.close()
    b.close()


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"session": "x y", "next_seq": 1, "discontinuities": 0, "extra": 0, "target_duration": 2},
        {
            "session": "s" * 33,
            "next_seq": 1,
            "discontinuities": 0,
            "extra": 0,
            "target_duration": 2,
        },  # fmt: skip
        {"session": "s", "next_seq": -1, "discontinuities": 0, "extra": 0, "target_duration": 2},
        {"session": "s", "next_seq": 1.5, "discontinuities": 0, "extra": 0, "target_duration": 2},
        {"session": "s", "next_seq": True, "discontinuities": 0, "extra": 0, "target_duration": 2},
        {
            "session": "s",
            "next_seq": 1,
            "discontinuities": 2**40,
            "extra": 0,
            "target_duration": 2,
        },  # fmt: skip
        {"session": "s", "next_seq": 1, "discontinuities": 0, "target_duration": 2},
    ],
)
def test_a_bad_handover_is_ignored(doc):
    assert Continuation.from_json(doc) is None


async def test_a_kept_playlist_behind_the_handover_gives_way(nursery, clip_tags):
    """A worker that kept an ended playlist of the stream from an earlier turn (behind what
    the owner now hands over) continues the owner's, never its own older numbers; one ahead
    of the handover (the same session) is kept."""
    store = HlsStore(HlsSettings(target=1.0, window=20))
    a = Stream("live", "k")
    nursery.start_soon(store.package, a)
    headers = [t for t in clip_tags if t.header]
    await feed(a, headers + looped(clip_tags, 1))
    a.close()
    kept = store.playlists[("live", "k")]
    with trio.fail_after(5):
        while not kept.ended:
            await trio.sleep(0.01)
    ahead = Continuation(kept.session, kept.next_seq - 1, 0)
    b = Stream("live", "k")
    store.prepare(b, ahead)
    assert store.playlists[("live", "k")] is kept
    behind = Continuation("other", kept.next_seq + 50, 3, 0, 2)
    c = Stream("live", "k")
    store.prepare(c, behind)
    playlist = store.playlists[("live", "k")]
    assert playlist is not kept and playlist.next_seq == behind.next_seq
    assert playlist.discontinuities() == 3 and playlist.session == "other"
