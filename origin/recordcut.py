"""Where a recording goes on in a new file, pure: frames in, file cuts and FLV bytes out."""

from __future__ import annotations

from dataclasses import dataclass

from common.media.stream import Frame
from common.proto import flv
from common.proto.rtmp import messages as m

MAX_STEP_MS = 200
"""Longest frame duration counted at the end of a file."""
MAX_FILE_BYTES = 256 * 1024 * 1024
"""Most bytes in one file (record_max_bytes / 4 if that is less, at least MIN_FILE_BYTES):
a file that reaches it goes on in a new one at its next frame, whatever its timestamps."""
MIN_FILE_BYTES = 1024 * 1024
FRAMES_PER_SECOND = 300
"""Audio and video frames a file holds per second of its `max_ms` (at least MIN_FILE_FRAMES):
a bound that holds when timestamps do not go on (a publisher that sends them all at 0)."""
MIN_FILE_FRAMES = 10_000
MAIN_SILENT_MS = 1000
"""A file whose main track (video) stopped is cut on another track's frame this long after
`max_ms` (audio that goes on after the video stopped)."""


def file_bytes(record_max_bytes: int) -> int:
    """The most bytes in one recording file, for a `record_max_bytes` (0: no bound)."""
    if record_max_bytes <= 0:
        return MAX_FILE_BYTES
    return max(MIN_FILE_BYTES, min(MAX_FILE_BYTES, record_max_bytes // 4))


@dataclass(frozen=True, slots=True)
class FileStart:
    """A new file starts with these bytes (FLV header, metadata, sequence headers, the
    first frame); the previous file (if any) ended `ended_ms` after its first frame."""

    start_ts: int
    data: bytes
    ended_ms: int | None


class FileCutter:
    """Cuts a stream's frames into files of at least `segment_ms` of media, each starting
    at a keyframe (an audio frame without video) with the FLV header, onMetaData and the
    sequence headers. A new sequence header cuts at the next keyframe, so a file's head
    always describes all of it. A file that reaches `max_ms` without a keyframe is cut
    anyway (its successor starts without one), on a frame of another track if the main one
    stopped; so is a file that reaches `max_bytes` or `max_frames`, whatever its timestamps."""

    def __init__(
        self,
        segment_ms: int,
        *,
        max_ms: int | None = None,
        max_bytes: int = MAX_FILE_BYTES,
        max_frames: int | None = None,
    ) -> None:
        self.segment_ms = segment_ms
        self.max_ms = max_ms if max_ms is not None else max(2 * segment_ms, segment_ms + 30_000)
        self.max_bytes = max_bytes
        self.max_frames = max_frames or max(
            MIN_FILE_FRAMES, self.max_ms * FRAMES_PER_SECOND // 1000
        )
        self.size = 0  # bytes of the open file
        self.frames = 0  # audio and video frames in the open file
        self.media_end: int | None = None  # the latest timestamp of any track in the file
        self.has_video = False
        self.start_ts: int | None = None
        self.last_ts: int | None = None
        self.step = 0  # duration of the last frame of the main track
        self._headers: dict[int, Frame] = {}
        self._changed = False  # a sequence header changed in the open file

    def seed(self, headers: list[Frame]) -> None:
        """The stream's current metadata and sequence headers (a reader added late)."""
        for frame in headers:
            self.push(frame)

    def push(self, frame: Frame) -> tuple[FileStart | None, bytes]:
        """Take a frame: a new file (and what it starts with) or the bytes to append."""
        if frame.header:
            if frame.type_id in (m.VIDEO, m.AUDIO) and self.start_ts is not None:
                old = self._headers.get(frame.type_id)
                self._changed = self._changed or old is None or old.payload != frame.payload
            self._headers[frame.type_id] = frame
            if frame.type_id == m.VIDEO:
                self.has_video = True
            return None, b""
        main = m.VIDEO if self.has_video else m.AUDIO
        if frame.type_id not in (m.AUDIO, m.VIDEO):
            if self.start_ts is None:
                return None, b""
            self.size += len(frame.flv)
            return None, frame.flv
        starts = frame.keyframe if self.has_video else frame.type_id == m.AUDIO
        ts = frame.timestamp
        if frame.type_id == main and self.last_ts is not None and ts - self.last_ts > 0:
            self.step = min(ts - self.last_ts, MAX_STEP_MS)
        if self.start_ts is None:
            if not starts:
                return None, b""
            return self._open(frame, None), b""
        elapsed = ts - self.start_ts
        late = self.max_ms if frame.type_id == main else self.max_ms + MAIN_SILENT_MS
        if (
            (starts and (elapsed >= self.segment_ms or self._changed))
            or elapsed >= late
            or self.size >= self.max_bytes
            or self.frames >= self.max_frames
        ):
            return self._open(frame, max(1, elapsed)), b""
        if frame.type_id == main:
            self.last_ts = max(ts, self.last_ts or ts)
        self.media_end = max(ts, self.media_end or ts)
        self.size += len(frame.flv)
        self.frames += 1
        return None, frame.flv

    def duration(self) -> int:
        """Media time of the open file so far (its last frame counted)."""
        if self.start_ts is None or self.last_ts is None:
            return 0
        end = self.last_ts + self.step
        if self.media_end is not None and self.media_end > end + MAIN_SILENT_MS:
            end = self.media_end  # the main track stopped, another went on
        return max(1, end - self.start_ts)

    def close(self) -> None:
        """The open file ends (the recording stopped); the next frame that can start a
        file opens one."""
        self.start_ts = None
        self.last_ts = None

    def _open(self, frame: Frame, ended: int | None) -> FileStart:
        ts = frame.timestamp
        self.start_ts = ts
        self.last_ts = ts
        self.media_end = ts
        self.frames = 1
        self._changed = False
        heads = self._headers
        parts = [flv.file_header(audio=m.AUDIO in heads, video=m.VIDEO in heads)]
        for type_id in (m.DATA_AMF0, m.VIDEO, m.AUDIO):
            h = heads.get(type_id)
            if h is not None:
                parts.append(flv.build_tag(type_id, 0 if type_id == m.DATA_AMF0 else ts, h.payload))
        parts.append(frame.flv)
        data = b"".join(parts)
        self.size = len(data)
        return FileStart(ts, data, ended)
