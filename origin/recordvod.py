"""Playback of recordings as VOD HLS (as MediaMTX's playback server does):
/app/name/recordings/index.m3u8?start=...&duration=... lists the segments of the recorded
files covering that time range; each segment is MPEG-TS muxed on demand from its FLV file's
byte range (MP4 files: remuxed by PyAV from the cut's keyframe), in a thread, a few at once;
the last few are kept in memory."""

from __future__ import annotations

import logging
import math
from collections import OrderedDict

import av
import trio

from common.media.segmenter import Segmenter
from common.media.stream import Frame
from common.net.http import Request, Response
from common.net.supervise import describe
from common.proto import flv
from common.proto.paths import RecordingPath
from common.proto.rtmp import messages as m
from common.serve.tsmux import mux_ts
from origin import recorddisk
from origin.recordfiles import (
    MAX_CUT_BYTES,
    MAX_VOD_SECONDS,
    BadQuery,
    Cut,
    FileIndex,
    RecordedFile,
    find_cut,
    parse_file,
    playback_range,
    vod_playlist,
    vod_segments,
)
from origin.recordmp4 import index_mp4, mux_mp4_cut

log = logging.getLogger("livecdn.playback")

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
MIN_INDEXES = 1024
MAX_INDEX_BYTES = 64 * 1024 * 1024
"""File indexes kept: enough for two of the longest playlists (MAX_VOD_SECONDS of files of
record_segment_seconds), at least MIN_INDEXES, within about MAX_INDEX_BYTES."""
PLAYLIST_BUILDS = 2
"""Playlists built at once (each may index many files)."""
MAX_PLAYLIST_WAITING = 8
"""Playlist requests waiting for a build; more are answered 503."""
MAX_CACHED_BYTES = 32 * 1024 * 1024
"""Muxed segments kept (the most recently used)."""
MAX_PLAYLIST_FILES = 5000
"""Most files one playlist covers."""

_IndexKey = tuple[str, str, str, int]


class Playback:
    """Serves recordings under `directory` as VOD HLS."""

    def __init__(self, directory: str, segment_seconds: float = 60.0) -> None:
        self.directory = directory
        self.limiter = trio.CapacityLimiter(2)
        self.builds = trio.CapacityLimiter(PLAYLIST_BUILDS)
        self.waiting = 0
        self.requests = {"playlist": 0, "segment": 0, "busy": 0}
        self.max_indexes = max(MIN_INDEXES, 2 * math.ceil(MAX_VOD_SECONDS / segment_seconds))
        self._indexes: OrderedDict[_IndexKey, FileIndex] = OrderedDict()
        self._index_bytes = 0
        self._segments: OrderedDict[tuple[str, ...], bytes] = OrderedDict()
        self._cached = 0

    async def respond(self, req: Request, target: RecordingPath) -> Response:
        """Answer a playlist or segment request (GET or HEAD, already admitted)."""
        if not self.directory:
            return Response.text(404, "no recordings here (no record_dir)")
        if not target.file:
            self.requests["playlist"] += 1
            if self.waiting >= MAX_PLAYLIST_WAITING:
                self.requests["busy"] += 1
                return Response.text(503, "too many playback playlists asked for at once",
                                     [("retry-after", "2")])  # fmt: skip
            self.waiting += 1
            waiting = True
            try:
                async with self.builds:
                    self.waiting -= 1
                    waiting = False
                    return await self._playlist(target, req.query)
            except BadQuery as exc:
                return Response.text(400, str(exc))
            finally:
                if waiting:  # cancelled while waiting
                    self.waiting -= 1
        self.requests["segment"] += 1
        return await self._segment(target)

    async def _playlist(self, target: RecordingPath, query: dict[str, str]) -> Response:
        start, end = playback_range(query)
        app, name = target.key.app, target.key.name
        files = await trio.to_thread.run_sync(
            recorddisk.list_files, self.directory, app, name, limiter=self.limiter
        )
        files = [f for f in files if f.end_ms > start and f.start_ms < end]
        if len(files) > MAX_PLAYLIST_FILES:
            raise BadQuery(f"more than {MAX_PLAYLIST_FILES} files in that range: ask for less")
        indexed = []
        for rec in files:
            index = await self._index(rec)
            if index is not None:
                indexed.append((rec, index))
        segments = vod_segments(indexed, start, end)
        if not segments:
            return Response.text(404, f"no recording of {target.key} in that time range")
        return Response(
            200, vod_playlist(segments).encode(), PLAYLIST_TYPE, [("cache-control", "max-age=5")]
        )

    async def _index(self, rec: RecordedFile) -> FileIndex | None:
        """The file's index (cached while its size is the same); None if it cannot be read."""
        key = (rec.app, rec.name, rec.file, rec.size)
        index = self._indexes.get(key)
        if index is not None:
            self._indexes.move_to_end(key)
            return index
        indexer = recorddisk.index_flv if rec.format == "flv" else index_mp4
        try:
            index = await trio.to_thread.run_sync(
                indexer, self.directory, rec, limiter=self.limiter
            )
        except (OSError, ValueError, flv.FlvError, av.FFmpegError) as exc:
            log.info("playback: %s/%s/%s left out (%s)", rec.app, rec.name, rec.file, describe(exc))
            return None
        self._indexes[key] = index
        self._index_bytes += _index_bytes(index)
        while len(self._indexes) > self.max_indexes or self._index_bytes > MAX_INDEX_BYTES:
            _, old = self._indexes.popitem(last=False)
            self._index_bytes -= _index_bytes(old)
        return index

    async def _segment(self, target: RecordingPath) -> Response:
        app, name = target.key.app, target.key.name
        rec = parse_file(app, name, target.file)
        if rec is None:
            return Response.text(404, "no such recording file")
        key = (app, name, target.file, target.segment)
        data = self._segments.get(key)
        if data is None:
            rec = await trio.to_thread.run_sync(
                recorddisk.stat_file, self.directory, rec, limiter=self.limiter
            )
            index = await self._index(rec) if rec is not None else None
            cut = find_cut(index, target.segment) if index is not None else None
            if rec is None or index is None or cut is None:
                return Response.text(404, "no such recording segment")
            if rec.format == "flv" and cut.size > MAX_CUT_BYTES:
                return Response.text(
                    404,
                    f"recording segment of {cut.size} bytes: beyond {MAX_CUT_BYTES}, not served",
                )
            muxer = mux_cut if rec.format == "flv" else mux_mp4_cut
            try:
                data = await trio.to_thread.run_sync(
                    muxer, self.directory, rec, index, cut, limiter=self.limiter
                )
            except (OSError, ValueError, flv.FlvError, av.FFmpegError) as exc:
                log.info("playback: %s/%s/%s %s not muxed (%s)", app, name, rec.file,
                         target.segment, describe(exc))  # fmt: skip
                return Response.text(404, "recording segment unreadable")
            self._keep(key, data)
        return Response(200, data, SEGMENT_TYPE, [("cache-control", "max-age=86400")])

    def _keep(self, key: tuple[str, ...], data: bytes) -> None:
        if len(data) > MAX_CACHED_BYTES // 4:
            return
        self._segments[key] = data
        self._cached += len(data)
        while self._cached > MAX_CACHED_BYTES:
            _, old = self._segments.popitem(last=False)
            self._cached -= len(old)


def _index_bytes(index: FileIndex) -> int:
    """About what `index` takes in memory."""
    return 200 + 120 * len(index.keyframes)


def frames_of(data: bytes) -> list[Frame]:
    """The tags of an FLV byte string as stream Frames (headers and keyframes marked)."""
    parser = flv.FlvParser()
    out = []
    for seq, tag in enumerate(parser.feed(data)):
        header = keyframe = False
        if tag.tag_type == flv.TAG_SCRIPT:
            header = True
        elif tag.tag_type in (flv.TAG_VIDEO, flv.TAG_AUDIO) and tag.body:
            try:
                header = flv.is_sequence_header(tag.tag_type, tag.body)
                if tag.tag_type == flv.TAG_VIDEO and not header:
                    info = flv.video_info(tag.body)
                    keyframe = info.keyframe and not info.end_of_sequence
            except flv.FlvError:
                continue
        else:
            continue
        type_id = m.DATA_AMF0 if tag.tag_type == flv.TAG_SCRIPT else tag.tag_type
        out.append(Frame(seq, type_id, tag.timestamp, tag.body, keyframe=keyframe, header=header))
    return out


def mux_cut(root: str, rec: RecordedFile, index: FileIndex, cut: Cut) -> bytes:
    """One playback segment as MPEG-TS: the file's head and the cut's tags, through the live
    segmenter (timestamps checked as live) and muxer. Blocking: run in a thread."""
    data = recorddisk.read_range(root, rec, [(0, index.head_end), (cut.offset, cut.stop)])
    segmenter = Segmenter(10**9, max_ms=10**9)
    for frame in frames_of(data):
        if segmenter.push(frame) is not None:
            raise ValueError("segment cut in two")
    spec = segmenter.flush()
    if spec is None:
        raise ValueError("no media in the segment")
    out = mux_ts(spec)
    if not out:
        raise ValueError("nothing could be muxed")
    return out
