"""`python -m balancer`: route viewers to edges (302 for HTTP-FLV/HLS, /api/route for RTMP)."""

from __future__ import annotations

import argparse
import sys

from balancer.server import serve
from common.config import BALANCER_POLICIES, BalancerConfig
from common.serve.cli import run_node


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line of the balancer."""
    p = argparse.ArgumentParser(
        prog="python -m balancer",
        description="livecdn balancer: edges send heartbeats to the control port; viewers "
        "asking GET /APP/NAME.flv or .m3u8 get a 302 to the edge the policy picks (RTMP: "
        "GET /api/route?app=&name=&proto=rtmp); /api/edges, /api/streams, /metrics.",
    )
    p.add_argument("--config", help="balancer.toml")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--http", type=int, dest="http_port", help="HTTP port (default 8090)")
    p.add_argument("--control", type=int, dest="control_port", help="heartbeat port (default 8091)")
    p.add_argument("--policy", choices=BALANCER_POLICIES, help="default least_load")
    p.add_argument("--overflow", choices=["reject", "queue"], help="when every edge is full")
    p.add_argument("--log-level", help="debug, info (default), warning, error")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_node("balancer", BalancerConfig, serve, args)


if __name__ == "__main__":
    sys.exit(main())
