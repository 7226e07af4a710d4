"""`python -m balancer`: route viewers to edges (302 for HTTP-FLV/HLS, /api/route for RTMP)."""

from __future__ import annotations

import argparse
import sys

from balancer.server import serve
from common.config import BalancerConfig
from common.serve.cli import node_parser, run_node


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line of the balancer (a flag for every key of balancer.toml)."""
    return node_parser(
        BalancerConfig,
        "livecdn balancer: edges send heartbeats to the control port; viewers "
        "asking GET /APP/NAME.flv or .m3u8 get a 302 to the edge the policy picks (RTMP: "
        "GET /api/route?app=&name=&proto=rtmp); /api/edges, /api/streams, /metrics.",
    ).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_node("balancer", BalancerConfig, serve, args)


if __name__ == "__main__":
    sys.exit(main())
