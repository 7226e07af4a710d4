"""`python -m topology render compose|k8s`: for every shipped example (and a topology with
recordings, viewer classes and signed play URLs) the files parse, every reference resolves
(services, ports, configs, secrets, environment variables) and every node's config loads
with the node's own loader from its config file plus the environment its secret gives."""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import stat
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from common.config import MODELS, keys, load
from common.config.sources import env_name
from tests.topologies import balancer, edge, origin, table, topology
from topology import schema
from topology.__main__ import main, parse_args
from topology.players.crowd import PLAY_SECRET_ENV, QOS_SECRET_ENV
from topology.render import DASHBOARD, Options, RenderError, render
from topology.render.nodes import SECRET_KEYS, named_services
from topology.runsecrets import FILE as SECRETS_FILE

REPO = Path(__file__).parents[2]
EXAMPLES = sorted(p.stem for p in schema.EXAMPLES.glob("*.toml"))

RICH = topology(
    balancer(http_port=8090, control_port=8091, require_play_token=True,
             classes={"gold": {"rate_mbps": 5.0}}),
    origin(rtmp_port=1935, http_port=8080, record_dir="/var/lib/livecdn/records"),
    edge("edge-a", rtmp_port=1936, http_port=8081, hls_mode="cache", parent_protocol="http",
         drain_timeout=45.5),
    edge("edge-b", rtmp_port=0, http_port=0),
    table("[[load]]", {"players": 10, "duration": "20s", "stream": "live/demo"}),
)  # fmt: skip
"""Recordings (a StatefulSet), classes (qos_secret), a play_secret, ports of 0, an HTTP
parent, a name with a dash."""


def topo_of(name: str, tmp_path: Path) -> schema.Topology:
    """A shipped example, or RICH."""
    if name != "rich":
        return schema.load(name)
    path = tmp_path / "rich.toml"
    path.write_text(RICH)
    return schema.load(str(path))


def secret_values(out: Path) -> set[str]:
    """Every secret in the render's secrets.toml."""
    kept = tomllib.loads((out / SECRETS_FILE).read_text())
    return {v for t in kept.values() for v in t.values()}


def private(path: Path) -> bool:
    """Readable by its owner only."""
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def loaded_config(kind: str, text: str, env: dict[str, str], tmp_path: Path, name: str):
    """A node's config as the node loads it: its file and the environment from its secret;
    every variable names a real key of its kind."""
    model = MODELS[kind]
    assert set(env) <= {env_name(model, k) for k in keys(model)}, env
    path = tmp_path / f"loaded-{name}.toml"
    path.write_text(text)
    return load(model, path, environ=env)


def check_references(
    configs: dict[str, tuple[str, object]], listening: dict[str, set[int]]
) -> None:
    """Every node's parents and balancer are a service and one of its ports, the config's
    own ports among its service's. `configs`: service -> (kind, loaded config);
    `listening`: service -> the ports it serves on."""
    for service, (kind, config) in configs.items():
        own = {config.http_port} | ({config.rtmp_port} if kind != "balancer" else set())
        assert own <= listening[service], (service, own, listening[service])
        if kind == "balancer":
            assert config.control_port in listening[service]
            continue
        if config.balancer:
            host, _, port = config.balancer.rpartition(":")
            assert configs[host][0] == "balancer" and int(port) == configs[host][1].control_port
        for url in getattr(config, "parents", []):
            parts = urlsplit(url)
            parent_kind, parent = configs[parts.hostname]
            want = parent.rtmp_port if parts.scheme == "rtmp" else parent.http_port
            assert parts.port == want and parts.port in listening[parts.hostname], url
        if kind == "edge" and config.balancer:
            assert config.public_host, service  # the balancer needs somewhere to send viewers


def read_env_file(path: Path) -> dict[str, str]:
    """VAR=value lines (values possibly in single quotes)."""
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            var, _, value = line.partition("=")
            env[var] = value[1:-1] if value.startswith("'") else value
    return env


@pytest.mark.parametrize("name", [*EXAMPLES, "rich"])
def test_compose(name: str, tmp_path: Path) -> None:
    topo = topo_of(name, tmp_path)
    out = tmp_path / "out"
    render("compose", topo, out, Options())
    doc = yaml.safe_load((out / "compose.yaml").read_text())
    services = doc["services"]
    nodes = {s: v for s, v in services.items() if s != "prometheus"}
    assert len(nodes) == len(topo.origins) + len(topo.edges) + (1 if topo.balancer else 0)
    configs = {}
    listening = {}
    secrets = secret_values(out)
    for service, svc in nodes.items():
        kind, flag, path = svc["command"]
        assert flag == "--config" and svc["image"] == Options.image
        (ref,) = svc["configs"]
        assert ref["target"] == path == f"/etc/livecdn/{kind}.toml"
        text = (out / doc["configs"][ref["source"]]["file"]).read_text()
        assert not any(s in text for s in secrets)  # secrets only in the env files
        (env_path,) = [out / p for p in svc["env_file"]]
        assert private(env_path)
        env = read_env_file(env_path)
        config = loaded_config(kind, text, env, tmp_path, service)
        assert config.host == "0.0.0.0" and config.admin_token and config.admin_token in secrets
        for dep in svc.get("depends_on", {}):
            assert dep in nodes
        specs = [p.split(":") for p in svc["ports"]]  # [HOST_IP:]HOST_PORT:CONTAINER_PORT
        published = {int(s[-2]) for s in specs}
        assert {int(s[-1]) for s in specs} == published  # same port inside
        loopback_only = {int(s[-1]) for s in specs if len(s) == 3 and s[0] == "127.0.0.1"}
        has_edges = any(svc["command"][0] == "edge" for svc in nodes.values())
        operator_only = {config.http_port} if kind == "origin" and has_edges else set()
        assert loopback_only == operator_only  # the origin's API is no viewers' way in
        listening[service] = published | ({config.control_port} if kind == "balancer" else set())
        assert str(config.http_port) in svc["healthcheck"]["test"][-1]
        assert int(svc["stop_grace_period"][:-1]) > getattr(config, "drain_timeout", 0)
        configs[service] = (kind, config)
    check_references(configs, listening)
    assert not any(s in (out / "compose.yaml").read_text() for s in secrets)
    assert private(out / SECRETS_FILE) and private(out / "secrets")
    targets = yaml.safe_load((out / "prometheus.yml").read_text())["scrape_configs"][0]
    scraped = {t["targets"][0] for t in targets["static_configs"]}
    assert scraped == {f"{s}:{c.http_port}" for s, (_, c) in configs.items()}
    assert services["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]  # no auth on its API
    prom = services["prometheus"]["volumes"][0].split(":")[0]
    assert (out / prom).exists()
    assert (out / "Dockerfile").read_text() == (REPO / "Dockerfile").read_text()


def k8s_docs(out: Path) -> dict[tuple[str, str], dict]:
    """The rendered objects by (kind, name); names are unique per kind."""
    docs = [*yaml.safe_load_all((out / "livecdn.yaml").read_text())]
    docs += yaml.safe_load_all((out / "secrets.yaml").read_text())
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert len(by) == len(docs)
    return by


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a label selector matches `labels`."""
    return selector.items() <= labels.items()


@pytest.mark.parametrize("name", [*EXAMPLES, "rich"])
def test_k8s(name: str, tmp_path: Path) -> None:
    topo = topo_of(name, tmp_path)
    out = tmp_path / "out"
    render("k8s", topo, out, Options(public_pattern="{name}.cdn.example.com"))
    by = k8s_docs(out)
    secrets = secret_values(out)
    assert not any(s in (out / "livecdn.yaml").read_text() for s in secrets)
    assert private(out / "secrets.yaml") and private(out / SECRETS_FILE)
    workloads = [d for (k, _), d in by.items() if k in ("Deployment", "StatefulSet")]
    assert len(workloads) == len(topo.origins) + len(topo.edges) + (1 if topo.balancer else 0)
    services = [d for (k, _), d in by.items() if k == "Service"]
    configs, listening, pods = {}, {}, {}
    for w in workloads:
        spec = w["spec"]["template"]["spec"]
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert selects(w["spec"]["selector"]["matchLabels"], labels)
        (c,) = spec["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        ready, alive = c["readinessProbe"], c["livenessProbe"]
        assert ready["httpGet"]["path"] == "/readyz"  # 503 while draining: no new viewers
        assert alive["httpGet"]["path"] == "/healthz"  # 200 while draining: not killed
        assert {ready["httpGet"]["port"], alive["httpGet"]["port"]} <= set(ports)
        assert c["resources"]["requests"]["cpu"] and spec["securityContext"]["runAsNonRoot"]
        kind, flag, path = c["args"]
        (mount,) = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        text = by[("ConfigMap", volume["configMap"]["name"])]["data"][path.rsplit("/", 1)[1]]
        (ref,) = c["envFrom"]
        env = by[("Secret", ref["secretRef"]["name"])]["stringData"]
        config = loaded_config(kind, text, env, tmp_path, w["metadata"]["name"])
        assert spec["terminationGracePeriodSeconds"] > getattr(config, "drain_timeout", 0)
        annotations = w["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(config.http_port) == str(ports["http"])
        assert (w["kind"] == "StatefulSet") == bool(getattr(config, "record_dir", ""))
        if w["kind"] == "StatefulSet":  # governed by a headless Service selecting its pod
            governing = by[("Service", w["spec"]["serviceName"])]["spec"]
            assert governing["clusterIP"] == "None" and selects(governing["selector"], labels)
            claim = w["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
            assert any(m["name"] == claim and m["mountPath"] == config.record_dir
                       for m in c["volumeMounts"])  # fmt: skip
        pods[w["metadata"]["name"]] = (labels, ports)
        configs[w["metadata"]["name"]] = (kind, config)
    for s in services:  # each Service selects one node's pod, on ports it has
        (node,) = [n for n, (labels, _) in pods.items() if selects(s["spec"]["selector"], labels)]
        for p in s["spec"]["ports"]:
            assert pods[node][1][p["targetPort"]] == p["port"]
            assert p.get("nodePort", p["port"]) == p["port"]
        if s["metadata"]["name"] in configs:
            listening[s["metadata"]["name"]] = {p["port"] for p in s["spec"]["ports"]}
            assert s["metadata"]["name"] == node
    check_references(configs, listening)
    # every Service is one the name check knows, so no node can take its name
    assert {s["metadata"]["name"] for s in services} <= named_services(topo, "k8s").keys()
    for service, (kind, config) in configs.items():
        if kind == "edge" and config.balancer:
            assert config.public_host == f"{service}.cdn.example.com"
    monitor = yaml.safe_load((out / "monitoring" / "servicemonitor.yaml").read_text())
    scraped = [s for s in services if selects(monitor["spec"]["selector"]["matchLabels"],
                                              s["metadata"]["labels"])]  # fmt: skip
    assert sorted(s["metadata"]["name"] for s in scraped) == sorted(configs)
    assert all(any(p["name"] == "http" for p in s["spec"]["ports"]) for s in scraped)


def test_render_again_keeps_secrets_and_public_hosts(tmp_path: Path) -> None:
    """A second render reuses the secrets; NodePort edges listen on (and advertise) their
    node ports; --public-host names one edge or sets a pattern for the others."""
    out = tmp_path / "k8s"
    argv = ["render", "k8s", "three-edge", "--out", str(out), "--service-type", "NodePort",
            "--public-host", "edge1=cdn1.example.com", "--public-host", "10.0.0.7"]  # fmt: skip
    assert main(argv) == 0
    first = (out / "secrets.yaml").read_text()
    assert main(argv) == 0
    assert (out / "secrets.yaml").read_text() == first
    by = k8s_docs(out)
    hosts = {}
    for name in ("edge1", "edge2", "edge3"):
        text = by[("ConfigMap", f"{name}-config")]["data"]["edge.toml"]
        config = tomllib.loads(text)
        hosts[name] = config["public_host"]
        assert 30000 <= config["http_port"] <= 32767
        ports = {p["name"]: p for p in by[("Service", name)]["spec"]["ports"]}
        assert ports["http"]["nodePort"] == ports["http"]["port"] == config["http_port"]
        assert by[("Service", name)]["spec"]["type"] == "NodePort"
    assert hosts == {"edge1": "cdn1.example.com", "edge2": "10.0.0.7", "edge3": "10.0.0.7"}
    assert by[("Service", "origin")]["spec"]["type"] == "ClusterIP"


def test_compose_aliases_public_host_names(tmp_path: Path) -> None:
    """The balancer health-checks edges at their public host: a public host name is an alias
    of the edge on the compose network; an address is not."""
    out = tmp_path / "c"
    options = Options(public_hosts={"edge1": "192.0.2.1"}, public_pattern="{name}.example.com")
    render("compose", schema.load("three-edge"), out, options)
    services = yaml.safe_load((out / "compose.yaml").read_text())["services"]
    assert services["edge2"]["networks"]["default"]["aliases"] == ["edge2.example.com"]
    assert "networks" not in services["edge1"]


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(RenderError, match="names no edge"):
        render(
            "compose", schema.load("one-edge"), tmp_path / "a", Options(public_hosts={"nope": "x"})
        )
    assert main(["render", "compose", "one-edge", "--out", str(tmp_path / "b"),
                 "--public-host", "edge1=not a host"]) == 2  # fmt: skip
    assert "public_host" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # checked before anything was written
    for name in ("balancer", "Balancer"):  # one service name for two nodes
        clash = tmp_path / "clash.toml"
        clash.write_text(topology(balancer(), origin(), edge(name)))
        assert main(["render", "k8s", str(clash), "--out", str(tmp_path / "c")]) == 2
        assert "service name" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("target", "name", "clash"),
    [("k8s", "origin-ingest", "origin's ingest Service"),
     ("k8s", "balancer-public", "balancer's public Service"),
     ("k8s", "origin-headless", "origin's headless Service"),
     ("compose", "prometheus", "the prometheus service")],
)  # fmt: skip
def test_a_node_cannot_take_another_objects_service_name(
    target: str, name: str, clash: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An edge named after the balancer's or an origin's extra Service (or Compose's
    Prometheus) is refused, naming both, and nothing is written."""
    path = tmp_path / "clash.toml"
    path.write_text(topology(balancer(), origin(), edge(name)))
    out = tmp_path / "out"
    assert main(["render", target, str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"service name '{name}'" in err and clash in err and f"node {name}" in err
    assert not out.exists()
    other = "compose" if target == "k8s" else "k8s"  # the name is free there
    assert main(["render", other, str(path), "--out", str(tmp_path / other)]) == 0


def applied_dirs(text: str, out: Path) -> set[Path]:
    """The directories `kubectl apply -f DIR` lines in `text` name (deploy/k8s: `out`)."""
    found = re.findall(r"kubectl apply -f (\S+)", text.replace("deploy/k8s", str(out)))
    return {Path(d) for d in found if Path(d).is_dir()}


def test_kubectl_applies_only_kubernetes_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Every file kubectl reads in each directory the printed next steps and the README tell
    it to apply (.yaml, .yml and .json: it reads all three) holds only objects with an
    apiVersion and a kind; the dashboard is apart, and also a ConfigMap for Grafana."""
    out = tmp_path / "k8s"
    (out).mkdir()
    (out / "grafana-dashboard.json").write_text("{}")  # where earlier renders put it
    argv = ["render", "k8s", "three-edge", "--out", str(out), "--load-players", "10"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    readme = (REPO / "README.md").read_text()
    readme = readme[readme.index("## Deploying past one machine") :]
    dirs = applied_dirs(printed, out) | applied_dirs(readme[: readme.index("\n## ")], out)
    assert {out, out / "monitoring", out / "load"} <= dirs
    for d in dirs:
        files = [p for p in d.iterdir() if p.suffix in (".yaml", ".yml", ".json")]
        assert files, d
        for path in files:
            for doc in yaml.safe_load_all(path.read_text()):
                assert doc["apiVersion"] and doc["kind"], path
    board = json.loads((out / DASHBOARD).read_text())
    (config_map,) = yaml.safe_load_all((out / "monitoring/grafana-dashboard.yaml").read_text())
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert [json.loads(v) for v in config_map["data"].values()] == [board]
    assert str(out / DASHBOARD) in printed


def test_files_have_their_modes_whatever_the_umask(tmp_path: Path) -> None:
    """Config files and prometheus.yml are readable by the containers' user (0644), secrets
    by the owner only (0600), under a strict umask and a loose one."""
    for umask in (0o077, 0o000):
        out = tmp_path / f"umask-{umask:o}"
        old = os.umask(umask)
        try:
            render("compose", topo_of("rich", tmp_path), out, Options())
        finally:
            os.umask(old)
        public = [out / "compose.yaml", out / "prometheus.yml", out / DASHBOARD,
                  *(out / "config").iterdir()]  # fmt: skip
        for path in public:
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        for path in [out / SECRETS_FILE, *(out / "secrets").iterdir()]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE((out / "secrets").stat().st_mode) == 0o700


def test_render_outside_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """An installed package has no repository Dockerfile: the render writes everything else
    and says so."""
    module = importlib.import_module("topology.render.dockerfile")  # the name is the function's
    monkeypatch.setattr(module, "DOCKERFILE", tmp_path / "no" / "Dockerfile")
    out = tmp_path / "out"
    assert main(["render", "compose", "three-edge", "--out", str(out)]) == 0
    assert "no Dockerfile" in capsys.readouterr().out
    assert (out / "compose.yaml").exists() and not (out / "Dockerfile").exists()


def test_dockerfile() -> None:
    """The image: Debian, PyAV as a wheel, not root, `python -m KIND --config FILE`, and it
    copies every package the nodes import."""
    text = (REPO / "Dockerfile").read_text()
    assert "FROM python:3.11-slim-bookworm" in text and "--only-binary=av" in text
    assert "USER 10001" in text and 'ENTRYPOINT ["python", "-m"]' in text
    for package in ("common", "origin", "edge", "balancer", "topology"):
        assert f"COPY {package} ./{package}" in text


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context: a pattern (`**` any folders)
    matches it or a folder it is in."""

    def match(pp: list[str], parts: list[str]) -> bool:
        if not pp:
            return not parts
        if pp[0] == "**":
            return any(match(pp[1:], parts[i:]) for i in range(len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], pp[0]) and match(pp[1:], parts[1:])

    parts = path.split("/")
    return any(match(p.split("/"), parts[:end]) for p in patterns
               for end in range(1, len(parts) + 1))  # fmt: skip


def test_dockerignore_keeps_secrets_out_of_the_build_context(tmp_path: Path) -> None:
    """`docker build .` sends every file the Dockerfile copies, and no environment, history
    or render output (secrets.toml, secrets/NODE.env) from the default or README folders."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)  # dockerignored() knows no exceptions
    copied = [w for line in (REPO / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ") for w in line.split()[1:-1]]  # fmt: skip
    assert {"pyproject.toml", "README.md", "topology"} <= set(copied)
    for source in copied:
        files = [REPO / source] if (REPO / source).is_file() else (REPO / source).rglob("*.py")
        for f in files:
            assert not dockerignored(str(f.relative_to(REPO)), patterns), f
    out = tmp_path / "livecdn-three-edge-k8s"
    assert main(["render", "k8s", "three-edge", "--out", str(out)]) == 0
    rendered = [f"{out.name}/{p.relative_to(out)}" for p in out.rglob("*") if p.is_file()]
    for path in [".venv/bin/python", ".git/config", "deploy/k8s/livecdn.yaml",
                 "deploy/compose/secrets/edge1.env", "anywhere/secrets.toml", *rendered]:  # fmt: skip
        assert dockerignored(path, patterns), path


def test_no_secret_key_in_config_files() -> None:
    """Every secret key of every model is one SECRET_KEYS keeps out of config files."""
    for model in MODELS.values():
        assert {k for k in keys(model) if "secret" in k or "token" in k} - {"token_ttl"} <= set(
            SECRET_KEYS
        )


def test_k8s_load_jobs(tmp_path: Path) -> None:
    """The file's [[load]] profile as an Indexed Job of shards whose command the load CLI
    takes, playing through the balancer's Service with the secrets of the balancer's Secret;
    the merge Job reads the files the shards write."""
    out = tmp_path / "out"
    render("k8s", topo_of("rich", tmp_path), out, Options(load_players=2500, load_shards=4))
    by = k8s_docs(out)
    jobs = {
        d["metadata"]["name"]: d for d in yaml.safe_load_all((out / "load/jobs.yaml").read_text())
    }
    (claim,) = [d for d in jobs.values() if d["kind"] == "PersistentVolumeClaim"]
    shard, merge = jobs["rich-load-1"], jobs["rich-load-1-merge"]
    assert shard["spec"]["completionMode"] == "Indexed" and shard["spec"]["completions"] == 4
    pod = shard["spec"]["template"]["spec"]
    (volume,) = pod["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    (c,) = pod["containers"]
    env = {e["name"]: e["valueFrom"] for e in c["env"]}
    assert "job-completion-index" in env.pop("JOB_COMPLETION_INDEX")["fieldRef"]["fieldPath"]
    assert set(env) == {PLAY_SECRET_ENV, QOS_SECRET_ENV}
    for ref in env.values():
        assert (
            ref["secretKeyRef"]["key"] in by[("Secret", ref["secretKeyRef"]["name"])]["stringData"]
        )
    args = [a.replace("$(JOB_COMPLETION_INDEX)", "3") for a in c["args"]]
    assert args[:2] == ["topology", "load"]
    parsed = parse_args(args[1:])
    assert (parsed.shard.index, parsed.shard.count, parsed.players) == (3, 4, 2500)
    url = urlsplit(parsed.url)
    balancer = by[("Service", url.hostname)]
    assert url.port in {p["port"] for p in balancer["spec"]["ports"] if p["name"] == "http"}
    assert url.path == "/live/demo.flv" and parsed.duration == 20
    # the results volume outlives the Jobs: this render's run has an id and a folder of its own
    assert parsed.run_id and parsed.out.endswith(f"/{parsed.run_id}")
    script = merge["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert f"load merge --run-id {parsed.run_id} {parsed.out}/load-shard-*-of-4.json" in script
    render("k8s", topo_of("rich", tmp_path), out, Options(load_players=2500, load_shards=4))
    again = yaml.safe_load_all((out / "load/jobs.yaml").read_text())
    (job,) = [d for d in again if d["metadata"]["name"] == "rich-load-1"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--run-id") + 1] != parsed.run_id


def test_render_again_drops_secrets_the_file_no_longer_asks_for(tmp_path: Path) -> None:
    """A play_secret and qos_secret kept from an earlier render come back only while the file
    still has require_play_token and classes; the others are kept."""
    out = tmp_path / "out"
    render("compose", topo_of("rich", tmp_path), out, Options())
    first = tomllib.loads((out / SECRETS_FILE).read_text())
    assert first["balancer"]["play_secret"] and first["balancer"]["qos_secret"]
    plain = tmp_path / "plain.toml"
    text = RICH.replace("require_play_token = true", "")
    plain.write_text(text.replace("classes = { gold = { rate_mbps = 5.0 } }", ""))
    topo = schema.load(str(plain))
    assert not topo.balancer.require_play_token and not topo.balancer.config["classes"]
    render("compose", topo, out, Options())
    again = tomllib.loads((out / SECRETS_FILE).read_text())
    assert set(again["balancer"]) == {"admin_token", "cluster_secret"}
    assert again["balancer"]["cluster_secret"] == first["balancer"]["cluster_secret"]
    assert again["origin"] == first["origin"]
    env = read_env_file(out / "secrets" / "edge-a.env")
    assert not any("PLAY_SECRET" in var or "QOS_SECRET" in var for var in env)
