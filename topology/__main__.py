"""`python -m topology`: whole deployments from a TOML file, and the built-in publisher.

python -m topology up three-edge.toml    every node as a process, publishers, URL table
python -m topology validate FILE         check a topology file
python -m topology demo                  just an origin plus the built-in publisher
python -m topology publish URL           publish the synthetic test stream anywhere
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from pathlib import Path

import trio

from topology import launch, schema
from topology.publisher import SourceSettings, publish

log = logging.getLogger("livecdn.topology")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(prog="python -m topology", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    upp = sub.add_parser("up", help="start every node of a topology, its publishers; Ctrl-C stops")
    upp.add_argument(
        "topology", help="a .toml file or a shipped example: one-edge, three-edge, two-tier"
    )
    upp.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    upp.add_argument(
        "--detach", action="store_true", help="run in the background (see status, down)"
    )
    for cmd, text in (
        ("status", "show a detached topology's nodes"),
        ("down", "stop a detached topology"),
    ):
        sp = sub.add_parser(cmd, help=text)
        sp.add_argument("topology", help="its file or example name")
    val = sub.add_parser("validate", help="check a topology file and print what it describes")
    val.add_argument("topology")
    demo = sub.add_parser("demo", help="run an origin with the built-in publisher on live/demo")
    demo.add_argument("--rtmp", type=int, default=1935, help="origin RTMP port (default 1935)")
    demo.add_argument("--http", type=int, default=8080, help="origin HTTP port (default 8080)")
    demo.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    pub = sub.add_parser("publish", help="publish the synthetic test stream to an RTMP URL")
    pub.add_argument("url", help="e.g. rtmp://127.0.0.1/live/test")
    pub.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    for sp in (demo, pub):
        sp.add_argument("--size", default="640x360", help="video size (default 640x360)")
        sp.add_argument("--fps", type=int, default=30, help="frame rate (default 30)")
        sp.add_argument("--kbps", type=int, default=1500, help="video bitrate (default 1500)")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> SourceSettings:
    """Source settings from the command line."""
    width, _, height = args.size.partition("x")
    return SourceSettings(width=int(width), height=int(height), fps=args.fps, video_kbps=args.kbps)


async def demo(args: argparse.Namespace) -> None:
    """Origin subprocess + built-in publisher; Ctrl-C stops both."""
    cmd = [sys.executable, "-m", "origin", "--rtmp", str(args.rtmp), "--http", str(args.http)]
    async with trio.open_nursery() as nursery:
        origin = await nursery.start(trio.run_process, cmd)
        try:
            await launch.wait_healthy(f"http://127.0.0.1:{args.http}", origin)
            nursery.start_soon(
                lambda: publish(
                    f"rtmp://127.0.0.1:{args.rtmp}/live/demo",
                    settings=settings_from(args),
                    seconds=args.seconds,
                )
            )
            await trio.sleep(1)
            print(
                "\nlivecdn demo is up: an origin with the built-in publisher on live/demo\n"
                f"  watch:   ffplay http://127.0.0.1:{args.http}/live/demo.flv\n"
                f"           ffplay rtmp://127.0.0.1:{args.rtmp}/live/demo\n"
                f"  streams: curl http://127.0.0.1:{args.http}/api/streams\n"
                f"  metrics: curl http://127.0.0.1:{args.http}/metrics\n"
                "  stop:    Ctrl-C\n",
                flush=True,
            )
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                if args.seconds is not None:
                    with trio.move_on_after(args.seconds + 1):
                        async for _ in signals:
                            break
                else:
                    async for _ in signals:
                        break
        finally:
            log.info("stopping the demo")
            origin.send_signal(signal.SIGTERM)
            with trio.move_on_after(5) as scope:
                scope.shield = True
                await origin.wait()
            nursery.cancel_scope.cancel()


async def publish_only(args: argparse.Namespace) -> None:
    """Publish until Ctrl-C or --seconds."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            await publish(args.url, settings=settings_from(args), seconds=args.seconds)
            nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("status", "down"):
        name = Path(args.topology).stem
        return launch.status(name) if args.command == "status" else launch.down(name)
    if args.command in ("up", "validate"):
        try:
            topo = schema.load(args.topology)
        except schema.TopologyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.command == "up" and args.detach:
            return launch.detach(str(topo.path), topo.name, args.seconds)
        if args.command == "validate":
            print(
                f"{topo.path}: valid: {len(topo.origins)} origin(s), {len(topo.edges)} edge(s), "
                f"balancer {'(' + topo.balancer.policy + ')' if topo.balancer else 'none'}, "
                f"{len(topo.publishers)} publisher(s)"
            )
            return 0
        return trio.run(lambda: launch.up(topo, seconds=args.seconds))
    try:
        trio.run(demo if args.command == "demo" else publish_only, args)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
