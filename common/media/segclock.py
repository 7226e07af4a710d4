"""The segment clock: where a stream's HLS segments begin and how they are numbered, as a
function of its timestamps and keyframes, so every node cuts and numbers alike (pure).

A keyframe starts a segment when its time bucket (`target_ms` wide, `CUT_SLACK_MS` early)
differs from the previous keyframe's, or after the stream's sequence headers changed (a new
publisher with other settings: a discontinuity); a segment that has gone `max_ms` (or
`max_bytes`) without a keyframe is cut anyway. Which keyframe cuts depends only on
the previous keyframe; the numbers, session, discontinuity count and wall-clock mapping
depend on the whole history, so a node that joins a stream late takes them from its parent
as a `ClockState` (sent in-band, `CLOCK_MESSAGE`) for the first frame it gets, and then
counts on by the same rule: the origin and every edge publish the same playlist.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from common.proto import amf0
from common.proto.rtmp import messages as m

CLOCK_MESSAGE = "livecdnSegmentClock"
"""Name of the AMF0 data message carrying a `ClockState` to a pulling node."""
CLOCK_PREFIX = amf0.encode(CLOCK_MESSAGE)
"""How such a message's payload begins."""
CUT_SLACK_MS = 100
"""A keyframe this early for the next bucket (or this short of the target) already cuts."""
AUDIO_ONLY_CUT_MS = 1000
"""Without video, audio frames cut, at most this far apart."""
BACK_JUMP_MS = 1000
"""A frame this far behind its track's previous one (or the newest output time) is a jump."""
MAX_SESSION = 32
"""Longest session id accepted from a parent."""
BOUNDS = {
    "seq": (-1, 2**40),
    "seg_bytes": (0, 2**40),
    "disc_before": (0, 2**31),
    "epoch_wall_ms": (0, 253_402_300_799_000),  # up to 9999-12-31 (a printable date)
    "longest_ms": (0, 3_600_000),
    "jumped_ms": (-(2**40), 2**40),
    "target_ms": (100, 60_000),
    "max_ms": (1000, 600_000),
}
"""What a parent's clock state may hold (timestamps: any whole number within ±2**53)."""


@dataclass(frozen=True, slots=True)
class Cut:
    """A frame that starts a segment: its number and what the playlist shows of it."""

    seq: int
    session: str
    discontinuity: bool
    discontinuities_before: int  # segments marked discontinuous, numbered below `seq`
    wall_ms: int  # wall clock of its first frame (EXT-X-PROGRAM-DATE-TIME)
    longest_ms: int  # the longest segment before it (EXT-X-TARGETDURATION)
    forced: bool = False  # cut without a keyframe


@dataclass(frozen=True, slots=True)
class ClockState:
    """Everything a node needs to continue a stream's segment clock from one frame on.

    `at` is the timestamp of the frame the state was taken after (the first frame the
    receiver gets), None when taken between frames; `starts` says whether that frame
    starts segment `seq` (else the receiver has only the end of it)."""

    session: str
    seq: int
    starts: bool
    at: int | None
    seg_start: int
    seg_bytes: int
    seg_disc: bool
    disc_before: int
    last_key: int | None
    last_ts: int | None
    pending_disc: bool
    pending_cut: bool
    jumped_ms: int
    epoch_ts: int
    epoch_wall_ms: int | None
    longest_ms: int
    target_ms: int
    max_ms: int

    def encode(self) -> bytes:
        """The AMF0 data message body carrying this state."""
        values = {k: v for k, v in asdict(self).items() if v is not None}
        return amf0.encode(CLOCK_MESSAGE, amf0.ECMAArray(values))

    @classmethod
    def decode(cls, payload: bytes) -> ClockState:
        """The state in a `CLOCK_MESSAGE` body; ValueError if anything is missing or odd."""
        try:
            values = amf0.decode_all(payload)
        except amf0.AMF0Error as exc:
            raise ValueError(f"undecodable: {exc}") from None
        if len(values) < 2 or values[0] != CLOCK_MESSAGE or not isinstance(values[1], dict):
            raise ValueError("not a segment clock message")
        raw = values[1]
        out: dict[str, object] = {}
        for f in fields(cls):
            value = raw.get(f.name)
            if f.name == "session":
                if not isinstance(value, str) or not 0 < len(value) <= MAX_SESSION:
                    raise ValueError("bad session")
                if not (value.isascii() and value.isalnum()):
                    raise ValueError("bad session")
                out[f.name] = value
            elif f.name in ("starts", "seg_disc", "pending_disc", "pending_cut"):
                if not isinstance(value, bool):
                    raise ValueError(f"bad {f.name}")
                out[f.name] = value
            elif value is None and f.name in ("at", "last_key", "last_ts", "epoch_wall_ms"):
                out[f.name] = None
            else:
                out[f.name] = _integer(f.name, value)
        for name, (low, high) in BOUNDS.items():
            value = out[name]
            if value is not None and not low <= value <= high:  # type: ignore[operator]
                raise ValueError(f"{name} {value} out of range")
        return cls(**out)  # type: ignore[arg-type]


def _integer(name: str, value: object) -> int:
    """A whole number within ±2**53 (what an AMF0 number holds exactly)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value != int(value)
        or abs(value) > 2**53
    ):
        raise ValueError(f"bad {name}")
    return int(value)


def longest_uncut_ms(target_ms: int) -> int:
    """How long a segment goes without a keyframe before it is cut anyway."""
    return max(30_000, 10 * target_ms)


def bucket(ts: int, width_ms: int) -> int:
    """The time bucket a keyframe at `ts` belongs to."""
    return (ts + CUT_SLACK_MS) // width_ms


class SegmentClock:
    """One stream's segment clock: `feed` every frame in order; it says which ones cut.

    A fresh clock (the origin's) numbers its first segment after its first keyframe's
    bucket (0 for a stream starting at time 0); `anchor` makes it continue a parent's.
    """

    def __init__(
        self,
        target_ms: int,
        session: str,
        *,
        now_ms: Callable[[], int],
        jump_ms: int = 10_000,
        max_ms: int | None = None,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.target_ms = max(1, target_ms)
        self.session = session
        self.now_ms = now_ms
        self.jump_ms = jump_ms
        self.max_ms = max_ms if max_ms is not None else longest_uncut_ms(self.target_ms)
        self.max_bytes = max_bytes
        self.seq = -1  # the open segment's number; -1 before the first cut
        self.seg_start = 0
        self.seg_bytes = 0
        self.seg_disc = False
        self.disc_before = 0
        self.last_key: int | None = None  # timestamp of the last cut candidate
        self.last_ts: int | None = None  # timestamp of the last frame of the cutting track
        self.pending_disc = False
        self.pending_cut = False  # the headers changed: the next keyframe cuts
        self.jumped_ms = 0  # timestamp jumps within the open segment
        self.epoch_ts = 0
        self.epoch_wall_ms: int | None = None
        self.longest_ms = 0
        self._skip = False  # the next keyframe is the anchored one: not counted twice
        self._skip_at: int | None = None
        self._skip_starts = False
        self.delta = 0
        """This stream's timestamps less the clock's (a node that rebased its stream's
        timestamps, e.g. after a new pull, keeps its parent's clock all the same)."""
        self._resume: tuple[str, int, int, int] | None = None
        self._fresh = False  # anchored, no media since: the headers that follow are not news
        self.anchors = 0
        """States taken from parents."""

    def resume(self, session: str, seq: int, disc_before: int, longest_ms: int) -> None:
        """Continue an ended stream's playlist (a new publisher): the first cut gets `seq`
        in `session`, marked discontinuous. No effect once this clock has cut."""
        if self.seq < 0:
            self._resume = (session, seq, disc_before, longest_ms)

    def prefer_target(self, target_ms: int) -> None:
        """Use `target_ms` unless this clock has cut or follows a parent already."""
        if self.seq < 0 and not self.anchors:
            self.target_ms = max(1, target_ms)
            self.max_ms = max(self.max_ms, 10 * self.target_ms)

    def header_changed(self) -> None:
        """New sequence headers: the next keyframe starts a discontinuous segment."""
        if self.seq >= 0 and not self._fresh:
            self.pending_cut = self.pending_disc = True

    def covers(self, state: ClockState) -> bool:
        """Whether this clock has already passed the frame `state` was taken at (the same
        stream: `state` would tell it nothing new)."""
        if state.session != self.session or self.seq < 0 or self._skip:
            return False
        if state.at is None or self.last_key is None:
            return state.seq <= self.seq
        return state.at <= self.last_key

    def anchor(self, state: ClockState) -> None:
        """Continue from a parent's state for the frame at `state.at` (the next one fed)."""
        self.anchors += 1
        self._resume = None
        self.session = state.session
        self.seq = state.seq
        self.seg_start = state.seg_start
        self.seg_bytes = state.seg_bytes
        self.seg_disc = state.seg_disc
        self.disc_before = state.disc_before
        self.last_key = state.last_key
        self.last_ts = state.last_ts
        self.pending_disc = state.pending_disc
        self.pending_cut = state.pending_cut
        self.jumped_ms = state.jumped_ms
        self.epoch_ts = state.epoch_ts
        self.epoch_wall_ms = state.epoch_wall_ms
        self.longest_ms = state.longest_ms
        self.target_ms = state.target_ms
        self.max_ms = state.max_ms
        self._skip = state.at is not None
        self._skip_at = state.at
        self._skip_starts = state.starts
        self.delta = 0
        self._fresh = True

    def state(self, *, at: int | None = None, starts: bool = False) -> ClockState:
        """This clock's state, taken after the frame at `at` (the stream's time; None:
        between frames)."""
        return ClockState(
            session=self.session,
            seq=self.seq,
            starts=starts,
            at=None if at is None else at - self.delta,
            seg_start=self.seg_start,
            seg_bytes=self.seg_bytes,
            seg_disc=self.seg_disc,
            disc_before=self.disc_before,
            last_key=self.last_key,
            last_ts=self.last_ts,
            pending_disc=self.pending_disc,
            pending_cut=self.pending_cut,
            jumped_ms=self.jumped_ms,
            epoch_ts=self.epoch_ts,
            epoch_wall_ms=self.epoch_wall_ms,
            longest_ms=self.longest_ms,
            target_ms=self.target_ms,
            max_ms=self.max_ms,
        )

    def feed(self, type_id: int, ts: int, size: int, *, keyframe: bool, video: bool) -> Cut | None:
        """One media frame (`video`: the stream has video); the cut it makes, if any."""
        if type_id not in (m.AUDIO, m.VIDEO):
            return None
        self._fresh = False
        track = m.VIDEO if video else m.AUDIO
        candidate = keyframe if video else type_id == m.AUDIO
        if self._skip:
            if not candidate:
                return None  # before the anchored frame: the parent counted it already
            self._skip = False
            self.delta = ts - (self._skip_at or 0)
            if self._skip_starts and self.seq >= 0:
                return self._cut_info(forced=False)
            return None
        ts -= self.delta
        if type_id == track:
            last = self.last_ts
            if last is not None and (ts > last + self.jump_ms or ts < last - BACK_JUMP_MS):
                self.pending_disc = True
                self.jumped_ms += ts - last  # not media time: a segment's length leaves it out
            self.last_ts = ts
        width = self.target_ms if video else min(self.target_ms, AUDIO_ONLY_CUT_MS)
        cut: Cut | None = None
        if candidate and (
            self.seq < 0
            or self.pending_cut
            or self.last_key is None
            or bucket(ts, width) != bucket(self.last_key, width)
        ):
            cut = self._cut(ts, width, forced=False)
        elif (
            type_id == track
            and self.seq >= 0
            and (
                ts - self.seg_start - self.jumped_ms >= self.max_ms
                or self.seg_bytes >= self.max_bytes
            )
        ):
            cut = self._cut(ts, width, forced=True)
        if candidate:
            self.last_key = ts
        if self.seq >= 0:
            self.seg_bytes += size
        return cut

    def _cut(self, ts: int, width: int, *, forced: bool) -> Cut:
        if self.seq < 0:
            discontinuity = False
            if self._resume is not None:
                self.session, self.seq, self.disc_before, self.longest_ms = self._resume
                self._resume = None
                discontinuity = True
            else:
                self.seq = bucket(ts, width)
            self.epoch_ts = ts
            if self.epoch_wall_ms is None:
                self.epoch_wall_ms = self.now_ms()
        else:
            length = max(0, ts - self.seg_start - self.jumped_ms)
            self.longest_ms = max(self.longest_ms, min(length, BOUNDS["longest_ms"][1]))
            if self.seg_disc:
                self.disc_before += 1
            self.seq += 1
            discontinuity = self.pending_disc
            if self.jumped_ms:
                # the wall clock runs on by the media's length, whatever the jump
                wall = (self.epoch_wall_ms or 0) + self.seg_start - self.epoch_ts
                self.epoch_wall_ms = wall + length
                self.epoch_ts = ts
        self.jumped_ms = 0
        self.pending_disc = self.pending_cut = False
        self.seg_start = ts
        self.seg_bytes = 0
        self.seg_disc = discontinuity
        return self._cut_info(forced=forced)

    def _cut_info(self, *, forced: bool) -> Cut:
        return Cut(
            seq=self.seq,
            session=self.session,
            discontinuity=self.seg_disc,
            discontinuities_before=self.disc_before,
            wall_ms=(self.epoch_wall_ms or 0) + self.seg_start - self.epoch_ts,
            longest_ms=self.longest_ms,
            forced=forced,
        )
