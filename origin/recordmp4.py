"""Playback of MP4 recording files (blocking PyAV work: run in a thread): their keyframe index
and one playback segment remuxed to MPEG-TS (no decoding)."""

from __future__ import annotations

import io
import os

import av

from origin import recorddisk
from origin.recordfiles import Cut, FileIndex, RecordedFile


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
    return FileIndex(0, tuple(keys), first, last, size, has_video)


def mux_mp4_cut(root: str, rec: RecordedFile, index: FileIndex, cut: Cut) -> bytes:
    """The packets of `cut` (from its keyframe to the next cut) as MPEG-TS."""
    start = index.first_ts + cut.start
    end = index.first_ts + cut.end
    f, src = _open(root, rec)
    buf = io.BytesIO()
    muxed = 0
    try:
        media = [s for s in src.streams if s.type in ("video", "audio")]
        video = next((s for s in media if s.type == "video"), None)
        if video is not None and video.time_base:
            src.seek(int(start / 1000 / video.time_base), stream=video, backward=True)
        out = av.open(buf, "w", format="mpegts")
        try:
            mapping = {s.index: out.add_stream_from_template(s) for s in media}
            past: set[int] = set()  # streams past the cut's end (they interleave by chunks)
            for packet in src.demux(media):
                if packet.dts is None:
                    continue
                ms = packet.dts * packet.time_base * 1000
                if ms >= end:
                    past.add(packet.stream.index)
                    if len(past) == len(mapping):
                        break
                    continue
                if ms < start:
                    continue
                packet.stream = mapping[packet.stream.index]
                out.mux(packet)
                muxed += 1
        finally:
            out.close()
    finally:
        src.close()
        f.close()
    if not muxed:
        raise ValueError("nothing could be muxed")
    return buf.getvalue()
