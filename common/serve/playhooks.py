"""A node's HTTP hooks: the hook client built from its config (calls counted in its metrics)
and the on_play / on_play_done PlayCheck (HLS viewers tracked by address: see HlsSessions)."""

from __future__ import annotations

import trio

from common.config import ServeConfig
from common.net.hooks import HookClient
from common.proto.hooks import HlsSessions, HookCall, HookEvent
from common.serve.metrics import NodeMetrics
from common.serve.node import PlayNode
from common.serve.playgate import PlayDenied, PlayProtocol, PlayRequest
from common.serve.refusal import Refusal

SWEEP_SECONDS = 1.0
"""How often HLS viewers that stopped asking are looked for (their on_play_done)."""


def hook_client(config: ServeConfig, metrics: NodeMetrics) -> HookClient:
    """The hooks `config` sets (an edge has no publish hooks), counted in
    livecdn_hook_calls_total{hook,result}."""
    metrics.counter("hook_calls_total", "HTTP hook calls by hook and result.", ("hook", "result"))
    return HookClient(
        {event: getattr(config, event.value, "") for event in HookEvent},
        timeout=config.hook_timeout,
        cache_seconds=config.hook_cache_seconds,
        count=lambda event, result: metrics.inc("hook_calls_total", labels=(event, result)),
    )


class HookPlayCheck:
    """PlayCheck: on_play decides (HTTP-FLV, WebSocket-FLV, RTMP, and each new HLS viewer);
    on_play_done when such a play ends, or an HLS viewer stopped asking for `hls_window` s."""

    def __init__(self, client: HookClient, hls_window: float) -> None:
        self.client = client
        self.hls = HlsSessions(hls_window)

    @staticmethod
    def _call(req: PlayRequest) -> HookCall:
        key = req.key
        return HookCall.of(HookEvent.PLAY, key.app, key.name, req.peer, req.protocol, req.query)

    async def admit(self, req: PlayRequest) -> None:
        """Ask on_play (an HLS viewer once per session); PlayDenied if it refuses."""
        call = self._call(req)
        hls = req.protocol is PlayProtocol.HLS
        if hls and self.hls.covers(call, trio.current_time()):
            return
        why = await self.client.allows(call)
        if why:
            raise PlayDenied(Refusal.HOOK, f"on_play refused: {why}")
        if hls:
            for ended in self.hls.start(call, trio.current_time()):
                self._done(ended)

    @property
    def active(self) -> bool:
        """True if any hook is configured (then `run` must run)."""
        return bool(self.client.urls)

    def ended(self, req: PlayRequest) -> None:
        """An FLV, WebSocket-FLV or RTMP play is over: on_play_done."""
        self._done(self._call(req))

    def _done(self, call: HookCall) -> None:
        self.client.notify(call.as_event(HookEvent.PLAY_DONE))

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Send the notifications, and on_play_done for HLS viewers gone quiet."""
        async with trio.open_nursery() as nursery:
            self.client.nursery = nursery
            task_status.started()
            try:
                while True:
                    await trio.sleep(SWEEP_SECONDS)
                    for ended in self.hls.expire(trio.current_time()):
                        self._done(ended)
            finally:
                self.client.nursery = None


def node_hooks(node: PlayNode) -> HookPlayCheck:
    """A node's hooks (calls counted in its metrics), the on_play check last in its gate
    when on_play or on_play_done is set; run it (`run`) when `active`."""
    client = hook_client(node.config, node.metrics)
    check = HookPlayCheck(client, node.hls_viewers.window)
    if client.has(HookEvent.PLAY) or client.has(HookEvent.PLAY_DONE):
        node.gate.checks.append(check)
    return check
