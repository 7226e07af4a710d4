"""Topology files: a whole deployment in TOML (balancer, origins, edges, publishers),
validated with errors that name the file, the key and what is wrong."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from common.config import BalancerConfig, ConfigError, EdgeConfig, OriginConfig, build
from common.config.model import check_value, keys, layer
from common.config.model import default as config_default
from common.proto.streamkey import StreamKey, StreamKeyError

EXAMPLES = Path(__file__).parent / "examples"


class TopologyError(ValueError):
    """The topology file is invalid."""


@dataclass
class NodeKeys:
    """The keys of a node's config that its topology table sets, checked against the node's
    model (`source` names the table); a key not set reads as the model's default."""

    model: type
    given: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __getitem__(self, key: str) -> Any:
        return self.given[key] if key in self.given else config_default(self.model, key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.given[key] = value


LAUNCHER_KEYS = ("host", "node_id", "balancer")
"""Node keys the launcher sets (nodes listen on 127.0.0.1, or with hosts = "netns" on their
namespace's address, are named after their table and report to the topology's balancer); a
table cannot set them."""


@dataclass
class BalancerSpec:
    """[balancer]: any key of balancer.toml, and `require_play_token`: every play needs a
    signed play URL (the run generates a play_secret unless the table sets one; the
    balancer's play_secret goes to every origin and edge)."""

    require_play_token: bool = False
    config: NodeKeys = field(default_factory=lambda: NodeKeys(BalancerConfig))


@dataclass
class OriginSpec:
    """[[origin]]: its name, and any key of origin.toml."""

    name: str = ""
    config: NodeKeys = field(default_factory=lambda: NodeKeys(OriginConfig))


EXTERNAL_SCHEMES = ("rtmp://", "http://")


def is_external(parent: str) -> bool:
    """Whether a [[edge]] parents entry is the URL of a server outside the topology (rather
    than the name of one of its origins or edges)."""
    return parent.startswith(EXTERNAL_SCHEMES)


@dataclass
class EdgeSpec:
    """[[edge]]: name, parents (names of origins or edges, or rtmp:// or http:// URLs of
    servers outside the topology, used as they are), how and whether it is reached, and any
    key of edge.toml."""

    name: str = ""
    parents: list[str] = field(default_factory=list)
    parent_protocol: str = "rtmp"
    balanced: bool = True  # false: not in the balancer's rotation (e.g. a shield tier)
    config: NodeKeys = field(default_factory=lambda: NodeKeys(EdgeConfig))


NodeSpec = BalancerSpec | OriginSpec | EdgeSpec


@dataclass
class PublisherSpec:
    """[[publisher]]: the built-in synthetic publisher."""

    origin: str = ""
    stream: str = "live/demo"
    size: str = "640x360"
    fps: int = 30
    kbps: int = 1500


@dataclass
class LinkSpec:
    """[[link]]: the network between an edge and one of its parents (emulated by a proxy)."""

    edge: str = ""
    parent: str = ""
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_mbps: float = 0.0
    loss: float = 0.0
    down: bool = False


@dataclass
class LoadProfileSpec:
    """[[load]]: simulated players run against the deployment (through the balancer)."""

    stream: str = ""  # default: the first publisher's stream
    players: int = 100
    duration: str = "60s"
    start_at: str = "0s"
    protocol: str = "flv"
    arrival: str = "ramp"
    ramp: str = "10s"
    profiles: str = "lan"  # client link profiles, e.g. "4g:0.8,3g:0.2"
    viewer_class: str = ""


FAULT_ACTIONS = ("kill", "restart", "drain", "undrain", "degrade", "restore", "down", "up")


@dataclass
class FaultSpec:
    """[[fault]]: something that happens `at` a time after start-up ("20s", "1m30s")."""

    at: str = "0s"
    action: str = ""
    node: str = ""
    edge: str = ""
    parent: str = ""
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_mbps: float = 0.0
    loss: float = 0.0

    @property
    def seconds(self) -> float:
        """`at` in seconds."""
        return parse_duration(self.at)


def parse_duration(text: str) -> float:
    """'90', '20s', '1m30s', '500ms' -> seconds."""
    import re

    t = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", t)
    if not parts or "".join(a + b for a, b in parts) != t:
        raise ValueError(f"bad duration {text!r} (e.g. '20s', '1m30s', '500ms')")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(a) * scale[b] for a, b in parts)


@dataclass
class Topology:
    """A validated topology."""

    path: Path
    name: str
    balancer: BalancerSpec | None
    origins: list[OriginSpec]
    edges: list[EdgeSpec]
    publishers: list[PublisherSpec]
    links: list[LinkSpec] = field(default_factory=list)
    faults: list[FaultSpec] = field(default_factory=list)
    loads: list[LoadProfileSpec] = field(default_factory=list)
    hosts: str = "local"  # "netns": each node in its own network namespace (topology/netns.py)

    def link(self, edge: str, parent: str) -> LinkSpec | None:
        """The emulated link between `edge` and `parent`, if the file has one."""
        return next((x for x in self.links if x.edge == edge and x.parent == parent), None)

    def node(self, name: str) -> OriginSpec | EdgeSpec:
        """An origin or edge by name."""
        for n in [*self.origins, *self.edges]:
            if n.name == name:
                return n
        raise KeyError(name)

    def edges_in_start_order(self) -> list[EdgeSpec]:
        """Edges after the nodes they pull from (edges in a parent cycle are left out)."""
        done: set[str] = {o.name for o in self.origins}
        order: list[EdgeSpec] = []
        pending = list(self.edges)
        progress = True
        while pending and progress:
            progress = False
            for e in list(pending):
                if all(parent in done or is_external(parent) for parent in e.parents):
                    order.append(e)
                    done.add(e.name)
                    pending.remove(e)
                    progress = True
        return order


def resolve(name: str) -> Path:
    """A path, or the name of a shipped example (with or without .toml)."""
    path = Path(name)
    if path.exists():
        return path
    shipped = EXAMPLES / (name if name.endswith(".toml") else f"{name}.toml")
    if shipped.exists():
        return shipped
    examples = ", ".join(sorted(p.name for p in EXAMPLES.glob("*.toml")))
    raise TopologyError(f"{name}: no such file, and not a shipped example ({examples})")


def _build(cls: type, raw: object, where: str):
    if not isinstance(raw, dict):
        raise TopologyError(f"{where}: must be a table")
    known = {f.name: f for f in fields(cls) if f.name != "config"}
    obj = cls()
    node = getattr(obj, "config", None)
    node_keys = keys(node.model) if node is not None else {}
    for key in raw:
        if key not in known and key not in node_keys:
            extra = f"; or a key of {node.model.kind}.toml" if node is not None else ""
            raise TopologyError(f"{where}: unknown key {key!r} (known: {', '.join(known)}{extra})")
        if key not in known and key in LAUNCHER_KEYS:
            raise TopologyError(f"{where}: {key} is set by the launcher, not by the topology")
    for key, value in raw.items():
        if key not in known:
            continue
        default = getattr(obj, key)
        ok = (
            isinstance(value, type(default))
            and not (isinstance(value, bool) and not isinstance(default, bool))
        ) or (isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool))
        if isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            raise TopologyError(f"{where}: {key} must be {type(default).__name__}, got {value!r}")
        setattr(obj, key, float(value) if isinstance(default, float) else value)
    if node is not None:
        given = {k: v for k, v in raw.items() if k not in known}
        try:
            checked = layer(node.model, given, where)
            for key, (value, source) in checked.items():
                check_value(node_keys[key], value, source)
        except ConfigError as exc:
            raise TopologyError(str(exc)) from exc
        node.given = {k: value for k, (value, _) in checked.items()}
        node.source = where
    return obj


HOSTS = ("local", "netns")
"""A topology's top-level `hosts`: every node on 127.0.0.1 ("local"), or each in its own
network namespace at its own address ("netns", as `up --netns`)."""


def load(name: str) -> Topology:
    """Load and validate a topology file (or shipped example)."""
    path = resolve(name)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{path}: not valid TOML: {exc}") from exc
    allowed = {"balancer", "origin", "edge", "publisher", "link", "fault", "load"}
    hosts = raw.pop("hosts", "local")
    if hosts not in HOSTS:
        raise TopologyError(
            f"{path}: hosts must be one of {', '.join(map(repr, HOSTS))}, got {hosts!r}"
        )
    for key in raw:
        if key not in allowed:
            raise TopologyError(
                f"{path}: unknown section [{key}] (known: {', '.join(sorted(allowed))})"
            )
    balancer = (
        _build(BalancerSpec, raw["balancer"], f"{path} [balancer]") if "balancer" in raw else None
    )
    origins = [
        _build(OriginSpec, o, f"{path} [[origin]] #{i + 1}")
        for i, o in enumerate(raw.get("origin", []))
    ]
    edges = [
        _build(EdgeSpec, e, f"{path} [[edge]] #{i + 1}") for i, e in enumerate(raw.get("edge", []))
    ]
    pubs = [
        _build(PublisherSpec, p, f"{path} [[publisher]] #{i + 1}")
        for i, p in enumerate(raw.get("publisher", []))
    ]
    links = [
        _build(LinkSpec, x, f"{path} [[link]] #{i + 1}") for i, x in enumerate(raw.get("link", []))
    ]
    faults = [
        _build(FaultSpec, x, f"{path} [[fault]] #{i + 1}")
        for i, x in enumerate(raw.get("fault", []))
    ]
    loads = [
        _build(LoadProfileSpec, x, f"{path} [[load]] #{i + 1}")
        for i, x in enumerate(raw.get("load", []))
    ]
    topo = Topology(path, path.stem, balancer, origins, edges, pubs, links, faults, loads, hosts)
    _check(topo)
    return topo


def _check_stream(text: str, where: str) -> None:
    """A table's `stream` must be a valid 'app/name' stream key."""
    try:
        StreamKey.from_text(text)
    except StreamKeyError as exc:
        raise TopologyError(f"{where}: stream must be 'app/name': {exc}") from exc


RESERVED = {
    "balancer": "the balancer's own: its config file, log, namespace and service name",
    "secrets": "the run directory's secrets.toml",
}
"""Names an origin or edge cannot have: the launcher uses them (lower case)."""


def name_key(name: str) -> str:
    """What two node names must not share: `name` in lower case, every run of characters
    other than letters and digits as one '-' (file, namespace and service names are made
    from it; 'a:b', 'a_b' and 'A-B' would clash)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower())


def _check(t: Topology) -> None:
    p = t.path
    if not t.origins:
        raise TopologyError(f"{p}: at least one [[origin]] is required")
    names = [n.name for n in [*t.origins, *t.edges]]
    seen: dict[str, str] = {}
    for i, n in enumerate(names):
        if not n:
            raise TopologyError(f"{p}: every origin and edge needs a name")
        if names.index(n) != i:
            raise TopologyError(f"{p}: the name {n!r} is used twice")
        if why := RESERVED.get(n.lower()):
            raise TopologyError(f"{p}: the name {n!r} is reserved ({why}): rename the node")
        if n.startswith(".") or not n.isprintable() or any(c in n for c in "/\\ "):
            raise TopologyError(f"{p}: the name {n!r} cannot name the node's files "
                                "(no '/', '\\', spaces or leading '.')")  # fmt: skip
        if (other := seen.setdefault(name_key(n), n)) != n:
            raise TopologyError(f"{p}: the names {other!r} and {n!r} are too alike (they "
                                "differ only in case or punctuation): rename one")  # fmt: skip
    ports: dict[int, str] = {}
    specs = [*t.origins, *t.edges]
    for spec in specs:
        for attr in ("rtmp_port", "http_port"):
            port = spec.config[attr]
            if port and port in ports:
                raise TopologyError(f"{p}: {spec.name}.{attr} {port} is also {ports[port]}")
            if port:
                ports[port] = f"{spec.name}.{attr}"
    if t.balancer is not None:
        for attr in ("http_port", "control_port"):
            port = t.balancer.config[attr]
            if port and port in ports:
                raise TopologyError(f"{p} [balancer]: {attr} {port} is also {ports[port]}")
            if port:
                ports[port] = f"balancer.{attr}"
    for e in t.edges:
        if not e.parents:
            raise TopologyError(f"{p} edge {e.name!r}: parents is empty")
        if e.parent_protocol not in ("rtmp", "http"):
            raise TopologyError(f"{p} edge {e.name!r}: parent_protocol must be 'rtmp' or 'http'")
        for parent in e.parents:
            if parent not in names and not is_external(parent):
                raise TopologyError(
                    f"{p} edge {e.name!r}: parent {parent!r} is not an origin or edge "
                    "(nor an rtmp:// or http:// URL)"
                )
            if parent == e.name:
                raise TopologyError(f"{p} edge {e.name!r}: cannot be its own parent")
    if len(t.edges_in_start_order()) != len(t.edges):
        raise TopologyError(f"{p}: edges' parents form a cycle")
    for i, link in enumerate(t.links):
        edge = next((e for e in t.edges if e.name == link.edge), None)
        if edge is None or link.parent not in edge.parents or is_external(link.parent):
            raise TopologyError(
                f"{p} [[link]] #{i + 1}: {link.edge!r} -> {link.parent!r} is not an edge and one of its parents"
            )
    for i, fault in enumerate(t.faults):
        where = f"{p} [[fault]] #{i + 1}"
        try:
            fault.seconds  # noqa: B018
        except ValueError as exc:
            raise TopologyError(f"{where}: at: {exc}") from exc
        if fault.action not in FAULT_ACTIONS:
            raise TopologyError(f"{where}: action must be one of {', '.join(FAULT_ACTIONS)}")
        if fault.action in ("kill", "restart", "drain", "undrain") and fault.node not in names:
            raise TopologyError(f"{where}: node {fault.node!r} is not an origin or edge")
        if (
            fault.action in ("degrade", "restore", "down", "up")
            and t.link(fault.edge, fault.parent) is None
        ):
            raise TopologyError(f"{where}: no [[link]] from {fault.edge!r} to {fault.parent!r}")
    for i, pub in enumerate(t.publishers):
        if pub.origin not in {o.name for o in t.origins}:
            raise TopologyError(
                f"{p} [[publisher]] #{i + 1}: origin {pub.origin!r} is not an origin"
            )
        _check_stream(pub.stream, f"{p} [[publisher]] #{i + 1}")
    for i, load in enumerate(t.loads):
        where = f"{p} [[load]] #{i + 1}"
        if not load.stream and not t.publishers:
            raise TopologyError(f"{where}: stream is needed when there is no [[publisher]]")
        if load.stream:
            _check_stream(load.stream, where)
        try:
            load_spec(load).check()
            parse_duration(load.start_at)
        except ValueError as exc:
            raise TopologyError(f"{where}: {exc}") from exc
    _check_node_configs(t)


def _check_node_configs(t: Topology) -> None:
    """Each node's whole config (its table's keys and what the launcher adds) passes the
    checks of its model, with errors naming the table."""
    from topology.plan import node_values  # planning reads topologies: imported when needed

    nodes = [*t.origins, *t.edges]
    specs: dict[str, NodeSpec] = {n.name: n for n in nodes}
    balancer = None
    if t.balancer is not None:
        specs["balancer"] = t.balancer
        # a port of 0 is given a free one at launch; any port stands for it here
        balancer = (t.balancer.config["http_port"], t.balancer.config["control_port"] or 1)
    ports = {n.name: (n.config["rtmp_port"], n.config["http_port"]) for n in nodes}
    planned = node_values(t, ports, {}, balancer)
    if (
        t.balancer is not None
        and t.balancer.config["classes"]
        and not t.balancer.config["qos_secret"]
    ):
        for _, values in planned.values():  # each run generates one (topology.runsecrets)
            if values.get("classes") and not values.get("qos_secret"):
                values["qos_secret"] = "generated at launch"
    for name, (model, values) in planned.items():
        where = specs[name].config.source
        try:
            build(model, values, source=where)
        except ConfigError as exc:
            text = str(exc)
            raise TopologyError(text if text.startswith(where) else f"{where}: {text}") from exc


def load_spec(load: LoadProfileSpec):
    """The crowd settings of a [[load]] profile (durations parsed)."""
    from topology.players.crowd import LoadSpec

    return LoadSpec(
        players=load.players,
        duration=parse_duration(load.duration),
        protocol=load.protocol,
        arrival=load.arrival,
        ramp_s=parse_duration(load.ramp),
        profiles=load.profiles,
        klass=load.viewer_class,
    )


def load_stream(t: Topology, load: LoadProfileSpec) -> str:
    """The stream a [[load]] profile plays."""
    return load.stream or t.publishers[0].stream
