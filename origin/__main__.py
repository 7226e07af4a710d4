"""`python -m origin`: run an origin node, or make a publish or play token."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from common.config import OriginConfig
from common.proto import auth, playtoken
from common.proto.controlauth import check_secret
from common.proto.streamkey import StreamKey, StreamKeyError
from common.serve.cli import node_parser, run_node
from origin.recorddisk import recover_parts
from origin.server import serve


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line of the origin (a flag for every key of origin.toml)."""
    return node_parser(
        OriginConfig,
        "livecdn origin: ingest RTMP (publish rtmp://HOST/APP/NAME), keep a GOP "
        "cache, play as HTTP-FLV (http://HOST:HTTP/APP/NAME.flv) and RTMP, "
        "with a JSON API (/api/streams), /healthz and /metrics.",
        "Make a publish token: python -m origin token live/demo --secret S [--ttl 3600]; "
        "a play token: ... token live/demo --play --secret PLAY_SECRET [--class C].",
    ).parse_args(argv)


def token_main(argv: list[str]) -> int:
    """`python -m origin token app/name --secret S [--ttl N] [--play [--class C]]`: print
    the stream with a publish (or play) query string."""
    p = argparse.ArgumentParser(prog="python -m origin token")
    p.add_argument("stream", help="app/name")
    p.add_argument("--secret", required=True, help="publish_secret (with --play: play_secret)")
    p.add_argument("--ttl", type=int, default=3600, help="seconds of validity (default 3600)")
    p.add_argument("--play", action="store_true", help="a signed play URL's query instead")
    p.add_argument("--class", dest="klass", default="",
                   help="with --play: the viewer class the token grants at the balancer")  # fmt: skip
    a = p.parse_args(argv)
    try:
        key = StreamKey.from_text(a.stream)
        check_secret(a.secret)  # a node refuses a shorter one: its tokens would fit nowhere
    except StreamKeyError as exc:
        p.error(str(exc))
    except ValueError as exc:
        p.error(f"--secret {exc}")
    expires = int(time.time()) + a.ttl
    if a.play:
        print(f"{key}?{playtoken.play_query(a.secret, str(key), expires, a.klass)}")
        return 0
    print(f"{key}?{auth.token_query(a.secret, key.app, key.name, expires)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "token":
        return token_main(argv[1:])
    return run_node(
        "origin", OriginConfig, serve, parse_args(argv), argv, before_workers=recover_recordings
    )


def recover_recordings(config: OriginConfig) -> None:
    """Before a node's workers start: finish the recording files a previous run left (a
    worker does not: its siblings may be recording)."""
    if config.record_dir:
        for line in recover_parts(config.record_dir):
            logging.getLogger("livecdn.record").info("recording left over: %s", line)


if __name__ == "__main__":
    sys.exit(main())
