"""Where a recording goes on in a new file, pure: frames in, file cuts and FLV bytes out."""

from __future__ import annotations

from dataclasses import dataclass

from common.media.stream import Frame
from common.proto import flv
from common.proto.rtmp import messages as m

MAX_STEP_MS = 200
"""Longest frame duration counted at the end of a file."""


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
    anyway (its successor starts without one)."""

    def __init__(self, segment_ms: int, *, max_ms: int | None = None) -> None:
        self.segment_ms = segment_ms
        self.max_ms = max_ms if max_ms is not None else max(2 * segment_ms, segment_ms + 30_000)
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
            return None, frame.flv if self.start_ts is not None else b""
        starts = frame.keyframe if self.has_video else frame.type_id == m.AUDIO
        ts = frame.timestamp
        if frame.type_id == main and self.last_ts is not None and ts - self.last_ts > 0:
            self.step = min(ts - self.last_ts, MAX_STEP_MS)
        if self.start_ts is None:
            if not starts:
                return None, b""
            return self._open(frame, None), b""
        elapsed = ts - self.start_ts
        if (starts and (elapsed >= self.segment_ms or self._changed)) or (
            frame.type_id == main and elapsed >= self.max_ms
        ):
            return self._open(frame, max(1, elapsed)), b""
        if frame.type_id == main:
            self.last_ts = max(ts, self.last_ts or ts)
        return None, frame.flv

    def duration(self) -> int:
        """Media time of the open file so far (its last frame counted)."""
        if self.start_ts is None or self.last_ts is None:
            return 0
        return max(1, self.last_ts - self.start_ts + self.step)

    def close(self) -> None:
        """The open file ends (the recording stopped); the next frame that can start a
        file opens one."""
        self.start_ts = None
        self.last_ts = None

    def _open(self, frame: Frame, ended: int | None) -> FileStart:
        ts = frame.timestamp
        self.start_ts = ts
        self.last_ts = ts
        self._changed = False
        heads = self._headers
        parts = [flv.file_header(audio=m.AUDIO in heads, video=m.VIDEO in heads)]
        for type_id in (m.DATA_AMF0, m.VIDEO, m.AUDIO):
            h = heads.get(type_id)
            if h is not None:
                parts.append(flv.build_tag(type_id, 0 if type_id == m.DATA_AMF0 else ts, h.payload))
        parts.append(frame.flv)
        return FileStart(ts, b"".join(parts), ended)
