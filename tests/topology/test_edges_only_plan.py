"""A topology whose balancer has viewer classes cannot be bypassed at its origins: they get
edges_only, every edge (balanced or not) the cluster_secret to sign its pulls with, and the
URL table offers no play URL at an origin."""

from __future__ import annotations

from common.config import EdgeConfig, OriginConfig, load
from tests.topology.test_plan import write
from topology import schema
from topology.output import url_table
from topology.plan import plan
from topology.runsecrets import ensure_secrets

CLASSES = ("[balancer]\ncontrol_port = 0\nhttp_port = 0\n"
           "classes = { gold = { rate_mbps = 1, ceil_mbps = 2 } }\n")  # fmt: skip
TWO_TIER = ('[[origin]]\nname = "origin"\nrtmp_port = 0\nhttp_port = 0\n'
            '[[edge]]\nname = "shield"\nparents = ["origin"]\nbalanced = false\n'
            'rtmp_port = 0\nhttp_port = 0\n'
            '[[edge]]\nname = "edge1"\nparents = ["shield"]\nrtmp_port = 0\nhttp_port = 0\n')  # fmt: skip


def planned(tmp_path, text: str) -> tuple[str, dict]:
    """Plan `text` with its generated secrets: the URL table and each node's config."""
    topo = schema.load(str(write(tmp_path, text)))
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    ensure_secrets(topo, run_dir)
    dep = plan(topo, run_dir)
    kinds = {"origin": OriginConfig, "shield": EdgeConfig, "edge1": EdgeConfig}
    return url_table(dep), {n: load(c, run_dir / f"{n}.toml", environ={}) for n, c in kinds.items()}


def test_with_classes_the_origins_serve_edges_only_and_every_edge_signs(tmp_path) -> None:
    table, nodes = planned(tmp_path, CLASSES + TWO_TIER)
    secret = nodes["origin"].cluster_secret
    assert nodes["origin"].edges_only and len(secret) >= 16
    assert nodes["shield"].cluster_secret == nodes["edge1"].cluster_secret == secret
    assert nodes["shield"].balancer == ""  # the unbalanced edge signs, and reports to no one
    origin_http = f"127.0.0.1:{nodes['origin'].http_port}/"
    plays = [line for line in table.splitlines() if line.lstrip().startswith("play")]
    assert plays and not any(origin_http in line for line in plays), table


def test_without_classes_or_when_the_file_says_so_the_origins_serve_viewers(tmp_path) -> None:
    _, nodes = planned(tmp_path, "[balancer]\ncontrol_port = 0\nhttp_port = 0\n" + TWO_TIER)
    assert not nodes["origin"].edges_only and nodes["shield"].cluster_secret == ""
    text = CLASSES + TWO_TIER.replace("http_port = 0\n", "http_port = 0\nedges_only = false\n", 1)
    _, nodes = planned(tmp_path, text)
    assert not nodes["origin"].edges_only
