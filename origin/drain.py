"""An origin's drain before it stops (SIGTERM): new plays and publishes are refused, every
stream ends cleanly (publishers are closed, viewers and edges get the end of the stream,
recordings finish their files, pushes send the end to their targets) and then the relays
stop."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from common.serve.lifecycle import wait_for

if TYPE_CHECKING:
    from origin.server import Origin

log = logging.getLogger("livecdn.origin")

END_WAIT = 10.0
"""Longest wait for the viewers, recordings and pushes to take the end of their streams."""


async def drain_origin(origin: Origin) -> None:
    """Drain `origin`; return when it may stop."""
    gate = origin.node.gate
    if gate.draining:
        return
    gate.draining = True
    fanouts = [f for s in origin.registry if (f := origin.fanouts.get(s)) is not None]
    recordings = len(origin.recorder.active)
    log.info(
        "draining: ending %d streams (%d viewers, %d recordings); new plays and publishes refused",
        len(origin.registry),
        sum(len(f.players) for f in fanouts),
        recordings,
    )
    origin.end_streams()

    def ended() -> bool:
        return not (
            any(f.players for f in fanouts) or origin.recorder.active or origin.relays.pushers
        )

    if await wait_for(ended, END_WAIT):
        log.info("draining: every stream ended (viewers, recordings and pushes)")
    else:
        log.warning(
            "draining: after %g s, %d viewers, %d recordings and %d pushes have not ended",
            END_WAIT,
            sum(len(f.players) for f in fanouts),
            len(origin.recorder.active),
            len(origin.relays.pushers),
        )
    if origin.relays.nursery is not None:
        origin.relays.nursery.cancel_scope.cancel()
