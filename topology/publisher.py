"""The built-in synthetic publisher: a test pattern and tone encoded with PyAV, sent over RTMP.

PyAV's lavfi sources (testsrc2 + sine) are encoded to H.264 + AAC and muxed to FLV in
memory; our FLV parser turns that into tags, and `RtmpClient` publishes them in real time.
No ffmpeg binary is needed.
"""

from __future__ import annotations

import logging
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from urllib.parse import urlsplit

import av
import trio
from av.video.frame import PictureType

from common.net.conn import ConnClosed
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.net.tls import client_context
from common.proto import auth, flv
from common.proto.backoff import Backoff
from common.proto.flv import FlvParser, FlvTag
from common.proto.rtmp import session as rs

log = logging.getLogger("livecdn.publisher")


@dataclass(frozen=True)
class SourceSettings:
    """What the synthetic source produces."""

    width: int = 640
    height: int = 360
    fps: int = 30
    video_kbps: int = 1500
    audio_kbps: int = 64
    gop_seconds: float = 2.0


class _Sink:
    """A write-only file object collecting what the FLV muxer writes."""

    def __init__(self) -> None:
        self.parser = FlvParser()
        self.tags: list[FlvTag] = []

    def write(self, data: bytes) -> int:
        self.tags += self.parser.feed(bytes(data))
        return len(data)


class SyntheticSource:
    """Encodes the test pattern on demand; `next_tags(seconds)` is blocking CPU work."""

    def __init__(self, settings: SourceSettings = SourceSettings()) -> None:
        s = self.settings = settings
        self._video_in = av.open(f"testsrc2=size={s.width}x{s.height}:rate={s.fps}", format="lavfi")
        self._audio_in = av.open(
            "sine=frequency=1000:sample_rate=48000:beep_factor=4", format="lavfi"
        )
        self._video_frames = self._video_in.decode(video=0)
        self._audio_frames = self._audio_in.decode(audio=0)
        self._sink = _Sink()
        self._out = av.open(self._sink, "w", format="flv")
        v = self._out.add_stream("libx264", rate=s.fps)
        v.width, v.height, v.pix_fmt = s.width, s.height, "yuv420p"
        v.bit_rate = s.video_kbps * 1000
        v.codec_context.gop_size = max(1, int(s.fps * s.gop_seconds))
        v.codec_context.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "x264-params": f"keyint={int(s.fps * s.gop_seconds)}:min-keyint={int(s.fps * s.gop_seconds)}:scenecut=0",
        }
        a = self._out.add_stream("aac", rate=48000)
        a.bit_rate = s.audio_kbps * 1000
        self._v, self._a = v, a
        self._vcount = 0
        self._acount = 0
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000)

    def next_tags(self, seconds: float) -> list[FlvTag]:
        """Encode about `seconds` more media; return the FLV tags produced so far."""
        s = self.settings
        target = self._vcount + int(seconds * s.fps)
        while self._vcount < target:
            frame = next(self._video_frames)
            frame.pts = self._vcount
            frame.time_base = Fraction(1, s.fps)
            # lavfi's raw frames are all marked I, which would make x264 force an IDR each
            frame.pict_type = PictureType.NONE
            self._vcount += 1
            for packet in self._v.encode(frame):
                self._out.mux(packet)
            while self._acount * s.fps < self._vcount * 48000:
                audio = next(self._audio_frames)
                for res in self._resampler.resample(audio):
                    res.pts = self._acount
                    res.time_base = Fraction(1, 48000)
                    self._acount += res.samples
                    for packet in self._a.encode(res):
                        self._out.mux(packet)
        tags, self._sink.tags = self._sink.tags, []
        return tags

    def close(self) -> None:
        """Release the codec contexts."""
        for c in (self._video_in, self._audio_in):
            c.close()


async def publish(
    url: str,
    *,
    settings: SourceSettings = SourceSettings(),
    seconds: float | None = None,
    on_live: Callable[[], None] | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Publish the synthetic stream to `url` in real time until cancelled (or `seconds`);
    an rtmps:// server is verified with `tls` (default: the system's trust).

    Raises `RtmpClientError` when the server refuses the publish, ends it with an error
    status or closes the connection (kicked, banned, taken over). `on_live` is called once
    the server has accepted the publish.
    """
    source = await trio.to_thread.run_sync(SyntheticSource, settings)
    client = None
    try:
        client = await RtmpClient.connect(url, tls=tls)
        await client.publish()
        if on_live is not None:
            on_live()
        log.info(
            "publishing a %dx%d %d fps test pattern to %s",
            settings.width,
            settings.height,
            settings.fps,
            url,
        )
        start = trio.current_time()
        sent_ms = 0
        while seconds is None or sent_ms < seconds * 1000:
            tags = await trio.to_thread.run_sync(source.next_tags, 0.5)
            for tag in tags:
                if tag.tag_type != flv.TAG_SCRIPT:  # onMetaData goes out at once
                    await _listen_until(client, start + tag.timestamp / 1000)
                with trio.move_on_after(SEND_TIMEOUT) as sending:
                    try:
                        await client.send(tag.tag_type, tag.timestamp, tag.body)
                    except ConnClosed:
                        raise RtmpClientError("connection closed by the server") from None
                if sending.cancelled_caught:
                    raise RtmpClientError(f"the server took no data for {SEND_TIMEOUT:g} s")
                sent_ms = tag.timestamp
    finally:
        if client is not None:
            client.close()
        source.close()


SEND_TIMEOUT = 10.0  # seconds a server may leave a publisher's data unread


async def _listen_until(client: RtmpClient, deadline: float) -> None:
    """Wait until `deadline`, reading what the server says meanwhile; raise if it ends us."""
    while True:
        with trio.move_on_at(deadline):
            data = await client.conn.recv()
            if not data:
                raise RtmpClientError("connection closed by the server")
            for event in client.session.receive_data(data):  # replies go out with the next send
                if isinstance(event, rs.Status) and event.level == "error":
                    raise RtmpClientError(f"{event.code}: {event.description}", event.code)
                if isinstance(event, rs.StreamEOF):
                    raise RtmpClientError("the server ended the stream")
            continue
        return


TOKEN_TTL = 86400.0
"""Seconds a publish token signed for one attempt stays valid (a token is checked only when
publishing starts; every attempt is signed anew)."""


def signed_url(url: str, secret: str, now: float, ttl: float = TOKEN_TTL) -> str:
    """`url` (rtmp://host:port/app/name) with a publish token signed with `secret`, valid
    until `now` + `ttl` (Unix seconds); `url` itself without a secret."""
    if not secret:
        return url
    app, _, name = urlsplit(url).path.lstrip("/").partition("/")
    return f"{url}?{auth.token_query(secret, app, name, int(now + ttl))}"


async def keep_publishing(
    url: str,
    *,
    settings: SourceSettings = SourceSettings(),
    publish_secret: str = "",
    first_delay: float = 0.5,
    max_delay: float = 10.0,
    reset_after: float = 10.0,
) -> None:
    """`publish` to `url` until cancelled, whatever happens to each attempt.

    With a `publish_secret` each attempt's URL carries a fresh token signed with it. A
    failed or ended attempt is logged with its reason and retried after a delay that
    doubles from `first_delay` up to `max_delay`; it starts again from `first_delay` once an
    attempt has been live for `reset_after` seconds.
    """
    stream = urlsplit(url).path.lstrip("/")
    delays = Backoff(first_delay, max_delay, reset_after)
    while True:
        live_since: float | None = None

        def live() -> None:
            nonlocal live_since
            live_since = trio.current_time()

        try:
            attempt = signed_url(url, publish_secret, time.time())
            await publish(attempt, settings=settings, on_live=live)
            reason = "publish ended"
        except Exception as exc:
            reason = failure_reason(exc, live_since is not None)
        delay = delays.failed(0.0 if live_since is None else trio.current_time() - live_since)
        log.warning("publisher %s: %s; retrying in %g s", stream, reason, delay)
        await trio.sleep(delay)


async def publish_until_signalled(
    url: str, settings: SourceSettings, seconds: float | None = None, tls_ca: str = ""
) -> None:
    """`publish` to `url` until SIGINT or SIGTERM (or `seconds`): `python -m topology publish`;
    an rtmps:// server is verified against the PEM bundle `tls_ca` (default: system trust)."""
    tls = client_context(tls_ca) if tls_ca else None
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            await publish(url, settings=settings, seconds=seconds, tls=tls)
            nursery.cancel_scope.cancel()


def failure_reason(exc: BaseException, was_live: bool) -> str:
    """What went wrong with one publish attempt, in a few words."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, RtmpClientError):
        if exc.code:
            return f"refused: {exc}"
        return f"{exc} (kicked or taken over?)" if was_live else str(exc)
    if isinstance(exc, trio.TooSlowError):
        return "the server did not answer in time"
    if isinstance(exc, OSError):
        return f"cannot reach the server: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
