"""The HLS media playlist parser: what render_playlist writes reads back the same; what is
not a media playlist is a PlaylistError, never another exception. Segment URIs rewritten
by with_query carry the query."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.proto.hlsplaylist import (
    HlsPlaylist,
    PlaylistError,
    Segment,
    parse_playlist,
    render_playlist,
    with_query,
)

PLAYLIST = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-PROGRAM-DATE-TIME:2026-11-24T10:00:00.000Z
#EXTINF:2.000,
s7.ts
#EXTINF:2.000,
s8.ts
#EXT-X-DISCONTINUITY
#EXTINF:1.500,
s9.ts
#EXTINF:2.000,
s10.ts
"""


def test_playlist_sequence_numbers_and_the_live_start_point() -> None:
    pl = parse_playlist(PLAYLIST)
    assert pl.target_duration == 2 and pl.media_sequence == 7 and not pl.ended
    assert [s.seq for s in pl.segments] == [7, 8, 9, 10]
    assert pl.segments[2].discontinuity and pl.segments[0].wall is not None
    assert pl.segments[1].wall is None
    # RFC 8216 6.3.3: not less than three target durations (6 s) from the end
    assert pl.start_sequence() == 7
    assert parse_playlist(PLAYLIST + "#EXT-X-ENDLIST\n").start_sequence() == 7
    longer = PLAYLIST + "#EXTINF:2.000,\ns11.ts\n#EXTINF:2.000,\ns12.ts\n"
    assert parse_playlist(longer).start_sequence() == 10  # starts 6 s from the end


@pytest.mark.parametrize(
    "text",
    ["", "hello", "#EXTM3U\n#EXTINF:2,\nx.ts\n", "#EXTM3U\nx.ts\n#EXT-X-TARGETDURATION:2\n",
     "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n", "#EXTM3U\n#EXT-X-TARGETDURATION:x\n"],
)  # fmt: skip
def test_bad_playlists_are_refused(text: str) -> None:
    with pytest.raises(PlaylistError):
        parse_playlist(text)


@given(st.text(max_size=300))
def test_playlist_parser_only_raises_playlist_errors(text: str) -> None:
    with contextlib.suppress(PlaylistError):
        parse_playlist("#EXTM3U\n" + text)


segments = st.lists(
    st.tuples(
        st.floats(0.001, 30.0),
        st.booleans(),
        st.none() | st.integers(1_000_000_000_000, 4_000_000_000_000),  # epoch ms
    ),
    max_size=12,
)


@given(first=st.integers(0, 2**40), spec=segments, disc=st.integers(0, 1000), ended=st.booleans())
def test_render_then_parse_round_trips(first: int, spec: list, disc: int, ended: bool) -> None:
    window = [
        Segment(
            first + i, round(d, 3), f"s-{first + i}.ts", b"", dis, None if ms is None else ms / 1000
        )
        for i, (d, dis, ms) in enumerate(spec)
    ]
    target = max([6, *(round(s.duration) for s in window)])
    text = render_playlist(window, target_duration=target, discontinuity_sequence=disc, ended=ended)
    pl = parse_playlist(text)
    assert pl.target_duration == target
    assert pl.media_sequence == (first if window else 0)
    assert pl.discontinuity_sequence == disc and pl.ended == ended
    assert [(s.seq, s.uri, s.discontinuity) for s in pl.segments] == [
        (s.seq, s.uri, s.discontinuity) for s in window
    ]
    assert [s.duration for s in pl.segments] == pytest.approx([s.duration for s in window])
    for got, want in zip(pl.segments, window, strict=True):
        assert got.wall == (None if want.wall is None else pytest.approx(want.wall, abs=1e-3))


def test_a_live_window_reads_back_as_the_origin_serves_it() -> None:
    hls = HlsPlaylist("live-demo", "s1", target=2.0, window=3, keep=1)
    for i in range(6):
        hls.append(b"ts", 2.0, discontinuity=i == 1, wall=1_800_000_000.0 + 2 * i)
    pl = parse_playlist(hls.playlist())
    assert [s.uri for s in pl.segments] == [hls.uri(n) for n in (3, 4, 5)]
    assert pl.discontinuity_sequence == 1  # segment 1's discontinuity left the window
    assert pl.last_sequence() == 5 and pl.start_sequence() == 3


def test_segment_uris_carry_the_class_token() -> None:
    playlist = b"#EXTM3U\n#EXTINF:2.0,\ns-1.ts\n#EXTINF:2.0,\ns-2.ts?x=1\n"
    assert with_query(playlist, "lc=basic") == (
        b"#EXTM3U\n#EXTINF:2.0,\ns-1.ts?lc=basic\n#EXTINF:2.0,\ns-2.ts?x=1&lc=basic\n"
    )


def test_a_playlist_version_is_rendered_once_and_shared() -> None:
    hls = HlsPlaylist("live-demo", "s1", target=2.0, window=3, keep=1)
    hls.append(b"a", 2.0, discontinuity=False)
    first = hls.rendered()
    assert first == hls.playlist().encode()
    assert hls.rendered() is first  # the same bytes for every request of this version
    hls.append(b"b", 2.0, discontinuity=False)
    second = hls.rendered()
    assert second is not first and second == hls.playlist().encode()
    hls.ended = True
    assert hls.rendered() == hls.playlist().encode() and b"#EXT-X-ENDLIST" in hls.rendered()


def test_a_restart_at_the_same_number_is_a_new_version() -> None:
    # A playlist that starts over at the same number with one segment again must render
    # anew, even when the new segment sits where the freed one did (the same object here
    # stands for a freed segment's address reused by the next one).
    hls = HlsPlaylist("live-demo", "s1", target=2.0, window=3, keep=1)
    seg = hls.append(b"a", 2.0, discontinuity=False)
    before = hls.rendered()
    assert hls.place(seg.seq, "s1")
    seg.duration, seg.discontinuity = 1.0, True
    hls.add(seg)
    after = hls.rendered()
    assert after == hls.playlist().encode() and after != before
