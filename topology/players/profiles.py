"""Client-side link profiles: how fast and how far a simulated viewer is from its edge."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClientProfile:
    """A viewer's access link: downlink rate (0: unlimited), one-way delay and jitter."""

    name: str
    rate_kbps: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0


PROFILES = {
    p.name: p
    for p in (
        ClientProfile("lan"),
        ClientProfile("wifi", rate_kbps=30_000, delay_ms=5, jitter_ms=2),
        ClientProfile("4g", rate_kbps=8_000, delay_ms=40, jitter_ms=10),
        ClientProfile("3g", rate_kbps=1_000, delay_ms=120, jitter_ms=30),
    )
}
"""Shipped profiles; `3g` is slower than a 1.5 Mbit/s stream, so those viewers stall."""


def parse_mix(text: str) -> list[tuple[ClientProfile, float]]:
    """'4g:0.7,3g:0.3' (or '3g') -> [(profile, share)]; shares are normalised."""
    out: list[tuple[ClientProfile, float]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, share = part.partition(":")
        if name not in PROFILES:
            raise ValueError(f"unknown client profile {name!r} (known: {', '.join(PROFILES)})")
        try:
            weight = float(share) if share else 1.0
        except ValueError:
            raise ValueError(f"bad share {share!r} for profile {name!r}") from None
        if weight <= 0:
            raise ValueError(f"share of profile {name!r} must be > 0")
        out.append((PROFILES[name], weight))
    if not out:
        raise ValueError("empty client profile mix")
    total = sum(w for _, w in out)
    return [(p, w / total) for p, w in out]


def assign(mix: list[tuple[ClientProfile, float]], n: int) -> list[ClientProfile]:
    """Profiles for players 0..n-1, interleaved so every prefix follows the shares."""
    counts = [0] * len(mix)
    out: list[ClientProfile] = []
    for i in range(n):
        # the profile furthest below its share so far
        k = max(range(len(mix)), key=lambda j: mix[j][1] * (i + 1) - counts[j])
        counts[k] += 1
        out.append(mix[k][0])
    return out
