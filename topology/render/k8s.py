"""A topology as Kubernetes manifests: per node a ConfigMap (its config file), a Secret (its
secrets as LIVECDN_<KIND>_<KEY> variables), a Deployment (a StatefulSet for an origin that
records), Services named after the node; probes on /readyz and /healthz, resource requests and
prometheus.io annotations."""

from __future__ import annotations

from typing import Any

from topology.render.monitoring import KIND_LABEL, NODE_LABEL, SCRAPE_LABEL
from topology.render.nodes import CONFIG_DIR, Options, RenderNode

REQUESTS = {
    "balancer": {"cpu": "100m", "memory": "64Mi"},
    "origin": {"cpu": "500m", "memory": "256Mi"},
    "edge": {"cpu": "500m", "memory": "256Mi"},
}
RECORD_STORAGE = "10Gi"  # each recording origin's volume
UID = 10001  # the image's user


def instance_labels(name: str) -> dict[str, str]:
    """The labels every object of topology `name` carries."""
    return {"app.kubernetes.io/name": "livecdn", "app.kubernetes.io/instance": name}


def node_labels(name: str, node: RenderNode) -> dict[str, str]:
    """The labels of a node's objects (and its pods' selector)."""
    return {**instance_labels(name), NODE_LABEL: node.name.lower(), KIND_LABEL: node.kind}


def meta(name: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    """An object's metadata."""
    return {"name": name, "labels": labels, **extra}


def config_map(topo: str, node: RenderNode) -> dict[str, Any]:
    """The node's config file."""
    data = {f"{node.kind}.toml": node.config_text}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(f"{node.service}-config", node_labels(topo, node)), "data": data}  # fmt: skip


def secret(topo: str, node: RenderNode) -> dict[str, Any]:
    """The node's secrets, one environment variable each."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(f"{node.service}-secrets", node_labels(topo, node)),
            "stringData": dict(sorted(node.secrets.items()))}  # fmt: skip


def service_port(what: str, port: int, node_port: bool) -> dict[str, Any]:
    """A Service port, named as the container's; a NodePort equal to it when asked."""
    out: dict[str, Any] = {"name": what, "port": port, "targetPort": what, "protocol": "TCP"}
    if node_port:
        out["nodePort"] = port
    return out


def services(topo: str, node: RenderNode, options: Options) -> list[dict[str, Any]]:
    """The node's Services: one named after it that other nodes use (and Prometheus scrapes);
    an edge in rotation gets options.service_type for it, the balancer and an origin another
    Service of that type for viewers (balancer HTTP) or publishers (origin RTMP)."""
    labels = node_labels(topo, node)
    selector = {NODE_LABEL: labels[NODE_LABEL], **instance_labels(topo)}
    kind = options.service_type if node.viewed else "ClusterIP"
    fixed = node.viewed and kind == "NodePort"  # the edge listens on its node port
    ports = [service_port(w, p, fixed) for w, p in node.ports.items()]
    out = [{"apiVersion": "v1", "kind": "Service",
            "metadata": meta(node.service, {**labels, SCRAPE_LABEL: "true"}),
            "spec": {"type": kind, "selector": selector, "ports": ports}}]  # fmt: skip
    outside = {"balancer": ("public", "http"), "origin": ("ingest", "rtmp")}.get(node.kind)
    if outside:
        suffix, what = outside
        port = service_port(what, node.ports[what], False)
        out.append({"apiVersion": "v1", "kind": "Service",
                    "metadata": meta(f"{node.service}-{suffix}", labels),
                    "spec": {"type": options.service_type, "selector": selector,
                             "ports": [port]}})  # fmt: skip
    if node.state_dir:  # the StatefulSet's governing Service: headless, its pod's own DNS name
        out.append({"apiVersion": "v1", "kind": "Service",
                    "metadata": meta(headless_name(node), labels),
                    "spec": {"clusterIP": "None", "selector": selector, "ports": ports}})  # fmt: skip
    return out


def headless_name(node: RenderNode) -> str:
    """The headless Service of a recording origin's StatefulSet."""
    return f"{node.service}-headless"


def probe(path: str, period: int, failures: int, delay: int = 0) -> dict[str, Any]:
    """GET `path` on the port named http."""
    return {"httpGet": {"path": path, "port": "http"}, "initialDelaySeconds": delay,
            "periodSeconds": period, "timeoutSeconds": 3, "failureThreshold": failures}  # fmt: skip


def pod_template(topo: str, node: RenderNode, image: str) -> dict[str, Any]:
    """The pod of a node: one container running `python -m KIND --config FILE`."""
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    if node.state_dir:
        mounts.append({"name": "records", "mountPath": node.state_dir})
    container = {
        "name": node.kind,
        "image": image,
        "args": node.command,
        "ports": [
            {"name": w, "containerPort": p, "protocol": "TCP"} for w, p in node.ports.items()
        ],
        "envFrom": [{"secretRef": {"name": f"{node.service}-secrets"}}],
        "volumeMounts": mounts,
        "readinessProbe": probe("/readyz", 5, 2),  # 503 while draining: out of the Service
        "livenessProbe": probe("/healthz", 10, 3, delay=10),  # 200 while draining: not killed
        "resources": {"requests": REQUESTS[node.kind]},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(node.ports["http"]),
              "prometheus.io/path": "/metrics"}  # fmt: skip
    return {
        "metadata": {"labels": node_labels(topo, node), "annotations": scrape},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": UID,
                "runAsGroup": UID,
                "fsGroup": UID,
            },  # fmt: skip
            "terminationGracePeriodSeconds": node.grace_seconds,
            "containers": [container],
            "volumes": [{"name": "config", "configMap": {"name": f"{node.service}-config"}}],
        },
    }


def workload(topo: str, node: RenderNode, image: str) -> dict[str, Any]:
    """A Deployment of one pod (replaced, never doubled: a node id is one process), or a
    StatefulSet with a volume for an origin's recordings."""
    labels = node_labels(topo, node)
    spec: dict[str, Any] = {
        "replicas": 1,
        "selector": {"matchLabels": {NODE_LABEL: labels[NODE_LABEL], **instance_labels(topo)}},
        "template": pod_template(topo, node, image),
    }
    if not node.state_dir:
        spec["strategy"] = {"type": "Recreate"}
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": meta(node.service, labels), "spec": spec}  # fmt: skip
    spec["serviceName"] = headless_name(node)
    spec["volumeClaimTemplates"] = [{
        "metadata": {"name": "records"},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": RECORD_STORAGE}}},
    }]  # fmt: skip
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": meta(node.service, labels), "spec": spec}  # fmt: skip


def manifests(topo: str, nodes: list[RenderNode], options: Options) -> list[dict[str, Any]]:
    """Every object but the Secrets: ConfigMaps, Services, then the workloads."""
    out = [config_map(topo, n) for n in nodes]
    out += [s for n in nodes for s in services(topo, n, options)]
    out += [workload(topo, n, options.image) for n in nodes]
    return out


def secrets(topo: str, nodes: list[RenderNode]) -> list[dict[str, Any]]:
    """The Secrets (written apart, mode 0600)."""
    return [secret(topo, n) for n in nodes]
