"""Active health checks: GET /healthz on every known edge, each `check_interval`."""

from __future__ import annotations

import trio

from balancer.edges import EdgeState
from balancer.table import NodeTable
from common.config import BalancerConfig
from common.net.httpclient import fetch
from common.proto.errors import ProtocolError


async def check_edge(edge: EdgeState, config: BalancerConfig) -> None:
    """One check of one edge; its health changes after `rise` passes or `fall` failures."""
    if not edge.http:
        return
    try:
        got = await fetch("GET", edge.http + "/healthz", timeout=config.check_interval, limit=4096)
        ok, error = got.status == 200, f"HTTP {got.status}"
    except (OSError, trio.TooSlowError, ProtocolError, Exception) as exc:
        ok, error = False, str(exc) or type(exc).__name__
    if ok:
        edge.check_passed(config.rise)
    else:
        edge.check_failed(error, config.fall)


async def check_health(table: NodeTable, config: BalancerConfig) -> None:
    """Check every known edge, concurrently, every `check_interval` seconds (forever)."""
    while True:
        async with trio.open_nursery() as nursery:
            for edge in list(table.edges.values()):
                nursery.start_soon(check_edge, edge, config)
        await trio.sleep(config.check_interval)
