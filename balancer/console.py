"""The balancer's console: the page at `/` shows the deployment the balancer knows (edges
with their health and load, origins, streams) from a feed at /api/events."""

from __future__ import annotations

import math
from functools import partial

import trio

from balancer import api
from balancer.table import NodeTable
from common.config import BalancerConfig
from common.net.http import Request
from common.serve.console import Console


async def snapshot(table: NodeTable, config: BalancerConfig, req: Request) -> dict:
    """The edges and streams as the API shows them, the origins heard from, the policy."""
    now = trio.current_time()
    return {
        "node": "balancer",
        "policy": str(config.policy),
        "edges": api.edges_info(table, config),
        "origins": [
            {
                "id": node,
                "streams": len(table.origin_streams.get(node, {})),
                "last_seen_s_ago": round(now - seen, 1) if seen > -math.inf else None,
            }
            for node, seen in sorted(table.origin_seen.items())
        ],
        "streams": api.streams_info(table, config),
    }


def console(table: NodeTable, config: BalancerConfig) -> Console:
    """The balancer's console over its node table."""
    return Console(partial(snapshot, table, config))
