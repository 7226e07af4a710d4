"""Snapshots: a live stream's newest keyframe as a JPEG or PNG image (`/app/name.jpg`,
`/app/name.png`, `?w=` for a narrower one). Each keyframe is decoded with PyAV at most once
however many ask, each image encoded once per format and size, both in threads behind a
small limiter; the newest results are kept (bounded). A snapshot is a play: it passes the
node's play gate first."""

from __future__ import annotations

import io
import logging
import weakref
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import Generic, TypeVar

import av
import trio
from av.video.reformatter import VideoReformatter

from common.media.stream import Stream
from common.net.http import Request, Response, not_a_read
from common.net.supervise import describe
from common.proto import flv
from common.proto.errors import Unavailable
from common.proto.paths import Media, snapshot_path
from common.proto.rtmp import messages as m
from common.proto.snapshotsize import SizeError, requested_width, scaled_size
from common.proto.streamkey import StreamKey
from common.serve.node import PlayNode
from common.serve.play import Subscription
from common.serve.playgate import PlayProtocol, PlayRequest
from common.serve.refusal import Refusal

log = logging.getLogger("livecdn.snapshot")

IMAGE_TYPES = {Media.JPEG: "image/jpeg", Media.PNG: "image/png"}
"""The snapshot formats by extension, and their content types."""
THREADS = 2
"""Decodes and encodes at once (each a few ms to tens of ms of CPU)."""
MAX_FRAMES = 8
"""Decoded keyframes kept: the newest of as many streams (a 1080p picture is 3 MB)..."""
MAX_FRAME_BYTES = 48 * 1024 * 1024
"""... and their bytes at most (YUV 4:2:0 as decoded)."""
MAX_PIXELS = 4096 * 2304
"""The largest picture a snapshot is taken of (an 8K keyframe decodes to 50 MB)."""
MAX_WAITING = 16
"""Snapshot requests that may wait for the decode/encode threads; more get a 503."""
MAX_IMAGES = 256
"""Encoded images kept (the newest per stream, format and width asked for)..."""
MAX_IMAGE_BYTES = 32 * 1024 * 1024
"""... and their bytes at most."""
MAX_AGE = 1
"""Seconds a client may keep a snapshot (about a GOP: the next keyframe makes a new one)."""
THUMBNAIL_WIDTH = 160
"""The width of the thumbnails the streams API links to."""
JPEG_QUALITY = 4
"""The JPEG encoder's quantizer (2: best .. 31: worst)."""

Source = Callable[[StreamKey, Mapping[str, str]], Awaitable[Subscription | None]]
"""The node's live stream for a snapshot (an edge may pull it), None if there is none; may
raise Unavailable."""

T = TypeVar("T")


class SnapshotError(Exception):
    """No image: the keyframe did not decode, or the picture did not encode."""


@dataclass(frozen=True, slots=True)
class Keyframe:
    """A stream's newest video keyframe and the sequence header it decodes with."""

    seq: int
    header: bytes
    payload: bytes


def newest_keyframe(stream: Stream) -> Keyframe | None:
    """The newest keyframe in `stream`'s ring, with the video sequence header before it in
    the ring (else the stream's current one); None before the first."""
    key = key_header = header = None
    for frame in stream.iter_frames():
        if frame.type_id != m.VIDEO:
            continue
        if frame.header:
            header = frame.payload
        elif frame.keyframe:
            key, key_header = frame, header
    if key is None:
        return None
    header = key_header or stream.video_header
    return Keyframe(key.seq, header, key.payload) if header is not None else None


def lacks_video(stream: Stream) -> bool:
    """Whether `stream` says it has no video: its source announced audio only, or audio
    began without a video header or metadata naming a video codec."""
    if stream.tracks is not None:
        return not stream.tracks[1]
    return stream.audio_header is not None and not stream.has_video


def decode_keyframe(key: Keyframe) -> av.VideoFrame:
    """The picture of `key` (blocking: run in a thread): its header and keyframe as a tiny
    FLV demuxed and decoded by PyAV (H.264, and HEVC as enhanced RTMP carries it)."""
    data = b"".join(
        (
            flv.file_header(audio=False, video=True),
            flv.build_tag(m.VIDEO, 0, key.header),
            flv.build_tag(m.VIDEO, 0, key.payload),
        )
    )
    try:
        with av.open(io.BytesIO(data), format="flv") as container:
            if not container.streams.video:
                raise SnapshotError("no video stream in the keyframe's FLV")
            video = container.streams.video[0]
            video.codec_context.thread_count = 1  # one picture: no decoder threads to start
            for picture in container.decode(video):
                if picture.width * picture.height > MAX_PIXELS:
                    raise SnapshotError(f"{picture.width}x{picture.height} is too large")
                return picture
    except SnapshotError:
        raise
    except Exception as exc:  # PyAV's errors, and anything a bad keyframe may raise
        raise SnapshotError(describe(exc)) from exc
    raise SnapshotError("the keyframe decoded to no picture")


def encode_image(picture: av.VideoFrame, media: Media, size: tuple[int, int]) -> bytes:
    """`picture` scaled to `size` as a JPEG or PNG file (blocking: run in a thread)."""
    codec, pix_fmt = ("mjpeg", "yuvj420p") if media is Media.JPEG else ("png", "rgb24")
    try:
        ctx = av.CodecContext.create(codec, "w")
        ctx.width, ctx.height = size
        ctx.pix_fmt = pix_fmt
        ctx.time_base = Fraction(1, 25)
        if media is Media.JPEG:
            ctx.options = {"qmin": str(JPEG_QUALITY), "qmax": str(JPEG_QUALITY)}
        # a reformatter of its own: the picture's cached one is not safe across threads,
        # and images of one picture are encoded in parallel
        scaled = VideoReformatter().reformat(
            picture, width=size[0], height=size[1], format=pix_fmt, interpolation="AREA", threads=1
        )
        packets = ctx.encode(scaled) + ctx.encode(None)
    except Exception as exc:
        raise SnapshotError(describe(exc)) from exc
    data = b"".join(bytes(packet) for packet in packets)
    if not data:
        raise SnapshotError(f"the {codec} encoder gave nothing")
    return data


class _Flight(Generic[T]):
    """One computation of a value and the requests that wait for it."""

    __slots__ = ("abandoned", "done", "error", "tag", "value")

    def __init__(self, tag: Hashable) -> None:
        self.tag = tag
        self.done = trio.Event()
        self.value: T | None = None
        self.error: str | None = None
        self.abandoned = False


class Coalesced(Generic[T]):
    """Values by key, each computed once per `tag` (a newer tag replaces it) however many
    ask at once; a bounded LRU of `max_entries` (and `max_bytes` of `size(value)`)."""

    def __init__(
        self, max_entries: int, size: Callable[[T], int] = lambda _: 0, max_bytes: int = 0
    ) -> None:
        self.max_entries = max_entries
        self.size = size
        self.max_bytes = max_bytes
        self.entries: OrderedDict[Hashable, _Flight[T]] = OrderedDict()
        self.shared = 0
        """Requests answered by another's computation (in flight or done)."""

    async def get(self, key: Hashable, tag: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """The value of `key` for `tag`: computed by `compute` unless another request is
        computing it or did; SnapshotError (the computation's) if it failed."""
        while True:
            flight = self.entries.get(key)
            if flight is None or flight.tag != tag:
                return await self._compute(key, tag, compute)
            self.entries.move_to_end(key)
            await flight.done.wait()
            if flight.abandoned:  # its request was cancelled first: compute it here
                continue
            self.shared += 1
            if flight.error is not None:
                raise SnapshotError(flight.error)
            assert flight.value is not None
            return flight.value

    async def _compute(
        self, key: Hashable, tag: Hashable, compute: Callable[[], Awaitable[T]]
    ) -> T:
        flight: _Flight[T] = _Flight(tag)
        self.entries[key] = flight
        self.entries.move_to_end(key)
        self._bound()
        try:
            flight.value = await compute()
            return flight.value
        except SnapshotError as exc:
            flight.error = str(exc)
            raise
        finally:
            if flight.value is None and flight.error is None:
                flight.abandoned = True
                if self.entries.get(key) is flight:
                    del self.entries[key]
            flight.done.set()
            self._bound()

    def _bound(self) -> None:
        entries = self.entries
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
        if self.max_bytes:
            held = sum(self.size(f.value) for f in entries.values() if f.value is not None)
            while held > self.max_bytes and len(entries) > 1:
                _, oldest = entries.popitem(last=False)
                held -= self.size(oldest.value) if oldest.value is not None else 0


class SnapshotStats:
    """A node's snapshot counters."""

    def __init__(self) -> None:
        self.decoded = 0
        self.made: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()


class Snapshots:
    """A node's snapshots: `respond` answers GET /app/name.jpg|.png through `node`'s play
    gate, from the stream `source` gives; `wait` bounds the wait for a first keyframe."""

    def __init__(self, node: PlayNode, *, enabled: bool = True, wait: float = 5.0) -> None:
        self.node = node
        self.enabled = enabled
        self.wait = wait
        self.limiter = trio.CapacityLimiter(THREADS)
        self.pictures: Coalesced[av.VideoFrame] = Coalesced(
            MAX_FRAMES, lambda p: p.width * p.height * 3 // 2, MAX_FRAME_BYTES
        )
        self.images: Coalesced[bytes] = Coalesced(MAX_IMAGES, len, MAX_IMAGE_BYTES)
        self.stats = SnapshotStats()
        self._register_metrics()

    def thumbnail(self, stream: Stream, query: str = "") -> str | None:
        """The path of `stream`'s thumbnail (a small JPEG snapshot, `query` added), for pages
        that list streams: None without video, with snapshots off, or when plays need more
        than the URL (a play token, a hook's consent), so a page never asks in vain."""
        if not self.enabled or self.node.gate.checks or not stream.has_video:
            return None
        path = f"{snapshot_path(StreamKey(stream.app, stream.name))}?w={THUMBNAIL_WIDTH}"
        return f"{path}&{query}" if query else path

    async def respond(self, req: Request, key: StreamKey, media: Media, source: Source) -> Response:
        """Answer one snapshot request for `key` in `media` (JPEG or PNG)."""
        if refused := not_a_read(req):
            return refused
        if not self.enabled:
            return Response.text(404, "snapshots are off on this node")
        try:
            width = requested_width(req.query)
        except SizeError as exc:
            return Response.text(400, str(exc))
        if self.limiter.statistics().tasks_waiting >= MAX_WAITING:
            self.stats.failures["busy"] += 1
            return Response(503, b"snapshots are busy: try again", "text/plain",
                            [("retry-after", "1")])  # fmt: skip
        play = PlayRequest(PlayProtocol.SNAPSHOT, key, req.query, req.peer)
        denied = await self.node.admit(play)
        if denied is not None:
            return denied
        try:
            return await self._answer(req, key, media, width, source)
        finally:
            self.node.gate.ended(play)

    async def _answer(
        self, req: Request, key: StreamKey, media: Media, width: int | None, source: Source
    ) -> Response:
        try:
            sub = await source(key, req.query)
        except Unavailable as exc:
            self.node.refuse(Refusal.UNAVAILABLE)
            return Response.text(503, str(exc))
        if sub is None:
            self.node.refuse(Refusal.NOT_FOUND)
            return Response.text(404, f"no live stream {key}")
        try:
            stream = sub.fanout.stream
            found = await self._keyframe(stream)
        finally:
            sub.release()
        if found is None:
            reason = "no_video" if lacks_video(stream) else "no_keyframe"
            self.stats.failures[reason] += 1
            if reason == "no_video":
                return Response.text(404, f"{key} has no video to take a snapshot of")
            return Response.text(404, f"no keyframe of {key} within {self.wait:g} s")
        dims = stream.dimensions
        if dims is not None and dims[0] * dims[1] > MAX_PIXELS:
            self.stats.failures["too_large"] += 1
            return Response.text(404, f"{key} is {dims[0]}x{dims[1]}: too large for a snapshot")
        tag = (weakref.ref(stream), found.seq)
        try:
            image = await self.images.get(
                (key.app, key.name, media, width),
                tag,
                partial(self._image, key, found, tag, media, width),
            )
        except SnapshotError as exc:
            return Response.text(500, f"no snapshot of {key}: {exc}")
        self.stats.served[media.name.lower()] += 1
        headers = [("cache-control", f"max-age={MAX_AGE}")]
        return Response(200, image, IMAGE_TYPES[media], headers)

    async def _keyframe(self, stream: Stream) -> Keyframe | None:
        """The newest keyframe, waiting for a first one up to `wait` seconds (None: none)."""
        with trio.move_on_after(self.wait):
            while True:
                found = newest_keyframe(stream)
                if found is not None or stream.closed or lacks_video(stream):
                    return found
                await stream.wait_beyond(stream.head)
        return None

    async def _image(
        self, key: StreamKey, found: Keyframe, tag: Hashable, media: Media, width: int | None
    ) -> bytes:
        """The image of `found` in `media` at `width`, from its picture (decoded once for
        every format and width)."""
        picture = await self.pictures.get(
            (key.app, key.name), tag, partial(self._decode, key, found)
        )
        size = scaled_size((picture.width, picture.height), width)
        return await self._encode(key, picture, media, size)

    async def _decode(self, key: StreamKey, found: Keyframe) -> av.VideoFrame:
        try:
            picture = await trio.to_thread.run_sync(decode_keyframe, found, limiter=self.limiter)
        except SnapshotError as exc:
            self.stats.failures["decode"] += 1
            log.warning("snapshot of %s: keyframe %d does not decode: %s", key, found.seq, exc)
            raise
        self.stats.decoded += 1
        return picture

    async def _encode(
        self, key: StreamKey, picture: av.VideoFrame, media: Media, size: tuple[int, int]
    ) -> bytes:
        try:
            image = await trio.to_thread.run_sync(
                encode_image, picture, media, size, limiter=self.limiter
            )
        except SnapshotError as exc:
            self.stats.failures["encode"] += 1
            log.warning("snapshot of %s: %s %dx%d does not encode: %s", key, media, *size, exc)
            raise
        self.stats.made[media.name.lower()] += 1
        return image

    def _register_metrics(self) -> None:
        mt, stats = self.node.metrics, self.stats
        mt.counter(
            "snapshot_decodes_total",
            "Keyframes decoded for snapshots.",
            (),
            lambda: {(): stats.decoded},
        )
        for name, help_text, counts in (
            ("snapshots_made_total", "Snapshot images encoded, by format.", stats.made),
            ("snapshots_served_total", "Snapshot images served, by format.", stats.served),
        ):
            mt.counter(
                name, help_text, ("format",), lambda c=counts: {(k,): v for k, v in c.items()}
            )
        mt.counter(
            "snapshot_failures_total",
            "Snapshot requests without an image, by reason (decode, encode, no_video, "
            "no_keyframe).",
            ("reason",),
            lambda: {(k,): v for k, v in stats.failures.items()},
        )
        mt.counter(
            "snapshots_shared_total",
            "Snapshot requests answered by another request's decode or encode.",
            (),
            lambda: {(): self.pictures.shared + self.images.shared},
        )
