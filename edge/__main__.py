"""`python -m edge`: run an edge node that pulls streams from its parents on demand."""

from __future__ import annotations

import argparse
import sys

from common.config import EdgeConfig
from common.serve.cli import add_serve_args, run_node
from edge.server import serve


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line of the edge."""
    p = argparse.ArgumentParser(
        prog="python -m edge",
        description="livecdn edge: when a viewer asks for APP/NAME (HTTP-FLV "
        "http://HOST:HTTP/APP/NAME.flv or RTMP rtmp://HOST:RTMP/APP/NAME), pull it from a "
        "parent (origin or another edge) once, share it with every viewer, fail over between "
        "parents, and drop it when the last viewer has been gone for the linger time.",
        epilog="Example: python -m edge --parent rtmp://127.0.0.1:1935 --http 8081 --rtmp 1936",
    )
    add_serve_args(p, rtmp=1936, http=8081)
    p.add_argument(
        "--parent",
        action="append",
        dest="parents",
        help="rtmp://host:port or http://host:port of a parent; repeat for failover order",
    )
    p.add_argument(
        "--linger",
        type=float,
        dest="linger_seconds",
        help="seconds an upstream outlives its last viewer (default 10)",
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        dest="stall_timeout",
        help="seconds without media before failing over (default 5)",
    )
    p.add_argument("--balancer", help="host:port of the balancer's control port (heartbeats)")
    p.add_argument("--node-id", dest="node_id", help="name in the balancer (default edge-HTTPPORT)")
    p.add_argument(
        "--capacity-viewers",
        type=int,
        dest="capacity_viewers",
        help="viewers the balancer may send (0 = no limit)",
    )
    p.add_argument(
        "--capacity-mbps",
        type=float,
        dest="capacity_mbps",
        help="egress the balancer may fill (0 = no limit)",
    )
    p.add_argument("--weight", type=float, help="relative weight for the balancer (default 1)")
    p.add_argument("--public-host", dest="public_host", help="host name viewers are redirected to")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    return run_node("edge", EdgeConfig, serve, parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
