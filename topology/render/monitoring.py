"""Monitoring beside a rendered deployment: a Prometheus scrape config (static targets by
service name), a Prometheus Operator ServiceMonitor, and a Grafana dashboard whose queries
use the metrics the nodes export (common/serve/metrics.py: livecdn_*), labelled by `node`
and `kind`."""

from __future__ import annotations

import json
from typing import Any

from topology.render.nodes import RenderNode

SCRAPE_INTERVAL = "5s"


def prometheus_config(name: str, nodes: list[RenderNode]) -> dict[str, Any]:
    """prometheus.yml: every node's /metrics at its service name, labelled node and kind."""
    targets = [
        {"targets": [f"{n.service}:{n.ports['http']}"], "labels": {"node": n.name, "kind": n.kind}}
        for n in nodes
    ]
    job = {"job_name": f"livecdn-{name}", "scrape_interval": SCRAPE_INTERVAL,
           "metrics_path": "/metrics", "static_configs": targets}  # fmt: skip
    return {"global": {"scrape_interval": SCRAPE_INTERVAL}, "scrape_configs": [job]}


NODE_LABEL = "livecdn-node"  # Kubernetes labels of every object: which node, which kind
KIND_LABEL = "livecdn-kind"
SCRAPE_LABEL = "livecdn-scrape"  # on the one Service per node the ServiceMonitor scrapes


def service_monitor(name: str, instance_labels: dict[str, str]) -> dict[str, Any]:
    """A ServiceMonitor (Prometheus Operator) for every node's Service labelled SCRAPE_LABEL:
    /metrics on the port named http, with the node and kind labels the dashboard uses."""

    def label(source: str, target: str) -> dict[str, Any]:
        meta = "__meta_kubernetes_service_label_" + source.replace("-", "_")
        return {"sourceLabels": [meta], "targetLabel": target}

    endpoint = {"port": "http", "path": "/metrics", "interval": SCRAPE_INTERVAL,
                "relabelings": [label(NODE_LABEL, "node"), label(KIND_LABEL, "kind")]}  # fmt: skip
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": f"livecdn-{name}", "labels": instance_labels},
        "spec": {
            "selector": {"matchLabels": {**instance_labels, SCRAPE_LABEL: "true"}},
            "endpoints": [endpoint],
        },
    }


DASHBOARD_LABEL = "grafana_dashboard"  # Grafana's dashboard sidecar loads ConfigMaps labelled so


def dashboard_config_map(name: str, instance_labels: dict[str, str]) -> dict[str, Any]:
    """The dashboard as a ConfigMap, for a Grafana whose sidecar loads labelled ConfigMaps
    (e.g. kube-prometheus-stack's)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"livecdn-{name}-dashboard".lower().replace("_", "-"),
            "labels": {**instance_labels, DASHBOARD_LABEL: "1"},
        },
        "data": {f"livecdn-{name}.json": dashboard_json(name)},
    }


def load_pod_monitor(name: str, instance_labels: dict[str, str], port: str) -> dict[str, Any]:
    """A PodMonitor (Prometheus Operator) for the load Jobs' shard pods (labelled KIND_LABEL
    load): the players' QoE on their container port named `port`, with the Job's name as
    label `load_job`."""
    job_name = {"sourceLabels": ["__meta_kubernetes_pod_label_job_name"],
                "targetLabel": "load_job"}  # fmt: skip
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": f"livecdn-{name}-load", "labels": instance_labels},
        "spec": {
            "selector": {"matchLabels": {**instance_labels, KIND_LABEL: "load"}},
            "podMetricsEndpoints": [{"port": port, "path": "/metrics",
                                     "interval": SCRAPE_INTERVAL, "relabelings": [job_name]}],
        },
    }  # fmt: skip


RATE = "[1m]"
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    # (title, unit, [(PromQL, legend)])
    ("Viewers per edge", "short", [('sum by (node) (livecdn_viewers{kind="edge"})', "{{node}}")]),
    ("Egress per edge", "bps",
     [(f'sum by (node) (rate(livecdn_bytes_out_total{{kind="edge"}}{RATE})) * 8', "{{node}}")]),
    ("Upstreams (pulls from parents) per edge", "short",
     [("sum by (node) (livecdn_upstreams)", "{{node}}")]),
    ("Back to source per edge", "bps",
     [(f"sum by (node) (rate(livecdn_back_to_source_bytes_total{RATE})) * 8", "{{node}}")]),
    ("Cache hit ratio (bytes served per byte fetched; HLS objects)", "percentunit", [
        ('1 - sum by (node) (rate(livecdn_back_to_source_bytes_total[5m])) / clamp_min(sum by '
         '(node) (rate(livecdn_bytes_out_total{kind="edge"}[5m])), 1)', "{{node}} bytes"),
        ("sum by (node) (rate(livecdn_hls_cache_hits_total[5m])) / clamp_min(sum by (node) "
         "(rate(livecdn_hls_cache_hits_total[5m]) + rate(livecdn_hls_cache_misses_total[5m])), "
         "1e-9)", "{{node}} HLS objects"),
    ]),
    ("Dropped frames and slow viewers", "short", [
        (f"sum by (node) (rate(livecdn_frames_dropped_total{RATE}))", "{{node}} frames/s"),
        (f"sum by (node) (rate(livecdn_slow_viewer_disconnects_total{RATE}))",
         "{{node}} slow viewers cut/s"),
    ]),
    ("Balancer routes per edge", "reqps",
     [(f"sum by (edge) (rate(livecdn_routes_total{RATE}))", "{{edge}}")]),
    ("Balancer rejects by reason", "reqps",
     [(f"sum by (reason) (rate(livecdn_rejects_total{RATE}))", "{{reason}}")]),
    ("Edges in and out of rotation", "short",
     [("sum by (state) (livecdn_edges)", "{{state}}")]),
    ("Pull failures and refusals by reason", "short", [
        (f"sum by (node, reason) (rate(livecdn_pull_failures_total{RATE}))", "{{node}} {{reason}}"),
        (f"sum by (node, reason) (rate(livecdn_connections_refused_total{RATE}))",
         "{{node}} refused {{reason}}"),
    ]),
    ("Origin streams and publishers", "short", [
        ('sum by (node) (livecdn_streams{kind="origin"})', "{{node}} streams"),
        ('sum by (node) (livecdn_publishers{kind="origin"})', "{{node}} publishers"),
    ]),
    ("Origin ingest", "bps",
     [(f'sum by (node) (rate(livecdn_bytes_in_total{{kind="origin"}}{RATE})) * 8', "{{node}}")]),
]  # fmt: skip


LOAD_ROW = "Load run (simulated players)"
PLAYING = 'state=~"playing|stalled"'
LOAD_PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    # the players' QoE, from `topology load --metrics-port` (topology/loadmetrics.py)
    ("Players by state", "short",
     [("sum by (run, state) (livecdn_load_players)", "{{run}} {{state}}")]),
    ("Players playing per shard and profile", "short",
     [(f"sum by (run, shard, profile) (livecdn_load_players{{{PLAYING}}})",
       "{{run}} {{shard}} {{profile}}")]),
    ("Time to first frame (players so far)", "s", [
        (f"histogram_quantile({q}, sum by (run, le) (livecdn_load_ttff_seconds_bucket))",
         f"{{{{run}}}} p{round(q * 100)}") for q in (0.5, 0.95)]),
    ("Latency, ingest to screen", "s", [
        (f"histogram_quantile({q}, sum by (run, le) "
         f"(rate(livecdn_load_latency_seconds_bucket{RATE})))", f"{{{{run}}}} p{round(q * 100)}")
        for q in (0.5, 0.95)]),
    ("Rebuffering (stalled seconds per second played) by profile", "percentunit",
     [(f"sum by (run, profile) (rate(livecdn_load_stall_seconds_total{RATE})) / clamp_min(sum "
       f"by (run, profile) (livecdn_load_players{{{PLAYING}}}), 1)", "{{run}} {{profile}}")]),
    ("Stalls by profile", "short",
     [(f"sum by (run, profile) (increase(livecdn_load_stalls_total{RATE}))",
       "{{run}} {{profile}} stalls/min")]),
    ("Reconnects and failed sessions", "short", [
        (f"sum by (run) (increase(livecdn_load_reconnects_total{RATE}))", "{{run}} reconnects/min"),
        (f"sum by (run, kind) (increase(livecdn_load_session_failures_total{RATE}))",
         "{{run}} {{kind}} failures/min")]),
    ("Received per player by profile", "bps",
     [(f"sum by (run, profile) (rate(livecdn_load_received_bytes_total{RATE})) * 8 / clamp_min("
       f"sum by (run, profile) (livecdn_load_players{{{PLAYING}}}), 1)", "{{run}} {{profile}}")]),
]  # fmt: skip


def dashboard(name: str) -> dict[str, Any]:
    """The Grafana dashboard (JSON model, importable; its Prometheus data source is chosen
    with the `datasource` variable): the nodes' panels, then a row of the load runs'."""
    source = {"type": "prometheus", "uid": "${datasource}"}
    panels = _panels(PANELS, source, first_id=1, top=0)
    top = 8 * ((len(PANELS) + 1) // 2)
    panels.append({"id": len(panels) + 1, "type": "row", "title": LOAD_ROW, "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": top}, "panels": []})  # fmt: skip
    panels += _panels(LOAD_PANELS, source, first_id=len(panels) + 1, top=top + 1)
    variable = {"name": "datasource", "type": "datasource", "query": "prometheus",
                "label": "Prometheus", "current": {}, "hide": 0}  # fmt: skip
    return {
        "title": f"livecdn {name}",
        "uid": f"livecdn-{name}"[:40],
        "tags": ["livecdn"],
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [variable]},
        "panels": panels,
    }


def _panels(
    specs: list[tuple[str, str, list[tuple[str, str]]]], source: dict, first_id: int, top: int
) -> list[dict[str, Any]]:
    """Time series panels, two a row, from grid row `top` down."""
    panels = []
    for i, (title, unit, queries) in enumerate(specs):
        targets = [
            {"datasource": source, "expr": expr, "legendFormat": legend, "refId": chr(65 + j)}
            for j, (expr, legend) in enumerate(queries)
        ]
        panels.append({
            "id": first_id + i, "type": "timeseries", "title": title, "datasource": source,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": top + 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": targets,
        })  # fmt: skip
    return panels


def dashboard_json(name: str) -> str:
    """The dashboard as JSON text."""
    return json.dumps(dashboard(name), indent=1) + "\n"


def queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard."""
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
