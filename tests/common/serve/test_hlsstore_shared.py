"""A node's HLS store answers each segment with one shared response (head built once, body
sent with sendfile), and forgets it once the segment leaves the playlist's window."""

from __future__ import annotations

from common.net.http import Request, SharedResponse
from common.proto.hlsplaylist import HlsPlaylist
from common.proto.paths import hls_target
from common.serve.hlsstore import SEGMENT_CACHE, HlsSettings, HlsStore


def _get(path: str) -> Request:
    return Request("GET", path, path, {}, {}, b"", "127.0.0.1:5000")


async def test_a_segment_is_one_shared_response_while_in_the_window():
    store = HlsStore(HlsSettings(target=1.0))
    playlist = HlsPlaylist("demo", "s1", 1.0, window=3, keep=0)
    store.playlists[("live", "demo")] = playlist
    first = playlist.append(b"a" * 100_000, 1.0, discontinuity=False)
    path = f"/live/{first.uri}"
    one = await store.respond(_get(path), hls_target(path))
    two = await store.respond(_get(path), hls_target(path))
    assert isinstance(one, SharedResponse) and one is two
    assert one.body is first.data and one.status == 200
    assert one.headers == [("cache-control", SEGMENT_CACHE)]
    for _ in range(6):  # the first segment leaves the window; others come and go
        seg = playlist.append(b"b" * 10, 1.0, discontinuity=False)
        p = f"/live/{seg.uri}"
        assert isinstance(await store.respond(_get(p), hls_target(p)), SharedResponse)
    gone = await store.respond(_get(path), hls_target(path))
    assert gone is not None and gone.status == 404
    held = store._shared[("live", "demo")]
    assert len(held) <= len(playlist.segments)
    assert all(playlist.segment(uri) is seg for uri, (seg, _) in held.items())
    store.drop(("live", "demo"))
    assert ("live", "demo") not in store._shared


async def test_shared_answers_what_is_ready_once_per_version_and_counts_it():
    store = HlsStore(HlsSettings(target=2.0))
    key = ("live", "demo")
    playlist = HlsPlaylist("demo", "s1", 2.0, window=3, keep=0)
    store.playlists[key] = playlist
    listed = hls_target("/live/demo.m3u8")
    assert store.shared(listed, "c1") is None  # no segment yet: respond waits for one
    seg = playlist.append(b"a" * 100_000, 2.0, discontinuity=False)
    one = store.shared(listed, "c1")
    assert isinstance(one, SharedResponse) and store.shared(listed, "c2") is one
    assert one.body == playlist.rendered() and one.headers == [
        ("cache-control", "max-age=1, stale-while-revalidate=1")
    ]
    segment = store.shared(hls_target(f"/live/{seg.uri}"), "c1")
    assert segment is not None and segment.body is seg.data
    assert store.shared(hls_target("/live/demo-s1-99.ts"), "c1") is None  # not in the window
    playlist.append(b"b" * 10, 2.0, discontinuity=False)
    newer = store.shared(listed, "c1")
    assert newer is not one and newer is not None and newer.body == playlist.rendered()
    assert store.requests == {"playlist": 3, "segment": 1}
    assert store.viewers.count(key, 0.0) == 2
    store.drop(key)
    assert key not in store._shared_playlists
    assert store.shared(listed, "c1") is None
