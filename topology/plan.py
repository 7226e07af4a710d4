"""Planning a topology: each node's ports, its config file (written from the node's config
model) and the command that starts it with `--config`."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import BalancerConfig, EdgeConfig, OriginConfig
from common.config.sources import save
from topology.deployment import Deployment, Node, url_host
from topology.ports import LOCAL, PortBook
from topology.schema import Topology, is_external

PY = sys.executable


@dataclass(frozen=True)
class Hosts:
    """Where each node listens and how the others reach it, by node name ("balancer" for the
    balancer); a name not given uses `default` (127.0.0.1 everywhere: one machine).

    `listen`: the host a node binds (its `host` key). `address`: the host other nodes, the
    launcher and viewers reach it at (an address or a service name). `public`: an edge's
    public_host, the host the balancer redirects viewers to (unless the edge's table sets
    public_host; not given: the edge advertises its listen host). `links`: the host the
    link proxies listen on, which edges reach them at."""

    listen: dict[str, str] = field(default_factory=dict)
    address: dict[str, str] = field(default_factory=dict)
    public: dict[str, str] = field(default_factory=dict)
    links: str = LOCAL
    default: str = LOCAL

    def listen_host(self, name: str) -> str:
        """The host node `name` listens on."""
        return self.listen.get(name, self.default)

    def reach(self, name: str) -> str:
        """The host node `name` is reached at."""
        return self.address.get(name, self.default)


ONE_MACHINE = Hosts()


def assign_ports(topo: Topology, book: PortBook) -> dict[str, tuple[int, int]]:
    """Each origin's and edge's (rtmp, http) ports; ports of 0 are given ports `book` holds."""
    return {
        spec.name: (
            spec.config["rtmp_port"] or book.take(),
            spec.config["http_port"] or book.take(),
        )
        for spec in [*topo.origins, *topo.edges]
    }


def balancer_ports(topo: Topology, book: PortBook) -> tuple[int, int] | None:
    """The balancer's (http, control) ports, ones `book` holds for 0; None without a
    balancer."""
    if topo.balancer is None:
        return None
    b = topo.balancer.config
    return b["http_port"] or book.take(), b["control_port"] or book.take()


def node_values(
    topo: Topology,
    ports: dict[str, tuple[int, int]],
    links: dict[tuple[str, str], int],
    balancer: tuple[int, int] | None,
    hosts: Hosts = ONE_MACHINE,
) -> dict[str, tuple[type, dict[str, Any]]]:
    """Each node's config model and values: the keys its table sets, and what the launcher
    sets (address, ports, node id, parents' URLs, the balancer and its cluster_secret and
    play_secret). With the balancer's viewer classes, the origins serve only edges
    (edges_only), so that no viewer plays unshaped from them, and every edge signs its pulls
    with the cluster_secret. The balancer comes first, then the origins, then the edges after
    their parents. An edge reaches a parent through the link proxy listening on
    `links[(edge, parent)]` (at `hosts.links`) when there is one. `hosts` says where each
    node listens and is reached (default: 127.0.0.1 for all)."""
    out: dict[str, tuple[type, dict[str, Any]]] = {}
    reporting: dict[str, Any] = {}
    playing: dict[str, Any] = {}
    if topo.balancer is not None and balancer is not None:
        http, control = balancer
        reporting = {"balancer": f"{url_host(hosts.reach('balancer'))}:{control}"}
        if topo.balancer.config["cluster_secret"]:
            reporting["cluster_secret"] = topo.balancer.config["cluster_secret"]
        values = {**topo.balancer.config.given, "host": hosts.listen_host("balancer"),
                  "http_port": http, "control_port": control}  # fmt: skip
        out["balancer"] = (BalancerConfig, values)
        if topo.balancer.config["play_secret"]:  # signed play URLs: checked by every node
            playing = {"play_secret": topo.balancer.config["play_secret"]}
    classes = topo.balancer.config["classes"] if topo.balancer is not None else {}
    secret = reporting.get("cluster_secret")
    pulling = {"cluster_secret": secret} if classes and secret else {}
    for o in topo.origins:
        rtmp, http = ports[o.name]
        values = {**o.config.given, "host": hosts.listen_host(o.name), "rtmp_port": rtmp,
                  "http_port": http, "node_id": o.name, **reporting}  # fmt: skip
        values = {**playing, **values}
        if pulling and values.get("cluster_secret"):  # viewers are shaped at the edges only
            values.setdefault("edges_only", True)
        if topo.loads:  # load runs measure latency from the origin's clock stamps
            values["clock_stamps"] = True
        out[o.name] = (OriginConfig, values)
    for e in topo.edges_in_start_order():
        rtmp, http = ports[e.name]
        values = {**e.config.given, "host": hosts.listen_host(e.name), "rtmp_port": rtmp,
                  "http_port": http, "node_id": e.name,
                  "parents": parent_urls(e.name, e.parents, e.parent_protocol, ports, links,
                                         hosts)}  # fmt: skip
        if e.name in hosts.public:
            values.setdefault("public_host", hosts.public[e.name])
        if classes:
            values.setdefault("qos_secret", topo.balancer.config["qos_secret"])
            values.setdefault("classes", classes)
        if e.balanced:
            values.update(reporting)
        values = {**playing, **pulling, **values}
        out[e.name] = (EdgeConfig, values)
    return out


def parent_port(ports: dict[str, tuple[int, int]], parent: str, protocol: str) -> int:
    """The port of `parent` an edge pulls from over `protocol` ("rtmp" or "http")."""
    rtmp, http = ports[parent]
    return rtmp if protocol == "rtmp" else http


def parent_urls(
    edge: str,
    parents: list[str],
    protocol: str,
    ports: dict[str, tuple[int, int]],
    links: dict[tuple[str, str], int],
    hosts: Hosts = ONE_MACHINE,
) -> list[str]:
    """The URLs edge `edge` pulls its parents from (through a link proxy where there is one);
    external parents (URLs) are used as they are."""
    urls = []
    for parent in parents:
        if is_external(parent):
            urls.append(parent)
            continue
        if (edge, parent) in links:
            host, port = hosts.links, links[(edge, parent)]
        else:
            host, port = hosts.reach(parent), parent_port(ports, parent, protocol)
        urls.append(f"{protocol}://{url_host(host)}:{port}")
    return urls


def node_command(model: type, values: dict[str, Any], path: Path) -> list[str]:
    """Write `values` (checked against `model`) as the node's config file `path`; the command
    that starts the node with it: `python -m KIND --config FILE`. The file holds the node's
    secrets: it is readable by the owner only."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    save(model, values, path)
    return [PY, "-m", model.kind, "--config", str(path)]


def plan(
    topo: Topology,
    run_dir: Path,
    ports: dict[str, tuple[int, int]] | None = None,
    links: dict[tuple[str, str], int] | None = None,
    hosts: Hosts = ONE_MACHINE,
    book: PortBook | None = None,
) -> Deployment:
    """Write each node's config file into `run_dir` and return the deployment whose nodes
    start with `python -m KIND --config FILE` (each reached at `hosts.reach(name)`). Ports of 0
    are taken from `book`, which holds them until the launcher closes it (without one, they
    are only free now)."""
    dep = Deployment(topo, run_dir)
    with contextlib.ExitStack() as stack:
        if book is None:
            book = stack.enter_context(PortBook())
        ports = ports or assign_ports(topo, book)
        planned = node_values(topo, ports, links or {}, balancer_ports(topo, book), hosts)
    for name, (model, values) in planned.items():
        cmd = node_command(model, values, run_dir / f"{name}.toml")
        dep.nodes[name] = Node(name, model.kind, cmd, values["http_port"],
                               values.get("rtmp_port", 0), control_port=values.get("control_port", 0),
                               host=hosts.reach(name))  # fmt: skip
    return dep
