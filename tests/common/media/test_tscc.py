"""Continuity counter alignment of MPEG-TS segments: made-up streams (unit and property
tests, parsed by an independent reader below), then real segments muxed from ffmpeg's
H.264/AAC, played one after another by ffmpeg."""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.media.segmenter import Segmenter, SegmentSpec
from common.media.stream import Frame, Stream
from common.media.tscc import align_continuity
from common.proto.flv import FlvParser
from common.serve import tsmux
from common.serve.tsmux import mux_ts
from tests.conftest import FFMPEG, needs_ffmpeg

NULL = 0x1FFF
PAT = bytes.fromhex("0000b00d0001c100000001f0002ab104b2")
PMT = bytes.fromhex("0002b0170001c10000e100f0001be100f0000fe101f0002f44b99b")


# --------------------------------------------------------------------------- a TS reader


@dataclass
class Packet:
    pid: int
    start: bool
    control: int
    cc: int
    af: bytes  # the adaptation field after its length byte (stuffing included)
    payload: bytes
    raw: bytes

    @property
    def flags(self) -> tuple[int, bytes]:
        """Adaptation field flags and PCR: what alignment must keep."""
        flags = self.af[0] if self.af else 0
        return flags, self.af[1:7] if flags & 0x10 else b""


def read(ts: bytes) -> list[Packet]:
    """Packets of `ts`, checking the syntax alignment must keep (sync, field lengths,
    stuffing bytes)."""
    assert len(ts) % 188 == 0
    out = []
    for i in range(0, len(ts), 188):
        raw = ts[i : i + 188]
        assert raw[0] == 0x47
        control, af, body = (raw[3] >> 4) & 3, b"", 4
        assert control != 0
        if control & 2:
            length = raw[4]
            assert length <= (182 if control == 3 else 183)
            af, body = raw[5 : 5 + length], 5 + length
        if control == 2:
            assert body == 188
        pid = ((raw[1] & 0x1F) << 8) | raw[2]
        payload = raw[body:] if control & 1 else b""
        out.append(Packet(pid, bool(raw[1] & 0x40), control, raw[3] & 15, af, payload, raw))
    return out


def counted(packets: list[Packet], pid: int) -> list[Packet]:
    return [p for p in packets if p.pid == pid and p.control & 1]


def assert_aligned(packets: list[Packet], skip: set[int] | None = None) -> None:
    """Every PID's (but `skip`'s) payload packets count 0..15 repeatedly, ending at 15;
    packets without payload repeat the last counter."""
    last: dict[int, int] = {}
    for p in packets:
        if p.pid == NULL or p.pid in (skip or set()):
            continue
        expected = (last.get(p.pid, 15) + (p.control & 1)) % 16
        assert p.cc == expected, f"pid {p.pid:#x}: counter {p.cc}, expected {expected}"
        last[p.pid] = p.cc
    assert all(cc == 15 for cc in last.values()), last


def pes_data(packets: list[Packet], pid: int) -> bytes:
    return b"".join(p.payload for p in counted(packets, pid))


def kept_flags(packets: list[Packet], pid: int) -> list[tuple[int, bytes]]:
    return [p.flags for p in packets if p.pid == pid and p.flags[0]]


# --------------------------------------------------------------------------- a TS writer


def packet(pid: int, payload: bytes, *, start: bool = False, af: bytes | None = None) -> bytes:
    """One packet (counter 0) carrying `payload`, its adaptation field holding `af` (flags
    and fields) padded with stuffing to fill the packet."""
    space = 184 - len(payload)
    header = bytes([0x47, 0x40 * start | pid >> 8, pid & 0xFF])
    if af is None and space == 0:
        return header + b"\x10" + payload
    assert space >= 1
    field = b"" if space == 1 else (af or b"\x00") + b"\xff" * (space - 1 - len(af or b"\x00"))
    return header + (b"\x30" if payload else b"\x20") + bytes([space - 1]) + field + payload


def pes_packets(
    pid: int, data: bytes, af: bytes | None, later_af: bytes | None = None
) -> list[bytes]:
    """`data` (a PES) over as few packets as fit, as a muxer writes it: the first with the
    adaptation field `af`, the second (if any) with `later_af`, the last padded with
    stuffing."""
    out, pos = [], 0
    while pos < len(data) or not out:
        field = af if not out else later_af if len(out) == 1 else None
        size = 184 - (1 + len(field) if field else 0)
        out.append(packet(pid, data[pos : pos + size], start=not out, af=field))
        pos += size
    return out


def pes(size: int, fill: int) -> bytes:
    return bytes.fromhex("000001e00000808005210001000100") + bytes([fill]) * size


def pcr_field(value: int, random_access: bool) -> bytes:
    base = value.to_bytes(5, "big")
    return bytes([0x10 | 0x40 * random_access]) + base + b"\x7e\x00"


def with_counters(packets: list[bytes]) -> bytes:
    """`packets` numbered as a fresh muxer numbers them (every PID from 0)."""
    counters: dict[int, int] = {}
    out = []
    for p in packets:
        pid = ((p[1] & 0x1F) << 8) | p[2]
        cc = counters.get(pid, -1)
        if p[3] & 0x10:
            cc = counters[pid] = (cc + 1) % 16
        out.append(p[:3] + bytes([p[3] | cc % 16]) + p[4:])
    return b"".join(out)


def psi(pid: int, table: bytes) -> bytes:
    return packet(pid, table + b"\xff" * (184 - len(table)), start=True)


# --------------------------------------------------------------------------- made-up streams


def test_bad_input_is_refused_with_value_error():
    good = with_counters([psi(0, PAT)])
    assert align_continuity(b"") == b""
    with pytest.raises(ValueError, match="multiple of 188"):
        align_continuity(good[:-1])
    with pytest.raises(ValueError, match="sync"):
        align_continuity(good + b"\x00" + good[1:])
    with pytest.raises(ValueError, match="reserved"):
        align_continuity(good[:3] + b"\x00" + good[4:])
    with pytest.raises(ValueError, match="too long"):
        align_continuity(good[:3] + b"\x30\xb7" + good[5:])


def test_tables_are_repeated_and_the_last_pes_spread():
    video = pes(1000, 0x65)  # 6 packets
    packets = [psi(0, PAT), psi(0x1000, PMT)]
    packets += pes_packets(0x100, video, pcr_field(12345, True))
    packets += [psi(0, PAT)]
    out = read(align_continuity(with_counters(packets)))
    assert_aligned(out)
    assert [len(counted(out, pid)) for pid in (0, 0x1000, 0x100)] == [16, 16, 16]
    assert {p.payload[:18] for p in counted(out, 0)} == {PAT + b"\xff"}
    assert out[0].payload[:18] == PAT + b"\xff" and out[1].pid == 0x1000, "the first PAT stays"
    assert pes_data(out, 0x100) == video
    assert kept_flags(out, 0x100) == [(0x50, pcr_field(12345, True)[1:7])]
    assert all(len(p.payload) >= 1 for p in counted(out, 0x100))
    assert [p.start for p in counted(out, 0x100)] == [True] + [False] * 15


def test_a_few_surplus_table_repeats_are_dropped_instead():
    """17 PATs lose their last repeat rather than gain 15; a changed table is never dropped,
    nor a PID's only table."""
    out = read(align_continuity(with_counters([psi(0, PAT)] * 17)))
    assert_aligned(out)
    assert len(out) == 16
    changed = PAT[:6] + b"\xc3" + PAT[7:]  # version 1
    out = read(align_continuity(with_counters([psi(0, PAT)] * 16 + [psi(0, changed)])))
    assert_aligned(out)
    assert len(out) == 32 and out[-1].payload.startswith(changed)


def test_one_stuffing_byte_is_an_empty_adaptation_field():
    """A packet one byte short of full gets adaptation_field_length 0 (ISO 13818-1)."""
    data = pes(183, 1)  # 198 bytes in 2 packets: over 16, the first takes 183, the others 1
    out = read(align_continuity(with_counters(pes_packets(0x100, data, None))))
    assert_aligned(out)
    assert pes_data(out, 0x100) == data
    assert [len(p.payload) for p in out] == [183] + [1] * 15
    assert out[0].control == 3 and out[0].raw[4] == 0 and out[0].af == b""
    assert out[1].raw[4:7] == b"\xb6\x00\xff", "182 bytes: flags 0, then stuffing"


def test_small_pes_borrow_room_from_earlier_ones():
    """The last PES is too small to take 15 more packets: earlier ones take the rest."""
    packets = []
    for i in range(3):
        packets += pes_packets(0x101, pes(4, i), None)  # 19 bytes: room for 18 more packets
    out = read(align_continuity(with_counters(packets)))
    assert_aligned(out)
    assert len(counted(out, 0x101)) == 16
    assert pes_data(out, 0x101) == b"".join(pes(4, i) for i in range(3))


def test_what_cannot_be_padded_keeps_its_own_count():
    """A lone 4-byte PES cannot fill 16 packets, a table continued in the next packet
    cannot be repeated alone, a scrambled PES cannot be split: those PIDs keep their
    packets (counted from 0)."""
    tiny = packet(0x102, b"\x00\x00\x01\xc0", start=True)
    long_table = b"\x00\x02\xb1\x00" + bytes(180)
    table = [packet(0x1000, long_table, start=True), packet(0x1000, bytes(184))]
    scrambled = [
        p[:3] + bytes([p[3] | 0x80]) + p[4:] for p in pes_packets(0x103, pes(900, 1), None)
    ]
    packets = [tiny, *table, psi(0, PAT), *scrambled]
    out = read(align_continuity(with_counters(packets)))
    assert [len(counted(out, pid)) for pid in (0x102, 0x1000, 0, 0x103)] == [1, 2, 16, 5]
    assert [p.raw[4:] for p in out if p.pid == 0x103] == [p[4:] for p in scrambled]
    assert [p.cc for p in out if p.pid == 0x1000] == [0, 1]


def test_adaptation_only_and_null_packets():
    """A PCR-only packet repeats its PID's counter, null packets are left as they are."""
    null = bytes([0x47, 0x1F, 0xFF, 0x17]) + b"\xff" * 184
    pcr_only = bytes([0x47, 0x01, 0x00, 0x20, 183]) + pcr_field(9, False) + b"\xff" * 175
    packets = [pcr_only, *pes_packets(0x100, pes(400, 7), None), null, pcr_only]
    out = read(align_continuity(with_counters(packets)))
    assert_aligned(out)
    assert [p.raw for p in out if p.pid == NULL] == [null]
    assert [p.cc for p in out if p.pid == 0x100 and p.control == 2] == [15, 15]


def test_aligned_input_is_unchanged():
    data = with_counters(pes_packets(0x100, pes(184 * 16 - 30, 3), None))
    assert len(data) == 16 * 188
    assert align_continuity(data) == data
    assert align_continuity(align_continuity(data[188:])) == align_continuity(data[188:])


pcrs = st.builds(pcr_field, st.integers(0, 2**33 - 1), st.booleans())


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[bytes], dict[int, list[bytes]]]:
    """Interleaved PES of a few PIDs (random sizes, some with PCR/random access), tables
    and null packets; returns the packets and each PES PID's PES."""
    pids = draw(st.lists(st.integers(0x20, 0xFFF), min_size=1, max_size=3, unique=True))
    queues: list[list[bytes]] = [[psi(0, PAT), psi(0x1000, PMT)] * draw(st.integers(0, 20))]
    units: dict[int, list[bytes]] = {}
    for pid in pids:
        queue: list[bytes] = []
        for size in draw(st.lists(st.integers(0, 700), min_size=1, max_size=6)):
            data = pes(size, draw(st.integers(0, 255)))
            af, later_af = (draw(st.one_of(st.none(), pcrs)) for _ in range(2))
            units.setdefault(pid, []).append(data)
            queue += pes_packets(pid, data, af, later_af)
        queues.append(queue)
    queues.append([bytes([0x47, 0x1F, 0xFF, 0x10]) + b"\xff" * 184] * draw(st.integers(0, 2)))
    packets = []
    while any(queues):
        queue = draw(st.sampled_from([q for q in queues if q]))
        packets.append(queue.pop(0))
    return packets, units


@settings(max_examples=300, deadline=None)
@given(streams())
def test_any_stream_is_aligned_and_keeps_its_media(stream):
    packets, units = stream
    data = with_counters(packets)
    before = read(data)
    out = read(align_continuity(data))
    cramped = set()  # too few PES bytes to spread over 16 packets each: left unpadded
    for pid, pes_list in units.items():
        count = len(counted(before, pid))
        if sum(map(len, pes_list)) - count < -count % 16:
            cramped.add(pid)
    assert_aligned(out, cramped)
    for pid, pes_list in units.items():
        count = len(counted(out, pid))
        assert count == len(counted(before, pid)) if pid in cramped else count % 16 == 0
        assert pes_data(out, pid) == b"".join(pes_list)
        assert [p.start for p in counted(out, pid)].count(True) == len(pes_list)
        assert kept_flags(out, pid) == kept_flags(before, pid)
        assert all(len(p.payload) >= 1 for p in counted(out, pid))
    for pid in (0, 0x1000):
        assert {p.payload for p in counted(out, pid)} == {p.payload for p in counted(before, pid)}
    assert [p.raw for p in out if p.pid == NULL] == [p.raw for p in before if p.pid == NULL]
    assert align_continuity(b"".join(p.raw for p in out)) == b"".join(p.raw for p in out)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=187, max_size=187), max_size=8))
def test_garbage_packets_raise_value_error_or_come_out_whole(bodies):
    data = b"".join(b"\x47" + body for body in bodies)
    try:
        out = align_continuity(data)
    except ValueError:
        return
    assert len(out) % 188 == 0 and all(out[i] == 0x47 for i in range(0, len(out), 188))


# --------------------------------------------------------------------------- real media


def make_flv(path: Path, seconds: int, size: str = "320x180") -> Path:
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-aac_coder", "fast", "-b:a", "64k", "-t", str(seconds), "-f", "flv",
            str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def cut(flv: Path, target_ms: int = 2000) -> list[SegmentSpec]:
    """The FLV file's frames cut into segments as a node cuts a live stream."""
    stream, segmenter, specs = Stream("t", "s"), Segmenter(target_ms), []
    for tag in FlvParser().feed(flv.read_bytes()):
        frame: Frame | None = None
        if tag.tag_type in (8, 9):
            frame = stream.push(tag.tag_type, tag.timestamp, tag.body)
        if frame is not None and (spec := segmenter.push(frame, 0)) is not None:
            specs.append(spec)
    if (spec := segmenter.flush()) is not None:
        specs.append(spec)
    return specs


def play(directory: Path, specs: list[SegmentSpec], segments: list[bytes]) -> list[str]:
    """Play the segments as an HLS VOD playlist with ffmpeg; its continuity and corruption
    complaints."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:4", "#EXT-X-MEDIA-SEQUENCE:0"]
    for i, (spec, data) in enumerate(zip(specs, segments, strict=True)):
        (directory / f"s{i}.ts").write_bytes(data)
        lines += [f"#EXTINF:{spec.duration_ms / 1000:.3f},", f"s{i}.ts"]
    (directory / "index.m3u8").write_text("\n".join([*lines, "#EXT-X-ENDLIST", ""]))
    (directory / "cat.ts").write_bytes(b"".join(segments))
    runs = {  # both at once: each is one ffmpeg decoding on a core of its own
        name: subprocess.Popen(
            [FFMPEG, "-hide_banner", "-v", "debug", "-i", str(directory / name), "-f", "null", "-"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("index.m3u8", "cat.ts")
    }
    complaints = []
    for name, run in runs.items():
        _, stderr = run.communicate()
        assert run.returncode == 0, f"ffmpeg failed on {name}: {stderr[-2000:]}"
        complaints += [
            f"{name}: {line}"
            for line in stderr.splitlines()
            if "Continuity check failed" in line or "corrupt" in line.lower()
        ]
    return complaints


def check_played(
    tmp_path: Path, specs: list[SegmentSpec], monkeypatch: pytest.MonkeyPatch, *, both=True
) -> None:
    """Aligned segments play with no complaint; the same segments unaligned do complain
    (so this check can fail; `both=False`: only the first half)."""
    segments = [mux_ts(spec) for spec in specs]
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    assert play(aligned, specs, segments) == []
    if not both:
        return
    with monkeypatch.context() as patch:
        patch.setattr(tsmux, "align_continuity", lambda ts: ts)
        raw = [mux_ts(spec) for spec in specs]
    plain = tmp_path / "plain"
    plain.mkdir()
    complaints = play(plain, specs, raw)
    assert any("Continuity check failed" in c for c in complaints)
    assert any("cat.ts" in c and "corrupt" in c for c in complaints)


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> list[SegmentSpec]:
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    return cut(make_flv(tmp_path_factory.mktemp("tscc") / "two-minutes.flv", 120))


@needs_ffmpeg
def test_real_segments_play_one_after_another_without_complaint(specs, tmp_path, monkeypatch):
    assert len(specs) >= 50
    check_played(tmp_path, specs, monkeypatch)


@needs_ffmpeg
def test_each_real_segment_stands_alone(specs, tmp_path):
    """Every segment is aligned, starts with PAT and PMT then a keyframe, lasts its
    spec's duration for ffprobe, and is the same bytes whenever it is muxed."""
    for spec in specs[:8] + specs[-2:]:
        data = mux_ts(spec)
        assert mux_ts(spec) == data
        packets = read(data)
        assert_aligned(packets)
        assert [p.pid for p in packets[:3]] == [0x11, 0, 0x1000]
        with av.open(io.BytesIO(data), format="mpegts") as c:
            first = next(p for p in c.demux(video=0) if p.dts is not None)
            assert first.is_keyframe
        path = tmp_path / f"{spec.seq}.ts"
        path.write_bytes(data)
        probe = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert float(probe.stdout) == pytest.approx(spec.duration_ms / 1000, abs=0.1)


@pytest.mark.slow
@needs_ffmpeg
def test_ten_minutes_of_hls_play_without_a_corrupt_packet(tmp_path, monkeypatch):
    """The issue's check (ffmpeg plays long HLS with no corrupt warning), offline."""
    specs = cut(make_flv(tmp_path / "ten-minutes.flv", 600, size="160x90"))
    assert len(specs) >= 290
    # that unaligned segments do complain is shown on two minutes above
    check_played(tmp_path, specs, monkeypatch, both=False)
