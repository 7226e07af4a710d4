"""Tests for common.proto.flv."""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.proto import amf0
from common.proto.errors import ProtocolError
from common.proto.flv import (
    TAG_AUDIO,
    TAG_SCRIPT,
    TAG_VIDEO,
    AudioInfo,
    FlvError,
    FlvParser,
    FlvTag,
    VideoInfo,
    audio_info,
    avc_config_dimensions,
    build_tag,
    file_header,
    is_sequence_header,
    video_info,
)


def _stream(*tags: tuple[int, int, bytes]) -> bytes:
    return file_header() + b"".join(build_tag(t, ts, body) for t, ts, body in tags)


SAMPLE_TAGS = [
    (TAG_SCRIPT, 0, amf0.encode("onMetaData", amf0.ECMAArray(duration=0.0))),
    (TAG_VIDEO, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f"),
    (TAG_AUDIO, 0, b"\xaf\x00\x12\x10"),
    (TAG_VIDEO, 40, b"\x27\x01\x00\x00\x28" + b"\x00" * 300),
    (TAG_AUDIO, 23, b""),
    (TAG_VIDEO, 0x01234567, b"\x17\x01\x00\x00\x00"),
]


# --------------------------------------------------------------------------- container


def test_file_header_bytes() -> None:
    assert file_header() == b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    assert file_header(audio=False) == b"FLV\x01\x01\x00\x00\x00\x09\x00\x00\x00\x00"
    assert file_header(video=False)[4] == 0x04
    assert file_header(audio=False, video=False)[4] == 0x00
    assert len(file_header()) == 13


def test_build_tag_bytes() -> None:
    tag = build_tag(TAG_AUDIO, 0x00123456, b"abc")
    assert tag == b"\x08\x00\x00\x03\x12\x34\x56\x00\x00\x00\x00abc\x00\x00\x00\x0e"
    assert build_tag(TAG_VIDEO, 0, memoryview(b"xy"))[11:13] == b"xy"


def test_build_tag_extended_timestamp_and_modulo() -> None:
    tag = build_tag(TAG_VIDEO, 0x12345678, b"")
    assert tag[4:8] == b"\x34\x56\x78\x12"
    assert build_tag(TAG_VIDEO, 2**32 + 5, b"")[4:8] == b"\x00\x00\x05\x00"
    assert build_tag(TAG_VIDEO, -1, b"")[4:8] == b"\xff\xff\xff\xff"
    with pytest.raises(ValueError):
        build_tag(TAG_VIDEO, 0, bytes(0x1000000))


def test_parse_one_piece_and_byte_by_byte() -> None:
    data = _stream(*SAMPLE_TAGS)
    expected = [FlvTag(t, ts, body) for t, ts, body in SAMPLE_TAGS]

    parser = FlvParser()
    assert parser.feed(data) == expected
    assert parser.header_seen and parser.has_audio and parser.has_video

    parser = FlvParser()
    tags: list[FlvTag] = []
    for i in range(len(data)):
        tags += parser.feed(data[i : i + 1])
        if i < 12:
            assert not parser.header_seen
    assert tags == expected
    assert parser.feed(b"") == []


def test_extended_timestamp_round_trip() -> None:
    for ts in (0xFFFFFF, 0x1000000, 0x12345678, 0xFFFFFFFF):
        (tag,) = FlvParser().feed(file_header() + build_tag(TAG_AUDIO, ts, b"\xaf\x01"))
        assert tag.timestamp == ts


def test_header_flags() -> None:
    parser = FlvParser()
    parser.feed(file_header(audio=False))
    assert parser.header_seen and parser.has_video and not parser.has_audio


def test_header_with_larger_data_offset() -> None:
    header = b"FLV\x01\x05\x00\x00\x00\x0cXYZ\x00\x00\x00\x00"
    tag = build_tag(TAG_AUDIO, 7, b"\xaf\x01")
    assert FlvParser().feed(header + tag) == [FlvTag(TAG_AUDIO, 7, b"\xaf\x01")]


def test_oversized_tag_rejected_from_header_alone() -> None:
    parser = FlvParser(max_tag_size=100)
    assert parser.feed(file_header() + build_tag(TAG_VIDEO, 0, bytes(100))) != []
    with pytest.raises(FlvError):
        # Only the 11-byte tag header is needed to reject it.
        parser.feed(build_tag(TAG_VIDEO, 0, bytes(101))[:11])
    with pytest.raises(FlvError):
        parser.feed(b"")  # the parser stays failed


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"FLX", id="bad-signature"),
        pytest.param(b"GIF89a", id="bad-signature-early"),
        pytest.param(b"FLV\x02", id="bad-version"),
        pytest.param(b"FLV\x01\x05\x00\x00\x00\x08\x00\x00\x00\x00", id="short-data-offset"),
        pytest.param(b"FLV\x01\x05\xff\xff\xff\xff", id="huge-data-offset"),
        pytest.param(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x01", id="nonzero-prev-size0"),
        pytest.param(file_header() + b"\x07" + bytes(10), id="unknown-tag-type"),
        pytest.param(file_header() + b"\x28" + bytes(10), id="filtered-audio"),
        pytest.param(file_header() + b"\x48" + bytes(10), id="reserved-bits"),
        pytest.param(
            file_header() + build_tag(TAG_AUDIO, 0, b"\xaf\x01")[:-1] + b"\x00",
            id="prev-tag-size-mismatch",
        ),
    ],
)
def test_parser_rejects(data: bytes) -> None:
    with pytest.raises(FlvError):
        FlvParser().feed(data)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"NOTFLV" + bytes(8), "bad FLV signature"),
        (b"FLV\x01\x05\x00\x00\x00\x09" + bytes(4) + b"\x63" + bytes(14), "encrypted"),
    ],
)
def test_bad_flv_is_a_protocol_error_saying_why(data: bytes, why: str) -> None:
    """What the servers catch to close the connection and log the reason."""
    with pytest.raises(ProtocolError, match=why):
        FlvParser().feed(data)


# --------------------------------------------------------------------------- video


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b"\x17\x00\x00\x00\x00\x01\x64",
            VideoInfo("avc", True, True, False, 0, False),
            id="avc-sequence-header",
        ),
        pytest.param(
            b"\x17\x01\xff\xff\xc0\x00\x00\x00\x01",
            VideoInfo("avc", True, False, False, -64, False),
            id="avc-keyframe-negative-cts",
        ),
        pytest.param(
            b"\x27\x01\x00\x00\x50",
            VideoInfo("avc", False, False, False, 80, False),
            id="avc-inter",
        ),
        pytest.param(
            b"\x17\x02\x00\x00\x00",
            VideoInfo("avc", True, False, True, 0, False),
            id="avc-end-of-sequence",
        ),
        pytest.param(
            b"\x1c\x00\x00\x00\x00\x01",
            VideoInfo("hevc", True, True, False, 0, False),
            id="legacy-hevc-12",
        ),
        pytest.param(
            b"\x2c\x01\x80\x00\x00",
            VideoInfo("hevc", False, False, False, -(2**23), False),
            id="legacy-hevc-min-cts",
        ),
        pytest.param(b"\x22\x00", VideoInfo("h263", False, False, False, 0, False), id="h263"),
        pytest.param(b"\x14\x00", VideoInfo("vp6", True, False, False, 0, False), id="vp6"),
        pytest.param(
            b"\x57\x00", VideoInfo("avc", False, False, False, 0, False), id="legacy-command"
        ),
        pytest.param(
            b"\x90hvc1\x01\x02",
            VideoInfo("hevc", True, True, False, 0, True),
            id="ex-hvc1-sequence-start",
        ),
        pytest.param(
            b"\x93hvc1\x00\x00\x00\x01",
            VideoInfo("hevc", True, False, False, 0, True),
            id="ex-hvc1-coded-frames-x",
        ),
        pytest.param(
            b"\xa1hvc1\xff\xff\xfe\x00",
            VideoInfo("hevc", False, False, False, -2, True),
            id="ex-hvc1-coded-frames",
        ),
        pytest.param(b"\x92avc1", VideoInfo("avc", True, False, True, 0, True), id="ex-avc1-end"),
        pytest.param(
            b"\x91av01\x12\x00", VideoInfo("av1", True, False, False, 0, True), id="ex-av1-no-cts"
        ),
        pytest.param(
            b"\x95av01\x80", VideoInfo("av1", True, True, False, 0, True), id="ex-av1-mpeg2ts"
        ),
        pytest.param(b"\xa1vp09\x00", VideoInfo("vp9", False, False, False, 0, True), id="ex-vp9"),
        pytest.param(
            b"\x94hvc1\x02\x00\x09colorInfo",
            VideoInfo("hevc", False, False, False, 0, True),
            id="ex-metadata",
        ),
        pytest.param(
            b"\xd1\x00", VideoInfo("unknown", False, False, False, 0, True), id="ex-command"
        ),
        pytest.param(
            b"\x97\x02\x00\x01\x02\x01avc1\x00\x00\x10",
            VideoInfo("avc", True, False, False, 16, True),
            id="ex-modex-nano-offset",
        ),
        pytest.param(
            b"\x96\x01hvc1\x00\x00\x00\x21",
            VideoInfo("hevc", True, False, False, 33, True),
            id="ex-multitrack-one-track",
        ),
        pytest.param(
            b"\xa6\x23av01\x01\x00\x00\x05",
            VideoInfo("av1", False, False, False, 0, True),
            id="ex-multitrack-many-codecs",
        ),
    ],
)
def test_video_info(body: bytes, expected: VideoInfo) -> None:
    assert video_info(body) == expected
    assert video_info(memoryview(body)) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x17",
        b"\x17\x00\x00\x00",
        b"\x17\x03\x00\x00\x00",  # unknown AVCPacketType
        b"\x1c\x01",
        b"\x57",
        b"\x90hvc",
        b"\x91hvc1\x00\x00",  # missing SI24
        b"\x98hvc1",  # reserved packet type
        b"\x97",
        b"\x97\xff",
        b"\x97\x00\x00",
        b"\x96",
        b"\x96\x06avc1\x00",  # multitrack in multitrack
        b"\x96\x30avc1\x00",  # reserved multitrack type
        b"\x96\x00avc1",  # missing track id
        b"\x90\x00\x01\x02\x03",  # non-printable FourCC
        b"\xd0",
    ],
)
def test_video_info_malformed(body: bytes) -> None:
    with pytest.raises(FlvError):
        video_info(body)


# --------------------------------------------------------------------------- audio


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"\xaf\x00\x12\x10", AudioInfo("aac", True, 44100, 2), id="aac-seq-44k"),
        pytest.param(b"\xaf\x01\x21\x00", AudioInfo("aac", False, 44100, 2), id="aac-raw"),
        pytest.param(b"\xaf\x00\x11\x88", AudioInfo("aac", True, 48000, 1), id="aac-seq-48k-mono"),
        pytest.param(
            b"\xaf\x00\x2b\x11\x80", AudioInfo("aac", True, 48000, 2), id="he-aac-explicit-sbr"
        ),
        pytest.param(
            b"\xaf\x00\x17\x80\x10\x00\x08",
            AudioInfo("aac", True, 8192, 1),
            id="aac-explicit-frequency",
        ),
        pytest.param(b"\x2e\xff", AudioInfo("mp3", False, 44100, 1), id="mp3-mono"),
        pytest.param(b"\x2f\xff", AudioInfo("mp3", False, 44100, 2), id="mp3-stereo"),
        pytest.param(b"\x32", AudioInfo("pcm_le", False, 5512, 1), id="pcm-le"),
        pytest.param(b"\xb2", AudioInfo("speex", False, 16000, 1), id="speex"),
        pytest.param(b"\x72", AudioInfo("g711a", False, 5512, 1), id="g711a"),
        pytest.param(b"\xe2", AudioInfo("mp3", False, 8000, 1), id="mp3-8k"),
        pytest.param(
            b"\x90Opus" + b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00",
            AudioInfo("opus", True, 48000, 2),
            id="ex-opus-seq",
        ),
        pytest.param(b"\x91Opus\xfc", AudioInfo("opus", False, 0, 0), id="ex-opus-frame"),
        pytest.param(b"\x90mp4a\x11\x90", AudioInfo("aac", True, 48000, 2), id="ex-mp4a-seq"),
        pytest.param(b"\x91fLaC\x00", AudioInfo("flac", False, 0, 0), id="ex-flac"),
        pytest.param(b"\x91ac-3\x00", AudioInfo("ac3", False, 0, 0), id="ex-ac3"),
        pytest.param(b"\x94ec-3\x01\x06", AudioInfo("eac3", False, 0, 6), id="ex-multichannel"),
        pytest.param(
            b"\x97\x02\x00\x00\x01\x01Opus\x00", AudioInfo("opus", False, 0, 0), id="ex-modex"
        ),
        pytest.param(b"\x95\x01Opus\x00\x00", AudioInfo("opus", False, 0, 0), id="ex-multitrack"),
    ],
)
def test_audio_info(body: bytes, expected: AudioInfo) -> None:
    assert audio_info(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xaf",
        b"\xaf\x02",
        b"\xaf\x00",  # empty AudioSpecificConfig
        b"\xaf\x00\x12",  # truncated AudioSpecificConfig
        b"\xaf\x00\x16\x80",  # reserved sampling_frequency_index 13
        b"\x90Opu",
        b"\x93Opus",  # reserved AudioPacketType
        b"\x94Opus\x00",  # truncated MultichannelConfig
        b"\x90mp4a",
    ],
)
def test_audio_info_malformed(body: bytes) -> None:
    with pytest.raises(FlvError):
        audio_info(body)


def test_is_sequence_header() -> None:
    assert is_sequence_header(TAG_VIDEO, b"\x17\x00\x00\x00\x00")
    assert not is_sequence_header(TAG_VIDEO, b"\x17\x01\x00\x00\x00")
    assert is_sequence_header(TAG_VIDEO, b"\x90hvc1")
    assert is_sequence_header(TAG_AUDIO, b"\xaf\x00\x12\x10")
    assert not is_sequence_header(TAG_AUDIO, b"\xaf\x01\x00")
    assert not is_sequence_header(TAG_AUDIO, b"\x2f\x00")
    assert not is_sequence_header(TAG_SCRIPT, b"\x02")


# --------------------------------------------------------------------------- AVC SPS


class _BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> None:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(2 * code.bit_length() - 1, code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = self.bits + [1]  # rbsp_stop_one_bit
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def _escape(rbsp: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _avc_sequence_header(sps_nal: bytes, *, enhanced: bool = False) -> bytes:
    record = bytes([1, sps_nal[1], sps_nal[2], sps_nal[3], 0xFF, 0xE1])
    record += struct.pack(">H", len(sps_nal)) + sps_nal + b"\x01\x00\x04\x68\xeb\xe3\xcb"
    header = b"\x90avc1" if enhanced else b"\x17\x00\x00\x00\x00"
    return header + record


def _sps(
    *,
    profile: int,
    width_mbs: int,
    height_units: int,
    frame_mbs_only: int = 1,
    chroma: int = 1,
    crop: tuple[int, int, int, int] | None = None,
    scaling: bool = False,
    poc_type: int = 0,
) -> bytes:
    w = _BitWriter()
    w.u(8, profile)
    w.u(8, 0)
    w.u(8, 40)
    w.ue(0)
    if profile in (100, 110, 122, 244):
        w.ue(chroma)
        if chroma == 3:
            w.u(1, 0)
        w.ue(0)
        w.ue(0)
        w.u(1, 0)
        w.u(1, int(scaling))
        if scaling:
            for i in range(12 if chroma == 3 else 8):
                w.u(1, 1)
                if i == 0:
                    w.se(-8)  # nextScale == 0: default list, no more deltas
                    continue
                for j in range(16 if i < 6 else 64):
                    w.se(1 if j % 2 else -1)
    w.ue(0)
    w.ue(poc_type)
    if poc_type == 0:
        w.ue(2)
    elif poc_type == 1:
        w.u(1, 0)
        w.se(-3)
        w.se(2)
        w.ue(2)
        w.se(1)
        w.se(-1)
    w.ue(4)
    w.u(1, 0)
    w.ue(width_mbs - 1)
    w.ue(height_units - 1)
    w.u(1, frame_mbs_only)
    if not frame_mbs_only:
        w.u(1, 1)
    w.u(1, 1)
    w.u(1, crop is not None)
    if crop is not None:
        for value in crop:
            w.ue(value)
    w.u(1, 0)  # vui_parameters_present_flag
    return _escape(b"\x67" + w.rbsp())


@pytest.mark.parametrize(
    ("sps", "size"),
    [
        (_sps(profile=66, width_mbs=20, height_units=15), (320, 240)),
        (_sps(profile=100, width_mbs=120, height_units=68, crop=(0, 0, 0, 4)), (1920, 1080)),
        (_sps(profile=100, width_mbs=80, height_units=45, scaling=True), (1280, 720)),
        (_sps(profile=244, width_mbs=22, height_units=18, chroma=3, crop=(1, 2, 3, 4)), (349, 281)),
        (_sps(profile=122, width_mbs=12, height_units=7, chroma=2, crop=(0, 7, 0, 14)), (178, 98)),
        (_sps(profile=100, width_mbs=45, height_units=18, frame_mbs_only=0), (720, 576)),
        (
            _sps(profile=100, width_mbs=45, height_units=17, frame_mbs_only=0, crop=(0, 0, 0, 2)),
            (720, 536),
        ),
        (_sps(profile=77, width_mbs=40, height_units=30, poc_type=1), (640, 480)),
        (_sps(profile=77, width_mbs=40, height_units=30, poc_type=2), (640, 480)),
    ],
)
def test_avc_config_dimensions_synthetic(sps: bytes, size: tuple[int, int]) -> None:
    assert avc_config_dimensions(_avc_sequence_header(sps)) == size
    assert avc_config_dimensions(_avc_sequence_header(sps, enhanced=True)) == size


@pytest.mark.parametrize(
    ("body_hex", "size"),
    [
        # libx264 output: High 4:2:0 1080p (cropped from 1088), Baseline, interlaced, 4:4:4, 4:2:2.
        (
            "170000000001640028ffe1001b67640028acd940780227e5c044000003000400000300c83c60c658"
            "01000668ebe3cb22c0fdf8f800",
            (1920, 1080),
        ),
        (
            "17000000000142c00dffe100186742c00dd90141fb011000000300100000030320f142a480010005"
            "68cb83cb20",
            (320, 240),
        ),
        (
            "17000000000164001effe100186764001eacd940b424d8088000000300800000190f8a14cb010006"
            "68fba3cb22c0fdf8f800",
            (720, 576),
        ),
        (
            "170000000001f4000dffe1001867f4000d919b282c12d808800000030080000019078a14cb010006"
            "68ebe3c44844fff8f800",
            (352, 288),
        ),
        (
            "1700000000017a000bffe1001a677a000bbcd9430fe223f011000003000100000300320f14299601"
            "000668ebe3cb22c0fef8f800",
            (178, 98),
        ),
    ],
)
def test_avc_config_dimensions_x264(body_hex: str, size: tuple[int, int]) -> None:
    assert avc_config_dimensions(bytes.fromhex(body_hex)) == size


def test_avc_config_dimensions_rejects() -> None:
    good = _avc_sequence_header(_sps(profile=66, width_mbs=20, height_units=15))
    assert avc_config_dimensions(b"") is None
    assert avc_config_dimensions(b"\x17\x01\x00\x00\x00" + good[5:]) is None  # not a seq header
    assert avc_config_dimensions(b"\x1c" + good[1:]) is None  # HEVC
    assert avc_config_dimensions(good[:12]) is None
    assert avc_config_dimensions(good[:5] + b"\x02" + good[6:]) is None  # bad version
    for cut in range(len(good)):
        assert avc_config_dimensions(good[:cut]) in (None, (320, 240))


# --------------------------------------------------------------------------- fuzzing


@given(st.binary(max_size=64))
def test_fuzz_codec_info(data: bytes) -> None:
    for func in (video_info, audio_info):
        with contextlib.suppress(FlvError):
            func(data)
    for tag_type in (TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT):
        with contextlib.suppress(FlvError):
            is_sequence_header(tag_type, data)
    result = avc_config_dimensions(data)
    assert result is None or (result[0] > 0 and result[1] > 0)


@given(st.binary(max_size=200), st.integers(0, 2**32 - 1))
def test_fuzz_avc_config_after_valid_prefix(data: bytes, variant: int) -> None:
    prefix = (b"\x17\x00\x00\x00\x00", b"\x90avc1")[variant % 2]
    record = b"\x01\x64\x00\x28\xff\xe1" + struct.pack(">H", len(data) + 1) + b"\x67"
    result = avc_config_dimensions(prefix + record + data)
    assert result is None or (result[0] > 0 and result[1] > 0)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _feed_all(parser: FlvParser, pieces: list[bytes]) -> list[FlvTag]:
    tags: list[FlvTag] = []
    for piece in pieces:
        tags += parser.feed(piece)
    return tags


_tags = st.lists(
    st.tuples(
        st.sampled_from([TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT]),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=40),
    ),
    max_size=6,
)


@given(_tags, st.lists(st.integers(min_value=0), max_size=10))
def test_round_trip_random_splits(tags: list[tuple[int, int, bytes]], cuts: list[int]) -> None:
    data = _stream(*tags)
    parsed = _feed_all(FlvParser(), _split(data, cuts))
    assert parsed == [FlvTag(t, ts, body) for t, ts, body in tags]


@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=6), st.booleans())
def test_fuzz_parser_random_bytes(data: bytes, cuts: list[int], with_header: bool) -> None:
    if with_header:
        data = file_header() + data
    with contextlib.suppress(FlvError):
        _feed_all(FlvParser(max_tag_size=64), _split(data, cuts))


@given(
    _tags,
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_fuzz_parser_mutated(
    tags: list[tuple[int, int, bytes]], flips: list[tuple[int, int]], cuts: list[int]
) -> None:
    data = bytearray(_stream(*tags))
    for index, byte in flips:
        data[index % len(data)] = byte
    try:
        parsed = _feed_all(FlvParser(max_tag_size=64), _split(bytes(data), cuts))
    except FlvError:
        return
    for tag in parsed:
        for func in (video_info, audio_info):
            with contextlib.suppress(FlvError):
                func(tag.body)


# --------------------------------------------------------------------------- real media


@pytest.mark.slow
def test_ffmpeg_h264_aac(tmp_path: Path) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not on PATH")
    out = tmp_path / "out.flv"
    # fmt: off
    subprocess.run(
        [
            ffmpeg, "-hide_banner", "-loglevel", "error",
            "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", "2", "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-f", "flv", str(out),
        ],
        check=True,
        timeout=120,
    )
    # fmt: on
    data = out.read_bytes()
    parser = FlvParser()
    tags = _feed_all(parser, [data[i : i + 4093] for i in range(0, len(data), 4093)])
    assert parser.header_seen and parser.has_audio and parser.has_video
    assert FlvParser().feed(data) == tags

    script = [t for t in tags if t.tag_type == TAG_SCRIPT]
    name, meta = amf0.decode_all(script[0].body)
    assert name == "onMetaData"
    assert meta["width"] == 320 and meta["height"] == 240

    video = [t for t in tags if t.tag_type == TAG_VIDEO]
    audio = [t for t in tags if t.tag_type == TAG_AUDIO]
    first = video_info(video[0].body)
    assert first.codec == "avc" and first.sequence_header and first.keyframe
    assert avc_config_dimensions(video[0].body) == (320, 240)

    audio_infos = [audio_info(t.body) for t in audio]
    seq = [info for info in audio_infos if info.sequence_header]
    assert seq == [AudioInfo("aac", True, 44100, 1)]  # lavfi sine is mono
    assert all(info.codec == "aac" for info in audio_infos)

    # ffmpeg ends the stream with an AVC end-of-sequence tag (stamped with the last dts).
    media = [
        t for t in tags if not (t.tag_type == TAG_VIDEO and video_info(t.body).end_of_sequence)
    ]
    assert len(media) == len(tags) - 1
    frames = [video_info(t.body) for t in media if t.tag_type == TAG_VIDEO][1:]
    assert len(frames) == 50
    assert not any(f.sequence_header for f in frames)
    keyframes = [i for i, f in enumerate(frames) if f.keyframe]
    assert keyframes == [0, 25]
    assert any(f.composition_time > 0 for f in frames)  # B-frames

    stamps = [t.timestamp for t in media]
    assert stamps == sorted(stamps)
    video_stamps = [t.timestamp for t in media if t.tag_type == TAG_VIDEO][1:]
    assert video_stamps == [40 * i for i in range(50)]
