"""MP4 recordings (blocking PyAV work, no decoding: run in a thread): a finished FLV file
remuxed to MP4, an MP4 file's keyframe index and one playback segment remuxed to MPEG-TS."""

from __future__ import annotations

import contextlib
import io
import os
import zlib

import av

from common.media.tscc import align_continuity
from common.serve.remux import copy_packets
from origin import recorddisk
from origin.recordfiles import PART, Cut, FileIndex, RecordedFile


def remux_mp4(flv_path: str) -> str:
    """Remux a finished FLV file to MP4 next to it (faststart) and remove the FLV: the MP4's
    path. The FLV stays if anything fails."""
    base = flv_path.removesuffix(".flv")
    tmp, final = f"{base}.mp4{PART}", f"{base}.mp4"
    try:
        with (
            av.open(flv_path, format="flv") as src,
            av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"}) as out,
        ):
            copy_packets(src, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.rename(tmp, final)
    os.unlink(flv_path)
    return final


def _open(root: str, rec: RecordedFile) -> tuple[io.BufferedReader, av.container.InputContainer]:
    f = os.fdopen(recorddisk.open_file(root, rec), "rb")
    try:
        return f, av.open(f, format="mp4")
    except BaseException:
        f.close()
        raise


def index_mp4(root: str, rec: RecordedFile) -> FileIndex:
    """The video keyframes (decode time, ms) and the first and last times of an MP4 file;
    ValueError if it has no media."""
    f, src = _open(root, rec)
    keys: list[tuple[int, int]] = []
    first: int | None = None
    last = 0
    try:
        media = [s for s in src.streams if s.type in ("video", "audio")]
        has_video = any(s.type == "video" for s in media)
        headers = 0
        for s in media:
            headers = zlib.crc32(s.codec_context.extradata or b"", headers)
        for packet in src.demux(media):
            if packet.dts is None:
                continue
            ms = int(packet.dts * packet.time_base * 1000)
            first = ms if first is None else min(first, ms)
            last = max(last, ms)
            if packet.is_keyframe and packet.stream.type == "video":
                keys.append((ms, 0))
        size = os.fstat(f.fileno()).st_size
    finally:
        src.close()
        f.close()
    if first is None:
        raise ValueError("no media in the file")
    return FileIndex(0, tuple(keys), first, last, size, has_video, headers)


def mux_mp4_cut(root: str, rec: RecordedFile, index: FileIndex, cut: Cut) -> bytes:
    """The packets of `cut` (from its keyframe to the next cut) as MPEG-TS, continuity
    counters aligned as live segments' are."""
    start = index.first_ts + cut.start
    end = index.first_ts + cut.end
    f, src = _open(root, rec)
    buf = io.BytesIO()
    try:
        media = {s.index for s in src.streams if s.type in ("video", "audio")}
        video = next((s for s in src.streams if s.type == "video"), None)
        if video is not None and video.time_base:
            src.seek(int(start / 1000 / video.time_base), stream=video, backward=True)
        past: set[int] = set()  # streams past the cut's end (tracks interleave by chunks)

        def keep(packet: av.Packet) -> bool | None:
            ms = packet.dts * packet.time_base * 1000
            if ms >= end:
                past.add(packet.stream.index)
                return None if past >= media else False
            return ms >= start

        with av.open(buf, "w", format="mpegts") as out:
            muxed = copy_packets(src, out, keep)
    finally:
        src.close()
        f.close()
    if not muxed:
        raise ValueError("nothing could be muxed")
    return align_continuity(buf.getvalue())
