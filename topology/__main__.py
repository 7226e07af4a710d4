"""`python -m topology`: whole deployments from a TOML file, and the built-in publisher.

python -m topology up three-edge.toml    every node as a process, publishers, URL table
python -m topology load FILE --players N  simulated players against a topology (or --url)
python -m topology validate FILE         check a topology file
python -m topology demo                  just an origin plus the built-in publisher
python -m topology publish URL           publish the synthetic test stream anywhere
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import trio

from common.config import OriginConfig
from common.config.model import default as config_default
from common.net.rtmpclient import RtmpClientError
from common.serve.cli import leaves
from topology import launch, schema
from topology.plan import node_command
from topology.procs import node_environ, stop_all, wait_healthy
from topology.publisher import SourceSettings, failure_reason, keep_publishing, publish

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
    ld = sub.add_parser(
        "load",
        help="simulated players against a topology it brings up, or any server (--url)",
        description="Simulated players with a playback buffer: time to first frame, stalls, "
        "latency (origin clock stamps), which edge served each. Without --players the "
        "file's [[load]] profiles run.",
    )
    ld.add_argument("topology", nargs="?", help="a .toml file or shipped example to bring up")
    ld.add_argument("--url", help="play this URL instead (rtmp://..., http://...flv, .m3u8)")
    ld.add_argument("--players", type=int, metavar="N", help="how many players")
    ld.add_argument("--duration", type=float, default=60.0, metavar="S",
                    help="seconds (default 60)")  # fmt: skip
    ld.add_argument("--protocol", choices=["flv", "hls", "rtmp"], default="flv",
                    help="default flv; with --url the URL decides")  # fmt: skip
    ld.add_argument("--arrival", choices=["ramp", "poisson", "flash"], default="ramp",
                    help="how players arrive over --ramp seconds (default ramp)")  # fmt: skip
    ld.add_argument("--ramp", type=float, default=10.0, metavar="S",
                    help="arrival period (default 10 s)")  # fmt: skip
    ld.add_argument("--profiles", default="lan",
                    help="client links, e.g. '4g:0.8,3g:0.2' (lan, wifi, 4g, 3g; default lan)")  # fmt: skip
    ld.add_argument("--class", dest="klass", default="", metavar="CLASS",
                    help="viewer class to ask the balancer for")  # fmt: skip
    ld.add_argument("--stream", help="app/name (default: the topology's first publisher)")
    ld.add_argument("--procs", type=int, default=1, metavar="N",
                    help="spread players over N processes (~1500 players of 1.5 Mbit/s each)")  # fmt: skip
    ld.add_argument("--out", help="directory for the JSON and plot (default: the run dir)")
    ld.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ld.add_argument("--first-id", type=int, default=0, help=argparse.SUPPRESS)
    ld.add_argument("--base", help=argparse.SUPPRESS)
    for cmd, text in (
        ("status", "show a detached topology's nodes"),
        ("down", "stop a detached topology"),
    ):
        sp = sub.add_parser(cmd, help=text)
        sp.add_argument("topology", help="its file or example name")
    val = sub.add_parser("validate", help="check a topology file and print what it describes")
    val.add_argument("topology")
    demo = sub.add_parser("demo", help="run an origin with the built-in publisher on live/demo")
    for key, flag in (("rtmp_port", "--rtmp"), ("http_port", "--http")):
        port = config_default(OriginConfig, key)
        demo.add_argument(flag, type=int, default=port, help=f"origin {key} (default {port})")
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
    """Origin subprocess (started like the launcher's nodes: a config file written from its
    model) + built-in publisher; Ctrl-C stops both."""
    config_dir = Path(tempfile.mkdtemp(prefix="livecdn-demo-"))
    values = {"rtmp_port": args.rtmp, "http_port": args.http}
    cmd = node_command(OriginConfig, values, config_dir / "origin.toml")
    async with trio.open_nursery() as nursery:
        origin = await nursery.start(partial(trio.run_process, cmd, env=node_environ(os.environ)))
        try:
            await wait_healthy(f"http://127.0.0.1:{args.http}", origin)
            nursery.start_soon(
                partial(
                    keep_publishing,
                    f"rtmp://127.0.0.1:{args.rtmp}/live/demo",
                    settings=settings_from(args),
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
            with trio.CancelScope(shield=True):
                await stop_all([("origin", origin)])
            shutil.rmtree(config_dir, ignore_errors=True)
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


def load_main(args: argparse.Namespace) -> int:
    """`load`: a crowd against --url, or against a topology brought up for the run."""
    from topology.loadrun import run_load, target_for, worker_main
    from topology.players.crowd import LoadSpec
    from topology.players.player import Target

    def spec_from_args() -> LoadSpec:
        spec = LoadSpec(args.players or 0, args.duration, args.protocol, args.arrival,
                        args.ramp, args.profiles, args.klass)  # fmt: skip
        spec.check()
        return spec

    try:
        if args.worker:
            target = Target.direct(args.url) if args.url else Target(
                args.protocol, base=args.base, stream=args.stream)  # fmt: skip
            trio.run(worker_main, target, spec_from_args(), args.first_id)
            return 0
        if args.url:
            if not args.players:
                raise ValueError("--url needs --players")
            target = Target.direct(args.url)
            spec = spec_from_args()
            if spec.protocol != target.protocol:
                spec = LoadSpec(**{**spec.__dict__, "protocol": target.protocol})
            out = Path(args.out or ".")
            trio.run(lambda: run_load(target, spec, out_dir=out, procs=args.procs))
            return 0
        if not args.topology:
            raise ValueError("give a topology file (or --url URL)")
        topo = schema.load(args.topology)
        if args.players:
            spec = spec_from_args()
        elif not topo.loads:
            raise ValueError(f"{topo.path} has no [[load]] profiles: give --players N")
    except (ValueError, schema.TopologyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for o in topo.origins:
        o.config["clock_stamps"] = True

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            dep = await nursery.start(lambda task_status: launch.up(
                topo, task_status=task_status, run_file_loads=not args.players))  # fmt: skip
            if args.players:
                stream = args.stream or (topo.publishers[0].stream if topo.publishers else "")
                out = Path(args.out) if args.out else dep.run_dir
                await run_load(target_for(dep, spec.protocol, stream), spec, out_dir=out,
                               dep=dep, procs=args.procs)  # fmt: skip
            else:
                await trio.sleep(max(schema.parse_duration(x.start_at)
                                     + schema.parse_duration(x.duration) for x in topo.loads) + 3)  # fmt: skip
            nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    except (launch.StartFailed, BaseExceptionGroup) as exc:
        if not all(isinstance(e, launch.StartFailed) for e in leaves(exc)):
            raise
        return 1  # the launcher has said why
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("status", "down"):
        name = Path(args.topology).stem
        return trio.run(launch.status if args.command == "status" else launch.down, name)
    if args.command in ("up", "validate"):
        try:
            topo = schema.load(args.topology)
        except schema.TopologyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.command == "up" and args.detach:
            return trio.run(launch.detach, str(topo.path), topo.name, args.seconds)
        if args.command == "validate":
            print(
                f"{topo.path}: valid: {len(topo.origins)} origin(s), {len(topo.edges)} edge(s), "
                f"balancer {'(' + topo.balancer.config['policy'] + ')' if topo.balancer else 'none'}, "
                f"{len(topo.publishers)} publisher(s)"
            )
            return 0
        return trio.run(lambda: launch.up(topo, seconds=args.seconds))
    if args.command == "load":
        return load_main(args)
    try:
        trio.run(demo if args.command == "demo" else publish_only, args)
    except Exception as exc:  # one line for what ended the demo or the publisher
        errors = leaves(exc)
        if not all(isinstance(e, (OSError, subprocess.CalledProcessError, RtmpClientError, RuntimeError,
                                  trio.TooSlowError)) for e in errors):  # fmt: skip
            raise
        print(f"error: {failure_reason(errors[0], was_live=False)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
