"""An edge's drain before it stops (SIGTERM): the balancer is told, new plays are refused,
the viewers get `drain_timeout` seconds to leave, and those left are closed cleanly (the
end of the HTTP-FLV body, RTMP's unpublish notice and stop) so that their players ask the
balancer again at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from common.serve.lifecycle import wait_for
from common.serve.playgate import PlayGate
from edge.heartbeat import EdgeHeartbeat
from edge.pull import PullManager, StopReason

log = logging.getLogger("livecdn.edge")

PROGRESS_EVERY = 5.0
"""Seconds between the log lines that count the viewers left."""
TELL_WAIT = 3.0
"""Longest wait for the heartbeat that tells the balancer (one is sent every second)."""
CLOSE_WAIT = 5.0
"""Longest wait for closed viewers to take the end of their stream."""


@dataclass
class EdgeDrain:
    """What a drain needs of the edge: its timeout, its play gate (which refuses new plays
    while `draining`), its viewers (`viewers`: all; `connected`: those on a connection, not
    HLS), its pulls and its heartbeat (None without a balancer)."""

    timeout: float
    gate: PlayGate
    viewers: Callable[[], int]
    connected: Callable[[], int]
    pull: PullManager
    heartbeat: EdgeHeartbeat | None

    async def run(self) -> None:
        """Drain; return when the edge may stop."""
        if self.gate.draining:
            return
        self.gate.draining = True
        log.info(
            "draining: %d viewers, new plays refused; closing those left in %g s (drain_timeout)",
            self.viewers(),
            self.timeout,
        )
        await self._tell_balancer()
        await self._wait_viewers()
        await self._close_viewers()

    async def _tell_balancer(self) -> None:
        beat = self.heartbeat
        if beat is None:
            return
        beat.draining = True
        with trio.move_on_after(TELL_WAIT):
            await beat.draining_told.wait()
            log.info("draining: the balancer is told (it sends no new viewers here)")
            return
        log.warning("draining: no heartbeat went to the balancer in %g s", TELL_WAIT)

    async def _wait_viewers(self) -> None:
        deadline = trio.current_time() + self.timeout
        while self.viewers():
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                return
            if await wait_for(lambda: not self.viewers(), min(PROGRESS_EVERY, remaining)):
                break
            log.info(
                "draining: %d viewers left, closing them in %.0f s",
                self.viewers(),
                max(0.0, deadline - trio.current_time()),
            )
        log.info("draining: no viewers left")

    async def _close_viewers(self) -> None:
        ups = list(self.pull.upstreams.values())
        if ups:
            log.info(
                "draining: closing %d streams' %d viewers (HTTP-FLV and RTMP)",
                len(ups),
                self.connected(),
            )
        for up in ups:
            up.stop(StopReason.DRAINED)

        def left() -> int:  # a stopped stream's fan-out is forgotten before its players end
            return sum(len(up.fanout.players) for up in ups)

        if not await wait_for(lambda: not left(), CLOSE_WAIT):
            log.warning(
                "draining: %d viewers did not take the end of their stream in %g s",
                left(),
                CLOSE_WAIT,
            )
