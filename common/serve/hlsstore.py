"""A node's HLS store: every stream's playlist (its packager started and supervised,
kept for a grace time after it ends), served at /app/name.m3u8 and relative segment URIs,
with its packaging failures counted and logged rate-limited."""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass
from enum import StrEnum
from functools import partial

import trio

from common.media.segclock import BOUNDS, MAX_SESSION
from common.media.segmenter import SegmentSpec
from common.media.stream import Stream
from common.net.http import Request, Response, SharedResponse
from common.net.supervise import contained, describe, log_failure, supervise
from common.proto.hlsplaylist import HlsPlaylist, Segment
from common.proto.paths import HlsTarget, Media
from common.serve.hlsdir import DirWriter
from common.serve.hlsviewers import HlsViewers, client_key
from common.serve.metrics import NodeMetrics
from common.serve.packager import Packager

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


MUX_THREADS = 2
"""Threads muxing segments at once, per node (the machine's cores, not the streams')."""
LOG_EVERY = 60.0
"""While a stream's segment writes (or muxes) keep failing, one log line per this many seconds."""


@dataclass(frozen=True)
class Continuation:
    """Where a stream's playlist stands, for another process to continue it (a stream that
    moves to another worker of an origin): its session, the number of its next segment,
    the discontinuities numbered below that (`extra` of them marked by the packager, not
    the stream's clock) and its target duration."""

    session: str
    next_seq: int
    discontinuities: int
    extra: int = 0
    target_duration: int = 0

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: object) -> Continuation | None:
        """The continuation `to_json` gave; None for anything else (out of bounds too)."""
        if not isinstance(doc, dict):
            return None
        session = doc.get("session")
        if not isinstance(session, str) or not 0 < len(session) <= MAX_SESSION:
            return None
        if not (session.isascii() and session.isalnum()):
            return None
        bounds = {
            "next_seq": (0, BOUNDS["seq"][1]),
            "discontinuities": BOUNDS["disc_before"],
            "extra": BOUNDS["disc_before"],
            "target_duration": (0, BOUNDS["longest_ms"][1] // 1000),
        }
        numbers = {}
        for name, (low, high) in bounds.items():
            value = doc.get(name)
            if type(value) is not int or not low <= value <= high:
                return None
            numbers[name] = value
        return cls(session, **numbers)


def _ahead(playlist: HlsPlaylist, c: Continuation) -> bool:
    """Whether `playlist` is `c`'s session at or past `c`'s next segment."""
    return playlist.session == c.session and playlist.next_seq >= c.next_seq


class Failure(StrEnum):
    """A kind of packaging failure (the label of hls_failures_total)."""

    MUX = "mux"  # a segment left out
    WRITE = "write"  # hls_dir
    RESTART = "restart"  # a packager restarted


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
        self.mux_limiter = trio.CapacityLimiter(MUX_THREADS)
        """Segments muxed at once (each stream waits its turn, none holds up another's)."""
        self._packagers: Counter[tuple[str, str]] = Counter()
        self._failing: dict[tuple[Failure, tuple[str, str]], _Failing] = {}
        self._first_segment: dict[tuple[str, str], trio.Event] = {}
        """Set when a playlist without segments gets its first (playlist requests wait)."""
        self._shared: dict[tuple[str, str], dict[str, tuple[Segment, SharedResponse]]] = {}
        """Each stream's segments as shared responses (head built once, body sent with
        sendfile), only those still in its playlist's window."""
        self._shared_playlists: dict[tuple[str, str], tuple[bytes, SharedResponse]] = {}
        """Each stream's playlist version as a shared response (for `shared`)."""

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

    def prepare(self, stream: Stream, continues: Continuation | None = None) -> None:
        """Set `stream`'s segment clock for this store before its first frame (call it as
        the stream opens): the store's target duration, and the numbers of a playlist kept
        from the stream's previous life, which it continues. `continues`: that playlist was
        another process's (`handover`), and this store has none of the stream: it continues
        there, its next segment marked discontinuous (the other process's open segment is
        lost), as a playlist kept here would."""
        stream.clock.prefer_target(round(self.settings.target * 1000))
        key = (stream.app, stream.name)
        playlist = self.playlists.get(key)
        if (
            continues is not None
            and key not in self._packagers
            and (playlist is None or not _ahead(playlist, continues))
        ):  # a playlist kept here from before is behind the other process's
            playlist = self._continued(stream, continues)
            if stream.clock.seq >= 0:  # a clock that follows the other process's already
                stream.clock.pending_disc = True
                return
        if playlist is not None:
            stream.clock.resume(
                playlist.session,
                playlist.next_seq,
                playlist.discontinuities(),
                playlist.target_duration * 1000,
            )

    def _continued(self, stream: Stream, c: Continuation) -> HlsPlaylist:
        """An empty playlist of `stream` that continues `c` (ended: `package` resumes it)."""
        s = self.settings
        playlist = HlsPlaylist(stream.name, c.session, s.target, window=s.window)
        playlist.first_seq = c.next_seq
        playlist.expired_discontinuities = c.discontinuities
        playlist.target_duration = c.target_duration
        playlist.ended = True
        playlist.ended_at = trio.current_time()
        if stream.clock.seq >= 0:  # its segments are numbered by that clock, not resumed
            playlist.extra_discontinuities = c.extra
        self.playlists[(stream.app, stream.name)] = playlist
        log.info("HLS %s/%s: continues another worker's playlist at segment %d", stream.app,
                 stream.name, c.next_seq)  # fmt: skip
        return playlist

    def handover(self, key: tuple[str, str]) -> Continuation | None:
        """Where `key`'s playlist stands, for another process to continue it (`prepare`);
        None if there is none."""
        playlist = self.playlists.get(key)
        if playlist is None:
            return None
        return Continuation(
            playlist.session,
            playlist.next_seq,
            playlist.discontinuities(),
            playlist.extra_discontinuities,
            playlist.target_duration,
        )

    async def package(
        self, stream: Stream, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Package `stream` until it ends; then keep its playlist (ENDLIST) for the grace time.
        `task_status.started()` once the playlist exists (requests for it wait for its first
        segment).

        Never raises (but for cancellation): the stream and the node go on whatever happens
        here."""
        key = (stream.app, stream.name)
        s = self.settings
        playlist = self.playlists.get(key)
        resumed = playlist is not None
        self.prepare(stream)
        if playlist is None:
            playlist = HlsPlaylist(stream.name, stream.clock.session, s.target, window=s.window)
            self.playlists[key] = playlist
        else:
            log.info("HLS %s/%s: a new stream continues the playlist", *key)
        self._packagers[key] += 1
        playlist.ended = False
        task_status.started()
        packager = Packager(self, stream, key, playlist, discontinuity=resumed)
        what = f"HLS packager {key[0]}/{key[1]}"
        try:
            async with trio.open_nursery() as nursery:
                if s.directory:
                    packager.writer = DirWriter(
                        s.directory,
                        key,
                        playlist,
                        failed=partial(self.write_failed, key),
                        ok=partial(self.write_ok, key),
                    )
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
            self._shared.pop(key, None)
            self._shared_playlists.pop(key, None)
            self._first_segment.pop(key, None)
            for kind in (Failure.WRITE, Failure.MUX):
                self._failing.pop((kind, key), None)

    def drop(self, key: tuple[str, str]) -> None:
        """Forget `key`'s playlist now (its packagers stopped: a new one starts afresh)."""
        if key in self._packagers:
            return
        self.playlists.pop(key, None)
        self._shared.pop(key, None)
        self._shared_playlists.pop(key, None)
        first = self._first_segment.pop(key, None)
        if first is not None:
            first.set()
        for kind in Failure:
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
                # a node that joined mid-segment waits for the next one whole: up to a
                # segment (its target, or the stream's) and one more, and a little
                with trio.move_on_after(3 * max(self.settings.target, playlist.target)):
                    await self._first_segment.setdefault(key, trio.Event()).wait()
            self.requests["playlist"] += 1
            if playlist is None or not playlist.segments:
                return Response.text(404, f"no HLS for {target.key}")
            self.viewers.seen(key, client, trio.current_time())
            return Response(
                200, playlist.rendered(), PLAYLIST_TYPE, [("cache-control", self._cache())]
            )
        playlist = self.playlists.get(key)
        self.requests["segment"] += 1
        seg = playlist.segment(target.file) if playlist is not None else None
        if seg is None:
            return Response.text(404, f"segment {target.file} is not (or no longer) available")
        self.viewers.seen(key, client, trio.current_time())
        return self._segment_response(key, playlist, seg)

    def shared(self, target: HlsTarget, client: str) -> SharedResponse | None:
        """What `respond` answers a GET or HEAD of `target` from `client` with, when that is
        ready now (a playlist with segments, or a segment in its window): one shared
        response per playlist version or segment, counted as `respond` counts; None for
        anything else (`respond` answers it)."""
        key = (target.key.app, target.key.name)
        playlist = self.playlists.get(key)
        if playlist is None or not playlist.segments:
            return None
        if target.media is Media.PLAYLIST:
            self.requests["playlist"] += 1
            self.viewers.seen(key, client, trio.current_time())
            return self._playlist_response(key, playlist)
        seg = playlist.segment(target.file)
        if seg is None:
            return None
        self.requests["segment"] += 1
        self.viewers.seen(key, client, trio.current_time())
        return self._segment_response(key, playlist, seg)

    def _playlist_response(self, key: tuple[str, str], playlist: HlsPlaylist) -> SharedResponse:
        """The playlist's current version as one shared response (made once per version)."""
        rendered = playlist.rendered()
        held = self._shared_playlists.get(key)
        if held is not None and held[0] is rendered:
            return held[1]
        resp = SharedResponse(200, rendered, PLAYLIST_TYPE, [("cache-control", self._cache())])
        self._shared_playlists[key] = (rendered, resp)
        return resp

    def _cache(self) -> str:
        """A playlist's Cache-Control: a cache may answer with the current version while it
        fetches the next."""
        max_age = max(0, math.floor(self.settings.target / 2))
        return f"max-age={max_age}, stale-while-revalidate={max_age}" if max_age else "max-age=0"

    def _segment_response(
        self, key: tuple[str, str], playlist: HlsPlaylist, seg: Segment
    ) -> SharedResponse:
        """`seg`'s one shared response (never changed: a viewer class paces its body);
        made on first request, forgotten once the segment leaves the window."""
        shared = self._shared.setdefault(key, {})
        held = shared.get(seg.uri)
        if held is not None and held[0] is seg:
            return held[1]
        if len(shared) >= len(playlist.segments):
            for uri in [u for u, (old, _) in shared.items() if playlist.segment(u) is not old]:
                del shared[uri]
        resp = SharedResponse(200, seg.data, SEGMENT_TYPE, [("cache-control", SEGMENT_CACHE)])
        shared[seg.uri] = (seg, resp)
        return resp
