"""Sans-IO FLV container support (Adobe FLV spec v10.1) and codec detection.

Covers the legacy audio/video tag headers, the common non-standard HEVC codec id 12,
and the Enhanced RTMP (veovera v1/v2) ``ExVideoTagHeader`` / ``ExAudioTagHeader``
(FourCC signalling, ModEx, multitrack).  Every parse error is an :class:`FlvError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from common.proto.errors import ProtocolError

__all__ = [
    "TAG_AUDIO",
    "TAG_SCRIPT",
    "TAG_VIDEO",
    "AudioInfo",
    "FlvError",
    "FlvParser",
    "FlvTag",
    "VideoInfo",
    "audio_info",
    "avc_config_dimensions",
    "build_tag",
    "file_header",
    "is_sequence_header",
    "video_info",
]

TAG_AUDIO: Final = 8
TAG_VIDEO: Final = 9
TAG_SCRIPT: Final = 18

_TAG_TYPES: Final = frozenset((TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT))
_MAX_BODY: Final = 0xFFFFFF
_MAX_HEADER_SIZE: Final = 1024  # sanity cap on the file header's DataOffset

# type<<24 | size, ts24<<8 | ts_ext, then the 24-bit stream id as UI8 + UI16.
_TAG_HDR = struct.Struct(">IIBH")
_TAG_HDR_WORDS = struct.Struct(">II")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_FILE_HDR = struct.Struct(">3sBBII")  # + PreviousTagSize0
_FILE_HDR9 = struct.Struct(">3sBBI")

Buffer = bytes | bytearray | memoryview


class FlvError(ProtocolError):
    """Malformed FLV data."""


# --------------------------------------------------------------------------- container


def file_header(*, audio: bool = True, video: bool = True) -> bytes:
    """Return the 9-byte FLV file header followed by PreviousTagSize0 (13 bytes)."""
    flags = (0x04 if audio else 0) | (0x01 if video else 0)
    return _FILE_HDR.pack(b"FLV", 1, flags, 9, 0)


def build_tag(tag_type: int, timestamp: int, body: Buffer) -> bytes:
    """Return one FLV tag: 11-byte header, ``body`` and the trailing PreviousTagSize.

    ``timestamp`` (ms) is taken modulo 2**32; its upper 8 bits go in TimestampExtended.
    """
    size = len(body)
    if size > _MAX_BODY:
        raise ValueError(f"FLV tag body too large ({size} bytes)")
    if not 0 <= tag_type <= 0xFF:
        raise ValueError(f"invalid FLV tag type {tag_type}")
    ts = timestamp & 0xFFFFFFFF
    header = _TAG_HDR.pack(tag_type << 24 | size, (ts & 0xFFFFFF) << 8 | ts >> 24, 0, 0)
    return b"".join((header, body, _U32.pack(size + 11)))


@dataclass(slots=True)
class FlvTag:
    """One parsed FLV tag; ``timestamp`` includes the extended (upper 8) bits."""

    tag_type: int
    timestamp: int
    body: bytes


class FlvParser:
    """Incremental (sans-IO) parser of an FLV byte stream fed in arbitrary pieces.

    After an error the parser is unusable: every further :meth:`feed` raises again.
    """

    def __init__(self, *, max_tag_size: int = 16 * 1024 * 1024) -> None:
        self.max_tag_size = max_tag_size
        self.header_seen = False
        self.has_audio = False
        self.has_video = False
        self._buf = bytearray()
        self._error: FlvError | None = None

    def feed(self, data: Buffer) -> list[FlvTag]:
        """Append ``data`` and return every tag completed by it (possibly none)."""
        if self._error is not None:
            raise FlvError(f"parser already failed: {self._error}")
        buf = self._buf
        buf += data
        tags: list[FlvTag] = []
        try:
            with memoryview(buf) as view:
                consumed = self._parse(view, tags)
        except FlvError as exc:
            self._error = exc
            raise
        if consumed:
            del buf[:consumed]
        return tags

    def _parse(self, view: memoryview, tags: list[FlvTag]) -> int:
        end = len(view)
        pos = 0
        if not self.header_seen:
            pos = self._parse_header(view, end)
            if not pos:
                return 0
        max_size = self.max_tag_size
        unpack_words = _TAG_HDR_WORDS.unpack_from
        unpack_u32 = _U32.unpack_from
        append = tags.append
        while end - pos >= 11:
            w0, w1 = unpack_words(view, pos)
            tag_type = w0 >> 24
            size = w0 & 0xFFFFFF
            if tag_type not in _TAG_TYPES:
                if tag_type & 0x20:
                    raise FlvError("encrypted (filtered) FLV tags are not supported")
                raise FlvError(f"unknown FLV tag type 0x{tag_type:02x}")
            if size > max_size:
                raise FlvError(f"FLV tag of {size} bytes exceeds the {max_size}-byte limit")
            stop = pos + 11 + size
            if stop + 4 > end:
                break
            (prev_size,) = unpack_u32(view, stop)
            if prev_size != size + 11:
                raise FlvError(f"PreviousTagSize {prev_size} does not match tag size {size + 11}")
            append(FlvTag(tag_type, (w1 >> 8) | (w1 & 0xFF) << 24, bytes(view[pos + 11 : stop])))
            pos = stop + 4
        return pos

    def _parse_header(self, view: memoryview, end: int) -> int:
        """Validate the file header; return bytes consumed (0 if more data is needed)."""
        # Check the signature on the bytes we already have so garbage fails fast.
        if not b"FLV".startswith(bytes(view[:3])):
            raise FlvError("bad FLV signature")
        if end >= 4 and view[3] != 1:
            raise FlvError(f"unsupported FLV version {view[3]}")
        if end < 9:
            return 0
        _sig, _version, flags, data_offset = _FILE_HDR9.unpack_from(view)
        if not 9 <= data_offset <= _MAX_HEADER_SIZE:
            raise FlvError(f"invalid FLV header DataOffset {data_offset}")
        if end < data_offset + 4:
            return 0
        if _U32.unpack_from(view, data_offset)[0] != 0:
            raise FlvError("PreviousTagSize0 is not zero")
        self.header_seen = True
        self.has_audio = bool(flags & 0x04)
        self.has_video = bool(flags & 0x01)
        return data_offset + 4


# --------------------------------------------------------------------------- codec info


@dataclass(slots=True, frozen=True)
class VideoInfo:
    """Summary of a video tag header.

    ``keyframe`` reflects FrameType 1 (false for command frames and Enhanced RTMP metadata).
    ``codec`` is ``"unknown"`` for an Enhanced RTMP command frame, which carries no FourCC.
    """

    codec: str
    keyframe: bool
    sequence_header: bool
    end_of_sequence: bool
    composition_time: int
    enhanced: bool


@dataclass(slots=True, frozen=True)
class AudioInfo:
    """Summary of an audio tag header; 0 means unknown for ``sample_rate`` / ``channels``."""

    codec: str
    sequence_header: bool
    sample_rate: int
    channels: int


_VIDEO_CODEC_IDS: Final = {
    1: "jpeg",
    2: "h263",
    3: "screen",
    4: "vp6",
    5: "vp6a",
    6: "screen2",
    7: "avc",
    12: "hevc",  # de-facto extension (not in the Adobe spec)
}
_VIDEO_FOURCC: Final = {
    b"avc1": "avc",
    b"hvc1": "hevc",
    b"av01": "av1",
    b"vp09": "vp9",
    b"vp08": "vp8",
    b"vvc1": "vvc",
}
_AUDIO_FORMATS: Final = {
    0: "pcm",
    1: "adpcm",
    2: "mp3",
    3: "pcm_le",
    4: "nellymoser",
    5: "nellymoser",
    6: "nellymoser",
    7: "g711a",
    8: "g711u",
    10: "aac",
    11: "speex",
    14: "mp3",
    15: "native",
}
_AUDIO_FOURCC: Final = {
    b"Opus": "opus",
    b"mp4a": "aac",
    b"fLaC": "flac",
    b"ac-3": "ac3",
    b"ec-3": "eac3",
    b".mp3": "mp3",
}
_LEGACY_RATES: Final = (5512, 11025, 22050, 44100)
_FIXED_RATE: Final = {4: 16000, 5: 8000, 11: 16000, 14: 8000}
_MONO_FORMATS: Final = frozenset((4, 5, 11))
_AAC_RATES: Final = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)
_AAC_CHANNELS: Final = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}

# Enhanced RTMP packet types.
_PT_SEQUENCE_START = 0
_PT_CODED_FRAMES = 1
_PT_SEQUENCE_END = 2
_PT_METADATA = 4
_VPT_MPEG2TS_SEQUENCE_START = 5
_VPT_MULTITRACK = 6
_APT_MULTICHANNEL_CONFIG = 4
_APT_MULTITRACK = 5
_PT_MODEX = 7
_MT_ONE_TRACK = 0
_MT_MANY_CODECS = 2
_FRAME_COMMAND = 5


def _fourcc_name(raw: bytes, table: dict[bytes, str]) -> str:
    name = table.get(raw)
    if name is not None:
        return name
    if all(0x20 <= c < 0x7F for c in raw):
        return raw.decode("ascii")
    raise FlvError(f"invalid FourCC {raw!r}")


def _skip_modex(body: Buffer, pos: int, packet_type: int) -> tuple[int, int]:
    """Skip Enhanced RTMP ModEx blocks; return ``(packet_type, pos)`` after them."""
    n = len(body)
    while packet_type == _PT_MODEX:
        if pos >= n:
            raise FlvError("truncated ModEx block")
        size = body[pos] + 1
        pos += 1
        if size == 256:
            if pos + 2 > n:
                raise FlvError("truncated ModEx block")
            size = _U16.unpack_from(body, pos)[0] + 1
            pos += 2
        pos += size
        if pos >= n:
            raise FlvError("truncated ModEx block")
        packet_type = body[pos] & 0x0F
        pos += 1
    return packet_type, pos


def _ex_fourcc(
    body: Buffer, pos: int, packet_type: int, multitrack: int, table: dict[bytes, str]
) -> tuple[int, str, int]:
    """Read the FourCC (and first multitrack track header); return ``(packet_type, codec, pos)``."""
    n = len(body)
    mt_type = -1
    if packet_type == multitrack:
        if pos >= n:
            raise FlvError("truncated multitrack header")
        mt_type = body[pos] >> 4
        packet_type = body[pos] & 0x0F
        pos += 1
        if mt_type > _MT_MANY_CODECS:
            raise FlvError(f"reserved AvMultitrackType {mt_type}")
        if packet_type in (multitrack, _PT_MODEX):
            raise FlvError("invalid packet type inside multitrack")
    if pos + 4 > n:
        raise FlvError("truncated FourCC")
    codec = _fourcc_name(bytes(body[pos : pos + 4]), table)
    pos += 4
    if mt_type >= 0:
        pos += 1 if mt_type == _MT_ONE_TRACK else 4  # trackId [+ UI24 sizeOfTrack]
        if pos > n:
            raise FlvError("truncated multitrack track header")
    return packet_type, codec, pos


def _parse_video(body: Buffer) -> tuple[VideoInfo, int]:
    """Return the video info and the offset of the codec payload within ``body``."""
    n = len(body)
    if n == 0:
        raise FlvError("empty video tag body")
    b0 = body[0]
    if not b0 & 0x80:
        frame_type = b0 >> 4
        codec_id = b0 & 0x0F
        codec = _VIDEO_CODEC_IDS.get(codec_id) or f"unknown-{codec_id}"
        if frame_type == _FRAME_COMMAND:
            if n < 2:
                raise FlvError("truncated video command frame")
            return VideoInfo(codec, False, False, False, 0, False), 2
        if codec_id == 7 or codec_id == 12:
            if n < 5:
                raise FlvError("truncated AVC/HEVC video tag header")
            packet_type = body[1]
            if packet_type > 2:
                raise FlvError(f"unknown AVCPacketType {packet_type}")
            cts = int.from_bytes(body[2:5], "big", signed=True)
            info = VideoInfo(codec, frame_type == 1, packet_type == 0, packet_type == 2, cts, False)
            return info, 5
        return VideoInfo(codec, frame_type == 1, False, False, 0, False), 1

    frame_type = (b0 >> 4) & 0x07
    packet_type, pos = _skip_modex(body, 1, b0 & 0x0F)
    if packet_type != _PT_METADATA and frame_type == _FRAME_COMMAND:
        if pos >= n:
            raise FlvError("truncated video command frame")
        return VideoInfo("unknown", False, False, False, 0, True), pos + 1
    packet_type, codec, pos = _ex_fourcc(body, pos, packet_type, _VPT_MULTITRACK, _VIDEO_FOURCC)
    if packet_type > _VPT_MPEG2TS_SEQUENCE_START:
        raise FlvError(f"reserved VideoPacketType {packet_type}")
    cts = 0
    if packet_type == _PT_CODED_FRAMES and codec in ("avc", "hevc"):
        if pos + 3 > n:
            raise FlvError("truncated composition time")
        cts = int.from_bytes(body[pos : pos + 3], "big", signed=True)
        pos += 3
    info = VideoInfo(
        codec,
        frame_type == 1 and packet_type != _PT_METADATA,
        packet_type in (_PT_SEQUENCE_START, _VPT_MPEG2TS_SEQUENCE_START),
        packet_type == _PT_SEQUENCE_END,
        cts,
        True,
    )
    return info, pos


def video_info(body: Buffer) -> VideoInfo:
    """Parse a video tag body's (legacy or Enhanced RTMP) header."""
    return _parse_video(body)[0]


def _aac_config(asc: Buffer) -> tuple[int, int]:
    """Return ``(sample_rate, channels)`` from an AAC AudioSpecificConfig."""
    data = bytes(asc[:12])
    value = int.from_bytes(data, "big")
    left = len(data) * 8

    def bits(k: int) -> int:
        nonlocal left
        if k > left:
            raise FlvError("truncated AAC AudioSpecificConfig")
        left -= k
        return (value >> left) & ((1 << k) - 1)

    def frequency() -> int:
        index = bits(4)
        if index == 15:
            return bits(24)
        if index >= len(_AAC_RATES):
            raise FlvError(f"reserved AAC sampling_frequency_index {index}")
        return _AAC_RATES[index]

    object_type = bits(5)
    if object_type == 31:
        object_type = 32 + bits(6)
    rate = frequency()
    channels = _AAC_CHANNELS.get(bits(4), 0)
    if object_type in (5, 29):  # explicit SBR / PS: report the extension (output) rate
        rate = frequency()
        if object_type == 29 and channels == 1:
            channels = 2
    return rate, channels


def audio_info(body: Buffer) -> AudioInfo:
    """Parse an audio tag body's (legacy or Enhanced RTMP) header.

    For AAC sequence headers the rate and channel count come from the AudioSpecificConfig.
    """
    n = len(body)
    if n == 0:
        raise FlvError("empty audio tag body")
    b0 = body[0]
    fmt = b0 >> 4
    if fmt == 9:
        return _ex_audio_info(body, b0)
    codec = _AUDIO_FORMATS.get(fmt) or f"unknown-{fmt}"
    rate = _FIXED_RATE.get(fmt) or _LEGACY_RATES[(b0 >> 2) & 0x03]
    channels = 1 if fmt in _MONO_FORMATS else (b0 & 0x01) + 1
    if fmt != 10:
        return AudioInfo(codec, False, rate, channels)
    if n < 2:
        raise FlvError("truncated AAC audio tag header")
    packet_type = body[1]
    if packet_type > 1:
        raise FlvError(f"unknown AACPacketType {packet_type}")
    if packet_type == 0:
        rate, channels = _aac_config(body[2:])
        return AudioInfo(codec, True, rate, channels)
    return AudioInfo(codec, False, rate, channels)


def _ex_audio_info(body: Buffer, b0: int) -> AudioInfo:
    packet_type, pos = _skip_modex(body, 1, b0 & 0x0F)
    packet_type, codec, pos = _ex_fourcc(body, pos, packet_type, _APT_MULTITRACK, _AUDIO_FOURCC)
    if packet_type in (3, 6) or packet_type > _PT_MODEX:
        raise FlvError(f"reserved AudioPacketType {packet_type}")
    rate = channels = 0
    if packet_type == _PT_SEQUENCE_START:
        if codec == "aac":
            rate, channels = _aac_config(body[pos:])
        elif codec == "opus":
            rate = 48000  # Opus always decodes at 48 kHz
            if body[pos : pos + 8] == b"OpusHead" and len(body) > pos + 9:
                channels = body[pos + 9]
    elif packet_type == _APT_MULTICHANNEL_CONFIG:
        if pos + 2 > len(body):
            raise FlvError("truncated MultichannelConfig")
        channels = body[pos + 1]
    return AudioInfo(codec, packet_type == _PT_SEQUENCE_START, rate, channels)


def is_sequence_header(tag_type: int, body: Buffer) -> bool:
    """True for an audio/video sequence header (decoder configuration) tag body."""
    if tag_type == TAG_VIDEO:
        return _parse_video(body)[0].sequence_header
    if tag_type == TAG_AUDIO:
        return audio_info(body).sequence_header
    return False


# --------------------------------------------------------------------------- AVC SPS


class _BitsExhausted(Exception):
    pass


class _BitReader:
    """MSB-first bit reader with Exp-Golomb support."""

    __slots__ = ("_value", "_left")

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._left = len(data) * 8

    def u(self, k: int) -> int:
        if k > self._left:
            raise _BitsExhausted
        self._left -= k
        return (self._value >> self._left) & ((1 << k) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise _BitsExhausted
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) >> 1 if k & 1 else -(k >> 1)


_HIGH_PROFILES: Final = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


def _skip_scaling_list(r: _BitReader, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale:
            next_scale = (last + r.se() + 256) % 256
        if next_scale:
            last = next_scale


def _sps_dimensions(rbsp: bytes) -> tuple[int, int] | None:
    r = _BitReader(rbsp)
    profile_idc = r.u(8)
    r.u(16)  # constraint flags, level_idc
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            return None
        if chroma_format_idc == 3:
            separate_colour_plane = r.u(1)
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.u(1):
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.u(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        cycle = r.ue()
        if cycle > 255:
            return None
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        return None
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if r.u(1):  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        if chroma_array_type == 0:
            unit_x, unit_y = 1, 2 - frame_mbs_only
        else:
            unit_x = 2 if chroma_array_type in (1, 2) else 1
            unit_y = (2 if chroma_array_type == 1 else 1) * (2 - frame_mbs_only)
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
    if width <= 0 or height <= 0:
        return None
    return width, height


def avc_config_dimensions(body: Buffer) -> tuple[int, int] | None:
    """Return ``(width, height)`` from an AVC sequence-header video tag body, else None.

    Accepts legacy (codec id 7) and Enhanced RTMP ('avc1') sequence headers; parses the
    first SPS of the AVCDecoderConfigurationRecord.  Never raises.
    """
    try:
        info, pos = _parse_video(body)
        if info.codec != "avc" or not info.sequence_header:
            return None
        record = bytes(body[pos:])
        if len(record) < 8 or record[0] != 1 or not record[5] & 0x1F:
            return None
        (sps_len,) = _U16.unpack_from(record, 6)
        sps = record[8 : 8 + sps_len]
        if sps_len < 4 or len(sps) < sps_len or sps[0] & 0x1F != 7:
            return None
        # Strip emulation-prevention bytes; the fields we need sit well inside 4 KiB.
        rbsp = sps[1:4096].replace(b"\x00\x00\x03", b"\x00\x00")
        return _sps_dimensions(rbsp)
    except (FlvError, _BitsExhausted):
        return None
