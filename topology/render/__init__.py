"""`python -m topology render compose|k8s FILE`: a topology file as a real deployment (Docker
Compose or Kubernetes), with the Dockerfile, a Prometheus scrape config and a Grafana
dashboard beside it. Secrets are generated once into the output directory (secrets.toml,
mode 0600) and kept when rendering again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from topology.render import compose, k8s
from topology.render.dockerfile import dockerfile
from topology.render.loadjob import METRICS_PORT_NAME, load_jobs
from topology.render.monitoring import (
    KIND_LABEL,
    dashboard_json,
    load_pod_monitor,
    prometheus_config,
    service_monitor,
)
from topology.render.nodes import (
    Options,
    RenderError,
    RenderNode,
    plan_nodes,
    read_secrets,
    service_names,
)
from topology.runsecrets import write_private
from topology.schema import Topology

__all__ = ["Options", "RenderError", "render"]

TARGETS = ("compose", "k8s")
DASHBOARD = "grafana-dashboard.json"


def render(target: str, topo: Topology, out: Path, options: Options) -> list[Path]:
    """Write `topo` as `target` ("compose" or "k8s") into directory `out`; the files written."""
    if target not in TARGETS:
        raise RenderError(f"unknown target {target!r} (one of {', '.join(TARGETS)})")
    service_names(topo, target)  # checked before anything is written
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)  # secrets.toml and the secret files are inside
    read_secrets(topo, out)
    nodes = plan_nodes(topo, options, kube=target == "k8s")
    files = (write_compose if target == "compose" else write_k8s)(topo, out, nodes, options)
    files.append(write(out / "Dockerfile", dockerfile()))
    files.append(write(out / DASHBOARD, dashboard_json(topo.name)))
    return files


def write(path: Path, text: str, private: bool = False) -> Path:
    """Write `text` to `path` (readable by the owner only if `private`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        write_private(path, text)
    else:
        path.write_text(text)
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


def write_compose(
    topo: Topology, out: Path, nodes: list[RenderNode], options: Options
) -> list[Path]:
    """compose.yaml, config/NODE.toml, secrets/NODE.env (0600) and prometheus.yml."""
    files = [write(out / "compose.yaml", dump([compose.compose(topo.name, nodes, options.image)]))]
    (out / compose.SECRETS_DIR).mkdir(mode=0o700, exist_ok=True)
    os.chmod(out / compose.SECRETS_DIR, 0o700)
    for n in nodes:
        files.append(write(out / compose.CONFIG_DIR / f"{n.service}.toml", n.config_text))
        env = out / compose.SECRETS_DIR / f"{n.service}.env"
        files.append(write(env, compose.env_file(n), private=True))
    files.append(write(out / "prometheus.yml", dump([prometheus_config(topo.name, nodes)])))
    return files


def write_k8s(topo: Topology, out: Path, nodes: list[RenderNode], options: Options) -> list[Path]:
    """livecdn.yaml (everything but Secrets), secrets.yaml (0600), for the Prometheus
    Operator monitoring/servicemonitor.yaml (the nodes) and load-podmonitor.yaml (the load
    Jobs' players), and the load profiles' Jobs in load/jobs.yaml."""
    name = topo.name
    monitor = service_monitor(name, k8s.instance_labels(name))
    load_monitor = load_pod_monitor(name, k8s.instance_labels(name), METRICS_PORT_NAME)
    files = [
        write(out / "livecdn.yaml", dump(k8s.manifests(name, nodes, options))),
        write(out / "secrets.yaml", dump(k8s.secrets(name, nodes)), private=True),
        write(out / "monitoring" / "servicemonitor.yaml", dump([monitor])),
        write(out / "monitoring" / "load-podmonitor.yaml", dump([load_monitor])),
    ]
    labels = {**k8s.instance_labels(name), KIND_LABEL: "load"}
    jobs = load_jobs(topo, nodes, options.image, labels, players=options.load_players,
                     shards=options.load_shards)  # fmt: skip
    if jobs:
        files.append(write(out / "load" / "jobs.yaml", dump(jobs)))
    else:  # an earlier render's Jobs are not this topology's
        (out / "load" / "jobs.yaml").unlink(missing_ok=True)
    return files


def summary(target: str, out: Path, files: list[Path], image: str) -> str:
    """What was written and how to deploy it (printed by the command)."""
    listed = "\n".join(f"  {p.relative_to(out)}" for p in files)
    if target == "compose":
        how = [f"docker build -t {image} .      (at the repository root)",
               f"cd {out} && docker compose up -d   (--profile monitoring: also Prometheus)"]  # fmt: skip
    else:
        how = [f"docker build -t {image} . && docker push {image}", f"kubectl apply -f {out}"]
        how.append(f"kubectl apply -f {out / 'monitoring'}   (with the Prometheus Operator)")
        if (out / "load").is_dir():
            how.append(f"kubectl apply -f {out / 'load'}   (the load Jobs, when the nodes run)")
    secrets = out / "secrets.toml"
    steps = "\n".join(f"  {line}" for line in how)
    return (f"wrote {out}:\n{listed}\nsecrets (mode 0600, kept when rendering again): "
            f"{secrets}\nthen:\n{steps}")  # fmt: skip
