"""Planning a topology for containers: each node's service name, fixed ports, config (without
its secrets) and the secrets passed as LIVECDN_<KIND>_<KEY> environment variables."""

from __future__ import annotations

import math
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import MODELS, build, keys
from common.config.model import default as config_default
from common.config.model import is_secret
from common.config.sources import env_name
from common.config.toml import dumps
from topology.plan import Hosts, node_values
from topology.runsecrets import FILE as SECRETS_FILE
from topology.runsecrets import ensure_secrets
from topology.schema import NodeSpec, OriginSpec, Topology

SECRET_KEYS = frozenset(k for model in MODELS.values() for k in keys(model) if is_secret(k))
"""Keys that never go into a config file or ConfigMap: they travel as environment variables
(the config model says which keys are secrets)."""

ANY = "0.0.0.0"  # nodes listen on every address of their container
CONFIG_DIR = "/etc/livecdn"  # where a container finds its config file
GRACE = 30  # seconds a node has to stop (more for a draining edge)
NODE_PORT_MAX = 32767  # the end of Kubernetes' default node port range
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


class RenderError(ValueError):
    """The topology cannot be rendered as asked."""


@dataclass
class Options:
    """How to render: the image, and the host viewers reach each edge at."""

    image: str = "livecdn:latest"
    public_hosts: dict[str, str] = field(default_factory=dict)  # edge name -> host
    public_pattern: str = ""  # e.g. "{name}.example.com" for edges not in public_hosts
    service_type: str = "LoadBalancer"  # Kubernetes: how viewers reach the balancer and edges
    node_port_base: int = 30000  # service_type NodePort: the first port given out
    load_players: int | None = None  # k8s load Jobs: players of each [[load]] profile
    load_shards: int | None = None  # k8s load Jobs: shards of each (default: by players)
    run_id: str = ""  # k8s load Jobs: their run's id (default: a new one each render)


@dataclass
class RenderNode:
    """One node as a container: its service, ports, config and secret environment."""

    name: str
    kind: str
    service: str
    ports: dict[str, int]  # "rtmp", "http", "control" -> port (inside and outside alike)
    config: dict[str, Any]  # the config file's values (no secrets)
    secrets: dict[str, str]  # LIVECDN_<KIND>_<KEY> -> value
    viewed: bool  # an edge in the balancer's rotation: viewers reach it from outside
    public_host: str = ""

    @property
    def config_path(self) -> str:
        """The config file's path inside the container."""
        return f"{CONFIG_DIR}/{self.kind}.toml"

    @property
    def config_text(self) -> str:
        """The config file (TOML, as the config model writes it)."""
        return f"# {self.kind} {self.name}: its secrets come from the environment\n" + dumps(
            self.config
        )

    @property
    def command(self) -> list[str]:
        """The arguments after the image's `python -m`."""
        return [self.kind, "--config", self.config_path]

    @property
    def grace_seconds(self) -> int:
        """How long the node may take to stop after SIGTERM: an edge drains its viewers for
        up to its drain_timeout, and then some."""
        model = MODELS[self.kind]
        if "drain_timeout" not in keys(model):
            return GRACE
        drain = self.config.get("drain_timeout", keys(model)["drain_timeout"].default)
        return max(GRACE, math.ceil(drain) + 10)

    @property
    def state_dir(self) -> str:
        """An origin's record_dir ("": it keeps no state), as an absolute container path."""
        path = str(self.config.get("record_dir", ""))
        return path if not path or path.startswith("/") else f"/app/{path}"


def service_name(name: str) -> str:
    """The DNS label a node's service is named by (its name, lower case)."""
    label = name.lower().replace("_", "-")
    if not _DNS_LABEL.fullmatch(label):
        raise RenderError(
            f"node name {name!r} cannot name a service (letters, digits and '-', starting with "
            "a letter, at most 63)"
        )
    return label


EXTRA_SERVICES = {"balancer": ("public",), "origin": ("ingest", "headless")}
"""Kubernetes: the Services a node of a kind has besides the one named after it
(NODE-SUFFIX): the balancer's for viewers, an origin's for publishers and the headless one
its StatefulSet needs."""
COMPOSE_SERVICES = ("prometheus",)  # Compose: services beside the nodes'


def service_names(topo: Topology, target: str = "k8s") -> dict[str, str]:
    """Each node's service name ("balancer" for the balancer); an error when two of the
    services `target` names after nodes would share a name (a node named `origin-ingest`
    and origin's ingest Service) or a name is too long for one."""
    users = named_services(topo, target)
    shared = [f"{s!r} ({' and '.join(who)})" for s, who in users.items() if len(who) > 1]
    if shared:
        raise RenderError(f"two objects would share the service name {', '.join(shared)}: "
                          "rename a node")  # fmt: skip
    long = [s for s in users if len(s) > 63]
    if long:
        raise RenderError(f"service name {long[0]!r} is longer than 63 characters: "
                          "shorten the node's name")  # fmt: skip
    names = (["balancer"] if topo.balancer else []) + [n.name for n in [*topo.origins, *topo.edges]]
    return {name: service_name(name) for name in names}


def named_services(topo: Topology, target: str) -> dict[str, list[str]]:
    """Every service name a render for `target` may use -> what uses it ("node edge1",
    "origin's ingest Service"); Kubernetes objects of other kinds are named after these."""
    specs = [("balancer", "balancer")] if topo.balancer else []
    specs += [(n.name, "origin") for n in topo.origins] + [(n.name, "edge") for n in topo.edges]
    users: dict[str, list[str]] = {}
    for name, kind in specs:
        service = service_name(name)
        users.setdefault(service, []).append(
            "the balancer" if kind == "balancer" else f"node {name}"
        )
        for suffix in EXTRA_SERVICES.get(kind, ()) if target == "k8s" else ():
            users.setdefault(f"{service}-{suffix}", []).append(f"{name}'s {suffix} Service")
    for extra in COMPOSE_SERVICES if target == "compose" else ():
        users.setdefault(extra, []).append(f"the {extra} service")
    return users


def parse_public_hosts(specs: list[str]) -> tuple[dict[str, str], str]:
    """`--public-host` values: EDGE=HOST for one edge, else a pattern for all the others
    ("{name}" is replaced by the edge's name, e.g. "{name}.cdn.example.com", or one host)."""
    named: dict[str, str] = {}
    pattern = ""
    for spec in specs:
        edge, sep, host = spec.partition("=")
        if sep:
            named[edge] = host
        else:
            pattern = spec
    return named, pattern


def read_secrets(topo: Topology, out: Path) -> None:
    """Give `topo`'s nodes the secrets an earlier render left in `out` (where the topology
    file sets none): a render run again keeps its secrets (new_secrets adds the missing)."""
    path = out / SECRETS_FILE
    try:
        kept = tomllib.loads(path.read_text()) if path.exists() else {}
    except tomllib.TOMLDecodeError as exc:
        raise RenderError(f"{path}: not valid TOML ({exc}): fix or remove it") from exc
    specs = {"balancer": topo.balancer} if topo.balancer else {}
    specs |= {n.name: n for n in [*topo.origins, *topo.edges]}
    for name, values in kept.items():
        spec = specs.get(name)
        if spec is None or not isinstance(values, dict):
            continue
        for key, value in values.items():
            if key in wanted(topo, spec) and not spec.config[key]:
                spec.config[key] = value


def new_secrets(topo: Topology) -> str:
    """Generate the secrets `topo`'s nodes still lack; the text of its secrets.toml (written
    with the other files, once everything is checked)."""
    with tempfile.TemporaryDirectory() as scratch:
        return ensure_secrets(topo, Path(scratch)).read_text()


def wanted(topo: Topology, spec: NodeSpec) -> set[str]:
    """The secrets a render generates for node `spec` unless its table sets them (as `up`
    does): a qos_secret only with viewer classes, a play_secret only with
    require_play_token, so that a file that drops them does not get them back."""
    if isinstance(spec, OriginSpec):
        return {"admin_token", "publish_secret"}
    if spec is not topo.balancer:
        return {"admin_token"}
    classes, signed = spec.config["classes"], spec.require_play_token
    return (
        {"admin_token", "cluster_secret"}
        | ({"qos_secret"} if classes else set())
        | ({"play_secret"} if signed else set())
    )


def assign_ports(topo: Topology, options: Options, kube: bool) -> dict[str, dict[str, int]]:
    """Each node's ports: the topology file's (0: the kind's default, moved past ports taken),
    the same inside the container and outside, because an edge advertises the port it listens
    on. Kubernetes NodePort services: balanced edges get ports from node_port_base (the node
    port is the port they listen on and advertise)."""
    node_port = kube and options.service_type == "NodePort"
    nodes = [("balancer", topo.balancer)] if topo.balancer else []
    nodes += [(n.name, n) for n in [*topo.origins, *topo.edges]]
    wanted_ports = {}
    for name, spec in nodes:
        whats = ("http", "control") if spec is topo.balancer else ("rtmp", "http")
        for what in whats:
            given = spec.config[f"{what}_port"]
            if node_port and is_edge(topo, name):
                given = 0  # given out from node_port_base below
            wanted_ports[(name, what)] = given
    taken = {port for port in wanted_ports.values() if port}
    out: dict[str, dict[str, int]] = {name: {} for name, _ in nodes}
    specs = dict(nodes)
    for (name, what), port in wanted_ports.items():
        if not port:
            default = config_default(specs[name].config.model, f"{what}_port")
            port = options.node_port_base if node_port and is_edge(topo, name) else default
            while port in taken:
                port += 1
            taken.add(port)
        if node_port and is_edge(topo, name) and port > NODE_PORT_MAX:
            raise RenderError(f"{name}: no node port left (the range ends at {NODE_PORT_MAX})")
        out[name][what] = port
    return out


def is_edge(topo: Topology, name: str) -> bool:
    """Whether node `name` is an edge in the balancer's rotation (viewers reach it)."""
    return any(e.name == name and e.balanced for e in topo.edges)


def plan_nodes(topo: Topology, options: Options, *, kube: bool) -> list[RenderNode]:
    """Every node of `topo` planned for containers (the secrets already set in `topo`, see
    read_secrets): listening on all addresses on fixed ports, reaching each other by service
    name, edges advertising their public host (default: their service name)."""
    services = service_names(topo, "k8s" if kube else "compose")
    ports = assign_ports(topo, options, kube)
    names = list(ports)
    public = {}
    for e in topo.edges:  # edges out of rotation advertise nothing, unless named
        host = options.public_hosts.get(e.name)
        if e.balanced and not host:
            host = options.public_pattern.replace("{name}", e.name) or services[e.name]
        if host:
            public[e.name] = host
    unknown = set(options.public_hosts) - {e.name for e in topo.edges}
    if unknown:
        raise RenderError(f"--public-host names no edge: {', '.join(sorted(unknown))}")
    hosts = Hosts(listen=dict.fromkeys(names, ANY), address=services, public=public, default=ANY)
    pairs = {n: (p["rtmp"], p["http"]) for n, p in ports.items() if "rtmp" in p}
    balancer = (ports["balancer"]["http"], ports["balancer"]["control"]) if topo.balancer else None
    planned = node_values(topo, pairs, {}, balancer, hosts)
    out = []
    for name, (model, values) in planned.items():
        build(model, values, source=f"{topo.path} {name}")  # the whole config must be valid
        config = {k: v for k, v in values.items() if k not in SECRET_KEYS}
        secrets = {env_name(model, k): v for k, v in values.items() if k in SECRET_KEYS and v}
        host = values.get("public_host", "")
        out.append(RenderNode(name, model.kind, services[name], ports[name], config, secrets,
                              is_edge(topo, name), host))  # fmt: skip
    return out
