"""The origin's HLS packager under failure: hls_dir broken or hostile, sequence headers sent
right behind publish, segments that cannot be muxed, a packager that crashes, a publisher
coming back within publisher_grace. Real sockets, real H.264/AAC (the test clip)."""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import av
import pytest
import trio

from common.media.segclock import ClockState
from common.media.segmenter import Segmenter
from common.media.stream import Stream
from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient
from common.proto import flv
from common.proto.flv import FlvParser
from common.proto.rtmp import session as rs
from common.serve.hlsstore import HlsSettings, HlsStore
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_origin
from tests.hls_validator import LiveValidator, parse

pytestmark = [pytest.mark.slow, needs_ffmpeg]


@dataclass
class Tag:
    type_id: int
    timestamp: int
    body: bytes

    @property
    def header(self) -> bool:
        return self.type_id == 18 or flv.is_sequence_header(self.type_id, self.body)


@pytest.fixture(scope="module")
def tags(clip: Path) -> list[Tag]:
    """The clip's FLV tags: onMetaData, AVC and AAC headers, then 6 s of media."""
    return [Tag(t.tag_type, t.timestamp, t.body) for t in FlvParser().feed(clip.read_bytes())]


def looped(tags: list[Tag], loops: int) -> list[Tag]:
    """The clip's media `loops` times, timestamps continuing."""
    media = [t for t in tags if not t.header]
    period = max(t.timestamp for t in media) + 40
    return [Tag(t.type_id, t.timestamp + k * period, t.body) for k in range(loops) for t in media]


def corrupt(tag: Tag) -> Tag:
    """The same AVC frame with a NAL unit length pointing past its end (cannot be muxed)."""
    return Tag(tag.type_id, tag.timestamp, tag.body[:5] + b"\xff\xff\xff\xff" + tag.body[9:])


async def publish(
    url: str,
    tags: list[Tag],
    media: list[Tag],
    *,
    speed: float = 1.0,
    burst_ms: int = 0,
    pipelined: bool = False,
) -> None:
    """Publish with our RTMP client: headers the moment publish() returns, then `media`
    (the first `burst_ms` of it at once, the rest paced at `speed` x real time).

    `pipelined`: the publish command, the headers and the burst go out in one write, without
    waiting for NetStream.Publish.Start (the origin reads them in one go, before the
    packager it starts on publish has run)."""
    client = await RtmpClient.connect(url)
    headers = [t for t in tags if t.type_id != 18 and t.header]
    first = media[0].timestamp
    burst = [t for t in media if t.timestamp - first < burst_ms]
    try:
        if pipelined:
            session = client.session
            session.create_stream()
            await client._flush()
            client.stream_id = (await client._wait_for(rs.StreamCreated)).stream_id
            session.publish(client.stream_id, client.url.name)
            for t in headers + burst:
                session.send_message(t.type_id, client.stream_id, t.timestamp, t.body)
            await client._flush()
        else:
            await client.publish()
            for t in headers + burst:
                await client.send(t.type_id, t.timestamp, t.body)
        start = trio.current_time()
        for t in media[len(burst) :]:
            await trio.sleep_until(start + (t.timestamp - first - burst_ms) / 1000 / speed)
            await client.send(t.type_id, t.timestamp, t.body)
    finally:
        client.close()


async def playlist_text(port: int, app: str, name: str) -> tuple[int, str]:
    reply = await fetch("GET", f"http://127.0.0.1:{port}/{app}/{name}.m3u8")
    status, body = reply.status, reply.body
    return status, body.decode(errors="replace")


async def wait_segments(port: int, name: str, n: int, timeout: float = 20.0) -> str:
    with trio.fail_after(timeout):
        while True:
            status, text = await playlist_text(port, "live", name)
            if status == 200 and len(parse(text).segments) >= n:
                return text
            await trio.sleep(0.1)


def decode(data: bytes) -> dict:
    with av.open(io.BytesIO(data), format="mpegts") as c:
        kinds = sorted(s.type for s in c.streams)
        frames = list(c.decode(video=0)) if "video" in kinds else []
    return {
        "kinds": kinds,
        "frames": len(frames),
        "first_key": bool(frames and frames[0].key_frame),
    }


def hls_warnings(caplog, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "livecdn.hls" and r.levelno >= logging.WARNING and text in r.getMessage()
    ]


# --------------------------------------------------------------------------- hls_dir


def make_file(tmp_path: Path) -> Path:
    path = tmp_path / "hls"
    path.write_text("not a directory")
    return path


def make_app_file(tmp_path: Path) -> Path:
    path = tmp_path / "hls"
    path.mkdir()
    (path / "live").write_text("not a directory")
    return path


def make_read_only(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    path = tmp_path / "hls"
    path.mkdir(mode=0o500)
    return path


@pytest.mark.parametrize("broken", [make_file, make_app_file, make_read_only])
async def test_a_broken_hls_dir_leaves_the_origin_and_playlists_up(
    nursery, clip, tmp_path, caplog, broken
):
    hls_dir = broken(tmp_path)
    server, addr = await start_origin(nursery, hls_target_duration=1.0, hls_dir=str(hls_dir))
    for name in ("a", "b"):
        await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/{name}")
    validators = {name: LiveValidator() for name in ("a", "b")}
    for _ in range(2):
        for name in ("a", "b"):
            validators[name].add(await wait_segments(addr.http_port, name, 4))
        await trio.sleep(1.5)
    for name, validator in validators.items():
        text = await wait_segments(addr.http_port, name, 4)
        uri = validator.add(text).segments[-1][2]
        reply = await fetch("GET", f"http://127.0.0.1:{addr.http_port}/live/{uri}")
        status, data = reply.status, reply.body
        assert status == 200 and decode(data)["first_key"], "served from memory"
    assert (await fetch("GET", f"http://127.0.0.1:{addr.http_port}/api/streams")).status == 200
    hls = server.hls
    assert hls.write_errors >= 8 and hls.packager_restarts == 0
    lines = hls_warnings(caplog, "cannot write to hls_dir")
    assert len(lines) == 2, "one line per stream, not one per segment"
    assert {line.split(":")[0] for line in lines} == {"HLS live/a", "HLS live/b"}

    # repaired: the directory catches up with the whole window and says so
    if hls_dir.is_file():
        hls_dir.unlink()
    elif (hls_dir / "live").is_file():
        (hls_dir / "live").unlink()
    else:
        hls_dir.chmod(0o700)
    hls_dir.mkdir(exist_ok=True)
    with trio.fail_after(10):
        while len([r for r in caplog.records if "writing to hls_dir again" in r.getMessage()]) < 2:
            await trio.sleep(0.1)
    for name in ("a", "b"):
        text = (hls_dir / "live" / f"{name}.m3u8").read_text()
        assert len(parse(text).segments) >= 4
        for _, _, uri, _ in parse(text).segments:
            assert (hls_dir / "live" / uri).stat().st_size > 1000


async def feed(stream: Stream, tags: list[Tag], *, source: bool = False) -> None:
    """Push `tags` into `stream`, letting its readers (the packager) keep up."""
    if source:
        stream.new_source()
    with trio.fail_after(20):
        while not stream.readers:
            await trio.sleep(0.001)
        for t in tags:
            if t.type_id == 18:
                stream.set_metadata(t.body, {})
            else:
                stream.push(t.type_id, t.timestamp, t.body)
            while any(r.cursor < stream.head for r in stream.readers):
                await trio.sleep(0.001)


async def package_once(nursery, store: HlsStore, stream: Stream, tags: list[Tag]):
    """`store` packages `stream` fed the clip once, to its end; its playlist (ended)."""
    nursery.start_soon(store.package, stream)
    await feed(stream, [t for t in tags if t.header] + looped(tags, 1))
    stream.close()
    playlist = store.playlists[(stream.app, stream.name)]
    with trio.fail_after(20):  # a hang guard
        while not playlist.ended:
            await trio.sleep(0.001)
    return playlist


async def test_files_never_leave_hls_dir(nursery, tags, tmp_path, caplog):
    """Neither a symlinked app folder nor a name with '..' (keys are validated before
    they get here: this is the second line of defence) writes outside hls_dir."""
    root, outside = tmp_path / "hls", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "evil").symlink_to(outside, target_is_directory=True)
    store = HlsStore(HlsSettings(target=1.0, directory=str(root), grace=0.1))
    streams = [Stream("evil", "x"), Stream("live", "../../outside/y"), Stream("live", "ok")]
    for stream in streams:
        nursery.start_soon(store.package, stream)
    for stream in streams:
        nursery.start_soon(feed, stream, tags)
    with trio.fail_after(20):
        while not all(
            (p := store.playlists.get((s.app, s.name))) is not None and len(p.segments) >= 2
            for s in streams
        ):
            await trio.sleep(0.05)
        while store.write_errors < 4:
            await trio.sleep(0.05)
    assert list(outside.iterdir()) == []
    assert (root / "live" / "ok.m3u8").exists()
    lines = hls_warnings(caplog, "resolves outside hls_dir")
    assert len(lines) == 2 and all("refused" in line for line in lines)
    for stream in streams:
        stream.close()


# --------------------------------------------------------------------------- headers


async def test_headers_before_the_packager_starts(nursery, tags):
    """The stream already has its headers and a GOP when the packager adds its reader
    (which starts at the newest keyframe): the segments still carry video."""
    store = HlsStore(HlsSettings(target=1.0))
    stream = Stream("live", "early", segment_ms=1000)
    media = looped(tags, 1)
    for t in [t for t in tags if t.header and t.type_id != 18] + media[:60]:
        stream.push(t.type_id, t.timestamp, t.body)
    nursery.start_soon(store.package, stream)
    await feed(stream, media[60:])
    stream.close()
    with trio.fail_after(10):
        while not store.playlists[("live", "early")].ended:
            await trio.sleep(0.01)
    segments = store.playlists[("live", "early")].segments
    assert len(segments) >= 4 and store.mux_errors == 0
    for seg in segments:
        decoded = decode(seg.data)
        assert decoded["kinds"] == ["audio", "video"] and decoded["first_key"]


async def test_headers_right_behind_publish_from_five_publishers_at_once(nursery, tags):
    """Sequence headers sent right behind publish (the moment publish() returns, or in the
    same write as the publish command), followed at once by the first 1.5 s of media, from
    five publishers starting together: the packager's reader starts after the headers, yet
    every playlist has video segments that decode."""
    server, addr = await start_origin(nursery, hls_target_duration=1.0)
    url = f"rtmp://127.0.0.1:{addr.rtmp_port}/live"
    media = looped(tags, 1)
    async with trio.open_nursery() as publishers:
        for i in range(5):
            publishers.start_soon(
                lambda i=i: publish(
                    f"{url}/h{i}", tags, media, speed=2.0, burst_ms=1500, pipelined=i % 2 == 0
                )
            )
        for i in range(5):
            text = await wait_segments(addr.http_port, f"h{i}", 2)
            for _, _, uri, _ in parse(text).segments:
                reply = await fetch("GET", f"http://127.0.0.1:{addr.http_port}/live/{uri}")
                status, data = reply.status, reply.body
                assert status == 200
                decoded = decode(data)
                assert decoded["kinds"] == ["audio", "video"], f"h{i}: {decoded}"
                assert decoded["first_key"] and decoded["frames"] >= 20, f"h{i}: {decoded}"
    assert server.hls.mux_errors == 0


# --------------------------------------------------------------------------- mux failures


async def test_a_segment_that_cannot_be_muxed_keeps_the_numbering(nursery, tags, caplog):
    server, addr = await start_origin(nursery, hls_target_duration=1.0, hls_window=4)
    media = looped(tags, 2)
    video = [i for i, t in enumerate(media) if t.type_id == 9 and t.body[0] >> 4 == 2]
    bad = next(i for i in video if media[i].timestamp >= 4500)
    media[bad] = corrupt(media[bad])
    validator = LiveValidator()
    url = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/m"
    async with trio.open_nursery() as n:
        n.start_soon(lambda: publish(url, tags, media, speed=3.0))
        await wait_segments(addr.http_port, "m", 1)
        with trio.move_on_after(30):
            while True:
                status, text = await playlist_text(addr.http_port, "live", "m")
                assert status == 200
                p = validator.add(text)
                if p.segments[0][0] > 4:  # the failed segment has left the window
                    break
                await trio.sleep(0.05)
    assert server.hls.mux_errors == 1
    assert len(hls_warnings(caplog, "not muxed")) == 1
    seen = {seq: disc for p in validator.history for seq, _, _, disc in p.segments}
    # numbers are the stream's (every node's): the failed one is missing, the playlist
    # starts over after it with a discontinuity
    missing = sorted(set(range(max(seen) + 1)) - set(seen))
    assert len(missing) == 1 and 2 <= missing[0] <= 5, missing
    assert [seq for seq, d in seen.items() if d] == [missing[0] + 1]


# --------------------------------------------------------------------------- crash and restart


async def test_a_crashing_packager_restarts_alone(nursery, clip, monkeypatch, caplog):
    crashed = []

    class Exploding(Segmenter):
        def push(self, frame, epoch=0):
            if not crashed and self.next_seq == 2:
                crashed.append(frame)
                raise RuntimeError("a bug in the packager")
            return super().push(frame, epoch)

    monkeypatch.setattr("common.serve.packager.Segmenter", Exploding)
    server, addr = await start_origin(nursery, hls_target_duration=1.0, hls_window=10)
    for name in ("c", "d"):
        await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/{name}")
    validators = {"c": LiveValidator(), "d": LiveValidator()}
    with trio.fail_after(30):
        while not (crashed and all(len(v.history) and len(v.history[-1].segments) >= 6
                                   for v in validators.values())):  # fmt: skip
            for name, v in validators.items():
                status, text = await playlist_text(addr.http_port, "live", name)
                if status == 200:
                    v.add(text)
            await trio.sleep(0.1)
    assert server.hls.packager_restarts == 1
    discs = {name: sum(s[3] for s in v.history[-1].segments) for name, v in validators.items()}
    assert sorted(discs.values()) == [0, 1], "the restarted stream has one discontinuity"
    assert [r for r in caplog.records if "a bug in the packager" in r.getMessage()]
    assert (await fetch("GET", f"http://127.0.0.1:{addr.http_port}/api/streams")).status == 200


# --------------------------------------------------------------------------- publisher grace


async def test_a_new_source_in_the_same_stream_is_one_discontinuity(nursery, tags):
    """publisher_grace: the publisher comes back into the SAME Stream (new_source) with the
    same sequence headers: the playlist continues, numbered on, with no ENDLIST; the stream's
    timestamps continue, so no EXT-X-DISCONTINUITY is needed (it takes changed headers, as
    every node can see: tests/common/media/test_segclock.py)."""
    store = HlsStore(HlsSettings(target=1.0, window=20))
    stream = Stream("live", "g")
    nursery.start_soon(store.package, stream)
    headers = [t for t in tags if t.header]
    media = looped(tags, 1)
    await feed(stream, headers + media)
    await feed(stream, headers + media, source=True)  # timestamps start again at 0
    text = store.playlists[("live", "g")].playlist()
    p = LiveValidator().add(text)
    assert "#EXT-X-ENDLIST" not in text and not p.ended
    assert "#EXT-X-DISCONTINUITY" not in text
    assert [s[0] for s in p.segments] == list(range(len(p.segments)))
    assert len(p.segments) >= 10
    for _, _, uri, _ in p.segments:
        assert decode(store.playlists[("live", "g")].segment(uri).data)["first_key"]
    stream.close()


async def test_an_ended_playlist_is_kept_for_the_grace_in_virtual_time(
    autojump_clock, inline_threads, nursery, tags
):
    """On the MockClock: a stream's playlist, with EXT-X-ENDLIST once the stream ends, is
    served for `grace` seconds after that, not less, then removed."""
    store = HlsStore(HlsSettings(target=1.0, grace=2.0))
    stream = Stream("live", "end")
    playlist = await package_once(nursery, store, stream, tags)
    ended = trio.current_time()  # the grace started between playlist.ended_at and now
    assert LiveValidator().add(playlist.playlist()).ended
    await trio.sleep_until(playlist.ended_at + 1.99)
    assert store.playlists.get(("live", "end")) is playlist
    await trio.sleep_until(ended + 2.01)
    assert ("live", "end") not in store.playlists


async def test_publisher_back_within_publisher_grace(nursery, clip):
    """Real ffmpeg twice: the grace is long enough for a new ffmpeg on a loaded machine to
    start within it; its length is timed on the MockClock in test_boundaries.py. Each
    publishes the clip's first two seconds (two segments)."""
    grace = 6.0
    server, addr = await start_origin(
        nursery, hls_target_duration=1.0, hls_window=20, publisher_grace=grace
    )
    url = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/pg"
    validator = LiveValidator()
    for _ in range(2):
        proc = await ffmpeg_publish(nursery, clip, url, loop=False, seconds=2)
        await proc.wait()
        await trio.sleep(0.3)
        status, text = await playlist_text(addr.http_port, "live", "pg")
        assert status == 200
        validator.add(text)
    last = validator.history[-1]
    assert not last.ended, "the stream is waiting for its publisher"
    # the same encoder settings (sequence headers) and continued timestamps: no discontinuity
    assert sum(s[3] for s in last.segments) == 0
    assert [s[0] for s in last.segments] == list(range(len(last.segments)))
    with trio.fail_after(grace + 10):  # a hang guard
        while not last.ended:  # ENDLIST once the grace is over
            status, text = await playlist_text(addr.http_port, "live", "pg")
            assert status == 200
            last = validator.add(text)
            await trio.sleep(0.2)


# --------------------------------------------------------------------------- log rate limit


async def test_repeated_failures_log_one_line_a_minute(mock_clock, caplog):
    """Virtual time: a stream whose writes fail at every segment logs the first failure,
    then one line a minute with the count in between; recovery is one line; a disk that
    flaps (fails, works, fails...) logs no more than that."""
    store = HlsStore(HlsSettings())
    key = ("live", "full")
    disk_full = OSError(28, "No space left on device")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "livecdn.hls"]

    for _ in range(30):  # one segment every 2 s for a minute
        store.write_failed(key, disk_full)
        mock_clock.jump(2)
    assert store.write_errors == 30
    assert lines() == [
        "HLS live/full: cannot write to hls_dir (OSError: [Errno 28] No space left on device); "
        "the playlist is served from memory"
    ]
    store.write_failed(key, disk_full)
    assert len(lines()) == 2 and lines()[1].endswith("(29 more since the last report)")
    store.write_ok(key)
    store.write_ok(key)
    assert lines()[2:] == ["HLS live/full: writing to hls_dir again"]
    for _ in range(29):  # flapping, one segment every 2 s
        store.write_failed(key, disk_full)
        store.write_ok(key)
        mock_clock.jump(2)
    assert len(lines()) == 3
    store.write_failed(("live", "other"), disk_full)  # other streams are on their own
    assert len(lines()) == 4
    mock_clock.jump(2)  # a minute after the last line
    store.write_failed(key, disk_full)
    store.write_ok(key)
    assert lines()[4].endswith("(29 more since the last report)")
    assert lines()[5] == "HLS live/full: writing to hls_dir again"
    assert len(lines()) == 6 and store.write_errors == 31 + 29 + 2


async def test_a_parent_clock_with_an_absurd_date_gives_a_playlist_without_dates(nursery, tags):
    """A clock state within every bound whose dates still come out past the year 9999 (a
    hostile or broken parent): the segments are listed without EXT-X-PROGRAM-DATE-TIME
    instead of every playlist request failing."""
    store = HlsStore(HlsSettings(target=1.0))
    stream = Stream("live", "far", segment_ms=1000)
    state = replace(stream.clock.state(), session="far", seq=5, epoch_ts=-(2**50))
    stream.clock.anchor(ClockState.decode(state.encode()))
    playlist = await package_once(nursery, store, stream, tags)
    text = playlist.playlist()
    assert "#EXT-X-PROGRAM-DATE-TIME" not in text and parse(text).segments[0][0] == 6
