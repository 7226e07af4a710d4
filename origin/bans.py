"""Publish bans set through the API: by stream, until a wall-clock time, bounded."""

from __future__ import annotations

MAX_BANS = 10_000
"""Bans in force at once (the table is keyed by names an admin chose, but bounded anyway)."""


class Bans:
    """Streams that may not be published until a time (`until`: key -> Unix seconds)."""

    def __init__(self, max_bans: int = MAX_BANS) -> None:
        self.max_bans = max_bans
        self.until: dict[tuple[str, str], float] = {}

    def ban(self, key: tuple[str, str], seconds: float, now: float) -> bool:
        """Ban `key` for `seconds` from `now` (expired bans go first); False if the table
        is full of bans still in force."""
        for old in [k for k, until in self.until.items() if until <= now]:
            del self.until[old]
        if len(self.until) >= self.max_bans and key not in self.until:
            return False
        self.until[key] = now + seconds
        return True
