"""One stream key's life on the origin: its stream, its publisher, and its state (live,
waiting for its publisher, ended), changed in one place."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import TYPE_CHECKING

import trio

from common.media.stream import Stream

if TYPE_CHECKING:
    from common.serve.rtmpserver import RtmpConnection

log = logging.getLogger("livecdn.origin")


@dataclass
class Publisher:
    """The RTMP connection currently feeding a stream."""

    rtmp: RtmpConnection
    stream: Stream
    stream_id: int
    since: float
    host: str = ""
    last_media: float = 0.0  # trio clock: its publish, then its last media message
    query: dict[str, str] = field(default_factory=dict)  # its publish URL's (for hooks)


class StreamState(Enum):
    """Where a stream is in its life."""

    LIVE = "live"  # a publisher feeds it
    WAITING = "waiting"  # its publisher left: viewers wait `publisher_grace` for it
    ENDED = "ended"


class StreamEnd(StrEnum):
    """Why a stream's publisher went, or the stream ended (as logged)."""

    DELETED = "publisher deleted its stream"
    DISCONNECTED = "publisher disconnected"
    KICKED = "kicked through the API"
    SHUTDOWN = "origin shutting down"
    UNPULLED = "pull stopped"


@dataclass
class Live:
    """A stream the origin serves, and who publishes it."""

    stream: Stream
    state: StreamState = StreamState.LIVE
    publisher: Publisher | None = None
    grace_ends: float = 0.0  # trio clock; while WAITING
    packaging: trio.CancelScope = field(default_factory=trio.CancelScope)
    """Its HLS packager's (cancelled when the stream moves to another worker)."""

    def set_state(self, state: StreamState) -> None:
        """The one place the stream's state changes (logged at debug level)."""
        if state is not self.state:
            log.debug(
                "stream %s/%s: %s -> %s",
                self.stream.app,
                self.stream.name,
                self.state.value,
                state.value,
            )
            self.state = state
