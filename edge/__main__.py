"""`python -m edge`: run an edge node that pulls streams from its parents on demand."""

from __future__ import annotations

import argparse
import sys

from common.config import EdgeConfig
from common.serve.cli import node_parser, run_node
from edge.server import serve


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line of the edge (a flag for every key of edge.toml)."""
    return node_parser(
        EdgeConfig,
        "livecdn edge: when a viewer asks for APP/NAME (HTTP-FLV "
        "http://HOST:HTTP/APP/NAME.flv or RTMP rtmp://HOST:RTMP/APP/NAME), pull it from a "
        "parent (origin or another edge) once, share it with every viewer, fail over between "
        "parents, and drop it when the last viewer has been gone for the linger time.",
        "Example: python -m edge --parent rtmp://127.0.0.1:1935 --http 8081 --rtmp 1936.",
    ).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = sys.argv[1:] if argv is None else argv
    return run_node("edge", EdgeConfig, serve, parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
