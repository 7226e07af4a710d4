"""The origin's HLS: one packager task per live stream, playlists kept in memory (bounded),
optionally written to a directory, served at /app/name.m3u8 and relative segment URIs."""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass

import av
import trio

from common.hls import (
    HlsPlaylist,
    HlsViewers,
    Segment,
    Segmenter,
    SegmentSpec,
    client_key,
    hls_path,
    mux_ts,
    new_session,
)
from common.http import Request, Response
from common.stream import Stream

log = logging.getLogger("livecdn.hls")

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
SEGMENT_CACHE = "public, max-age=86400, immutable"


@dataclass(frozen=True)
class HlsSettings:
    """How the origin packages HLS."""

    target: float = 2.0
    window: int = 6
    grace: float = 30.0
    directory: str = ""


class HlsStore:
    """Every stream's playlist by (app, name); outlives a stream for `grace` seconds so a
    reconnecting publisher continues the same playlist (with a discontinuity)."""

    def __init__(self, settings: HlsSettings) -> None:
        self.settings = settings
        self.playlists: dict[tuple[str, str], HlsPlaylist] = {}
        self.viewers = HlsViewers(window=3 * settings.target)
        self.segments_made = 0
        self.bytes_made = 0
        self.mux_errors = 0
        self.requests: Counter[str] = Counter()

    async def package(self, stream: Stream) -> None:
        """Package `stream` until it ends; then keep its playlist (ENDLIST) for the grace time."""
        key = (stream.app, stream.name)
        s = self.settings
        playlist = self.playlists.get(key)
        if playlist is None:
            playlist = HlsPlaylist(stream.name, new_session(), s.target, window=s.window)
            self.playlists[key] = playlist
            first_seq, resumed = 0, False
        else:
            first_seq, resumed = (playlist.segments[-1].seq + 1 if playlist.segments else 0), True
        segmenter = Segmenter(int(s.target * 1000), first_seq=first_seq)
        if resumed:
            segmenter.mark_discontinuity()
            log.info("HLS %s/%s: publisher back, playlist continues with a discontinuity", *key)
        reader = stream.add_reader("hls")
        try:
            while True:
                await stream.wait_beyond(reader.cursor)
                for frame in stream.pending(reader):
                    spec = segmenter.push(frame, frame.source)
                    if spec is not None:
                        await self._emit(key, playlist, spec)
                if stream.closed and reader.cursor >= stream.head:
                    break
            spec = segmenter.flush()
            if spec is not None:
                await self._emit(key, playlist, spec)
        finally:
            stream.remove_reader(reader)
            playlist.ended = True
            playlist.ended_at = trio.current_time()
        log.info("HLS %s/%s: ended (EXT-X-ENDLIST), removed in %g s", *key, s.grace)
        await trio.sleep(s.grace)
        if (
            self.playlists.get(key) is playlist
            and playlist.ended
            and trio.current_time() - playlist.ended_at >= s.grace
        ):
            del self.playlists[key]

    async def _emit(self, key: tuple[str, str], playlist: HlsPlaylist, spec: SegmentSpec) -> None:
        # cut on the arrival of the next keyframe, live: the segment began `duration` ago
        wall = time.time() - spec.duration_ms / 1000
        try:
            data = await trio.to_thread.run_sync(mux_ts, spec)
        except (av.error.FFmpegError, ValueError) as exc:
            self.mux_errors += 1
            log.warning("HLS %s/%s: segment %d not muxed: %s", *key, spec.seq, exc)
            return
        if not data:
            return
        seg = Segment(
            spec.seq,
            spec.duration_ms / 1000,
            playlist.uri(spec.seq),
            data,
            spec.discontinuity,
            wall,
        )
        playlist.add(seg)
        self.segments_made += 1
        self.bytes_made += len(data)
        if self.settings.directory:
            await trio.to_thread.run_sync(self._write, key, playlist, seg)

    def _write(self, key: tuple[str, str], playlist: HlsPlaylist, seg: Segment) -> None:
        folder = os.path.join(self.settings.directory, key[0])
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, seg.uri), "wb") as f:
            f.write(seg.data)
        tmp = os.path.join(folder, f".{key[1]}.m3u8.tmp")
        with open(tmp, "w") as f:
            f.write(playlist.playlist())
        os.replace(tmp, os.path.join(folder, f"{key[1]}.m3u8"))
        keep = {s.uri for s in playlist.segments}
        prefix = f"{key[1]}-{playlist.session}-"
        for name in os.listdir(folder):
            if name.startswith(prefix) and name.endswith(".ts") and name not in keep:
                os.unlink(os.path.join(folder, name))

    async def respond(self, req: Request) -> Response | None:
        """Serve /app/name.m3u8 and /app/name-session-seq.ts; None if not an HLS path."""
        target = hls_path(req.path)
        if target is None or req.method not in ("GET", "HEAD"):
            return None
        app, name, file = target
        client = client_key(req.peer, req.headers.get("user-agent", ""))
        if file.endswith(".m3u8"):
            playlist = self.playlists.get((app, name))
            if playlist is not None and not playlist.segments:
                with trio.move_on_after(2 * self.settings.target):
                    while not playlist.segments:
                        await trio.sleep(0.05)
            self.requests["playlist"] += 1
            if playlist is None or not playlist.segments:
                return Response.text(404, f"no HLS for {app}/{name}")
            self.viewers.seen((app, name), client, trio.current_time())
            max_age = max(0, math.floor(self.settings.target / 2))
            return Response(
                200,
                playlist.playlist().encode(),
                PLAYLIST_TYPE,
                [("cache-control", f"max-age={max_age}"), ("access-control-allow-origin", "*")],
            )
        if file.endswith(".ts"):
            playlist = self.playlists.get((app, name))
            self.requests["segment"] += 1
            seg = playlist.segment(file) if playlist is not None else None
            if seg is None:
                return Response.text(404, f"segment {file} is not (or no longer) available")
            self.viewers.seen((app, name), client, trio.current_time())
            return Response(
                200,
                seg.data,
                SEGMENT_TYPE,
                [("cache-control", SEGMENT_CACHE), ("access-control-allow-origin", "*")],
            )
        return None
