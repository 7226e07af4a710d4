"""The rendered Grafana dashboard asks only for metrics the nodes export: every livecdn_*
name in its PromQL is in the /metrics of a real origin, edges (caching and packaging HLS)
and a balancer, started here on free ports."""

from __future__ import annotations

import re

import trio
from prometheus_client.parser import text_string_to_metric_families

from balancer.server import Balancer
from common.config import BalancerConfig, build
from tests.conftest import start_edge, start_origin
from tests.metrics import scrape
from topology.render.monitoring import dashboard, prometheus_config, queries
from topology.render.nodes import Options, plan_nodes
from topology.schema import load

HANG = 15  # seconds: only a guard against hangs
METRIC = re.compile(r"\blivecdn_[a-z0-9_]+")


def exported(text: str) -> set[str]:
    """The sample names a /metrics text declares (a counter's end in _total)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


async def test_dashboard_queries_name_exported_metrics(nursery: trio.Nursery) -> None:
    with trio.fail_after(HANG):
        b = Balancer(
            build(BalancerConfig, {"host": "127.0.0.1", "http_port": 0, "control_port": 0})
        )
        http, control = await nursery.start(b.run)
        _, o = await start_origin(nursery, node_id="origin", balancer=f"127.0.0.1:{control}")
        reporting = {"node_id": "e1", "balancer": f"127.0.0.1:{control}"}
        _, rtmp_edge = await start_edge(nursery, [f"rtmp://127.0.0.1:{o.rtmp_port}"], **reporting)
        _, hls_edge = await start_edge(
            nursery, [f"http://127.0.0.1:{o.http_port}"], hls_mode="cache", node_id="e2"
        )
        names: set[str] = set()
        for port in (http, o.http_port,
                     rtmp_edge.http_port, hls_edge.http_port):  # fmt: skip
            names |= exported(await scrape(port))
    used = {m for expr in queries(dashboard("t")) for m in METRIC.findall(expr)}
    assert len(used) >= 10
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
