"""One simulated viewer: asks the balancer, follows the redirect, plays HTTP-FLV, HLS or
RTMP over real sockets with the project's own parsers, and models its playback buffer."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import trio

from common.net.conn import Conn
from common.net.httpclient import HttpClientError, fetch, open_request
from common.net.rtmpclient import RtmpClient, RtmpClientError, ends_play
from common.proto import auth, playtoken
from common.proto.clock import asking_stamps, read_stamp
from common.proto.errors import ProtocolError
from common.proto.flvscan import FlvScanner, Scan, word_ts
from common.proto.hlsplaylist import MediaPlaylist, parse_playlist
from common.proto.rtmp import session as rs
from common.proto.shaping import TokenBucket
from common.proto.streamkey import StreamKey
from topology.delayline import DelayLine
from topology.players.buffer import PlaybackBuffer
from topology.players.failures import Ending, SessionEnd
from topology.players.hub import Hub
from topology.players.profiles import PROFILES, ClientProfile
from topology.players.readers import FlvReader, RtmpReader
from topology.players.report import pct

log = logging.getLogger("livecdn.players")

PROTOCOLS = ("flv", "hls", "rtmp")
PLAY_START_S = 10.0
"""How long an RTMP player waits for NetStream.Play.Start after asking to play."""
SMALL_RCVBUF = 64 * 1024
"""Receive buffer of throttled players, so that a slow reader is felt by the server."""


class PlayerState(StrEnum):
    """Where a simulated viewer is; progress lines and timelines count the live ones."""

    WAITING = "waiting"  # not arrived yet
    JOINING = "joining"
    PLAYING = "playing"
    STALLED = "stalled"  # only as a live state: playing, but the buffer ran dry
    RETRYING = "retrying"  # after a failure, until the next attempt
    DONE = "done"  # the run ended after it played
    FAILED = "failed"  # the run ended and it never played


LIVE_STATES = (
    PlayerState.WAITING,
    PlayerState.JOINING,
    PlayerState.PLAYING,
    PlayerState.STALLED,
    PlayerState.RETRYING,
)
"""The states a running crowd is counted by."""


class PlayError(Exception):
    """A play attempt failed; the message is the reason shown in reports."""

    @classmethod
    def refused(
        cls, what: str, status: int, headers: dict[str, str], body: bytes = b""
    ) -> PlayError:
        """A refusal by status and the server's reason (the body's first line), e.g.
        'HTTP 403 invalid or expired viewer class token' or 'HTTP 503 (retry after 5 s)'."""
        retry = headers.get("retry-after")
        reason = body_reason(body)
        return cls(f"{what} {status}" + (f" {reason}" if reason else "")
                   + (f" (retry after {retry} s)" if retry else ""))  # fmt: skip


REASON_CHARS = 120
"""At most this much of a server's reason goes into a failure (reports group by it)."""
REASON_BODY = 4096
"""At most this much of a refusal's body is read for its reason."""


def body_reason(body: bytes) -> str:
    """A refusal body's first line, printable and bounded (a JSON body's "error")."""
    text = body[:REASON_BODY].decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            error = json.loads(text).get("error")
        except (ValueError, AttributeError):
            error = None
        text = error if isinstance(error, str) else text
    line = text.splitlines()[0] if text else ""
    line = "".join(c if c.isprintable() else "?" for c in line)
    return line[:REASON_CHARS] + ("..." if len(line) > REASON_CHARS else "")


CLASS_TOKEN_TTL = 86_400
"""Seconds a player's class token stays valid (HLS players present it on every request)."""


@dataclass(frozen=True)
class Target:
    """What to play: through a balancer (`base` http://host:port and `stream` app/name),
    or a direct `url` (rtmp://..., http://....flv, http://....m3u8)."""

    protocol: str
    base: str = ""
    stream: str = ""
    url: str = ""

    @classmethod
    def direct(cls, url: str) -> Target:
        """A target for any server's play URL."""
        if url.startswith("rtmp://"):
            return cls("rtmp", url=url)
        if not url.startswith("http://"):
            raise ValueError(f"cannot play {url!r}: give an rtmp:// or http:// URL")
        path = urlsplit(url).path
        return cls("hls" if path.endswith(".m3u8") else "flv", url=url)


@dataclass
class PlayerResult:
    """What one viewer experienced (times in seconds, from its own start)."""

    id: int
    protocol: str
    profile: str
    started: float = 0.0  # since the run started
    join_s: float | None = None  # response or play start
    ttff_s: float | None = None  # first video keyframe (first picture a decoder can show)
    playing_s: float | None = None  # playback started (start threshold buffered)
    stalls: int = 0
    stall_s: float = 0.0
    rebuffer: float = 0.0
    bytes: int = 0
    media_s: float = 0.0
    kbps: float = 0.0
    latency_s: list[float] = field(default_factory=list)  # ingest -> on screen
    delivery_s: list[float] = field(default_factory=list)  # ingest -> arrived here
    edge: str = ""
    edges: list[str] = field(default_factory=list)
    failures: list[SessionEnd] = field(default_factory=list)  # every session's end
    state: PlayerState = PlayerState.WAITING

    def summary(self) -> dict:
        """A JSON-ready dict with the latency samples reduced to percentiles."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("latency_s", "delivery_s")}
        d["state"] = self.state.value
        d["failures"] = [str(end) for end in self.failures]
        d["latency_p50_s"] = pct(self.latency_s, 50)
        d["latency_samples"] = len(self.latency_s)
        d["delivery_p50_s"] = pct(self.delivery_s, 50)
        return d


async def _refusal_body(resp) -> bytes:
    """The start of a refusal's body (bounded in size and time; b"" if it does not come)."""
    out = b""
    with trio.move_on_after(2.0):
        try:
            async for data in resp.chunks():
                out += data
                if len(out) >= REASON_BODY:
                    break
        except (HttpClientError, OSError):
            pass
    return out


class SimPlayer:
    """Plays `target` until `until` (trio time), reconnecting through the balancer after a
    failure (after `retry_s`); everything it sees goes into `result` and `buffer`."""

    def __init__(
        self,
        pid: int,
        target: Target,
        profile: ClientProfile = PROFILES["lan"],
        *,
        start_s: float = 0.5,
        resume_s: float = 1.0,
        retry_s: float = 1.0,
        klass: str = "",
        qos_secret: str = "",
        play_secret: str = "",
        capture: int = 0,
    ) -> None:
        self.target = target
        self.profile = profile
        self.result = PlayerResult(pid, target.protocol, profile.name)
        self.buffer = PlaybackBuffer(start_s, resume_s)
        self.retry_s = retry_s
        self.klass = klass
        self.qos_secret = qos_secret
        self.play_secret = play_secret
        self.capture = bytearray()  # the first `capture` bytes of FLV, for decoding checks
        self.capture_limit = capture
        self.user_agent = f"livecdn-player/{pid}"  # HLS servers tell viewers apart by it
        self.t0 = 0.0
        self.bucket = TokenBucket(profile.rate_kbps * 125, 32768) if profile.rate_kbps else None
        self._rng = random.Random(pid)
        self._wire = DelayLine(self._rng)  # request round trips draw from the same link
        self.hub: Hub | None = None
        """Reads this player's stream with many others' once it plays (see `_hub`)."""

    # ------------------------------------------------------------------ run

    async def run(self, until: float, started: float = 0.0) -> None:
        """Play until `until`, retrying after failures; never raises for network errors."""
        self.t0 = trio.current_time()
        self.result.started = started
        try:
            with trio.move_on_at(until):
                while True:
                    self._set_state(PlayerState.JOINING)
                    try:
                        await self._session()
                        end = SessionEnd(Ending.ENDED)
                    except (PlayError, HttpClientError, RtmpClientError, ProtocolError) as exc:
                        end = SessionEnd(Ending.REFUSED, str(exc))
                    except (OSError, trio.TooSlowError) as exc:
                        end = SessionEnd(Ending.NETWORK, f"{type(exc).__name__}: {exc}")
                    self._note_failure(end)
                    await trio.sleep(self.retry_s)
        finally:
            self._finish(trio.current_time())

    def _set_state(self, state: PlayerState) -> None:
        """The one place a player's state changes (logged at debug level)."""
        if state is not self.result.state:
            log.debug("player %d: %s -> %s", self.result.id, self.result.state, state)
            self.result.state = state

    def _note_failure(self, end: SessionEnd) -> None:
        self.result.failures.append(end)
        log.debug("player %d: %s", self.result.id, end)
        self._set_state(PlayerState.RETRYING)

    def _finish(self, now: float) -> None:
        r, b = self.result, self.buffer
        r.stall_s = round(b.stall_seconds(now), 3)  # first: it notes a stall still running
        r.stalls = len(b.stalls)
        r.rebuffer = round(b.rebuffer_ratio(now), 4)
        r.media_s = round(b.received_s, 3)
        if r.ttff_s is not None:
            r.kbps = round(r.bytes * 8 / 1000 / max(now - self.t0 - r.ttff_s, 1e-3), 1)
        if r.state is not PlayerState.FAILED:
            self._set_state(PlayerState.DONE if r.playing_s is not None else PlayerState.FAILED)

    def live_state(self, now: float) -> PlayerState:
        """Its state at `now`, for the progress line: playing or stalled by its buffer."""
        if self.result.state is PlayerState.PLAYING:
            self.buffer.advance(now)
            return PlayerState.PLAYING if self.buffer.playing else PlayerState.STALLED
        return self.result.state

    # ------------------------------------------------------------------ helpers

    def elapsed(self) -> float:
        return trio.current_time() - self.t0

    async def _arrive(self, size: int) -> None:
        """Model the client's access link rate for `size` bytes just read."""
        if self.bucket is not None:
            delay = self.bucket.delay_for(size, trio.current_time())
            if delay > 0:
                await trio.sleep(delay)

    def _joined(self, edge: str) -> None:
        r = self.result
        if r.join_s is None:
            r.join_s = round(self.elapsed(), 4)
        r.edge = edge
        r.edges.append(edge)

    def _media(self, ts: float, now: float, video: bool, duration: float = 0.0) -> None:
        r = self.result
        self.buffer.on_media(ts, now, duration)
        if r.state is PlayerState.PLAYING and r.ttff_s is not None:
            return  # the common case, once per read: nothing else changes
        if video and r.ttff_s is None:
            r.ttff_s = round(now - self.t0, 4)
        if self.buffer.started_at is not None and r.playing_s is None:
            r.playing_s = round(self.buffer.started_at - self.t0, 4)
        if r.playing_s is not None:
            self._set_state(PlayerState.PLAYING)

    def _stamp(self, wall: float, ts: float, now: float) -> None:
        """A clock stamp for media time `ts` arrived at `now`: latency until it is shown."""
        shown = self.buffer.shown_at(ts, now)
        delivery = time.time() - wall
        self.result.delivery_s.append(round(delivery, 4))
        self.result.latency_s.append(round(delivery + (shown - now), 4))

    def _token_params(self) -> dict[str, str]:
        """What the player presents: a play token signed with `play_secret` (a deployment
        that requires signed play URLs) and its class: a class token signed with
        `qos_secret`, else the class in its play token (the balancer grants it), else
        `?class=` alone (which gets the default class); {} with neither."""
        t = self.target
        path = t.stream or urlsplit(t.url).path.lstrip("/")
        path = path.removesuffix(".flv").removesuffix(".m3u8")
        expires = int(time.time()) + CLASS_TOKEN_TTL
        params, klass = {}, self.klass
        if klass and self.qos_secret:
            params.update(parse_qsl(auth.class_query(self.qos_secret, path, klass, expires)))
            klass = ""
        if self.play_secret:
            query = playtoken.play_query(self.play_secret, path, expires, klass)
            params.update(parse_qsl(query))
        elif klass:
            params["class"] = klass
        return params

    def _with_tokens(self, url: str) -> str:
        """`url` with the player's tokens (`_token_params`)."""
        params = self._token_params()
        return url + ("&" if "?" in url else "?") + urlencode(params) if params else url

    def _http_url(self, suffix: str) -> str:
        """The first URL to ask (the balancer's, whose 302 `_open` follows), with the class
        and play tokens."""
        t = self.target
        return self._with_tokens(t.url or f"{t.base}/{t.stream}{suffix}")

    async def _open(self, url: str):
        """GET `url`, following up to 5 redirects; the open response and its final URL."""
        rcvbuf = SMALL_RCVBUF if self.bucket is not None else None
        for _ in range(6):
            await self._wire_delay()
            resp = await open_request("GET", url, rcvbuf=rcvbuf, user_agent=self.user_agent)
            if resp.status in (301, 302, 303, 307, 308) and "location" in resp.headers:
                resp.close()
                url = urljoin(url, resp.headers["location"])
                continue
            if resp.status != 200:
                body = await _refusal_body(resp)
                resp.close()
                raise PlayError.refused("HTTP", resp.status, resp.headers, body)
            return resp, url
        raise PlayError("too many redirects")

    async def _wire_delay(self) -> None:
        """One round trip of the access link before a request is answered."""
        if d := self._wire.delay_s(self.profile.delay_ms, self.profile.jitter_ms):
            await trio.sleep(2 * d)

    # ------------------------------------------------------------------ protocols

    async def _session(self) -> None:
        proto = self.target.protocol
        if proto == "flv":
            await self._play_flv()
        elif proto == "hls":
            await self._play_hls()
        else:
            await self._play_rtmp()

    def _hub(self, conn: object) -> Hub | None:
        """The hub that may read this stream: a plain TCP one of a player whose access link
        is not modelled (no rate, delay or jitter) and that captures nothing."""
        p = self.profile
        plain = not (p.rate_kbps or p.delay_ms or p.jitter_ms or self.capture_limit)
        return self.hub if plain and isinstance(conn, Conn) else None

    async def _play_flv(self) -> None:
        resp, url = await self._open(asking_stamps(self._http_url(".flv")))
        try:
            self._joined(urlsplit(url).netloc)
            if (hub := self._hub(resp.conn)) is not None:
                reader = FlvReader(self, resp)
                if not reader.start(*resp.raw_body(), trio.current_time()):
                    await hub.play(reader)
                if reader.error is not None:
                    raise reader.error
                return
            scanner = FlvScanner()

            def handle(data: bytes, now: float) -> None:
                self._flv_data(scanner, data, now)

            await self._consume(resp.chunks(), handle, len)
        finally:
            resp.close()

    async def _consume(self, source: AsyncIterator, handle: Callable, size: Callable) -> None:
        """Pass what `source` yields to `handle(item, arrival)` after the access link:
        its rate limit (reading slower) and its delay +- jitter (a delay line)."""
        if not (self.profile.delay_ms or self.profile.jitter_ms):
            async for item in source:
                await self._arrive(size(item))
                handle(item, trio.current_time())
            return
        send, recv = trio.open_memory_channel[tuple[float, object]](math.inf)

        async def deliver() -> None:
            async for at, item in recv:
                await trio.sleep_until(at)
                handle(item, at)

        line = DelayLine(self._rng)
        p = self.profile
        async with trio.open_nursery() as nursery:
            nursery.start_soon(deliver)
            async with send:
                async for item in source:
                    await self._arrive(size(item))
                    send.send_nowait((line.due(trio.current_time(), p.delay_ms, p.jitter_ms), item))

    def _flv_data(self, scanner: FlvScanner, data: bytes, now: float) -> None:
        self.result.bytes += len(data)
        if len(self.capture) < self.capture_limit:
            self.capture += data[: self.capture_limit - len(self.capture)]
        self._scanned(scanner.feed(data), now)

    def _scanned(self, scan: Scan, now: float) -> None:
        """Media that arrived together: the buffer learns its first and last timestamps
        (one update per read, not per frame); then the clock stamps among it."""
        if scan.first_ts is not None:
            self._media_span(scan.first_ts / 1000.0, scan.last_ts / 1000.0, now,
                             scan.keyframe_ts is not None)  # fmt: skip
        for ts, body in scan.scripts:
            wall = read_stamp(body)
            if wall is not None:
                self._stamp(wall, ts / 1000.0, now)

    def _span(self, first: int, last: int, now: float) -> None:
        """Audio/video tags from header word `first` to `last` (ts24 << 8 | ts_ext, as
        `FlvScanner` keeps them; no keyframe among them) arrived at `now`."""
        f = word_ts(first) / 1000.0
        t = word_ts(last) / 1000.0
        r = self.result
        if r.state is PlayerState.PLAYING and r.ttff_s is not None:
            self.buffer.on_span(f, t, now)  # the common case: only the buffer changes
        else:
            self._media_span(f, t, now, False)

    def _media_span(self, first: float, last: float, now: float, video: bool) -> None:
        self._media(first, now, video)
        if last != first:
            self._media(last, now, video)

    async def _play_rtmp(self) -> None:
        t = self.target
        url = self._with_tokens(t.url) if t.url else ""
        if not url:
            key = StreamKey.from_text(t.stream)
            query = {"app": key.app, "name": key.name, "proto": "rtmp"}
            query.update(self._token_params())
            await self._wire_delay()
            got = await fetch("GET", f"{t.base}/api/route?{urlencode(query)}")
            if got.status != 200:
                raise PlayError.refused("route HTTP", got.status, got.headers, got.body)
            url = json.loads(got.body)["url"]
        await self._wire_delay()
        client = await RtmpClient.connect(asking_stamps(url))
        try:
            await self._wire_delay()
            edge = urlsplit(url).netloc
            if (hub := self._hub(client.conn)) is not None:
                await client.start_play()
                await self._rtmp_on_hub(hub, client, edge)
                return
            await client.play()
            self._joined(edge)
            scanner = FlvScanner()  # its scan_tags: RTMP messages come framed

            async def events() -> AsyncIterator[list]:
                while True:
                    try:
                        batch = await client.next_events()
                    except RtmpClientError as exc:
                        raise PlayError(str(exc)) from None
                    yield batch
                    if any(ends_play(ev) for ev in batch):
                        return

            def handle(batch: list, now: float) -> None:
                media = [(e.type_id, e.timestamp, e.payload) for e in batch
                         if isinstance(e, rs.Media)]  # fmt: skip
                self.result.bytes += sum(len(m[2]) for m in media)
                self._scanned(scanner.scan_tags(media), now)

            def size(batch: list) -> int:
                return sum(len(ev.payload) for ev in batch if isinstance(ev, rs.Media))

            await self._consume(events(), handle, size)
        finally:
            client.close()

    async def _rtmp_on_hub(self, hub: Hub, client: RtmpClient, edge: str) -> None:
        """The play goes on from the moment play was asked for, scanned in place
        (RtmpReader): this task reads the answer (NetStream.Play.Start within PLAY_START_S,
        else TooSlowError as `client.play`), so the join time is exact, then `hub` reads
        the stream; the session never parses the stream's first burst."""
        reader = RtmpReader(self, client, FlvScanner(), edge)
        with trio.fail_after(PLAY_START_S) as waiting:
            reader.waiting = waiting  # lifted once the play starts
            ended = reader.start(trio.current_time())
            while not (ended or reader.playing):  # the answer to play: read at once, here
                await trio.lowlevel.wait_readable(reader.sock)
                ended = reader.on_readable(hub.buf, trio.current_time())
            if not ended:
                await hub.play(reader)
        if reader.error is not None:
            raise (
                PlayError(str(reader.error))
                if isinstance(reader.error, RtmpClientError)
                else reader.error
            )

    async def _play_hls(self) -> None:
        """RFC 8216 6.3: start no closer than three target durations from the end; reload
        after a target duration, or half of one when the playlist did not change."""
        pl, url = await self._playlist(self._http_url(".m3u8"))
        self._joined(urlsplit(url).netloc)
        next_seq = pl.start_sequence()
        media: dict[int, float] = {}
        while True:
            loaded = trio.current_time()
            for seg in pl.segments:
                if seg.seq < next_seq:
                    continue
                start = media.get(seg.seq)
                if start is None:
                    prev = media.get(seg.seq - 1)
                    start = prev if prev is not None else 0.0
                await self._fetch_segment(urljoin(url, seg.uri), start, seg.duration, seg.wall)
                media[seg.seq + 1] = start + seg.duration
                next_seq = seg.seq + 1
            if pl.ended:
                return
            changed = pl
            wait = pl.target_duration
            while True:
                await trio.sleep_until(loaded + wait)
                pl, _ = await self._playlist(url)
                loaded = trio.current_time()
                if pl.last_sequence() != changed.last_sequence() or pl.ended:
                    break
                wait = pl.target_duration / 2
            if next_seq < pl.media_sequence:  # fell out of the window: jump to the live point
                next_seq = pl.start_sequence()
                media[next_seq] = media.get(max(media, default=0), 0.0)

    async def _playlist(self, url: str) -> tuple[MediaPlaylist, str]:
        """GET and parse a media playlist; also the URL it came from after redirects."""
        resp, url = await self._open(url)
        try:
            text = (await resp.body(4 * 1024 * 1024)).decode("utf-8", "replace")
        finally:
            resp.close()
        return parse_playlist(text), url

    async def _fetch_segment(
        self, url: str, start: float, duration: float, wall: float | None
    ) -> None:
        resp, _ = await self._open(url)
        try:
            async for data in resp.chunks():
                self.result.bytes += len(data)
                await self._arrive(len(data))
        finally:
            resp.close()
        now = trio.current_time()
        self._media(start, now, True, duration)
        if wall is not None:
            self._stamp(wall + duration, start + duration, now)
