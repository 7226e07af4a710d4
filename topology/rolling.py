"""A rolling restart of a deployment's edges: one edge at a time is drained (SIGTERM: the
balancer routes no new viewers there, its viewers get drain_timeout to leave, then a clean
end that sends their players back through the balancer), started again, and waited for
until it is healthy and back in the balancer's rotation; then the next."""

from __future__ import annotations

import json
import signal
import sys
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import trio

from common.net.httpclient import HttpClientError, fetch
from topology.deployment import Deployment, Node
from topology.output import state_path, write_state
from topology.procs import start_node, wait_healthy
from topology.runsecrets import FILE as SECRETS_FILE

EXIT_MARGIN = 15.0
"""Seconds past its drain_timeout an edge may take to stop before it is killed."""
START_TIMEOUT = 20.0
"""Seconds a restarted edge may take to answer /healthz."""
START_TRIES = 3
ROTATION_TIMEOUT = 20.0
"""Seconds a restarted edge may take to be back in the balancer's rotation."""


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


@dataclass
class RollingRestart:
    """A rolling restart's progress, as the control API shows it."""

    steps: list[EdgeStep] = field(default_factory=list)
    state: str = "running"  # then "done" or "failed"

    def as_json(self) -> dict:
        """The progress as JSON."""
        return {"state": self.state, "edges": [asdict(s) for s in self.steps]}


def drain_timeout(dep: Deployment, edge: str) -> float:
    """The edge's drain_timeout as its topology file sets it (else the key's default)."""
    spec = next(e for e in dep.topo.edges if e.name == edge)
    return float(spec.config["drain_timeout"])


def plan_restart(dep: Deployment) -> RollingRestart:
    """A rolling restart of every edge of `dep`, in the order the topology file starts them."""
    return RollingRestart([EdgeStep(e.name) for e in dep.topo.edges_in_start_order()])


async def run_restart(dep: Deployment, run: RollingRestart) -> None:
    """Restart `run`'s edges one after the other; the first that does not come back stops
    the run (state "failed"), the rest stay as they are."""
    print(f"  rolling restart of {', '.join(s.edge for s in run.steps)}", flush=True)
    for step in run.steps:
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
        wait = drain_timeout(dep, step.edge) + EXIT_MARGIN
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
    if "balancer" in dep.nodes:
        step.state = "joining"
        if not await in_rotation(dep, node.name, ROTATION_TIMEOUT):
            raise RestartFailed(f"{node.name} not back in the balancer's rotation")
    step.back_s = round(trio.current_time() - started, 2)
    step.state = "done"
    print(f"  {node.name} restarted: drained in {step.stop_s:g} s, back in {step.back_s:g} s",
          flush=True)  # fmt: skip


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


async def in_rotation(dep: Deployment, edge: str, timeout: float) -> bool:
    """Wait until the balancer's GET /api/edges has `edge` in rotation; whether it came."""
    url = dep.url("balancer", "http") + "/api/edges"
    with trio.move_on_after(timeout):
        while True:
            try:
                reply = await fetch("GET", url, timeout=2)
                edges = json.loads(reply.body)["edges"] if reply.status == 200 else []
            except (OSError, HttpClientError, ValueError, KeyError, trio.TooSlowError):
                edges = []
            if any(e.get("id") == edge and e.get("in_rotation") for e in edges):
                return True
            await trio.sleep(0.2)
    return False


async def restart_detached(name: str) -> int:
    """`python -m topology restart FILE --rolling`: ask the launcher of the detached topology
    `name` (its control API) for a rolling restart of the edges, and print its progress
    until it is over; 0 if every edge came back."""
    path = state_path(name)
    if not path.exists():
        print(
            f"error: {name} is not running (python -m topology up FILE --detach)", file=sys.stderr
        )
        return 1
    try:
        state = json.loads(path.read_text())
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
        run = json.loads((await fetch("GET", api)).body)
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
    if step["state"] == "done":
        return f"done: drained in {step['stop_s']:g} s, back in rotation {step['back_s']:g} s later"
    if step["state"] == "failed":
        return f"failed: {step['error']}"
    return step["state"]
