"""One live stream's HLS packaging loop: read its frames, cut segments, mux them (in a
thread) and append them to its playlist."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import trio

from common.media.segclock import BOUNDS
from common.media.segmenter import Segmenter, SegmentSpec
from common.media.stream import Stream
from common.proto.hlsplaylist import HlsPlaylist, nearest_second
from common.serve.hlsdir import DirWriter
from common.serve.tsmux import mux_ts

if TYPE_CHECKING:
    from common.serve.hlsstore import HlsStore


MAX_WALL_MS = BOUNDS["epoch_wall_ms"][1]
"""The latest date a playlist can print."""


class Packager:
    """One stream's packaging loop (`run`, restarted by `supervise` if it fails)."""

    def __init__(
        self,
        store: HlsStore,
        stream: Stream,
        key: tuple[str, str],
        playlist: HlsPlaylist,
        *,
        discontinuity: bool,
    ) -> None:
        self.store = store
        self.stream = stream
        self.key = key
        self.playlist = playlist
        self.discontinuity = discontinuity  # the next segment added starts one
        self.writer: DirWriter | None = None
        self.runs = 0

    async def run(self) -> None:
        """Read the stream from (about) now, cut, mux and add segments until it ends."""
        stream = self.stream
        if self.runs:
            if stream.closed:
                return  # failed as the stream ended: nothing left to package
            self.discontinuity = True  # frames were lost while this restarted
        self.runs += 1
        # cut where the stream's segment clock cut, as every node does
        segmenter = Segmenter(int(self.store.settings.target * 1000), marked=True)
        reader = stream.add_reader("hls")
        try:
            # The reader starts at the newest keyframe (or the head): sequence headers the
            # publisher sent before it are not among its frames.
            segmenter.seed(stream.header_frames(stream.start_timestamp(reader)))
            while True:
                await stream.wait_beyond(reader.cursor)
                for frame in stream.pending(reader):
                    spec = segmenter.push(frame, frame.source)
                    if spec is not None:
                        await self.emit(spec)
                if stream.closed and reader.cursor >= stream.head:
                    break
            spec = segmenter.flush()
            if spec is not None:
                await self.emit(spec)
        finally:
            stream.remove_reader(reader)

    async def emit(self, spec: SegmentSpec) -> None:
        """Mux `spec` (in a thread) and add it to the playlist; a failure skips it."""
        store, playlist = self.store, self.playlist
        store.timestamp_jumps += spec.jumps
        cut = spec.cut
        # cut on the arrival of the next keyframe, live: the segment began `duration` ago
        wall: float | None = time.time() - spec.duration_ms / 1000
        if cut is not None:  # a parent's clock: a date only if it is one (year 1970..9999)
            wall = cut.wall_ms / 1000 if 0 <= cut.wall_ms <= MAX_WALL_MS else None
        try:
            data = await trio.to_thread.run_sync(mux_ts, spec, limiter=store.mux_limiter)
            if not data:
                raise ValueError("no audio or video packet could be muxed")
        except Exception as exc:  # whatever the media does to the muxer
            store.mux_failed(self.key, spec, exc)
            self.discontinuity = True
            return
        store.mux_ok(self.key)
        disc_before = None
        restarted = False
        if cut is not None and cut.session == playlist.session and cut.seq < playlist.next_seq:
            return  # a number the playlist has passed (never lowered): left out
        if cut is not None:
            # a number skipped (a segment not muxed) or another session: start over
            restarted = playlist.place(cut.seq, cut.session)
            playlist.target = self.stream.clock.target_ms / 1000  # the origin's
            playlist.target_duration = max(
                playlist.target_duration, nearest_second(cut.longest_ms / 1000)
            )
            disc_before = cut.discontinuities_before + playlist.extra_discontinuities
        discontinuity = (
            spec.discontinuity or restarted or (self.discontinuity and bool(playlist.segments))
        )
        if discontinuity and not spec.discontinuity:
            playlist.extra_discontinuities += 1  # counted from the next segment on
        self.discontinuity = False
        playlist.append(
            data,
            spec.duration_ms / 1000,
            discontinuity=discontinuity,
            wall=wall,
            disc_before=disc_before,
        )
        store.segment_added(self.key)
        store.segments_made += 1
        store.bytes_made += len(data)
        if self.writer is not None:
            self.writer.poke()
