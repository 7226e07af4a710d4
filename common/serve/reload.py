"""Reloading a running node's config (SIGHUP): which keys changed, refusing the whole reload
when one that needs a restart did (the keys marked `reloadable` in common.config.nodes may
change), and applying what every node that serves viewers shares (`reload_play_node`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from common.config import ConfigError, ServeConfig, connection_budget, keys
from common.config.model import reloadable_keys
from common.proto.hooks import HookEvent
from common.serve.node import PlayNode
from common.serve.playgate import PlayCheck
from common.serve.playhooks import HookPlayCheck
from common.serve.snapshot import Snapshots

log = logging.getLogger("livecdn.reload")

HOOK_KEYS = ("hook_timeout", "hook_cache_seconds", *(event.value for event in HookEvent))


def changed_keys(old: Any, new: Any) -> list[str]:
    """The keys whose value differs between configs `old` and `new` (of one model)."""
    return [name for name in keys(type(old)) if getattr(old, name) != getattr(new, name)]


def reload_plan(old: Any, new: Any, refusals: Iterable[str] = ()) -> list[str]:
    """The keys a reload from `old` to `new` changes; ConfigError naming every changed key
    that is not reloadable, and the node's own `refusals` (why a reloadable change cannot
    be made as it stands), when there is any: the reload then applies nothing."""
    if type(old) is not type(new):
        raise ConfigError(f"a {type(new).__name__} is no config for this node")
    changed = changed_keys(old, new)
    fixed = [name for name in changed if name not in reloadable_keys(type(old))]
    why = [*refusals]
    if fixed:
        why.insert(0, f"{', '.join(fixed)} cannot change without a restart")
    if why:
        raise ConfigError("; ".join(why) + " (nothing applied)")
    return changed


def apply_log_level(config: Any) -> None:
    """The process's log level as `config` says."""
    logging.getLogger().setLevel(config.log_level.upper())


def connection_limit(config: Any) -> int:
    """`max_connections`, at most this process's connection budget (as at start-up)."""
    return min(config.max_connections, connection_budget())


class Rerun:
    """Runs `fn()` (a task that runs until cancelled, e.g. the reporter to the balancer, which
    reads the node's config when it starts) and starts it again when `again()` is called."""

    def __init__(self, fn: Callable[[], Awaitable[object]]) -> None:
        self.fn = fn
        self._scope: trio.CancelScope | None = None

    async def __call__(self) -> None:
        while True:
            with trio.CancelScope() as self._scope:
                await self.fn()
                return

    def again(self) -> None:
        """Stop the running `fn` and start it anew (no-op before it runs)."""
        if self._scope is not None:
            self._scope.cancel()


def reload_hooks(hooks: HookPlayCheck, config: ServeConfig, node: PlayNode) -> None:
    """The hook client takes `config`'s hook URLs, timeout and a fresh cache of answers; its
    runner (notifications, HLS on_play_done) starts if it was not running."""
    client = hooks.client
    client.urls = {event: url for event in HookEvent if (url := getattr(config, event.value, ""))}
    client.timeout = config.hook_timeout
    client.cache = type(client.cache)(config.hook_cache_seconds)
    if hooks.active and client.nursery is None and node.nursery is not None:
        node.nursery.start_soon(hooks.run)


def play_checks(signed: list[PlayCheck], hooks: HookPlayCheck) -> list[PlayCheck]:
    """A node's play gate: its signed-URL checks, then on_play when a play hook is set."""
    plays = hooks.client.has(HookEvent.PLAY) or hooks.client.has(HookEvent.PLAY_DONE)
    return [*signed, hooks] if plays else signed


def reload_play_node(
    node: PlayNode,
    config: ServeConfig,
    changed: list[str],
    hooks: HookPlayCheck,
    signed: list[PlayCheck],
    snapshots: Snapshots,
) -> None:
    """Apply the reloadable keys every serving node has: limits and timeouts of new
    connections and new streams, the connection limit, CORS, the play gate (`signed`: the
    signed-URL checks `config` asks for), hooks and snapshots. Connections already open keep
    theirs."""
    node.config = node.fanouts.config = config
    node.take_limits(config)
    node.console.send_timeout = config.slow_timeout
    if node.slots is not None:
        node.slots.limit = connection_limit(config)
    if any(name in HOOK_KEYS for name in changed):
        reload_hooks(hooks, config, node)
    node.gate.checks = play_checks(signed, hooks)
    snapshots.enabled, snapshots.wait = config.snapshots, config.snapshot_wait
    if "log_level" in changed:
        apply_log_level(config)
