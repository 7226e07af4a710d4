"""`python -m topology`: whole deployments from a TOML file, and the built-in publisher.

python -m topology up three-edge.toml    every node as a process, publishers, URL table (first
                                         the console: a browser page of the whole deployment,
                                         with its actions on the launcher's control API)
python -m topology load FILE --players N  simulated players against a topology (or --url)
python -m topology load merge FILE.json.. one run's results from its shards (load --shard I/N)
python -m topology validate FILE         check a topology file
python -m topology render compose FILE   the topology as Docker Compose (or k8s) files
python -m topology demo                  just an origin plus the built-in publisher
python -m topology publish URL           publish the synthetic test stream anywhere
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

from common.config import OriginConfig
from common.config.model import default as config_default
from common.net.rtmpclient import RtmpClientError
from common.serve.cli import leaves
from topology import launch, schema
from topology.demo import run_demo
from topology.players.shard import Shard
from topology.publisher import SourceSettings, failure_reason, publish_until_signalled
from topology.render import cli as render_cli


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(prog="python -m topology", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    upp = sub.add_parser(
        "up",
        help="start every node of a topology, its publishers; Ctrl-C stops",
        description="Start every node of a topology as a process, its publishers and links, "
        "and print a table of URLs: first the console (the balancer's page; its URL's "
        "fragment names the launcher's control API on 127.0.0.1 and its console_token, so "
        "the page can kill and restart nodes, degrade or cut links, drain edges, kick "
        "publishers and start load profiles). Secrets go to the run directory's "
        "secrets.toml (mode 0600).",
    )
    upp.add_argument(
        "topology", help="a .toml file or a shipped example: one-edge, three-edge, two-tier"
    )
    upp.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    upp.add_argument(
        "--detach", action="store_true", help="run in the background (see status, down)"
    )
    upp.add_argument(
        "--netns", action="store_true",
        help='each node in its own network namespace at its own address (as the file\'s '
        'hosts = "netns"; needs root and ip)',
    )  # fmt: skip
    ld = sub.add_parser(
        "load",
        help="simulated players against a topology it brings up, or any server (--url)",
        description="Simulated players with a playback buffer: time to first frame, stalls, "
        "latency (origin clock stamps), which edge served each. Without --players the "
        "file's [[load]] profiles run. `load merge FILE.json...` merges the results of "
        "--shard runs.",
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
                    help="viewer class of the players: a token signed with $LIVECDN_QOS_SECRET "
                         "(a topology's [balancer] qos_secret), else the class in their play "
                         "token; without either ?class=, which gets the default class. With "
                         "$LIVECDN_PLAY_SECRET the players sign their play URLs")  # fmt: skip
    ld.add_argument("--stream", help="app/name (default: the topology's first publisher)")
    ld.add_argument("--procs", type=int, default=1, metavar="N",
                    help="spread players over N processes (~1500 players of 1.5 Mbit/s each)")  # fmt: skip
    ld.add_argument("--shard", type=shard_arg, default=Shard(), metavar="I/N",
                    help="play share I of N (0 <= I < N) of the run: the players whose id is I "
                         "modulo N, with the arrival times and profiles they have in the whole "
                         "run; results in LABEL-shard-I-of-N.json (LABEL: load, or loadK for "
                         "the file's Kth [[load]] profile), for `load merge`")  # fmt: skip
    ld.add_argument("--out", help="directory for the JSON and plot (default: the run dir; "
                                  f"with --url or --base ./{LOAD_RESULTS}/)")  # fmt: skip
    ld.add_argument("--metrics-port", type=port_arg, metavar="PORT",
                    help="serve the players' QoE as Prometheus /metrics (livecdn_load_*) on "
                         "this port while they play (0: a free port, printed); default off")  # fmt: skip
    ld.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                    help="address --metrics-port listens on (default 127.0.0.1; 0.0.0.0 for "
                         "a Prometheus on another machine)")  # fmt: skip
    ld.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ld.add_argument("--label", default="load", help=argparse.SUPPRESS)
    ld.add_argument("--run-id", default="", type=run_id_arg, metavar="ID",
                    help="an id of this run, kept in its results: `load merge` refuses shards "
                         "of different ids (a rendered Kubernetes load Job sets one)")  # fmt: skip
    ld.add_argument("--base", metavar="URL",
                    help="play through this running balancer (or edge), http://HOST:PORT, as a "
                         "topology's players do (RTMP players ask its /api/route): --stream "
                         "with --players, or a topology file's [[load]] profiles without "
                         "bringing the topology up")  # fmt: skip
    for cmd, text in (
        ("status", "show a detached topology's nodes"),
        ("down", "stop a detached topology"),
    ):
        sp = sub.add_parser(cmd, help=text)
        sp.add_argument("topology", help="its file or example name")
    rs = sub.add_parser(
        "restart",
        help="restart a detached topology's edges one at a time (--rolling): each drains "
        "(SIGTERM), starts again and is back in the balancer's rotation before the next",
    )
    rs.add_argument("topology", help="its file or example name")
    rs.add_argument("--rolling", action="store_true", required=True,
                    help="one edge at a time (the only kind of restart)")  # fmt: skip
    val = sub.add_parser("validate", help="check a topology file and print what it describes")
    val.add_argument("topology")
    render_cli.add_parser(sub)
    demo = sub.add_parser("demo", help="run an origin with the built-in publisher on live/demo")
    for key, flag in (("rtmp_port", "--rtmp"), ("http_port", "--http")):
        port = config_default(OriginConfig, key)
        demo.add_argument(flag, type=int, default=port, help=f"origin {key} (default {port})")
    demo.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    pub = sub.add_parser(
        "publish", help="publish the synthetic test stream to an rtmp:// or rtmps:// URL"
    )
    pub.add_argument("url", help="e.g. rtmp://127.0.0.1/live/test")
    pub.add_argument(
        "--tls-ca",
        default="",
        help="PEM CA bundle an rtmps:// server is verified against (default: system trust)",
    )
    pub.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    for sp in (demo, pub):
        sp.add_argument("--size", default="640x360", help="video size (default 640x360)")
        sp.add_argument("--fps", type=int, default=30, help="frame rate (default 30)")
        sp.add_argument("--kbps", type=int, default=1500, help="video bitrate (default 1500)")
    return p.parse_args(argv)


def shard_arg(text: str) -> Shard:
    """--shard I/N."""
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_id_arg(text: str) -> str:
    """--run-id: letters, digits, '.', '_' and '-' (it may name a folder); "": none."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{0,64}", text):
        raise argparse.ArgumentTypeError(f"{text!r}: letters, digits, '.', '_', '-' (at most 64)")
    return text


def port_arg(text: str) -> int:
    """A TCP port, 0 to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port, 0 to 65535")
    return int(text)


def settings_from(args: argparse.Namespace) -> SourceSettings:
    """Source settings from the command line."""
    width, _, height = args.size.partition("x")
    return SourceSettings(width=int(width), height=int(height), fps=args.fps, video_kbps=args.kbps)


def load_main(args: argparse.Namespace) -> int:
    """`load`: a crowd against --url, or against a topology brought up for the run."""
    from topology.loadrun import base_target, run_load, run_profiles_at
    from topology.loadshard import run_identity
    from topology.loadup import load_topology
    from topology.loadworkers import worker_main
    from topology.players.crowd import PLAY_SECRET_ENV, QOS_SECRET_ENV, LoadSpec
    from topology.players.player import Target

    def spec_from_args() -> LoadSpec:
        spec = LoadSpec(args.players or 0, args.duration, args.protocol, args.arrival,
                        args.ramp, args.profiles, args.klass,
                        qos_secret=os.environ.get(QOS_SECRET_ENV, ""),
                        play_secret=os.environ.get(PLAY_SECRET_ENV, ""))  # fmt: skip
        spec, notes = spec.fitted()
        for note in notes:
            print(note, file=sys.stderr, flush=True)
        spec.check()
        return spec

    try:
        if args.worker:
            target = Target.direct(args.url) if args.url else Target(
                args.protocol, base=args.base, stream=args.stream)  # fmt: skip
            spec = spec_from_args()
            run = run_identity(target, spec, args.label, args.run_id)
            trio.run(worker_main, target, spec, args.shard, run)
            return 0
        if args.metrics_port is not None:
            serve_load_metrics(args.metrics_host, args.metrics_port)
        if args.base:
            if args.url:
                raise ValueError("give --url or --base, not both")
            out = Path(args.out or LOAD_RESULTS)
            topo = schema.load(args.topology) if args.topology else None
            if args.players:
                spec = spec_from_args()
                first = topo.publishers[0].stream if topo and topo.publishers else ""
                target = base_target(args.base, spec.protocol, args.stream or first)
                trio.run(lambda: run_load(target, spec, out_dir=out, procs=args.procs,
                                          shard=args.shard, run_id=args.run_id))  # fmt: skip
            elif topo is not None and topo.loads:
                trio.run(partial(run_profiles_at, topo, args.base, out_dir=out,
                                 procs=args.procs, shard=args.shard, run_id=args.run_id))  # fmt: skip
            else:
                raise ValueError("--base needs --players N or a file with [[load]] profiles")
            return load_exit()
        if args.url:
            if not args.players:
                raise ValueError("--url needs --players")
            target = Target.direct(args.url)
            spec = spec_from_args()
            if spec.protocol != target.protocol:
                spec = LoadSpec(**{**spec.__dict__, "protocol": target.protocol})
            out = Path(args.out or LOAD_RESULTS)
            trio.run(lambda: run_load(target, spec, out_dir=out, procs=args.procs,
                                      shard=args.shard, run_id=args.run_id))  # fmt: skip
            return load_exit()
        if not args.topology:
            raise ValueError("give a topology file (or --url URL)")
        topo = schema.load(args.topology)
        spec = spec_from_args() if args.players else None
        if spec is None and not topo.loads:
            raise ValueError(f"{topo.path} has no [[load]] profiles: give --players N")
    except (ValueError, schema.TopologyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    try:
        went = trio.run(partial(load_topology, topo, spec, stream=args.stream, out=out,
                                procs=args.procs, shard=args.shard))  # fmt: skip
    except (launch.StartFailed, BaseExceptionGroup) as exc:
        if not all(isinstance(e, launch.StartFailed) for e in leaves(exc)):
            raise
        return 1  # the launcher has said why
    print(f"load results in {went}/", flush=True)  # after the topology's own last lines
    return load_exit()


LOAD_RESULTS = "load-results"
"""Where `load --url/--base` writes its results by default (never the current directory
itself, which may be a checkout's root; git ignores it)."""


def load_exit() -> int:
    """`load`'s exit code: 130 after Ctrl-C stopped it (its results are written), else 0."""
    from topology.loadstop import EXIT_INTERRUPTED, was_interrupted

    return EXIT_INTERRUPTED if was_interrupted() else 0


def serve_load_metrics(host: str, port: int) -> None:
    """`load --metrics-port`: serve the players' QoE from here on (every load run of this
    process reports to it); ValueError if the port cannot be bound."""
    from topology.deployment import url_host
    from topology.loadmetrics import CURRENT, serve_metrics

    try:
        metrics, server = serve_metrics(host, port)
    except OSError as exc:
        raise ValueError(f"--metrics-port: cannot listen on {host}:{port}: {exc}") from None
    CURRENT.set(metrics)
    bound = server.server_address[1]
    print(f"load metrics (read-only): http://{url_host(host)}:{bound}/metrics",
          file=sys.stderr, flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["load", "merge"]:
        from topology.loadmerge import merge_main

        return merge_main(argv[2:])
    args = parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("status", "down"):
        name = Path(args.topology).stem
        return trio.run(launch.status if args.command == "status" else launch.down, name)
    if args.command == "restart":
        from topology.rolling import restart_detached

        return trio.run(restart_detached, Path(args.topology).stem)
    if args.command in ("up", "validate"):
        try:
            topo = schema.load(args.topology)
        except schema.TopologyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.command == "up" and args.detach:
            return trio.run(launch.detach, str(topo.path), topo.name, args.seconds, args.netns)
        if args.command == "validate":
            print(
                f"{topo.path}: valid: {len(topo.origins)} origin(s), {len(topo.edges)} edge(s), "
                f"balancer {'(' + topo.balancer.config['policy'] + ')' if topo.balancer else 'none'}, "
                f"{len(topo.publishers)} publisher(s)"
            )
            return 0
        return trio.run(lambda: launch.up(topo, seconds=args.seconds, netns=args.netns))
    if args.command == "load":
        return load_main(args)
    if args.command == "render":
        return render_cli.run(args)
    if args.command == "demo":
        job = partial(run_demo, args.rtmp, args.http, settings_from(args), args.seconds)
    else:
        job = partial(
            publish_until_signalled, args.url, settings_from(args), args.seconds, args.tls_ca
        )
    try:
        trio.run(job)
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
