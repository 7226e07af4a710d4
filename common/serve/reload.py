"""Reloading a running node's config (SIGHUP): which keys changed, refusing the whole reload
when one that needs a restart did (the keys marked `reloadable` in common.config.nodes may
change), and applying what every node that serves viewers shares (`reload_play_node`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio

from common.config import ConfigError, ServeConfig, connection_budget, keys
from common.config.exposure import open_surfaces
from common.config.model import reloadable_keys
from common.proto.hooks import HookEvent
from common.serve.node import PlayNode
from common.serve.playgate import PlayCheck
from common.serve.playhooks import HookPlayCheck
from common.serve.snapshot import Snapshots

log = logging.getLogger("livecdn.reload")

HOOK_KEYS = ("hook_timeout", "hook_cache_seconds", *(event.value for event in HookEvent))

READ_TIMEOUT = 10.0
"""Longest wait for what a reload reads (the config files, a CA bundle): a FIFO or a hung
mount fails the reload instead of holding it."""

T = TypeVar("T")


async def read_off_loop(what: str, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` (which reads files) in a thread, at most READ_TIMEOUT seconds; ConfigError
    naming `what` when it takes longer (the thread is abandoned, so a cancel is at once)."""
    try:
        with trio.fail_after(READ_TIMEOUT):
            return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
    except trio.TooSlowError:
        raise ConfigError(
            f"{what} not read in {READ_TIMEOUT:g} s (a FIFO or a hung mount?)"
        ) from None


class PartlyApplied(Exception):
    """A reload failed unexpectedly after applying part of the new config (a bug): `done`
    names the steps applied, `failed` the one that failed; the rest was not applied."""

    def __init__(self, done: list[str], failed: str, error: Exception) -> None:
        self.done, self.failed, self.error = [*done], failed, error
        super().__init__(
            f"partly applied: {', '.join(done) if done else 'nothing'} applied, then "
            f"{failed} failed ({type(error).__name__}: {error}); the rest not applied"
        )


class Steps:
    """A reload's apply steps, each named (`with steps("limits"): ...`): what can fail is
    computed before the first; one that fails all the same raises PartlyApplied naming
    those already applied."""

    def __init__(self) -> None:
        self.done: list[str] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            raise PartlyApplied(self.done, name, exc) from exc
        self.done.append(name)


def warn_newly_open(old: Any, new: Any, log: logging.Logger, **bound: int) -> list[str]:
    """Log a warning for each surface `new` leaves open that `old` did not (the lines of
    start-up, `common.config.exposure`), e.g. a reload that removed admin_token; `bound`:
    the ports the node listens on, as for `warn_open_surfaces`. The lines logged."""
    before = set(open_surfaces(dataclasses.replace(old, **bound)))
    lines = [
        line for line in open_surfaces(dataclasses.replace(new, **bound)) if line not in before
    ]
    for line in lines:
        log.warning("%s", line)
    return lines


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
    steps: Steps,
) -> None:
    """Apply the reloadable keys every serving node has: limits and timeouts of new
    connections and new streams, the connection limit, CORS, the play gate (`signed`: the
    signed-URL checks `config` asks for), hooks and snapshots, as `steps`. Connections
    already open keep theirs."""
    limit = connection_limit(config)
    with steps("limits"):
        node.config = node.fanouts.config = config
        node.take_limits(config)
        node.console.send_timeout = config.slow_timeout
        if node.slots is not None:
            node.slots.limit = limit
    if any(name in HOOK_KEYS for name in changed):
        with steps("hooks"):
            reload_hooks(hooks, config, node)
    with steps("play checks and snapshots"):
        node.gate.checks = play_checks(signed, hooks)
        snapshots.enabled, snapshots.wait = config.snapshots, config.snapshot_wait
    if "log_level" in changed:
        with steps("log_level"):
            apply_log_level(config)
