"""Why a player's session ended: the kind (an Enum) and the detail apart."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Ending(StrEnum):
    """What ended a play session; every kind but ENDED is a failure."""

    ENDED = "stream ended"  # the server ended the stream cleanly
    REFUSED = "refused"  # an HTTP, RTMP or protocol error (the detail says which)
    NETWORK = "network"  # a socket error or a timeout


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """One ended session: its kind and the detail shown in reports (empty for ENDED)."""

    kind: Ending
    detail: str = ""

    @property
    def failed(self) -> bool:
        """True unless the stream ended cleanly."""
        return self.kind is not Ending.ENDED

    def __str__(self) -> str:
        return self.detail or self.kind.value


def is_failure(text: str) -> bool:
    """A session end as written in the JSON results: True unless the stream ended cleanly."""
    return text != Ending.ENDED
