"""The FLV scanner agrees with the full parser however the stream is split."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.proto import flv
from common.proto.flv import FlvError, FlvParser
from common.proto.flvscan import FlvScanner

AVC_HEADER = bytes([0x17, 0, 0, 0, 0]) + b"\x01\x64\x00\x1f"
KEY = bytes([0x17, 1, 0, 0, 0]) + b"k" * 40
INTER = bytes([0x27, 1, 0, 0, 0]) + b"p" * 20
AAC_HEADER = bytes([0xAF, 0, 0x12, 0x10])
AAC = bytes([0xAF, 1]) + b"a" * 30
EOS = bytes([0x17, 2, 0, 0, 0])
STAMP = b"\x02\x00\x0eonLivecdnClock\x03\x00\x00\x09"

TAGS = {
    "avc_header": (9, AVC_HEADER), "key": (9, KEY), "inter": (9, INTER), "eos": (9, EOS),
    "aac_header": (8, AAC_HEADER), "aac": (8, AAC), "script": (18, STAMP),
}  # fmt: skip


def reference(tags: list[tuple[int, int, bytes]]) -> tuple[list[int], int | None, list]:
    """What a player takes from the stream, computed with FlvParser's tags."""
    keyed = video_seen = False
    media, key, scripts = [], None, []
    for tag_type, ts, body in tags:
        if keyed and tag_type in (8, 9):
            media.append(ts)  # once playing, the scanner does not look into bodies
            continue
        if tag_type == 9:
            info = flv.video_info(body)
            if info.sequence_header or info.end_of_sequence:
                continue
            video_seen = True
            if not keyed:
                if not info.keyframe:
                    continue
                keyed, key = True, ts
            media.append(ts)
        elif tag_type == 8:
            if (keyed or not video_seen) and not flv.audio_info(body).sequence_header:
                media.append(ts)
        else:
            scripts.append((ts, body))
    return media, key, scripts


@given(
    names=st.lists(st.sampled_from(sorted(TAGS)), max_size=30),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
)
def test_scanner_matches_the_parser_however_split(names, cuts) -> None:
    tags = [
        (TAGS[n][0], 40 * i + (1 << 24) * (i % 3 == 2), TAGS[n][1]) for i, n in enumerate(names)
    ]
    raw = flv.file_header(audio=True, video=True) + b"".join(
        flv.build_tag(t, ts, body) for t, ts, body in tags
    )
    parsed = [(t.tag_type, t.timestamp, t.body) for t in FlvParser().feed(raw)]
    media, key, scripts = reference(parsed)
    bounds = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    scanner = FlvScanner()
    firsts, lasts, keys, got_scripts = [], [], [], []
    for a, b in zip(bounds, bounds[1:], strict=False):
        scan = scanner.feed(raw[a:b])
        if scan.first_ts is not None:
            firsts.append(scan.first_ts)
            lasts.append(scan.last_ts)
        if scan.keyframe_ts is not None:
            keys.append(scan.keyframe_ts)
        got_scripts += scan.scripts
    if media:
        assert firsts[0] == media[0] and lasts[-1] == media[-1]
        assert set(firsts) | set(lasts) <= set(media)
    else:
        assert not firsts
    assert keys == ([key] if key is not None else [])
    assert got_scripts == scripts
    # the same messages already framed (RTMP), in the same pieces
    framed = FlvScanner()
    firsts, lasts, keys, got_scripts = [], [], [], []
    for a, b in zip(bounds, bounds[1:], strict=False):
        scan = framed.scan_tags(parsed[a * len(parsed) // len(raw) : b * len(parsed) // len(raw)])
        if scan.first_ts is not None:
            firsts.append(scan.first_ts)
            lasts.append(scan.last_ts)
        keys += [scan.keyframe_ts] if scan.keyframe_ts is not None else []
        got_scripts += scan.scripts
    assert firsts[:1] == media[:1] and lasts[-1:] == media[-1:]
    assert set(firsts) | set(lasts) <= set(media)
    assert keys == ([key] if key is not None else [])
    assert got_scripts == scripts


@pytest.mark.parametrize("raw", [b"NOT-FLV-AT-ALL", flv.file_header(audio=True, video=True)
                                 + bytes([0x07, 0, 0, 1]) + bytes(20)])  # fmt: skip
def test_garbage_is_refused(raw: bytes) -> None:
    with pytest.raises(FlvError):
        FlvScanner().feed(raw)


@given(st.binary(max_size=300))
def test_scanner_only_raises_flv_errors(raw: bytes) -> None:
    scanner = FlvScanner()
    with contextlib.suppress(FlvError):
        scanner.feed(flv.file_header(audio=True, video=True) + raw)
