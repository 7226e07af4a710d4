"""The origin's HLS: one packager task per live stream, playlists kept in memory (bounded),
optionally written to a directory, served at /app/name.m3u8 and relative segment URIs."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

import trio

from common.media.segmenter import Segmenter, SegmentSpec
from common.media.stream import Stream
from common.net.http import Request, Response
from common.net.supervise import contained, describe, log_failure, supervise
from common.proto.hlsplaylist import HlsPlaylist, Segment
from common.proto.paths import HlsTarget, Media
from common.serve.hlsviewers import HlsViewers, client_key
from common.serve.metrics import NodeMetrics
from common.serve.tsmux import mux_ts

log = logging.getLogger("livecdn.hls")

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
SEGMENT_CACHE = "public, max-age=86400, immutable"


def new_session() -> str:
    """A short id that makes segment URIs unique across restarts of a stream."""
    return format(int(time.time() * 1000) & 0xFFFFFFFFFF, "x")


@dataclass(frozen=True)
class HlsSettings:
    """How the origin packages HLS."""

    target: float = 2.0
    window: int = 6
    grace: float = 30.0
    directory: str = ""


LOG_EVERY = 60.0
"""While a stream's segment writes (or muxes) keep failing, one log line per this many seconds."""


class Failure(StrEnum):
    """A kind of packaging failure (the label of hls_failures_total)."""

    MUX = "mux"  # a segment left out
    WRITE = "write"  # hls_dir
    RESTART = "restart"  # a packager restarted


class UnsafePath(OSError):
    """A file under `hls_dir` that would resolve outside it (a symlink, `..` in a key)."""


@dataclass
class _Failing:
    """Rate limit for one kind of repeated failure of one stream."""

    since_logged: int = 0  # failures not logged since the last line
    logged_at: float = -math.inf
    reported: bool = False  # a failure line was logged and no recovery line since


class HlsStore:
    """Every stream's playlist by (app, name); outlives a stream for `grace` seconds so a
    reconnecting publisher continues the same playlist (with a discontinuity).

    A packager's failures stay inside it: a segment that cannot be muxed is skipped (counted
    in `mux_errors`, the next segment starts a discontinuity), a failed write to `hls_dir`
    is counted in `write_errors` and retried with the next segment (the playlist is served
    from memory meanwhile), and anything unexpected restarts the stream's packager with
    backoff (`packager_restarts`). Failures are logged rate-limited, per stream."""

    def __init__(self, settings: HlsSettings) -> None:
        self.settings = settings
        self.playlists: dict[tuple[str, str], HlsPlaylist] = {}
        self.viewers = HlsViewers(window=3 * settings.target)
        self.segments_made = 0
        self.bytes_made = 0
        self.mux_errors = 0
        self.write_errors = 0
        self.packager_restarts = 0
        self.timestamp_jumps = 0
        self.requests: Counter[str] = Counter()
        self._packagers: Counter[tuple[str, str]] = Counter()
        self._failing: dict[tuple[Failure, tuple[str, str]], _Failing] = {}
        self._first_segment: dict[tuple[str, str], trio.Event] = {}
        """Set when a playlist without segments gets its first (playlist requests wait)."""

    def register_metrics(self, mt: NodeMetrics) -> None:
        """Export the packagers' and HLS requests' counters."""
        mt.counter(
            "hls_segments_total", "HLS segments packaged.", (), lambda: {(): self.segments_made}
        )
        mt.counter(
            "hls_requests_total",
            "HLS requests, by kind (playlist, segment).",
            ("kind",),
            lambda: {(k,): v for k, v in self.requests.items()},
        )
        mt.counter(
            "hls_failures_total",
            "HLS packaging failures, by kind (mux: a segment left out; write: hls_dir; "
            "restart: a packager restarted).",
            ("kind",),
            lambda: {
                (Failure.MUX,): self.mux_errors,
                (Failure.WRITE,): self.write_errors,
                (Failure.RESTART,): self.packager_restarts,
            },
        )
        mt.counter(
            "hls_timestamp_jumps_total",
            "Timestamp jumps the HLS packager turned into a discontinuity.",
            (),
            lambda: {(): self.timestamp_jumps},
        )

    async def package(self, stream: Stream) -> None:
        """Package `stream` until it ends; then keep its playlist (ENDLIST) for the grace time.

        Never raises (but for cancellation): the stream and the node go on whatever happens
        here."""
        key = (stream.app, stream.name)
        s = self.settings
        playlist = self.playlists.get(key)
        resumed = playlist is not None
        if playlist is None:
            playlist = HlsPlaylist(stream.name, new_session(), s.target, window=s.window)
            self.playlists[key] = playlist
        else:
            log.info("HLS %s/%s: publisher back, playlist continues with a discontinuity", *key)
        self._packagers[key] += 1
        playlist.ended = False
        packager = _Packager(self, stream, key, playlist, discontinuity=resumed)
        what = f"HLS packager {key[0]}/{key[1]}"
        try:
            async with trio.open_nursery() as nursery:
                if s.directory:
                    packager.writer = _DirWriter(self, key, playlist)
                    nursery.start_soon(
                        partial(contained, f"HLS writer {key[0]}/{key[1]}", packager.writer.run),
                    )
                try:
                    await supervise(what, packager.run, on_restart=self._restarted, logger=log)
                finally:
                    self._packagers[key] -= 1
                    if self._packagers[key] <= 0:
                        del self._packagers[key]
                        playlist.ended = True
                        playlist.ended_at = trio.current_time()
                    if packager.writer is not None:
                        packager.writer.close()
        except Exception as exc:  # only a bug in the lines above; never the node's problem
            log_failure(what, exc, log)
        if key in self._packagers:
            return  # another packager (a new publisher) carries on with this playlist
        log.info("HLS %s/%s: ended (EXT-X-ENDLIST), removed in %g s", *key, s.grace)
        await trio.sleep(s.grace)
        if (
            self.playlists.get(key) is playlist
            and playlist.ended
            and trio.current_time() >= playlist.ended_at + s.grace  # as the sleep sums it
        ):
            del self.playlists[key]
            self._first_segment.pop(key, None)
            for kind in (Failure.WRITE, Failure.MUX):
                self._failing.pop((kind, key), None)

    def _restarted(self) -> None:
        self.packager_restarts += 1

    def _failed(self, kind: Failure, key: tuple[str, str], message: str) -> None:
        """Log a failure of `kind` for `key`: at most one line per LOG_EVERY (counting the
        ones in between), however often it fails or recovers."""
        state = self._failing.setdefault((kind, key), _Failing())
        now = trio.current_time()
        if now - state.logged_at < LOG_EVERY:
            state.since_logged += 1
            return
        more = f" ({state.since_logged} more since the last report)" if state.since_logged else ""
        log.warning("HLS %s/%s: %s%s", *key, message, more)
        state.logged_at, state.since_logged, state.reported = now, 0, True

    def _recovered(self, kind: Failure, key: tuple[str, str], message: str) -> None:
        """One line when things work again after a logged failure."""
        state = self._failing.get((kind, key))
        if state is not None and state.reported:
            state.reported = False
            log.info("HLS %s/%s: %s", *key, message)

    def write_failed(self, key: tuple[str, str], exc: BaseException) -> None:
        """A write to `hls_dir` failed: counted, logged rate-limited."""
        self.write_errors += 1
        self._failed(
            Failure.WRITE,
            key,
            f"cannot write to hls_dir ({describe(exc)}); the playlist is served from memory",
        )

    def write_ok(self, key: tuple[str, str]) -> None:
        """A write to `hls_dir` succeeded."""
        self._recovered(Failure.WRITE, key, "writing to hls_dir again")

    def mux_failed(self, key: tuple[str, str], spec: SegmentSpec, exc: BaseException) -> None:
        """A segment could not be muxed: counted, logged rate-limited."""
        self.mux_errors += 1
        self._failed(
            Failure.MUX,
            key,
            f"segment (cut {spec.seq}: {spec.duration_ms} ms, {len(spec.frames)} frames) "
            f"not muxed ({describe(exc)}); the next segment starts a discontinuity",
        )

    def mux_ok(self, key: tuple[str, str]) -> None:
        """A segment was muxed."""
        self._recovered(Failure.MUX, key, "segments mux again")

    def segment_added(self, key: tuple[str, str]) -> None:
        """Wake the playlist requests waiting for `key`'s first segment."""
        first = self._first_segment.pop(key, None)
        if first is not None:
            first.set()

    async def respond(self, req: Request, target: HlsTarget) -> Response | None:
        """Serve `target` (/app/name.m3u8 or /app/name-session-seq.ts); None for a method
        other than GET or HEAD."""
        if req.method not in ("GET", "HEAD"):
            return None
        key = (target.key.app, target.key.name)
        client = client_key(req.peer, req.headers.get("user-agent", ""))
        if target.media is Media.PLAYLIST:
            playlist = self.playlists.get(key)
            if playlist is not None and not playlist.segments:
                with trio.move_on_after(2 * self.settings.target):
                    await self._first_segment.setdefault(key, trio.Event()).wait()
            self.requests["playlist"] += 1
            if playlist is None or not playlist.segments:
                return Response.text(404, f"no HLS for {target.key}")
            self.viewers.seen(key, client, trio.current_time())
            max_age = max(0, math.floor(self.settings.target / 2))
            return Response(
                200,
                playlist.playlist().encode(),
                PLAYLIST_TYPE,
                [("cache-control", f"max-age={max_age}"), ("access-control-allow-origin", "*")],
            )
        playlist = self.playlists.get(key)
        self.requests["segment"] += 1
        seg = playlist.segment(target.file) if playlist is not None else None
        if seg is None:
            return Response.text(404, f"segment {target.file} is not (or no longer) available")
        self.viewers.seen(key, client, trio.current_time())
        return Response(
            200,
            seg.data,
            SEGMENT_TYPE,
            [("cache-control", SEGMENT_CACHE), ("access-control-allow-origin", "*")],
        )


class _Packager:
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
        self.writer: _DirWriter | None = None
        self.runs = 0

    async def run(self) -> None:
        """Read the stream from (about) now, cut, mux and add segments until it ends."""
        stream = self.stream
        if self.runs:
            if stream.closed:
                return  # failed as the stream ended: nothing left to package
            self.discontinuity = True  # frames were lost while this restarted
        self.runs += 1
        segmenter = Segmenter(int(self.store.settings.target * 1000))
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
        # cut on the arrival of the next keyframe, live: the segment began `duration` ago
        wall = time.time() - spec.duration_ms / 1000
        try:
            data = await trio.to_thread.run_sync(mux_ts, spec)
            if not data:
                raise ValueError("no audio or video packet could be muxed")
        except Exception as exc:  # whatever the media does to the muxer
            store.mux_failed(self.key, spec, exc)
            self.discontinuity = True
            return
        store.mux_ok(self.key)
        discontinuity = spec.discontinuity or (self.discontinuity and bool(playlist.segments))
        self.discontinuity = False
        playlist.append(data, spec.duration_ms / 1000, discontinuity=discontinuity, wall=wall)
        store.segment_added(self.key)
        store.segments_made += 1
        store.bytes_made += len(data)
        if self.writer is not None:
            self.writer.poke()


class _DirWriter:
    """Mirrors one playlist into `hls_dir/app/`: each sync writes the segments of the window
    not yet written, then the playlist (atomically), then removes expired segments. A failed
    sync is retried by the next one, so the directory catches up once it is writable."""

    def __init__(self, store: HlsStore, key: tuple[str, str], playlist: HlsPlaylist) -> None:
        self.store = store
        self.key = key
        self.playlist = playlist
        self._send, self._receive = trio.open_memory_channel[None](1)
        self._written: set[str] = set()

    def poke(self) -> None:
        """The playlist changed: sync soon (one pending sync covers any number of pokes)."""
        with contextlib.suppress(
            trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
        ):
            self._send.send_nowait(None)

    def close(self) -> None:
        """A last sync (the playlist ended), then `run` returns."""
        self.poke()
        self._send.close()

    async def run(self) -> None:
        """Sync on every poke until closed."""
        async with self._receive:
            async for _ in self._receive:
                playlist = self.playlist
                if not playlist.segments:
                    continue
                segments = list(playlist.segments)
                text = playlist.playlist()
                try:
                    await trio.to_thread.run_sync(
                        self._sync, segments, text, abandon_on_cancel=True
                    )
                except OSError as exc:
                    self.store.write_failed(self.key, exc)
                else:
                    self.store.write_ok(self.key)

    def _sync(self, segments: list[Segment], text: str) -> None:
        app, name = self.key
        root = os.path.realpath(self.store.settings.directory)
        folder = _inside(root, os.path.join(root, app))
        os.makedirs(folder, exist_ok=True)
        written = self._written
        for seg in segments:
            if seg.uri not in written:
                _write_file(_inside(root, os.path.join(folder, seg.uri)), seg.data)
                written.add(seg.uri)
        tmp = _inside(root, os.path.join(folder, f".{name}.m3u8.tmp"))
        _write_file(tmp, text.encode())
        os.replace(tmp, _inside(root, os.path.join(folder, f"{name}.m3u8")))
        keep = {s.uri for s in segments}
        written &= keep
        prefix = f"{name}-{self.playlist.session}-"
        for entry in os.listdir(folder):
            if (
                entry.startswith(prefix)
                and entry.endswith(".ts")
                and entry[len(prefix) : -3].isdigit()
                and entry not in keep
            ):
                os.unlink(os.path.join(folder, entry))  # a symlink goes, never its target


def _inside(root: str, path: str) -> str:
    """`path` resolved (symlinks followed); UnsafePath if that is not inside `root`."""
    real = os.path.realpath(path)
    if real != root and os.path.commonpath([root, real]) != root:
        raise UnsafePath(f"{path!r} resolves outside hls_dir (to {real!r}); refused")
    return real


def _write_file(path: str, data: bytes) -> None:
    """Write `path` (not following a symlink there)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
