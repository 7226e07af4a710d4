"""A topology's drain/undrain faults go through the balancer's admin API from loopback, with
the balancer's admin_token when the topology file sets one (the balancer here runs in-process,
the deployment is the launcher's own record of it)."""

from __future__ import annotations

import pytest

from balancer.server import Balancer
from common.config import BalancerConfig, build
from common.proto.control import Heartbeat
from tests.topologies import balancer, edge, origin, topology
from topology.deployment import Deployment, Node
from topology.faults import apply_fault
from topology.schema import FaultSpec, load

TOKEN = "adm-" + "t" * 28


@pytest.mark.parametrize("token", ["", TOKEN])
async def test_drain_faults_reach_the_balancer(nursery, tmp_path, token):
    path = tmp_path / "topology.toml"
    keys = {"admin_token": token} if token else {}
    path.write_text(topology(balancer(**keys), origin(), edge("e1")))
    config = {"host": "127.0.0.1", "http_port": 0, "control_port": 0, "admin_token": token}
    b = Balancer(build(BalancerConfig, config))
    http, _ = await nursery.start(b.run)
    b.table.on_message(Heartbeat("e1", "http://127.0.0.1:1"), "x", 0.0)
    dep = Deployment(load(str(path)), tmp_path / "run")
    dep.nodes["balancer"] = Node("balancer", "balancer", [], http_port=http)
    await apply_fault(dep, FaultSpec(action="drain", node="e1"))
    assert b.edges["e1"].draining
    await apply_fault(dep, FaultSpec(action="undrain", node="e1"))
    assert not b.edges["e1"].draining
