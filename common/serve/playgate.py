"""Who may play: the checks every viewer's request passes before it gets media, whatever
its protocol (HTTP-FLV, HLS, RTMP), and the notice that a play is over."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from common.proto.streamkey import StreamKey
from common.serve.refusal import Refusal


class PlayProtocol(StrEnum):
    """How a viewer plays."""

    FLV = "flv"
    WS = "ws"  # FLV over WebSocket
    HLS = "hls"
    RTMP = "rtmp"
    SNAPSHOT = "snapshot"  # one image of the newest keyframe (.jpg, .png)


@dataclass(frozen=True)
class PlayRequest:
    """One viewer's request to play `key`: its protocol, its URL's query parameters and
    the peer ("host:port") it came from. For HLS, one playlist or segment request."""

    protocol: PlayProtocol
    key: StreamKey
    query: Mapping[str, str]
    peer: str


class PlayDenied(Exception):
    """A play refused by a check: `reason` for the refusal metrics, the message for the
    viewer and the log."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class PlayCheck(Protocol):
    """One rule a play must pass (a signed play URL, an on_play hook, ...)."""

    async def admit(self, req: PlayRequest) -> None:
        """Return to allow `req`; raise PlayDenied to refuse it."""
        ...

    def ended(self, req: PlayRequest) -> None:
        """An HTTP-FLV or RTMP play this check admitted is over (never raises, never
        waits). HLS requests are admitted one by one and never ended: an HLS viewer's play
        is over when it stops asking (`HlsViewers` tells)."""
        ...


class PlayGate:
    """The node's play checks, in order; with none, everyone may play."""

    def __init__(self, checks: Sequence[PlayCheck] = ()) -> None:
        self.checks: list[PlayCheck] = list(checks)
        self.draining = False
        """Set while the node drains before it stops: new plays are refused, HLS requests
        excepted (a viewer's next playlist request cannot be told from a new viewer's, and
        the balancer sends no new ones to a draining node)."""

    async def admit(self, req: PlayRequest) -> None:
        """Pass `req` through every check; PlayDenied from the first that refuses (the
        checks that had admitted it are told it ended)."""
        if self.draining and req.protocol is not PlayProtocol.HLS:
            raise PlayDenied(Refusal.DRAINING, "this node is draining before it stops: retry")
        for i, check in enumerate(self.checks):
            try:
                await check.admit(req)
            except BaseException:
                for admitted in self.checks[:i]:
                    admitted.ended(req)
                raise

    def ended(self, req: PlayRequest) -> None:
        """Tell every check that an admitted play is over."""
        for check in self.checks:
            check.ended(req)
