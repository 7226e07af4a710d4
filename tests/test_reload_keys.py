"""Every key a node says it reloads (setting(reloadable=True)) is taken by a running origin,
edge and balancer, alone, and back again; and every key can be set from the environment, lists
and tables in JSON and in TOML inline syntax, booleans in every spelling."""

from __future__ import annotations

import logging
from dataclasses import asdict

import pytest

from balancer.server import Balancer
from common.config import MODELS, build, env_name, keys, load
from common.config.model import FALSE, TRUE, reloadable_keys
from common.config.toml import value_text
from edge.server import Edge
from origin.server import Origin
from tests.common.test_config import samples, text
from tests.conftest import QOS_SECRET

LOCAL = {"host": "127.0.0.1", "http_port": 0}
BASES = {
    # the companions some keys need (a record_dir, a qos_secret, a balancer address), and HLS
    # packaged whatever the parents are
    "origin": (Origin, {**LOCAL, "rtmp_port": 0, "record_dir": "REC", "balancer": "127.0.0.1:8",
                        "cluster_secret": "cluster-secret-for-tests"}),
    "edge": (Edge, {**LOCAL, "rtmp_port": 0, "parents": ["rtmp://127.0.0.1:1"],
                    "hls_mode": "package", "qos_secret": QOS_SECRET, "balancer": "127.0.0.1:8"}),
    "balancer": (Balancer, {**LOCAL, "control_port": 0, "qos_secret": QOS_SECRET}),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(BASES))
async def test_every_reloadable_key_is_taken_by_a_running_node(
    kind, nursery, tmp_path, tls_certs
) -> None:
    node_cls, base = BASES[kind]
    cls = MODELS[kind]
    values = {k: str(tmp_path) if v == "REC" else v for k, v in base.items()}
    node = node_cls(build(cls, values))
    await nursery.start(node.run)
    level = logging.getLogger().level
    sampled = {**samples(cls), "tls_ca": tls_certs.ca}
    try:
        for name in sorted(reloadable_keys(cls)):
            old = node.config
            new = build(cls, {**asdict(old), name: sampled[name]})
            assert await node.controls.reload(new) == [name]
            assert node.config is new
            assert await node.controls.reload(old) == [name]
    finally:
        logging.getLogger().setLevel(level)
    assert reloadable_keys(cls) < set(keys(cls)), "the listen ports need a restart"


@pytest.mark.parametrize("cls", list(MODELS.values()), ids=lambda c: c.kind)
def test_every_key_from_the_environment_in_each_syntax(cls) -> None:
    """Each key in turn in its other syntax (TOML inline tables and lists, booleans spelled
    every way), the others in JSON as the sample set has them."""
    values = samples(cls)
    environ = {env_name(cls, k): text(v) for k, v in values.items()}
    for name, value in values.items():
        if isinstance(value, bool):
            spellings = list(TRUE if value else FALSE)
            spellings += [w.upper() for w in spellings]
        elif isinstance(value, (list, dict)):
            spellings = [value_text(value)]
        else:
            continue
        for spelling in spellings:
            config = load(cls, environ={**environ, env_name(cls, name): spelling})
            assert getattr(config, name) == value, (name, spelling)
    assert load(cls, environ=environ) == build(cls, values)
