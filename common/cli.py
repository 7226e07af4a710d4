"""Command-line plumbing shared by the nodes: common options, logging, signals."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import trio

from common.config import ConfigError, load

log = logging.getLogger("livecdn")


def add_serve_args(p: argparse.ArgumentParser, *, rtmp: int, http: int) -> None:
    """Options every viewer-serving node has."""
    p.add_argument("--config", help="TOML file with the node's settings (see README)")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--rtmp", type=int, dest="rtmp_port", help=f"RTMP port (default {rtmp})")
    p.add_argument("--http", type=int, dest="http_port", help=f"HTTP port (default {http})")
    p.add_argument(
        "--no-gop-cache",
        action="store_const",
        const=False,
        dest="gop_cache",
        help="new viewers wait for the next keyframe instead of getting the cached GOP",
    )
    p.add_argument(
        "--max-streams", type=int, help="live streams (origin) or upstreams (edge), default 1000"
    )
    p.add_argument(
        "--max-connections",
        type=int,
        help="connections of all listeners together (default: file-descriptor limit - 64)",
    )
    p.add_argument("--log-level", help="debug, info (default), warning, error")


def run_node(
    name: str,
    config_cls: type,
    serve: Callable[..., Any],
    args: argparse.Namespace,
) -> int:
    """Load the config (file + options), set up logging, serve until SIGINT/SIGTERM."""
    overrides = {k: v for k, v in vars(args).items() if k != "config"}
    try:
        config = load(config_cls, args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if why := cannot_listen(config):
        print(f"error: {why}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                await nursery.start(serve, config)
                async for signum in signals:
                    log.info("%s received: shutting down", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    except (OSError, BaseExceptionGroup) as exc:
        errors = leaves(exc)
        if not all(isinstance(e, OSError) for e in errors):
            raise
        print(f"error: {errors[0]}", file=sys.stderr)
        return 1
    log.info("%s stopped", name)
    return 0


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside `exc`, however deeply trio's nurseries grouped them."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


PORT_FIELDS = ("rtmp_port", "http_port", "control_port")


def cannot_listen(config: Any) -> str | None:
    """Why one of the node's listening ports cannot be bound, naming it; None if all can.

    Binds each port the way `common.conn.listen_socket` does and closes it at once, so a
    busy port or a bad address is reported before anything starts.
    """
    host = config.host
    for name in PORT_FIELDS:
        port = getattr(config, name, 0)
        if not port:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                return f"cannot listen on {host}:{port}: {exc}"
    return None
