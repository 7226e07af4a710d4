"""A topology as a Docker Compose project: one service per node (its config file as a compose
config, its secrets from an env file of mode 0600), health checks on /healthz, the nodes'
viewer-facing ports published on the host (the origin's API and Prometheus on its loopback
only), and Prometheus (profile "monitoring")."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from topology.render.nodes import RenderError, RenderNode

CONFIG_DIR = "config"  # beside compose.yaml: each node's config file
SECRETS_DIR = "secrets"  # beside compose.yaml: each node's env file (mode 0600)
PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"
RESERVED = {"balancer": ("0.10", "64M"), "origin": ("0.50", "256M"), "edge": ("0.50", "256M")}
"""Each kind's CPU and memory reservation (as the Kubernetes requests)."""


def healthcheck(port: int) -> dict[str, Any]:
    """A health check: GET /healthz inside the container (the image has Python, no curl)."""
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=3)"
    return {"test": ["CMD", "python", "-c", probe], "interval": "5s", "timeout": "4s",
            "retries": 3, "start_period": "10s"}  # fmt: skip


def is_address(host: str) -> bool:
    """Whether `host` is an IP address (not a name the compose network could alias)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


LOOPBACK = "127.0.0.1"
"""Where ports only the operator needs are published: the host's loopback."""


def published(node: RenderNode, *, has_edges: bool) -> list[str]:
    """The host ports of a node: the balancer's HTTP port, an edge's RTMP and HTTP ports, an
    origin's RTMP port (ingest). With edges, an origin's HTTP port (its API, and plays that
    should go through the edges) is published on the host's loopback only; the balancer's
    control port stays inside the project's network."""
    out = []
    for what in ("rtmp", "http"):
        if what not in node.ports:
            continue
        port = node.ports[what]
        local = node.kind == "origin" and what == "http" and has_edges
        out.append(f"{LOOPBACK}:{port}:{port}" if local else f"{port}:{port}")
    return out


def service(node: RenderNode, image: str, nodes: dict[str, RenderNode]) -> dict[str, Any]:
    """The compose service of one node."""
    cpus, memory = RESERVED[node.kind]
    svc: dict[str, Any] = {
        "image": image,
        "command": node.command,
        "configs": [{"source": node.service, "target": node.config_path}],
        "env_file": [f"{SECRETS_DIR}/{node.service}.env"],
        "ports": published(node, has_edges=any(n.kind == "edge" for n in nodes.values())),
        "healthcheck": healthcheck(node.ports["http"]),
        "restart": "unless-stopped",
        "stop_grace_period": f"{node.grace_seconds}s",
        "deploy": {"resources": {"reservations": {"cpus": cpus, "memory": memory}}},
    }
    waits = parents_of(node, nodes)
    if waits:
        svc["depends_on"] = {s: {"condition": "service_healthy"} for s in waits}
    host = node.public_host
    if node.kind == "edge" and host and host != node.service and not is_address(host):
        # the balancer health-checks an edge at its public host: inside the network, the
        # name reaches the edge itself
        svc["networks"] = {"default": {"aliases": [host]}}
    if node.state_dir:
        svc["volumes"] = [f"{node.service}-records:{node.state_dir}"]
    return svc


def parents_of(node: RenderNode, nodes: dict[str, RenderNode]) -> list[str]:
    """The services a node needs first: the balancer it reports to, the parents it pulls."""
    by_service = {n.service: n for n in nodes.values()}
    out = []
    balancer = str(node.config.get("balancer", ""))
    if balancer.rpartition(":")[0] in by_service:
        out.append(balancer.rpartition(":")[0])
    for url in node.config.get("parents", []):
        host = url.split("://", 1)[-1].rsplit(":", 1)[0]
        if host in by_service and host not in out:
            out.append(host)
    return out


def compose(name: str, nodes: list[RenderNode], image: str) -> dict[str, Any]:
    """The compose file of a topology named `name`."""
    by_name = {n.name: n for n in nodes}
    services = {n.service: service(n, image, by_name) for n in nodes}
    services["prometheus"] = {
        "image": PROMETHEUS_IMAGE,
        "profiles": ["monitoring"],
        "volumes": ["./prometheus.yml:/etc/prometheus/prometheus.yml:ro"],
        "ports": [f"{LOOPBACK}:9090:9090"],  # its query API has no authentication
    }
    doc: dict[str, Any] = {
        "name": f"livecdn-{name}".lower(),
        "services": services,
        "configs": {n.service: {"file": f"./{CONFIG_DIR}/{n.service}.toml"} for n in nodes},
    }
    volumes = {f"{n.service}-records": {} for n in nodes if n.state_dir}
    if volumes:
        doc["volumes"] = volumes
    return doc


def env_file(node: RenderNode) -> str:
    """A node's secrets as an env file (LIVECDN_<KIND>_<KEY>=value)."""
    lines = [f"# {node.name}'s secrets (keep private)"]
    lines += [f"{var}={env_value(value)}" for var, value in sorted(node.secrets.items())]
    return "\n".join(lines) + "\n"


_PLAIN = re.compile(r"[A-Za-z0-9._~+/=@:-]*")


def env_value(value: str) -> str:
    """A value as an env file line holds it literally: plain, else in single quotes (taken
    as they are, no interpolation)."""
    if _PLAIN.fullmatch(value):
        return value
    if "'" in value or "\n" in value:
        raise RenderError("a secret with a quote or a line break cannot go into an env file")
    return f"'{value}'"
