"""The parts of snapshots: the newest keyframe of a ring, PyAV's decode of any keyframe bytes
(a picture or SnapshotError, nothing else), and the coalescing cache (one computation per
tag, a cancelled one taken over, errors shared, bounds kept)."""

from __future__ import annotations

import threading
import time

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from common.media.stream import Stream
from common.proto import flv
from common.proto.flv import FlvParser
from common.proto.paths import Media
from common.serve.snapshot import (
    Coalesced,
    Keyframe,
    SnapshotError,
    decode_keyframe,
    encode_image,
    lacks_video,
    newest_keyframe,
)
from tests.media import aac_frame, aac_header, avc_header, interframe, keyframe


def test_the_newest_keyframe_and_its_header() -> None:
    stream = Stream("live", "k")
    assert newest_keyframe(stream) is None and not lacks_video(stream)
    stream.push(9, 0, avc_header())
    stream.push(9, 0, keyframe(fill=1))
    stream.push(9, 40, interframe())
    stream.push(9, 80, keyframe(fill=2))
    stream.push(9, 120, interframe())
    found = newest_keyframe(stream)
    assert found is not None and found.payload == keyframe(fill=2) and found.header == avc_header()
    audio = Stream("live", "a")
    audio.push(8, 0, aac_header())
    audio.push(8, 0, aac_frame())
    assert lacks_video(audio) and newest_keyframe(audio) is None


@pytest.fixture(scope="module")
def real_keyframe(clip) -> Keyframe:
    """The clip's AVC sequence header and first keyframe."""
    tags = [t for t in FlvParser().feed(clip.read_bytes()) if t.tag_type == 9]
    key = next(t for t in tags[1:] if flv.video_info(t.body).keyframe)
    return Keyframe(1, tags[0].body, key.body)


def test_a_real_keyframe_decodes(real_keyframe: Keyframe) -> None:
    picture = decode_keyframe(real_keyframe)
    assert (picture.width, picture.height) == (320, 240)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_keyframe_bytes_decode_or_fail_cleanly(real_keyframe: Keyframe, data) -> None:
    payload = bytearray(real_keyframe.payload)
    for _ in range(data.draw(st.integers(1, 20))):
        payload[data.draw(st.integers(5, len(payload) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    for key in (
        Keyframe(1, real_keyframe.header, bytes(payload[:cut])),
        Keyframe(1, data.draw(st.binary(max_size=64)), real_keyframe.payload),
    ):
        try:
            picture = decode_keyframe(key)
        except SnapshotError:
            continue
        assert picture.width > 0 and picture.height > 0


async def test_one_computation_per_tag_shared_by_every_request() -> None:
    cache: Coalesced[str] = Coalesced(4)
    runs = 0
    release = trio.Event()

    async def compute() -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        return f"v{runs}"

    got: list[str] = []
    async with trio.open_nursery() as n:
        for _ in range(10):
            n.start_soon(lambda: _append(got, cache.get("k", 1, compute)))
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert got == ["v1"] * 10 and runs == 1 and cache.shared == 9
    assert await cache.get("k", 1, compute) == "v1" and runs == 1
    assert await cache.get("k", 2, compute) == "v2" and runs == 2, "a new tag computes anew"


async def _append(out: list, value) -> None:
    out.append(await value)


async def test_an_error_is_computed_once_and_shared() -> None:
    cache: Coalesced[str] = Coalesced(4)
    runs = 0

    async def failing() -> str:
        nonlocal runs
        runs += 1
        raise SnapshotError("bad keyframe")

    for _ in range(3):
        with pytest.raises(SnapshotError, match="bad keyframe"):
            await cache.get("e", 1, failing)
    assert runs == 1


async def test_a_follower_takes_over_an_abandoned_computation() -> None:
    cache: Coalesced[str] = Coalesced(4)
    started = trio.Event()

    async def slow() -> str:
        started.set()
        await trio.sleep_forever()
        return "never"

    async def quick() -> str:
        return "done"

    got: list[str] = []
    async with trio.open_nursery() as n:
        leader = trio.CancelScope()

        async def lead() -> None:
            with leader:
                await cache.get("k", 1, slow)

        n.start_soon(lead)
        await started.wait()
        n.start_soon(lambda: _append(got, cache.get("k", 1, quick)))
        await trio.testing.wait_all_tasks_blocked()
        leader.cancel()
    assert got == ["done"] and cache.entries["k"].value == "done"


async def test_the_cache_is_bounded_in_entries_and_bytes() -> None:
    cache: Coalesced[bytes] = Coalesced(3, len, 10)

    def value(v: bytes):
        async def compute() -> bytes:
            return v

        return compute

    for i in range(5):
        await cache.get(i, 1, value(b"x"))
    assert list(cache.entries) == [2, 3, 4]
    await cache.get("big", 1, value(b"y" * 8))
    await cache.get("big2", 1, value(b"z" * 8))
    assert list(cache.entries) == ["big2"], "bytes bound: the oldest go first"


def test_images_of_one_picture_encode_in_parallel(real_keyframe: Keyframe) -> None:
    """Threads encoding one picture at once (as the node does, two at a time) each get their
    image (they once shared the picture's scaler, and could hang)."""
    picture = decode_keyframe(real_keyframe)
    jobs = [(Media.JPEG, (160, 120)), (Media.PNG, (320, 240)), (Media.JPEG, (64, 48))] * 8
    out: dict[int, bytes] = {}

    def encode(i: int, media: Media, size: tuple[int, int]) -> None:
        out[i] = encode_image(picture, media, size)

    threads = [
        threading.Thread(target=encode, args=(i, *job), daemon=True) for i, job in enumerate(jobs)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60  # a hang guard: a hung thread fails the test
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert len(out) == len(jobs), "an encode hung"
    for i, (media, size) in enumerate(jobs):
        assert out[i] == encode_image(picture, media, size)
