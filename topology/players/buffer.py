"""A viewer's playback buffer (sans-IO): media arrives, the playhead follows the wall clock.

Playback starts once `start_s` of media is buffered; when the playhead reaches the end
of what has arrived, playback stalls until `resume_s` is buffered again. Times are the
caller's clock in seconds; media timestamps are in seconds too."""

from __future__ import annotations

from dataclasses import dataclass, field

JUMP_S = 1.0
"""A timestamp jump larger than this (either way) is a discontinuity or frames the server
skipped for a slow reader: the buffer continues from where it was, nothing is gained."""


@dataclass
class Stall:
    """One rebuffering: when it started and how long it lasted (None: still stalled)."""

    at: float
    seconds: float | None = None


@dataclass
class PlaybackBuffer:
    """Start, stall and resume rules of a live player; all times in seconds."""

    start_s: float = 0.5
    resume_s: float = 1.0
    first_media_at: float | None = None
    started_at: float | None = None
    stalls: list[Stall] = field(default_factory=list)
    received_s: float = 0.0
    _media_end: float = 0.0  # media time up to which media has arrived
    _play_media: float = 0.0  # media time at `_play_wall`
    _play_wall: float = 0.0
    _playing: bool = False
    _last_ts: float | None = None

    def on_media(self, ts: float, now: float, duration: float = 0.0) -> None:
        """Media up to timestamp `ts` (+ `duration`) has arrived at `now`."""
        self.advance(now)
        end = ts + duration
        if self._last_ts is None:
            self.first_media_at = now
            self._play_media, self._media_end = ts, end
            self.received_s = end - ts
            self._last_ts = ts
            self._check_start(now)
            return
        if abs(ts - self._last_ts) > JUMP_S:
            shift = self._media_end - ts  # continue where the old timeline ended
            end += shift
            ts += shift
        else:
            shift = 0.0
        self._last_ts = ts - shift
        if end > self._media_end:
            self.received_s += end - self._media_end
            self._media_end = end
        self._check_start(now)

    def on_span(self, first: float, last: float, now: float) -> None:
        """Media from timestamp `first` to `last` arrived together at `now`: the same as
        `on_media(first, now)` then `on_media(last, now)`, in one step while it plays on
        and neither is a jump."""
        prev = self._last_ts
        if self._playing:
            self.advance(now)
        if (
            not self._playing
            or prev is None
            or not (-JUMP_S <= first - prev <= JUMP_S and -JUMP_S <= last - first <= JUMP_S)
        ):
            self.on_media(first, now)
            if last != first:
                self.on_media(last, now)
            return
        end = first if first > last else last  # playing on: nothing else changes
        if end > self._media_end:
            self.received_s += end - self._media_end
            self._media_end = end
        self._last_ts = last

    def _check_start(self, now: float) -> None:
        if self._playing:
            return
        need = self.start_s if self.started_at is None else self.resume_s
        if self._media_end - self._play_media >= need:
            self._playing = True
            self._play_wall = now
            if self.started_at is None:
                self.started_at = now
            elif self.stalls and self.stalls[-1].seconds is None:
                self.stalls[-1].seconds = now - self.stalls[-1].at

    def advance(self, now: float) -> None:
        """Move the playhead to `now`; a buffer that ran dry starts a stall when it did."""
        if not self._playing:
            return
        dry_at = self._play_wall + (self._media_end - self._play_media)
        if now >= dry_at:
            self._playing = False
            self._play_media = self._media_end
            self.stalls.append(Stall(dry_at))
        # playing: nothing to store, the playhead is a function of now

    def playhead(self, now: float) -> float:
        """Media time being shown at `now`."""
        self.advance(now)
        if not self._playing:
            return self._play_media
        return self._play_media + (now - self._play_wall)

    def level(self, now: float) -> float:
        """Seconds of media buffered ahead of the playhead."""
        return self._media_end - self.playhead(now)

    def shown_at(self, ts: float, now: float) -> float:
        """When media time `ts` (already arrived) will be on screen, if playback keeps up."""
        ahead = ts - self.playhead(now)
        if self._playing:
            return now + max(ahead, 0.0)
        need = self.start_s if self.started_at is None else self.resume_s
        return now + max(ahead, 0.0) + max(need - (self._media_end - self._play_media), 0.0)

    @property
    def playing(self) -> bool:
        return self._playing

    def stall_seconds(self, now: float) -> float:
        """Total time spent stalled up to `now`."""
        self.advance(now)
        return sum(s.seconds if s.seconds is not None else now - s.at for s in self.stalls)

    def rebuffer_ratio(self, now: float) -> float:
        """Stalled time over time since playback started."""
        if self.started_at is None or now <= self.started_at:
            return 0.0
        return self.stall_seconds(now) / (now - self.started_at)
