"""`python -m origin`: run an origin node, or make a publish token."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

import trio

from common import auth
from common.config import ConfigError, OriginConfig, load
from origin.server import serve

log = logging.getLogger("livecdn.origin")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the origin."""
    p = argparse.ArgumentParser(
        prog="python -m origin",
        description="livecdn origin: ingest RTMP (publish rtmp://HOST/APP/NAME), keep a GOP "
        "cache, play as HTTP-FLV (http://HOST:HTTP/APP/NAME.flv) and RTMP, "
        "with a JSON API (/api/streams), /healthz and /metrics.",
        epilog="Make a publish token: python -m origin token live/demo --secret S [--ttl 3600]",
    )
    p.add_argument("--config", help="origin.toml (keys as in common/config.py OriginConfig)")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--rtmp", type=int, dest="rtmp_port", help="RTMP port (default 1935)")
    p.add_argument("--http", type=int, dest="http_port", help="HTTP port (default 8080)")
    p.add_argument(
        "--no-gop-cache",
        action="store_const",
        const=False,
        dest="gop_cache",
        help="new viewers wait for the next keyframe instead of getting the cached GOP",
    )
    p.add_argument(
        "--on-republish",
        choices=["takeover", "reject"],
        help="a second publisher of the same name replaces the first (default) or is refused",
    )
    p.add_argument(
        "--secret", dest="publish_secret", help="require publish tokens signed with this"
    )
    p.add_argument("--log-level", help="debug, info (default), warning, error")
    return p.parse_args(argv)


def token_main(argv: list[str]) -> int:
    """`python -m origin token app/name --secret S [--ttl N]`: print a publish query string."""
    p = argparse.ArgumentParser(prog="python -m origin token")
    p.add_argument("stream", help="app/name")
    p.add_argument("--secret", required=True)
    p.add_argument("--ttl", type=int, default=3600, help="seconds of validity (default 3600)")
    a = p.parse_args(argv)
    app, _, name = a.stream.partition("/")
    expires = int(time.time()) + a.ttl
    print(f"{a.stream}?{auth.token_query(a.secret, app, name, expires)}")
    return 0


async def main_async(config: OriginConfig) -> None:
    """Run the origin until SIGINT/SIGTERM."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await nursery.start(serve, config)
            async for signum in signals:
                log.info("%s received: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "token":
        return token_main(argv[1:])
    args = parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "config"}
    try:
        config = load(OriginConfig, args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        trio.run(main_async, config)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info("origin stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
