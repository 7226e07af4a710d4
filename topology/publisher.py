"""The built-in synthetic publisher: a test pattern and tone encoded with PyAV, sent over RTMP.

PyAV's lavfi sources (testsrc2 + sine) are encoded to H.264 + AAC and muxed to FLV in
memory; our FLV parser turns that into tags, and `RtmpClient` publishes them in real time.
No ffmpeg binary is needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import av
import trio
from av.video.frame import PictureType

from common import flv
from common.flv import FlvParser, FlvTag
from common.rtmpclient import RtmpClient

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


async def publish(url: str, *, settings: SourceSettings = SourceSettings(),
                  seconds: float | None = None) -> None:  # fmt: skip
    """Publish the synthetic stream to `url` in real time until cancelled (or `seconds`)."""
    source = await trio.to_thread.run_sync(SyntheticSource, settings)
    client = await RtmpClient.connect(url)
    try:
        await client.publish()
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
                    await trio.sleep_until(start + tag.timestamp / 1000)
                await client.send(tag.tag_type, tag.timestamp, tag.body)
                sent_ms = tag.timestamp
    finally:
        client.close()
        source.close()
