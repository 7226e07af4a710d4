"""A topology's fault schedule: kill, restart, drain nodes and degrade links on time."""

from __future__ import annotations

import trio

from common.net.httpclient import fetch
from topology.deployment import Deployment
from topology.output import write_state
from topology.procs import start_node
from topology.schema import FaultSpec


class FaultFailed(RuntimeError):
    """A node asked to carry out a fault refused it (the reason names its answer)."""


async def run_faults(dep: Deployment) -> None:
    """Follow the topology's fault schedule (times count from now)."""
    start = trio.current_time()
    for fault in sorted(dep.topo.faults, key=lambda f: f.seconds):
        await trio.sleep_until(start + fault.seconds)
        what = f"{fault.action} {fault.node or f'{fault.edge}->{fault.parent}'}"
        print(f"  fault at {fault.at}: {what}", flush=True)
        try:
            await apply_fault(dep, fault)
        except Exception as exc:
            print(f"  fault {what} failed: {type(exc).__name__}: {exc}", flush=True)


async def apply_fault(dep: Deployment, fault: FaultSpec) -> None:
    """Carry out one fault; FaultFailed when the balancer refuses a drain or undrain."""
    if fault.action == "kill":
        dep.nodes[fault.node].proc.kill()
    elif fault.action == "restart":
        node = dep.nodes[fault.node]
        if node.proc is None or node.proc.poll() is not None:
            proc = await start_node(dep, node)
            write_state(dep)  # first: who reads the line may read the state file next
            print(f"  {node.kind:8} {node.name:10} restarted (pid {proc.pid})", flush=True)
    elif fault.action in ("drain", "undrain"):
        balancer = dep.url("balancer", "http")
        token = dep.topo.balancer.config["admin_token"] if dep.topo.balancer else ""
        auth = [("authorization", f"Bearer {token}")] if token else []
        resp = await fetch(
            "POST", f"{balancer}/api/edges/{fault.node}/{fault.action}", headers=auth
        )
        if resp.status != 200:
            raise FaultFailed(f"the balancer answered {resp.status}")
    else:
        proxy = dep.proxies[(fault.edge, fault.parent)]
        if fault.action in ("degrade", "restore"):  # to the fault's numbers or the file's
            to = fault if fault.action == "degrade" else dep.topo.link(fault.edge, fault.parent)
            up = {} if fault.action == "degrade" else {"down": False}
            proxy.update(delay_ms=to.delay_ms, jitter_ms=to.jitter_ms, rate_mbps=to.rate_mbps,
                         loss=to.loss, **up)  # fmt: skip
        else:
            proxy.update(down=fault.action == "down")
