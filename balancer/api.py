"""The balancer's operator API: GET /api/edges, GET /api/streams, POST /api/edges/{id}/drain."""

from __future__ import annotations

import math
from dataclasses import replace

import trio

from balancer.table import NodeTable
from common.config import BalancerConfig
from common.net.http import Request, Response
from common.proto.paths import EdgeAction, EdgeRequest


def edges_info(table: NodeTable, config: BalancerConfig) -> list[dict]:
    """Every known edge with its state and load (none for an edge whose reports stopped:
    its last viewer count is kept as `last_viewers`)."""
    now = trio.current_time()
    out = []
    for e in sorted(table.edges.values(), key=lambda e: e.id):
        live = e.reporting(now, config.heartbeat_timeout)
        v = e.view() if live else replace(e.view(), viewers=0, egress_bps=0.0)
        why = e.out_reason(now, config.heartbeat_timeout)
        out.append(
            {
                "id": e.id,
                "http": e.http,
                "rtmp": e.rtmp,
                "in_rotation": why is None,
                "out_reason": str(why) if why is not None else None,
                "viewers": v.viewers,
                "last_viewers": e.beat.viewers,
                "egress_bps": v.egress_bps,
                "capacity_viewers": v.capacity_viewers,
                "capacity_bps": v.capacity_bps,
                "load": round(v.load, 4),
                "weight": v.weight,
                "region": e.beat.region,
                "streams": dict(e.beat.streams) if live else {},
                "draining": e.draining,
                "last_heartbeat_s_ago": round(now - e.last_heartbeat, 2)
                if e.last_heartbeat > -math.inf
                else None,
                "routed_total": e.routed_total,
            }
        )
    return out


def streams_info(table: NodeTable, config: BalancerConfig) -> list[dict]:
    """Every live stream (from the origins) with its viewers across edges."""
    now = trio.current_time()
    live: dict[str, dict] = {}
    for node, streams in table.origin_streams.items():
        if now - table.origin_seen.get(node, -math.inf) > 3 * config.heartbeat_timeout:
            continue
        for key, info in streams.items():
            live[key] = {
                "stream": key,
                "origin": node,
                "bitrate": info.bitrate,
                "viewers": 0,
                "edges": {},
            }
    for e in table.edges.values():
        if not e.reporting(now, config.heartbeat_timeout):
            continue
        for key, n in e.beat.streams.items():
            entry = live.setdefault(
                key, {"stream": key, "origin": None, "bitrate": None, "viewers": 0, "edges": {}}
            )
            entry["edges"][e.id] = n
            entry["viewers"] += n
    return [live[k] for k in sorted(live)]


def drain(table: NodeTable, req: Request, target: EdgeRequest) -> Response:
    """POST /api/edges/{node}/drain or /undrain."""
    if target.action is None:
        return Response.json({"error": "POST /api/edges/{id}/drain or /undrain"}, 404)
    edge = table.edges.get(target.node)
    if edge is None:
        return Response.json({"error": f"no edge named {target.node}"}, 404)
    edge.set_draining(target.action is EdgeAction.DRAIN, f"on request of {req.peer}")
    return Response.json({"edge": target.node, "draining": edge.draining})
