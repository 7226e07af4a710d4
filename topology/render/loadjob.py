"""A topology's [[load]] profiles as Kubernetes Indexed Jobs: shard I of N runs `python -m
topology load --url ... --shard I/N` against the balancer's Service (the whole run's players,
arrivals and profiles, split), writing its results to a shared volume; a second Job merges
the shards (`python -m topology load merge`)."""

from __future__ import annotations

import math
from typing import Any

from common.config import BalancerConfig
from common.config.sources import env_name
from topology.players.crowd import PLAY_SECRET_ENV, QOS_SECRET_ENV
from topology.render.nodes import RenderError, RenderNode, service_name
from topology.schema import LoadProfileSpec, Topology, load_stream, parse_duration

PLAYERS_PER_SHARD = 1000  # default split: about what one process plays (~1500 at most)
RESULTS = "/results"
RESULTS_STORAGE = "1Gi"
INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
SUFFIX = {"flv": ".flv", "hls": ".m3u8"}
WAIT_MORE = 900  # seconds a Job may run beyond its load's ramp and duration
METRICS_PORT = 9400  # each shard's /metrics: its players' QoE (load --metrics-port)
METRICS_PORT_NAME = "metrics"  # the container port the PodMonitor scrapes


def profiles(topo: Topology, players: int | None) -> list[LoadProfileSpec]:
    """The file's [[load]] profiles (their players replaced by `players` if given), or one
    default profile of `players` on the first publisher's stream."""
    if topo.loads:
        return [
            LoadProfileSpec(**{**p.__dict__, "players": players}) if players else p
            for p in topo.loads
        ]
    if not players:
        return []
    return [LoadProfileSpec(stream=topo.publishers[0].stream if topo.publishers else "live/demo",
                            players=players)]  # fmt: skip


def load_args(
    load: LoadProfileSpec, url: str, shards: int, out: str, run_id: str = ""
) -> list[str]:
    """The command of a shard (after the image's `python -m`) of run `run_id`, writing into
    `out`; $(JOB_COMPLETION_INDEX) is expanded by Kubernetes."""
    duration, ramp = parse_duration(load.duration), parse_duration(load.ramp)
    args = ["topology", "load", "--url", url, "--players", str(load.players),
            "--duration", f"{duration:g}", "--arrival", load.arrival, "--ramp", f"{ramp:g}",
            "--profiles", load.profiles]  # fmt: skip
    if load.viewer_class:
        args += ["--class", load.viewer_class]
    args += ["--metrics-port", str(METRICS_PORT), "--metrics-host", "0.0.0.0"]
    if run_id:
        args += ["--run-id", run_id]
    return [*args, "--shard", f"$(JOB_COMPLETION_INDEX)/{shards}", "--out", out]


def secret_env(balancer: RenderNode) -> list[dict[str, Any]]:
    """The players' secrets, from the balancer's Secret: its play_secret (signed play URLs)
    and qos_secret (class tokens)."""
    out = []
    for var, key in ((PLAY_SECRET_ENV, "play_secret"), (QOS_SECRET_ENV, "qos_secret")):
        name = env_name(BalancerConfig, key)
        if name in balancer.secrets:
            ref = {"name": f"{balancer.service}-secrets", "key": name}
            out.append({"name": var, "valueFrom": {"secretKeyRef": ref}})
    return out


def load_jobs(
    topo: Topology,
    nodes: list[RenderNode],
    image: str,
    labels: dict[str, str],
    *,
    players: int | None = None,
    shards: int | None = None,
    run_id: str = "",
) -> list[dict[str, Any]]:
    """A results volume, then per profile an Indexed Job of its shards and a merge Job. The
    volume outlives the Jobs: the shards of run `run_id` write into a folder of their own,
    and the merge takes only that run's files."""
    balancer = next((n for n in nodes if n.kind == "balancer"), None)
    chosen = profiles(topo, players)
    if not chosen:
        return []
    if balancer is None:
        raise RenderError("load Jobs play through the balancer: the topology has none")
    volume_name = f"{service_name(topo.name)}-load-results"
    docs: list[dict[str, Any]] = [{
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": volume_name, "labels": labels},
        "spec": {"accessModes": ["ReadWriteMany"],
                 "resources": {"requests": {"storage": RESULTS_STORAGE}}},
    }]  # fmt: skip
    for i, load in enumerate(chosen):
        if load.protocol not in SUFFIX:
            raise RenderError(f"[[load]] #{i + 1}: protocol {load.protocol!r} is not rendered "
                              "as a Job (the players go through the balancer: flv or hls)")  # fmt: skip
        n = shards or max(1, math.ceil(load.players / PLAYERS_PER_SHARD))
        url = (f"http://{balancer.service}:{balancer.ports['http']}/"
               f"{load_stream(topo, load)}{SUFFIX[load.protocol]}")  # fmt: skip
        name = f"{service_name(topo.name)}-load-{i + 1}"
        out = f"{RESULTS}/{name}/{run_id}" if run_id else f"{RESULTS}/{name}"
        index = {"name": "JOB_COMPLETION_INDEX",
                 "valueFrom": {"fieldRef": {"fieldPath": INDEX_ANNOTATION}}}  # fmt: skip
        args = load_args(load, url, n, out, run_id)
        shard = container(image, args, [index, *secret_env(balancer)])
        shard["ports"] = [{"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT,
                           "protocol": "TCP"}]  # fmt: skip
        deadline = int(parse_duration(load.ramp) + parse_duration(load.duration)) + WAIT_MORE
        docs.append(job(name, labels, volume_name, shard, completions=n, deadline=deadline,
                        annotations=SCRAPE))  # fmt: skip
        files = f"{out}/load-shard-*-of-{n}.json"
        wait = f"until [ $$(ls {files} 2>/dev/null | wc -l) -ge {n} ]; do sleep 5; done"
        check = f" --run-id {run_id}" if run_id else ""
        merge = f"{wait}; exec python -m topology load merge{check} {files}"
        docs.append(job(f"{name}-merge", labels, volume_name,
                        container(image, ["sh", "-c", merge], [], entrypoint=True),
                        deadline=deadline))  # fmt: skip
    return docs


def container(
    image: str, args: list[str], env: list[dict[str, Any]], entrypoint: bool = False
) -> dict[str, Any]:
    """A container of the image with the results volume; `args` after the image's
    `python -m`, or (`entrypoint`) the whole command."""
    out: dict[str, Any] = {"name": "load", "image": image, "args": args, "env": env,
                           "volumeMounts": [{"name": "results", "mountPath": RESULTS}],
                           "resources": {"requests": {"cpu": "1", "memory": "512Mi"}}}  # fmt: skip
    if entrypoint:
        out["command"] = out.pop("args")
    return out


SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
          "prometheus.io/path": "/metrics"}  # fmt: skip
"""A shard pod's annotations, for a Prometheus that discovers pods by them."""


def job(
    name: str,
    labels: dict[str, str],
    volume: str,
    box: dict[str, Any],
    completions: int = 0,
    deadline: int = 0,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Job of `box`: Indexed with `completions` shards, all at once; ended after
    `deadline` seconds if given; its pods with `annotations`."""
    spec: dict[str, Any] = {"backoffLimit": 0}
    if completions:
        spec |= {"completionMode": "Indexed", "completions": completions,
                 "parallelism": completions}  # fmt: skip
    if deadline:
        spec["activeDeadlineSeconds"] = deadline
    spec["template"] = {
        "metadata": {"labels": labels, **({"annotations": annotations} if annotations else {})},
        "spec": {"restartPolicy": "Never", "containers": [box],
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
                 "volumes": [{"name": "results",
                              "persistentVolumeClaim": {"claimName": volume}}]},
    }  # fmt: skip
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": labels}, "spec": spec}  # fmt: skip
