"""A running node's lifecycle controls: drain before stopping (SIGTERM) and reload its config
(SIGHUP). Each node's `serve()` hands them out, with its address, as a `Serving`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio


@dataclass(frozen=True)
class NodeControls:
    """What a running node can be asked to do besides stop.

    `drain()`: stop taking new work, let (or make) the current work end cleanly, and return
    when the node may exit. `await reload(new_config)`: apply a freshly loaded config of the
    node's kind and return the keys it applied (changed values only); it raises
    `common.config.ConfigError` naming the keys that cannot change without a restart (or a
    file it cannot read), and then applies nothing; `common.serve.reload.PartlyApplied` if a
    step failed unexpectedly after others were applied. What it reads from files it reads in
    a thread, bounded (`common.serve.reload.read_off_loop`). None: the node cannot do it (a drain is then an immediate stop).
    """

    drain: Callable[[], Awaitable[None]] | None = None
    reload: Callable[[Any], Awaitable[list[str]]] | None = None


@dataclass(frozen=True)
class Serving:
    """What a node's `serve()` hands to `task_status.started`: where it listens and its
    controls."""

    address: Any
    """The node's own address type: NodeAddress (origin, edge), (http_port, control_port)
    (balancer)."""
    controls: NodeControls


class ControlledNode(Protocol):
    """A node object with a `run()` that starts with its address, and its `controls`."""

    controls: NodeControls

    async def run(self, *, task_status: trio.TaskStatus = ...) -> None:
        """Serve until cancelled."""
        ...


async def serve_node(
    node: ControlledNode, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Run `node` until cancelled; `task_status.started` gets a `Serving` (its address and
    controls)."""
    async with trio.open_nursery() as nursery:
        address = await nursery.start(node.run)
        task_status.started(Serving(address, node.controls))


RETRY_AFTER_S = 1
"""What a draining node's refusals tell a viewer to wait before asking again (through the
balancer, which sends it elsewhere)."""


async def wait_for(done: Callable[[], bool], timeout: float, poll: float = 0.25) -> bool:
    """Wait until `done()` (asked every `poll` seconds), at most `timeout` seconds; whether
    it came true."""
    with trio.move_on_after(timeout):
        while not done():
            await trio.sleep(poll)
        return True
    return done()
