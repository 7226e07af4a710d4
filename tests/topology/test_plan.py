"""Topology tables take every key of their node's config; the launcher writes one config file
per node and starts it with --config; errors name the table and the key."""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import asdict

import pytest

from common.config import BalancerConfig, EdgeConfig, OriginConfig, load
from common.config.toml import value_text
from tests.common.test_config import samples
from tests.topology.test_cli import SMALL
from topology import schema
from topology.output import url_table
from topology.plan import plan
from topology.runsecrets import ensure_secrets
from topology.schema import LAUNCHER_KEYS, TopologyError


def with_edge_keys(extra: str, text: str = SMALL) -> str:
    """The topology `text` with `extra` lines in edge1's table."""
    return text.replace('name = "edge1"\n', 'name = "edge1"\n' + extra, 1)


def write(tmp_path, text: str):
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


def table(values: dict) -> str:
    return "".join(f"{k} = {value_text(v)}\n" for k, v in values.items())


def settable(cls: type, *topology_keys: str) -> dict:
    """A sample of every key of `cls` a topology table may set."""
    skip = (*LAUNCHER_KEYS, *topology_keys)
    return {k: v for k, v in samples(cls).items() if k not in skip}


def test_a_topology_can_set_every_node_key(tmp_path) -> None:
    origin, edge, balancer = (settable(OriginConfig), settable(EdgeConfig, "parents"),
                              settable(BalancerConfig))  # fmt: skip
    text = (f'[balancer]\n{table(balancer)}\n[[origin]]\nname = "o"\n{table(origin)}\n'
            f'[[edge]]\nname = "e"\nparents = ["o"]\n{table(edge)}')  # fmt: skip
    topo = schema.load(str(write(tmp_path, text)))
    dep = plan(topo, tmp_path)
    for name, cls, given in (("o", OriginConfig, origin), ("e", EdgeConfig, edge),
                             ("balancer", BalancerConfig, balancer)):  # fmt: skip
        path = tmp_path / f"{name}.toml"
        assert dep.nodes[name].cmd == [sys.executable, "-m", cls.kind, "--config", str(path)]
        config = asdict(load(cls, path, environ={}))
        assert {k: config[k] for k in given} == given, name


def test_edge_gop_cache_and_batch_ms_reach_its_config(tmp_path) -> None:
    text = with_edge_keys("gop_cache = false\nbatch_ms = 20\n")
    dep = plan(schema.load(str(write(tmp_path, text))), tmp_path)
    edge = load(EdgeConfig, tmp_path / "edge1.toml", environ={})
    assert (edge.gop_cache, edge.batch_ms) == (False, 20.0)
    origin_port = dep.nodes["origin"].rtmp_port
    assert edge.parents == [f"rtmp://127.0.0.1:{origin_port}"]
    assert edge.node_id == "edge1" and edge.host == "127.0.0.1"
    assert load(OriginConfig, tmp_path / "origin.toml", environ={}).gop_cache is True


def test_the_balancer_and_its_classes_reach_balanced_edges_only(tmp_path) -> None:
    text = ('[balancer]\ncontrol_port = 0\nhttp_port = 0\nqos_secret = "qos-secret-for-tests-0123"\n'
            "classes = { gold = { rate_mbps = 1, ceil_mbps = 2 } }\n" + SMALL
            + '[[edge]]\nname = "shield"\nparents = ["origin"]\nbalanced = false\n'
            "rtmp_port = 0\nhttp_port = 0\n")  # fmt: skip
    dep = plan(schema.load(str(write(tmp_path, text))), tmp_path)
    control = f"127.0.0.1:{dep.nodes['balancer'].control_port}"
    edge1 = load(EdgeConfig, tmp_path / "edge1.toml", environ={})
    shield = load(EdgeConfig, tmp_path / "shield.toml", environ={})
    assert edge1.balancer == control and shield.balancer == ""
    assert edge1.classes == shield.classes == {"gold": {"rate_mbps": 1, "ceil_mbps": 2}}
    assert load(OriginConfig, tmp_path / "origin.toml", environ={}).balancer == control


def test_viewer_classes_without_a_qos_secret_get_one_generated_per_run(tmp_path) -> None:
    text = ("[balancer]\ncontrol_port = 0\nhttp_port = 0\n"
            "classes = { gold = { rate_mbps = 1, ceil_mbps = 2 } }\n" + SMALL)  # fmt: skip
    topo = schema.load(str(write(tmp_path, text)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    found = tomllib.loads(ensure_secrets(topo, run_dir).read_text())
    secret = found["balancer"]["qos_secret"]
    assert len(secret) >= 32 and found["origin"]["publish_secret"] != secret
    plan(topo, run_dir)
    assert load(BalancerConfig, run_dir / "balancer.toml", environ={}).qos_secret == secret
    assert load(EdgeConfig, run_dir / "edge1.toml", environ={}).qos_secret == secret
    assert (run_dir / "edge1.toml").stat().st_mode & 0o777 == 0o600


def test_require_play_token_generates_a_play_secret_every_node_checks(tmp_path) -> None:
    text = ("[balancer]\ncontrol_port = 0\nhttp_port = 0\nrequire_play_token = true\n" + SMALL
            + '[[edge]]\nname = "shield"\nparents = ["origin"]\nbalanced = false\n'
            "rtmp_port = 0\nhttp_port = 0\n")  # fmt: skip
    topo = schema.load(str(write(tmp_path, text)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    found = tomllib.loads(ensure_secrets(topo, run_dir).read_text())
    secret = found["balancer"]["play_secret"]
    assert len(secret) >= 32 and secret not in found["origin"].values()
    dep = plan(topo, run_dir)
    for name, cls in (("balancer", BalancerConfig), ("origin", OriginConfig),
                      ("edge1", EdgeConfig), ("shield", EdgeConfig)):  # fmt: skip
        assert load(cls, run_dir / f"{name}.toml", environ={}).play_secret == secret, name
    table = url_table(dep)
    signed = [line for line in table.splitlines() if "(signed, 24 h)" in line and "play" in line]
    assert len(signed) == 4 and all("psig=" in line for line in signed), table
    (console,) = [line for line in table.splitlines() if "console (open in a browser)" in line]
    assert "/?play=live/cli&query=pexp%3D" in console and "psig%3D" in console, table
    # without it, play stays public: no play_secret anywhere
    topo = schema.load(str(write(tmp_path, SMALL)))
    plan(topo, tmp_path)
    assert load(OriginConfig, tmp_path / "origin.toml", environ={}).play_secret == ""


@pytest.mark.parametrize(
    ("extra", "message"),
    [("batch_msx = 20", "[[edge]] #1: unknown key 'batch_msx'"),
     ('batch_ms = "fast"', "[[edge]] #1: batch_ms must be a number, got 'fast'"),
     ("max_streams = 0", "[[edge]] #1: max_streams must be a finite number in 1..1000000"),
     ('host = "0.0.0.0"', "[[edge]] #1: host is set by the launcher"),
     ('classes = { a = { rate_mbps = 1 } }', "[[edge]] #1: viewer classes need a qos_secret")],
)  # fmt: skip
def test_node_key_errors_name_the_table_and_the_key(tmp_path, extra, message) -> None:
    path = write(tmp_path, with_edge_keys(extra + "\n"))
    with pytest.raises(TopologyError) as info:
        schema.load(str(path))
    assert f"{path} {message}" in str(info.value)


@pytest.mark.parametrize("example", ["one-edge", "three-edge", "two-tier"])
def test_examples_plan_to_config_files(tmp_path, example) -> None:
    topo = schema.load(example)
    dep = plan(topo, tmp_path)
    models = {"origin": OriginConfig, "edge": EdgeConfig, "balancer": BalancerConfig}
    for node in dep.nodes.values():
        assert node.cmd[-2:] == ["--config", str(tmp_path / f"{node.name}.toml")]
        config = load(models[node.kind], tmp_path / f"{node.name}.toml", environ={})
        assert config.http_port == node.http_port
    assert topo.balancer is not None and dep.nodes["balancer"].control_port == 8091


def test_external_parents_are_used_as_they_are(tmp_path) -> None:
    text = SMALL.replace(
        'parents = ["origin"]',
        'parents = ["origin", "rtmp://10.0.0.5:1935", "http://10.0.0.6:8080"]',
        1,
    )
    dep = plan(schema.load(str(write(tmp_path, text))), tmp_path)
    edge = load(EdgeConfig, tmp_path / "edge1.toml", environ={})
    rtmp = dep.nodes["origin"].rtmp_port
    assert edge.parents == [f"rtmp://127.0.0.1:{rtmp}", "rtmp://10.0.0.5:1935",
                            "http://10.0.0.6:8080"]  # fmt: skip
    # HLS is packaged at the edge from the upstream its other viewers share
    assert edge.hls_parents == [] and edge.packages_hls()


@pytest.mark.parametrize("parent", ["nowhere", "ftp://10.0.0.5"])
def test_a_parent_that_is_neither_a_node_nor_a_url_is_refused(tmp_path, parent) -> None:
    text = SMALL.replace('parents = ["origin"]', f'parents = ["{parent}"]', 1)
    with pytest.raises(TopologyError, match=f"parent '{parent}' is not an origin or edge"):
        schema.load(str(write(tmp_path, text)))


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [("edge1", "balancer", "the name 'balancer' is reserved (the balancer's own"),
     ("edge1", "Secrets", "the name 'Secrets' is reserved (the run directory's secrets.toml)"),
     ("a:b", "a_b", "the names 'a:b' and 'a_b' are too alike"),
     ("edge1", "EDGE1", "the names 'edge1' and 'EDGE1' are too alike"),
     ("edge1", "../x", "the name '../x' cannot name the node's files"),
     ("edge1", ".hidden", "the name '.hidden' cannot name the node's files")],
)  # fmt: skip
def test_node_names_the_launcher_uses_or_that_clash_are_refused(
    tmp_path, first, second, message
) -> None:
    text = SMALL.replace('name = "edge1"', f'name = "{first}"', 1)
    text += f'\n[[edge]]\nname = "{second}"\nparents = ["origin"]\n'
    with pytest.raises(TopologyError, match=f"{tmp_path / 't.toml'}: {re.escape(message)}"):
        schema.load(str(write(tmp_path, text)))
