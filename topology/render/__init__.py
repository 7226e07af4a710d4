"""`python -m topology render compose|k8s FILE`: a topology file as a real deployment (Docker
Compose or Kubernetes), with the Dockerfile, a Prometheus scrape config and a Grafana
dashboard beside it. Secrets are generated once into the output directory (secrets.toml,
mode 0600) and kept when rendering again."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from topology.render import compose, k8s
from topology.render.dockerfile import dockerfile
from topology.render.loadjob import METRICS_PORT_NAME, load_jobs
from topology.render.monitoring import (
    KIND_LABEL,
    dashboard_config_map,
    dashboard_json,
    load_pod_monitor,
    prometheus_config,
    service_monitor,
)
from topology.render.nodes import (
    Options,
    RenderError,
    RenderNode,
    new_secrets,
    plan_nodes,
    read_secrets,
    service_names,
)
from topology.runsecrets import FILE as SECRETS_FILE
from topology.runsecrets import write_private
from topology.schema import Topology

__all__ = ["Options", "RenderError", "render"]

TARGETS = ("compose", "k8s")
DASHBOARD = "grafana/dashboard.json"  # apart from what kubectl applies: it is no k8s object
OLD_FILES = ("grafana-dashboard.json",)  # earlier renders' names for files now elsewhere
PUBLIC = 0o644  # config files hold no secrets, the containers' user reads them (secrets: 0600)


@dataclass
class File:
    """A file to write: its path in the output directory, text, and whether it is private."""

    path: str
    text: str
    private: bool = False


def render(target: str, topo: Topology, out: Path, options: Options) -> list[Path]:
    """Write `topo` as `target` ("compose" or "k8s") into directory `out`; the files written.
    Everything that can fail is done before the first file is written."""
    if target not in TARGETS:
        raise RenderError(f"unknown target {target!r} (one of {', '.join(TARGETS)})")
    service_names(topo, target)
    if out.exists() and not out.is_dir():
        raise RenderError(f"{out} is not a directory")
    read_secrets(topo, out)
    secrets_text = new_secrets(topo)
    nodes = plan_nodes(topo, options, kube=target == "k8s")
    files = (compose_files if target == "compose" else k8s_files)(topo, nodes, options)
    files += [File(SECRETS_FILE, secrets_text, private=True),
              File(DASHBOARD, dashboard_json(topo.name))]  # fmt: skip
    docker = dockerfile()
    if docker is not None:
        files.append(File("Dockerfile", docker))
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)  # secrets.toml and the secret files are inside
    written = [write(out / f.path, f.text, f.private) for f in files]
    if target == "compose":
        (out / compose.SECRETS_DIR).chmod(0o700)
    stale = [*OLD_FILES, *([] if any(f.path == JOBS for f in files) else [JOBS])]
    for name in stale:  # an earlier render's, not this one's
        (out / name).unlink(missing_ok=True)
    return written


def write(path: Path, text: str, private: bool = False) -> Path:
    """Write `text` to `path`: mode 0600 if `private`, else 0644 (whatever the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        write_private(path, text)
        return path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PUBLIC)
    os.fchmod(fd, PUBLIC)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


class _Dumper(yaml.SafeDumper):
    """Safe YAML; text of several lines (config files) as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        """Repeated values are written out, not as anchors and aliases."""
        return True


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _text)


def dump(docs: list[dict[str, Any]]) -> str:
    """YAML documents, keys in the order built."""
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def compose_files(topo: Topology, nodes: list[RenderNode], options: Options) -> list[File]:
    """compose.yaml, config/NODE.toml, secrets/NODE.env (private) and prometheus.yml."""
    files = [File("compose.yaml", dump([compose.compose(topo.name, nodes, options.image)]))]
    for n in nodes:
        files.append(File(f"{compose.CONFIG_DIR}/{n.service}.toml", n.config_text))
        files.append(File(f"{compose.SECRETS_DIR}/{n.service}.env", compose.env_file(n), True))
    files.append(File("prometheus.yml", dump([prometheus_config(topo.name, nodes)])))
    return files


JOBS = "load/jobs.yaml"


def k8s_files(topo: Topology, nodes: list[RenderNode], options: Options) -> list[File]:
    """livecdn.yaml (everything but Secrets), secrets.yaml (private), for the Prometheus
    Operator monitoring/servicemonitor.yaml (the nodes) and load-podmonitor.yaml (the load
    Jobs' players), the dashboard as a ConfigMap for Grafana's sidecar in
    monitoring/grafana-dashboard.yaml, and the load profiles' Jobs in load/jobs.yaml."""
    name = topo.name
    instance = k8s.instance_labels(name)
    load_monitor = load_pod_monitor(name, instance, METRICS_PORT_NAME)
    files = [
        File("livecdn.yaml", dump(k8s.manifests(name, nodes, options))),
        File("secrets.yaml", dump(k8s.secrets(name, nodes)), private=True),
        File("monitoring/servicemonitor.yaml", dump([service_monitor(name, instance)])),
        File("monitoring/load-podmonitor.yaml", dump([load_monitor])),
        File("monitoring/grafana-dashboard.yaml", dump([dashboard_config_map(name, instance)])),
    ]
    labels = {**instance, KIND_LABEL: "load"}
    run_id = options.run_id or new_run_id()
    jobs = load_jobs(topo, nodes, options.image, labels, players=options.load_players,
                     shards=options.load_shards, run_id=run_id)  # fmt: skip
    if jobs:
        files.append(File(JOBS, dump(jobs)))
    return files


def new_run_id() -> str:
    """A fresh load run id: when it was rendered, and four random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def summary(target: str, out: Path, files: list[Path], image: str) -> str:
    """What was written and how to deploy it (printed by the command)."""
    listed = "\n".join(f"  {p.relative_to(out)}" for p in files)
    build = f"docker build -t {image} ."
    if out / "Dockerfile" not in files:
        listed += ("\n  (no Dockerfile: render ran outside a checkout of the repository; "
                   "build the image in one)")  # fmt: skip
    if target == "compose":
        how = [f"{build}      (at the repository root)",
               f"cd {out} && docker compose up -d   (--profile monitoring: also Prometheus)"]  # fmt: skip
    else:
        how = [f"{build} && docker push {image}", f"kubectl apply -f {out}"]
        how.append(f"kubectl apply -f {out / 'monitoring'}   (with the Prometheus Operator)")
        if out / JOBS in files:
            how.append(f"kubectl apply -f {out / 'load'}   (the load Jobs, when the nodes run)")
    how.append(f"Grafana: import {out / DASHBOARD}"
               + ("  (or the ConfigMap in monitoring/, for its sidecar)" if target == "k8s" else ""))  # fmt: skip
    secrets = out / SECRETS_FILE
    steps = "\n".join(f"  {line}" for line in how)
    return (f"wrote {out}:\n{listed}\nsecrets (mode 0600, kept when rendering again): "
            f"{secrets}\nthen:\n{steps}")  # fmt: skip
