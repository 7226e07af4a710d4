"""A rolling restart of a deployment's edges: one edge at a time is drained (SIGTERM: the
balancer routes no new viewers there, its viewers get drain_timeout to leave, then a clean
end that sends their players back through the balancer), started again, and waited for
until it is healthy and back in the balancer's rotation; then the next. An edge the operator
had drained (the balancer's admin drain) is waited for until it is healthy and registered,
and stays drained. A run can be cancelled: it stops once the edge it works on is back."""

from __future__ import annotations

import json
import signal
import sys
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import trio

from common.config import ConfigError, EdgeConfig, load
from common.net.httpclient import HttpClientError, fetch
from topology.deployment import Deployment, Node
from topology.faults import FaultFailed, apply_fault
from topology.output import StateError, read_state, write_state
from topology.procs import start_node, wait_healthy
from topology.runsecrets import FILE as SECRETS_FILE
from topology.schema import FaultSpec

EXIT_MARGIN = 15.0
"""Seconds past its drain_timeout an edge may take to stop before it is killed."""
START_TIMEOUT = 20.0
"""Seconds a restarted edge may take to answer /healthz."""
START_TRIES = 3
ROTATION_TIMEOUT = 20.0
"""Seconds a restarted edge may take to be back in the balancer's rotation."""
OVER = ("done", "failed")
"""The states of an edge's step that is over."""
KEPT = "kept drained (the operator had drained it)"
KEPT_DRAINED = f"{KEPT}: waited for health and registration, not for rotation"


class RestartFailed(Exception):
    """An edge did not come back (the message says which and why)."""


@dataclass
class EdgeStep:
    """One edge's part of a rolling restart: its state ("waiting", "draining", "starting",
    "joining" the rotation, "done", "failed") and how long it took."""

    edge: str
    state: str = "waiting"
    stop_s: float | None = None
    """From SIGTERM until the old process exited (its drain)."""
    back_s: float | None = None
    """From the new process's start until it was healthy and in rotation."""
    error: str = ""
    drained: bool = False
    """The operator had drained the edge (the balancer's admin drain): it stays drained."""
    note: str = ""


@dataclass
class RollingRestart:
    """A rolling restart's progress, as the control API shows it."""

    steps: list[EdgeStep] = field(default_factory=list)
    state: str = "running"  # then "done", "failed" or "cancelled"
    cancelling: bool = False
    """Cancel asked: the run stops once the edge it works on is back."""

    def as_json(self) -> dict:
        """The progress as JSON."""
        return {
            "state": self.state,
            "cancelling": self.cancelling,
            "edges": [asdict(s) for s in self.steps],
        }

    def owns(self) -> EdgeStep | None:
        """The step of the edge the run works on (or will next): no other action may touch
        that edge meanwhile. None once the run is over."""
        if self.state != "running":
            return None
        return next((s for s in self.steps if s.state not in OVER), None)


async def drain_timeout(dep: Deployment, edge: str) -> float:
    """The longest drain_timeout the edge may run with: its topology file's, or that of its
    config file and environment as they are now (what a SIGHUP would have it reload), if
    larger and readable."""
    spec = next(e for e in dep.topo.edges if e.name == edge)
    timeout = float(spec.config["drain_timeout"])
    cmd = dep.nodes[edge].cmd
    if "--config" in cmd[:-1]:
        path = cmd[cmd.index("--config") + 1]
        try:
            with trio.fail_after(5):
                now = await trio.to_thread.run_sync(load, EdgeConfig, path, abandon_on_cancel=True)
            timeout = max(timeout, now.drain_timeout)
        except (ConfigError, OSError, trio.TooSlowError):
            pass  # the topology file's value
    return timeout


def plan_restart(dep: Deployment) -> RollingRestart:
    """A rolling restart of every edge of `dep`, in the order the topology file starts them."""
    return RollingRestart([EdgeStep(e.name) for e in dep.topo.edges_in_start_order()])


async def run_restart(dep: Deployment, run: RollingRestart) -> None:
    """Restart `run`'s edges one after the other; the first that does not come back stops
    the run (state "failed"), the rest stay as they are; so does a cancel (state
    "cancelled"), once the edge being restarted is back."""
    print(f"  rolling restart of {', '.join(s.edge for s in run.steps)}", flush=True)
    drained = await admin_drained(dep)
    for step in run.steps:
        step.drained = step.edge in drained
    for step in run.steps:
        if run.cancelling:
            run.state = "cancelled"
            print(f"  rolling restart cancelled before {step.edge}", flush=True)
            return
        try:
            await restart_edge(dep, step)
        except Exception as exc:  # the launcher runs on: this run stops, saying why
            why = str(exc) if isinstance(exc, RestartFailed) else f"{type(exc).__name__}: {exc}"
            step.state, step.error, run.state = "failed", why, "failed"
            print(f"  rolling restart stopped at {step.edge}: {why}", flush=True)
            return
    run.state = "done"
    print("  rolling restart done", flush=True)


async def restart_edge(dep: Deployment, step: EdgeStep) -> None:
    """Drain and stop one edge, start it again and wait until it is back in rotation."""
    node = dep.nodes[step.edge]
    started = trio.current_time()
    proc = node.proc
    if proc is not None and proc.poll() is None:
        step.state = "draining"
        proc.send_signal(signal.SIGTERM)
        wait = await drain_timeout(dep, step.edge) + EXIT_MARGIN
        with trio.move_on_after(wait):
            await proc.wait()
        if proc.poll() is None:
            print(f"  {node.name} did not stop {wait:g} s after SIGTERM: killed", flush=True)
            proc.kill()
            await proc.wait()
    step.stop_s = round(trio.current_time() - started, 2)
    step.state = "starting"
    started = trio.current_time()
    await start_again(dep, node)
    if "balancer" in dep.nodes and step.drained:
        step.state, step.note = "joining", KEPT_DRAINED
        await rejoin_drained(dep, node.name, started)
    elif "balancer" in dep.nodes:
        step.state = "joining"
        if not await balancer_has(
            dep, node.name, ROTATION_TIMEOUT, lambda e: bool(e.get("in_rotation"))
        ):
            raise RestartFailed(f"{node.name} not back in the balancer's rotation")
    step.back_s = round(trio.current_time() - started, 2)
    step.state = "done"
    kept = f" ({step.note})" if step.note else ""
    print(f"  {node.name} restarted: drained in {step.stop_s:g} s, back in {step.back_s:g} s{kept}",
          flush=True)  # fmt: skip


async def admin_drained(dep: Deployment) -> set[str]:
    """The edges the balancer has drained on an operator's request (none without a
    balancer, or when it does not answer)."""
    if "balancer" not in dep.nodes:
        return set()
    return {e["id"] for e in await balancer_edges(dep) if e.get("draining")}


async def rejoin_drained(dep: Deployment, edge: str, since: float) -> None:
    """Wait until the restarted `edge` (started at `since`) heartbeats to the balancer;
    drain it there again if its entry lost the operator's drain."""

    def registered(e: dict) -> bool:
        ago = e.get("last_heartbeat_s_ago")
        return ago is not None and ago < trio.current_time() - since

    entry = await balancer_has(dep, edge, ROTATION_TIMEOUT, registered)
    if entry is None:
        raise RestartFailed(f"{edge} did not register with the balancer again")
    if not entry.get("draining"):
        try:
            with trio.fail_after(5):
                await apply_fault(dep, FaultSpec(action="drain", node=edge))
        except (OSError, HttpClientError, FaultFailed, trio.TooSlowError) as exc:
            raise RestartFailed(f"{edge} could not be drained again: {exc}") from None


async def start_again(dep: Deployment, node: Node) -> None:
    """Start `node` again and wait until it is healthy; a start that fails is tried again
    (START_TRIES in all): while the node was down another process's outgoing connection
    may have taken one of its ports for a moment."""
    for attempt in range(1, START_TRIES + 1):
        proc = await start_node(dep, node)
        write_state(dep)
        try:
            await wait_healthy(dep.url(node.name, "http"), proc, START_TIMEOUT)
            return
        except (RuntimeError, trio.TooSlowError) as exc:
            why = f"{node.name} did not start again: {exc or 'not healthy'}"
            if proc.poll() is None:
                proc.kill()
                await proc.wait()
            if attempt == START_TRIES:
                raise RestartFailed(f"{why} (log: {node.log_path})") from None
            print(f"  {why}; trying again", flush=True)
            await trio.sleep(1.0)


async def balancer_edges(dep: Deployment) -> list[dict]:
    """The balancer's GET /api/edges (empty when it does not answer)."""
    url = dep.url("balancer", "http") + "/api/edges"
    try:
        reply = await fetch("GET", url, timeout=2)
        return json.loads(reply.body)["edges"] if reply.status == 200 else []
    except (OSError, HttpClientError, ValueError, KeyError, TypeError, trio.TooSlowError):
        return []


async def balancer_has(
    dep: Deployment, edge: str, timeout: float, ok: Callable[[dict], bool]
) -> dict | None:
    """Wait until the balancer's entry of `edge` is `ok`; that entry, None if none came."""
    with trio.move_on_after(timeout):
        while True:
            for e in await balancer_edges(dep):
                if e.get("id") == edge and ok(e):
                    return e
            await trio.sleep(0.2)
    return None


async def restart_detached(name: str) -> int:
    """`python -m topology restart FILE --rolling`: ask the launcher of the detached topology
    `name` (its control API) for a rolling restart of the edges, and print its progress
    until it is over; 0 if every edge came back."""
    try:
        state = read_state(name)
    except StateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if state is None:
        print(
            f"error: {name} is not running (python -m topology up FILE --detach)", file=sys.stderr
        )
        return 1
    try:
        secrets = tomllib.loads((Path(state["run_dir"]) / SECRETS_FILE).read_text())
        api = f"http://127.0.0.1:{state['control_port']}/api/rolling-restart"
        token = secrets["console"]["console_token"]
        return await follow_restart(api, token)
    except (OSError, HttpClientError, ValueError, KeyError, TypeError) as exc:
        print(f"error: no rolling restart of {name}: {type(exc).__name__}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1


async def follow_restart(api: str, token: str) -> int:
    """Start a rolling restart at the control API `api` and print its progress."""
    auth = [("authorization", f"Bearer {token}")]
    reply = await fetch("POST", api, headers=auth)
    if reply.status != 200:
        print(f"error: the launcher answered {reply.status}: {reply.body.decode()[:200]}",
              file=sys.stderr)  # fmt: skip
        return 1
    shown: dict[str, str] = {}
    while True:
        run = json.loads((await fetch("GET", api, headers=auth)).body)
        for step in run["edges"]:
            if shown.get(step["edge"]) != step["state"]:
                shown[step["edge"]] = step["state"]
                print(f"  {step['edge']:10} {step_text(step)}", flush=True)
        if run["state"] != "running":
            print(f"rolling restart {run['state']}")
            return 0 if run["state"] == "done" else 1
        await trio.sleep(0.5)


def step_text(step: dict) -> str:
    """One edge's state in a rolling restart, as the restart command prints it."""
    if step["state"] == "done" and step.get("drained"):
        return f"done: drained in {step['stop_s']:g} s, back {step['back_s']:g} s later, {KEPT}"
    if step["state"] == "done":
        return f"done: drained in {step['stop_s']:g} s, back in rotation {step['back_s']:g} s later"
    if step["state"] == "failed":
        return f"failed: {step['error']}"
    return step["state"]
