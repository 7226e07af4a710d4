"""Checks live media playlists against RFC 8216 across reloads (used by the HLS tests)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Parsed:
    """One playlist."""

    target: int
    media_sequence: int
    discontinuity_sequence: int
    segments: list[tuple[int, float, str, bool]]  # (seq, duration, uri, discontinuity before)
    ended: bool


def parse(text: str) -> Parsed:
    """Parse a media playlist, asserting its syntax rules."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    assert lines and lines[0] == "#EXTM3U", "must start with #EXTM3U"
    target = media_seq = disc_seq = None
    segments = []
    pending_duration = None
    pending_disc = False
    ended = False
    seen_segment = False
    for ln in lines[1:]:
        if ln.startswith("#EXT-X-TARGETDURATION:"):
            assert target is None, "one EXT-X-TARGETDURATION"
            target = int(ln.split(":", 1)[1])
        elif ln.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            assert not seen_segment, "EXT-X-MEDIA-SEQUENCE must come before the first segment"
            media_seq = int(ln.split(":", 1)[1])
            assert media_seq >= 0, "EXT-X-MEDIA-SEQUENCE is a decimal-integer (>= 0)"
        elif ln.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            assert not seen_segment, "EXT-X-DISCONTINUITY-SEQUENCE before the first segment"
            disc_seq = int(ln.split(":", 1)[1])
            assert disc_seq >= 0, "EXT-X-DISCONTINUITY-SEQUENCE is a decimal-integer (>= 0)"
        elif ln.startswith("#EXTINF:"):
            pending_duration = float(ln.split(":", 1)[1].split(",")[0])
        elif ln == "#EXT-X-DISCONTINUITY":
            pending_disc = True
        elif ln == "#EXT-X-ENDLIST":
            ended = True
        elif ln.startswith("#"):
            continue
        else:
            assert pending_duration is not None, f"segment {ln} without EXTINF"
            seq = (media_seq or 0) + len(segments)
            segments.append((seq, pending_duration, ln, pending_disc))
            pending_duration, pending_disc, seen_segment = None, False, True
    assert target is not None, "EXT-X-TARGETDURATION is required"
    for seq, duration, _uri, _ in segments:
        assert round(duration) <= target, f"segment {seq} ({duration}s) exceeds the target {target}"
        assert duration > 0
    return Parsed(target, media_seq or 0, disc_seq or 0, segments, ended)


@dataclass
class LiveValidator:
    """Feed every reload of one playlist; checks the rules that span reloads."""

    history: list[Parsed] = field(default_factory=list)
    uris: dict[int, str] = field(default_factory=dict)
    discontinuities: dict[int, bool] = field(default_factory=dict)

    def add(self, text: str) -> Parsed:
        p = parse(text)
        if self.history:
            prev = self.history[-1]
            assert p.target == prev.target, "EXT-X-TARGETDURATION must not change"
            assert p.media_sequence >= prev.media_sequence, "EXT-X-MEDIA-SEQUENCE went back"
            removed = p.media_sequence - prev.media_sequence
            removed_discs = sum(1 for s in prev.segments[:removed] if s[3])
            assert p.discontinuity_sequence == prev.discontinuity_sequence + removed_discs, (
                "EXT-X-DISCONTINUITY-SEQUENCE must count the discontinuities removed"
            )
        for seq, _, uri, disc in p.segments:
            assert self.uris.setdefault(seq, uri) == uri, f"segment {seq} changed its URI"
            assert self.discontinuities.setdefault(seq, disc) == disc
        self.history.append(p)
        return p
