"""The `render` subcommand of `python -m topology`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.config import ConfigError
from topology import schema
from topology.render import TARGETS, render, summary
from topology.render.loadjob import PLAYERS_PER_SHARD
from topology.render.nodes import Options, RenderError, parse_public_hosts


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add `render` to the subcommands."""
    p = sub.add_parser(
        "render",
        help="write a topology as Docker Compose or Kubernetes files (plus Dockerfile, "
        "Prometheus config, Grafana dashboard)",
        description="Write a topology as a Docker Compose project (compose) or Kubernetes "
        "manifests (k8s), with the Dockerfile, a Prometheus scrape config (k8s: a "
        "ServiceMonitor and prometheus.io annotations) and a Grafana dashboard. Nodes reach "
        "each other by service name on fixed ports (the file's, 0: the kind's default). "
        "Secrets are generated once into DIR/secrets.toml (mode 0600) and reused; they go to "
        "the nodes as LIVECDN_<KIND>_<KEY> variables (compose: secrets/NODE.env, mode 0600; "
        "k8s: secrets.yaml), never into config files. [[link]], [[fault]] and [[publisher]] "
        "tables are for local runs and are not rendered.",
    )
    p.add_argument("target", choices=TARGETS, help="compose: Docker Compose; k8s: Kubernetes")
    p.add_argument("topology", help="a .toml file or a shipped example")
    p.add_argument("--out", metavar="DIR", help="output directory (default ./livecdn-NAME-TARGET)")
    p.add_argument("--image", default=Options.image,
                   help=f"the container image of the nodes (default {Options.image})")  # fmt: skip
    p.add_argument(
        "--public-host",
        action="append",
        default=[],
        metavar="EDGE=HOST|PATTERN",
        help="the host viewers reach an edge at (its public_host; the balancer redirects "
        "there and health-checks it): EDGE=HOST for one edge, or a pattern for the others, "
        "'{name}' standing for the edge's name (e.g. '{name}.cdn.example.com'); repeatable. "
        "Default: the edge's service name. An edge table's own public_host wins",
    )
    p.add_argument(
        "--service-type",
        choices=["LoadBalancer", "NodePort"],
        default=Options.service_type,
        help="k8s: the Service type of edges in rotation, the balancer's public Service and "
        "origins' ingest Service (default LoadBalancer). NodePort: edges listen on node ports "
        f"from {Options.node_port_base} up, which they advertise",
    )

    p.add_argument("--load-players", type=positive, metavar="N",
                   help="k8s: players of each [[load]] profile (or of one on the first "
                        "publisher's stream, if the file has none), run as an Indexed Job of "
                        "shards in load/jobs.yaml")  # fmt: skip
    p.add_argument("--load-shards", type=positive, metavar="K",
                   help=f"k8s: shards of each load Job (default: one per {PLAYERS_PER_SHARD} "
                        "players)")  # fmt: skip


def positive(text: str) -> int:
    """A whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def run(args: argparse.Namespace) -> int:
    """`render`: write the files; errors in one line."""
    try:
        topo = schema.load(args.topology)
        named, pattern = parse_public_hosts(args.public_host)
        options = Options(args.image, named, pattern, args.service_type,
                          load_players=args.load_players, load_shards=args.load_shards)  # fmt: skip
        out = Path(args.out or f"livecdn-{topo.name}-{args.target}")
        files = render(args.target, topo, out, options)
    except (schema.TopologyError, RenderError, ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(args.target, out, files, options.image))
    return 0
