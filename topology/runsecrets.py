"""A topology's own secrets: each run generates what its file does not set (a publish_secret
per origin, an admin_token per node, a qos_secret for the balancer's viewer classes, a
cluster_secret for its control plane, a play_secret with [balancer] require_play_token, the
console_token of the launcher's control API) and keeps them in the run directory's secrets.toml
(mode 0600), so `topology up` is secure with no extra steps."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from topology.files import table
from topology.schema import OriginSpec, Topology

FILE = "secrets.toml"
PRIVATE = 0o600


def generate() -> str:
    """A new secret (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def ensure_secrets(topo: Topology, run_dir: Path, *, console_token: str = "") -> Path:
    """Give every origin a publish_secret and every node an admin_token where the topology
    file sets none (in `topo`'s node configs, which the plan writes and the publisher and
    faults read); write each node's secrets to `run_dir`/secrets.toml, readable only by
    the owner; its path. Viewer classes of the balancer without a qos_secret get one, and
    the balancer a cluster_secret, which the plan passes on to the edges (and origins);
    with `require_play_token`, the balancer a play_secret, passed on to every origin and
    edge. A `console_token` (the launcher's control API's) is kept as [console]."""
    b = topo.balancer
    if b is not None and b.config["classes"] and not b.config["qos_secret"]:
        b.config["qos_secret"] = generate()
    if b is not None and b.require_play_token and not b.config["play_secret"]:
        b.config["play_secret"] = generate()
    nodes = [*([topo.balancer] if topo.balancer else []), *topo.origins, *topo.edges]
    tables = ["# this run's secrets (generated where the topology file sets none)\n"]
    for spec in nodes:
        keys = ["admin_token"] + (["publish_secret"] if isinstance(spec, OriginSpec) else [])
        if spec is topo.balancer:
            keys += ["cluster_secret"] + (["qos_secret"] if spec.config["qos_secret"] else [])
            keys += ["play_secret"] if spec.config["play_secret"] else []
        for key in keys:
            if not spec.config[key]:
                spec.config[key] = generate()
        name = getattr(spec, "name", "balancer")
        tables.append(table(f"[{name}]", {k: spec.config[k] for k in keys}))
    if console_token:
        tables.append(table("[console]", {"console_token": console_token}))
    path = run_dir / FILE
    write_private(path, "\n".join(tables))
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, created (or left) readable and writable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    os.fchmod(fd, PRIVATE)
    with os.fdopen(fd, "w") as f:
        f.write(text)
