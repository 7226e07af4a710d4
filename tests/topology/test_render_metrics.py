"""The rendered Grafana dashboard asks only for metrics the nodes and load runs export: every
livecdn_* name in its PromQL is in the /metrics of a real origin, edges (caching and
packaging HLS) and a balancer, started here on free ports, or of a short load run
(`load --metrics-port`) against that origin."""

from __future__ import annotations

import re
from pathlib import Path

import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from balancer.server import Balancer
from common.config import BalancerConfig, build
from tests.conftest import start_edge, start_origin, wait_for_stream
from tests.media import publish_synthetic
from tests.metrics import scrape
from topology.__main__ import parse_args
from topology.loadmetrics import serve_metrics
from topology.loadrun import run_load
from topology.players.crowd import LoadSpec
from topology.players.player import Target
from topology.render import render
from topology.render.monitoring import dashboard, prometheus_config, queries
from topology.render.nodes import Options, plan_nodes
from topology.schema import load

HANG = 15  # seconds: only a guard against hangs
METRIC = re.compile(r"\blivecdn_[a-z0-9_]+")


def exported(text: str) -> set[str]:
    """The sample names a /metrics text declares (a counter's end in _total) or holds (a
    histogram's _bucket, _sum and _count)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
        names |= {s.name for s in family.samples}
    return names


async def load_run_metrics(origin_http: int, tmp_path: Path) -> str:
    """The /metrics of a short load run (3 players) against the origin's live/m, at its end."""
    metrics, server = serve_metrics("127.0.0.1", 0)
    try:
        target = Target.direct(f"http://127.0.0.1:{origin_http}/live/m.flv")
        spec = LoadSpec(players=3, duration=2.0, ramp_s=0.2, profiles="lan:2,3g:1")
        await run_load(target, spec, out_dir=tmp_path, quiet=True, metrics=metrics)
        return await scrape(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


async def test_dashboard_queries_name_exported_metrics(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(HANG):
        b = Balancer(
            build(BalancerConfig, {"host": "127.0.0.1", "http_port": 0, "control_port": 0})
        )
        http, control = await nursery.start(b.run)
        origin, o = await start_origin(nursery, node_id="origin", balancer=f"127.0.0.1:{control}")
        reporting = {"node_id": "e1", "balancer": f"127.0.0.1:{control}"}
        _, rtmp_edge = await start_edge(nursery, [f"rtmp://127.0.0.1:{o.rtmp_port}"], **reporting)
        _, hls_edge = await start_edge(
            nursery, [f"http://127.0.0.1:{o.http_port}"], hls_mode="cache", node_id="e2"
        )
        names: set[str] = set()
        for port in (http, o.http_port,
                     rtmp_edge.http_port, hls_edge.http_port):  # fmt: skip
            names |= exported(await scrape(port))
        await publish_synthetic(nursery, f"rtmp://127.0.0.1:{o.rtmp_port}/live/m")
        await wait_for_stream(origin, "live", "m")
        names |= exported(await load_run_metrics(o.http_port, tmp_path))
    used = {m for expr in queries(dashboard("t")) for m in METRIC.findall(expr)}
    assert len(used) >= 10
    assert len({m for m in used if m.startswith("livecdn_load_")}) >= 7, "the load run's row"
    assert used <= names, f"not exported: {sorted(used - names)}"


def test_dashboard_labels_come_from_the_scrape_config() -> None:
    """The dashboard groups by `node` and filters by `kind`: the labels the rendered scrape
    config gives every target."""
    nodes = plan_nodes(load("three-edge"), Options(), kube=False)
    targets = prometheus_config("three-edge", nodes)["scrape_configs"][0]["static_configs"]
    assert {t["labels"]["kind"] for t in targets} == {"balancer", "origin", "edge"}
    assert sorted(t["labels"]["node"] for t in targets) == sorted(n.name for n in nodes)
    kinds = {k for expr in queries(dashboard("t")) for k in re.findall(r'kind="(\w+)"', expr)}
    assert kinds <= {"balancer", "origin", "edge"}


def test_load_jobs_expose_the_players_metrics(tmp_path: Path) -> None:
    """Each load shard serves its players' QoE on a named container port that its pod's
    prometheus.io annotations and the rendered PodMonitor point at; the merge pods serve none."""
    out = tmp_path / "out"
    render("k8s", load("three-edge"), out, Options(load_players=10, load_shards=2))
    jobs = [d for d in yaml.safe_load_all((out / "load" / "jobs.yaml").read_text())
            if d["kind"] == "Job"]  # fmt: skip
    (monitor,) = yaml.safe_load_all((out / "monitoring" / "load-podmonitor.yaml").read_text())
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    shards = [j for j in jobs if j["spec"].get("completionMode") == "Indexed"]
    assert len(shards) == 1 and len(jobs) == 2
    for job in jobs:
        pod = job["spec"]["template"]
        assert (
            monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        )
        (box,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in box.get("ports", [])}
        if job not in shards:
            assert endpoint["port"] not in ports, "the merge Job serves no metrics"
            continue
        args = parse_args([a.replace("$(JOB_COMPLETION_INDEX)", "1") for a in box["args"][1:]])
        assert (args.metrics_host, args.metrics_port) == ("0.0.0.0", ports[endpoint["port"]])
        notes = pod["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert int(notes["prometheus.io/port"]) == args.metrics_port
