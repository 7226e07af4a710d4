"""`python -m topology up`: every node of a topology as its own process, publishers, URLs."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from common.net.httpclient import HttpClientError, fetch
from topology.linkproxy import LinkProxy, LinkSettings
from topology.publisher import SourceSettings, keep_publishing
from topology.schema import (
    EdgeSpec,
    FaultSpec,
    LoadProfileSpec,
    OriginSpec,
    Topology,
    load_spec,
    load_stream,
    parse_duration,
)

log = logging.getLogger("livecdn.topology")
PY = sys.executable


class StartFailed(RuntimeError):
    """A node of the topology did not start (the reason has been printed)."""


def free_port() -> int:
    """A port that was free a moment ago (for port 0 in a topology file)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Proc = trio.Process | subprocess.Popen


@dataclass
class Node:
    """One node's process (`proc` is the latest one started)."""

    name: str
    kind: str
    cmd: list[str]
    http_port: int
    rtmp_port: int = 0
    proc: Proc | None = None
    log_path: Path | None = None
    control_port: int = 0

    def ports(self) -> str:
        """Its listening ports, e.g. 'rtmp :1935, http :8080'."""
        named = (("rtmp", self.rtmp_port), ("http", self.http_port), ("control", self.control_port))
        return ", ".join(f"{what} :{port}" for what, port in named if port)


@dataclass
class Deployment:
    """A running topology."""

    topo: Topology
    run_dir: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    proxies: dict[tuple[str, str], LinkProxy] = field(default_factory=dict)
    started: list[tuple[str, Proc]] = field(default_factory=list)  # restarted ones too
    supervisor: trio.Nursery | None = field(default=None, repr=False)
    is_up: bool = False  # every node started, the URL table printed

    def url(self, name: str, scheme: str) -> str:
        node = self.nodes[name]
        port = node.http_port if scheme == "http" else node.rtmp_port
        return f"{scheme}://127.0.0.1:{port}"


def assign_ports(topo: Topology) -> dict[str, tuple[int, int]]:
    """Each origin's and edge's (rtmp, http) ports; ports of 0 are given free ports."""
    return {
        spec.name: (spec.rtmp_port or free_port(), spec.http_port or free_port())
        for spec in [*topo.origins, *topo.edges]
    }


def plan(
    topo: Topology,
    run_dir: Path,
    ports: dict[str, tuple[int, int]] | None = None,
    links: dict[tuple[str, str], int] | None = None,
) -> Deployment:
    """The commands that start each node; an edge reaches a parent through the link proxy
    listening on `links[(edge, parent)]` when there is one."""
    dep = Deployment(topo, run_dir)
    ports = ports or assign_ports(topo)
    links = links or {}
    balancer_control = None
    if topo.balancer is not None:
        b = topo.balancer
        http, control = b.http_port or free_port(), b.control_port or free_port()
        balancer_control = f"127.0.0.1:{control}"
        if b.classes:
            (run_dir / "balancer.toml").write_text(_classes_toml(b.qos_secret, b.classes))
        dep.nodes["balancer"] = Node(
            "balancer",
            "balancer",
            [PY, "-m", "balancer", "--host", "127.0.0.1", "--http", str(http), "--control",
             str(control), "--policy", b.policy, "--overflow", b.overflow]
            + (["--config", str(run_dir / "balancer.toml")] if b.classes else []),
            http,
            control_port=control,
        )  # fmt: skip
    for o in topo.origins:
        rtmp, http = ports[o.name]
        cmd = [PY, "-m", "origin", "--host", "127.0.0.1", "--rtmp", str(rtmp), "--http", str(http),
               "--node-id", o.name]  # fmt: skip
        if not o.gop_cache:
            cmd.append("--no-gop-cache")
        if o.clock_stamps or topo.loads:
            cmd.append("--clock-stamps")
        if balancer_control:
            cmd += ["--balancer", balancer_control]
        dep.nodes[o.name] = Node(o.name, "origin", cmd, http, rtmp)
    for e in topo.edges_in_start_order():
        rtmp, http = ports[e.name]
        cmd = [PY, "-m", "edge", "--host", "127.0.0.1", "--rtmp", str(rtmp), "--http", str(http),
               "--node-id", e.name, "--linger", str(e.linger_seconds)]  # fmt: skip
        for parent in e.parents:
            prtmp, phttp = ports[parent]
            port = links.get((e.name, parent)) or (prtmp if e.parent_protocol == "rtmp" else phttp)
            cmd += ["--parent", f"{e.parent_protocol}://127.0.0.1:{port}"]
        cmd += ["--config", str(_edge_config(run_dir, topo, e, ports))]
        if balancer_control and e.balanced:
            cmd += ["--balancer", balancer_control, "--capacity-viewers", str(e.capacity_viewers),
                    "--capacity-mbps", str(e.capacity_mbps), "--weight", str(e.weight)]  # fmt: skip
        dep.nodes[e.name] = Node(e.name, "edge", cmd, http, rtmp)
    return dep


def _classes_toml(secret: str, classes: dict) -> str:
    lines = [f"qos_secret = {json.dumps(secret)}"]
    for name, spec in classes.items():
        lines.append(f"[classes.{json.dumps(name)}]")
        lines += [f"{k} = {float(v)}" for k, v in spec.items()]
    return "\n".join(lines) + "\n"


def _edge_config(run_dir: Path, topo: Topology, e: EdgeSpec, ports: dict) -> Path:
    path = run_dir / f"{e.name}.toml"
    text = f"region = {json.dumps(e.region)}\n"
    if e.parent_protocol == "rtmp":  # HLS still comes over HTTP from the parents
        parents = ", ".join(f'"http://127.0.0.1:{ports[p][1]}"' for p in e.parents)
        text += f"hls_parents = [{parents}]\n"
    if topo.balancer is not None and topo.balancer.classes:
        text += _classes_toml(topo.balancer.qos_secret, topo.balancer.classes)
    path.write_text(text)
    return path


async def wait_healthy(url: str, proc=None, timeout: float = 20.0) -> None:
    """Poll `url`/healthz until 200; fail if `proc` (anything with poll()) exits first."""
    with trio.fail_after(timeout):
        while True:
            if proc is not None and (code := proc.poll()) is not None:
                raise RuntimeError(exit_text(code))
            try:
                if (await fetch("GET", url + "/healthz", timeout=1))[0] == 200:
                    return
            except (OSError, HttpClientError, trio.TooSlowError):
                pass
            await trio.sleep(0.1)


def url_table(dep: Deployment) -> str:
    """The URLs a user needs, as a table."""
    topo = dep.topo
    rows = [("what", "url")]
    for pub in topo.publishers:
        rows.append((f"publish {pub.stream}", f"{dep.url(pub.origin, 'rtmp')}/{pub.stream}"))
    streams = [p.stream for p in topo.publishers] or ["live/demo"]
    for stream in streams:
        if "balancer" in dep.nodes:
            b = dep.url("balancer", "http")
            rows.append((f"play {stream} (balancer, HTTP-FLV)", f"{b}/{stream}.flv"))
            rows.append((f"play {stream} (balancer, HLS)", f"{b}/{stream}.m3u8"))
            rows.append(
                (
                    f"RTMP route for {stream}",
                    f"{b}/api/route?app={stream.split('/')[0]}&name={stream.split('/')[1]}&proto=rtmp",
                )
            )
        for e in topo.edges:
            rows.append(
                (
                    f"play {stream} at {e.name}",
                    f"{dep.url(e.name, 'http')}/{stream}.flv  {dep.url(e.name, 'rtmp')}/{stream}",
                )
            )
    for name, node in dep.nodes.items():
        base = f"http://127.0.0.1:{node.http_port}"
        api = "/api/edges" if node.kind == "balancer" else "/api/streams"
        rows.append((f"{name} ({node.kind}) API / metrics", f"{base}{api}  {base}/metrics"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {a.ljust(width)}  {b}" for a, b in rows)


STATE_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "livecdn-state"


def state_path(name: str) -> Path:
    """Where a running topology named `name` records itself (for status and down)."""
    return STATE_DIR / f"{name}.json"


def write_state(dep: Deployment) -> Path:
    """Record the running deployment (launcher pid, nodes, ports)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = state_path(dep.topo.name)
    nodes = {
        n.name: {
            "kind": n.kind,
            "pid": n.proc.pid if n.proc else None,
            "http_port": n.http_port,
            "rtmp_port": n.rtmp_port,
        }  # fmt: skip
        for n in dep.nodes.values()
    }
    state = {
        "topology": str(dep.topo.path),
        "launcher_pid": os.getpid(),
        "run_dir": str(dep.run_dir),
        "nodes": nodes,
    }
    path.write_text(json.dumps(state, indent=1))
    return path


def write_commands(dep: Deployment) -> Path:
    """Every node's command line, to restart one by hand."""
    path = dep.run_dir / "commands.sh"
    lines = ["# each node of this topology; restart one by running its line"]
    lines += [f"# {n.name}\n{shlex.join(n.cmd)} &" for n in dep.nodes.values()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_prometheus(dep: Deployment) -> Path:
    """A Prometheus scrape config for every node, next to the run."""
    targets = ", ".join(f"'127.0.0.1:{n.http_port}'" for n in dep.nodes.values())
    path = dep.run_dir / "prometheus.yml"
    path.write_text(
        "scrape_configs:\n"
        f"  - job_name: livecdn-{dep.topo.name}\n"
        "    scrape_interval: 5s\n"
        f"    static_configs:\n      - targets: [{targets}]\n"
    )
    return path


async def up(
    topo: Topology,
    *,
    seconds: float | None = None,
    run_dir: Path | None = None,
    run_file_loads: bool = True,
    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED,
) -> int:
    """Start everything, print the URLs, run until Ctrl-C/SIGTERM (or `seconds`), stop all.

    `task_status.started(deployment)` once every node is healthy and publishers started.
    A node that cannot start is reported in one line on stderr; `up` then stops the others
    and returns 1 (or, started with a `task_status`, raises `StartFailed`, as it does when
    stopped by a signal before it was up).
    """
    run_dir = (
        run_dir
        or Path(os.environ.get("TMPDIR", "/tmp"))
        / f"livecdn-{topo.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    async with trio.open_nursery() as links_nursery:
        ports = assign_ports(topo)
        proxies: dict[tuple[str, str], LinkProxy] = {}
        for link in topo.links:
            edge = next(e for e in topo.edges if e.name == link.edge)
            rtmp, http = ports[link.parent]
            target = ("127.0.0.1", rtmp if edge.parent_protocol == "rtmp" else http)
            settings = LinkSettings(
                link.delay_ms, link.jitter_ms, link.rate_mbps, link.loss, link.down
            )
            proxy = LinkProxy(f"{link.edge}->{link.parent}", target, settings)
            await links_nursery.start(proxy.run)
            proxies[(link.edge, link.parent)] = proxy
        dep = plan(topo, run_dir, ports, {k: p.port for k, p in proxies.items()})
        dep.proxies = proxies
        try:
            code = await _run(dep, run_dir, seconds, task_status, run_file_loads)
        finally:
            links_nursery.cancel_scope.cancel()
    if task_status is not trio.TASK_STATUS_IGNORED and not dep.is_up:
        raise StartFailed(f"topology {topo.name} stopped before it was up")
    return code


async def _run(
    dep: Deployment, run_dir: Path, seconds: float | None, task_status, run_file_loads: bool
) -> int:
    """Everything of `up` after the link proxies; every node is stopped on the way out."""
    print(f"topology {dep.topo.name} ({dep.topo.path}); logs in {run_dir}", flush=True)
    code = 0
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as guard:
            main = trio.CancelScope()
            guard.start_soon(_cancel_on_signals, signals, main)
            try:
                with main:
                    async with trio.open_nursery() as nursery:
                        dep.supervisor = nursery
                        code = await _serve(dep, seconds, task_status, run_file_loads)
                        nursery.cancel_scope.cancel()
            finally:
                dep.supervisor = None
                with trio.CancelScope(shield=True):
                    await stop(dep)
                guard.cancel_scope.cancel()
    return code


async def _cancel_on_signals(signals, scope: trio.CancelScope) -> None:
    """The first SIGINT/SIGTERM stops the deployment; later ones are only acknowledged."""
    async for signum in signals:
        name = signal.Signals(signum).name
        if scope.cancel_called:
            print(f"{name}: already stopping", file=sys.stderr, flush=True)
        else:
            print(f"{name}: stopping every node", flush=True)
            scope.cancel()


START_TIMEOUT = 20.0  # seconds a node may take to answer /healthz


async def _serve(dep: Deployment, seconds: float | None, task_status, run_file_loads: bool) -> int:
    """Start the nodes one by one, then publishers, faults and loads; run until `seconds`."""
    topo = dep.topo
    assert dep.supervisor is not None
    for node in dep.nodes.values():
        proc = await start_node(dep, node, supervise=False)
        try:
            await wait_healthy(f"http://127.0.0.1:{node.http_port}", proc, START_TIMEOUT)
        except (RuntimeError, trio.TooSlowError) as exc:
            why = str(exc) or f"not healthy after {START_TIMEOUT:g} s"
            print(f"error: {start_failure(node, why)}", file=sys.stderr, flush=True)
            return 1
        dep.supervisor.start_soon(watch, node, proc)
        print(f"  {node.kind:8} {node.name:10} up (pid {proc.pid})", flush=True)
    prom = write_prometheus(dep)
    write_commands(dep)
    for pub in topo.publishers:
        width, _, height = pub.size.partition("x")
        settings = SourceSettings(int(width), int(height), pub.fps, pub.kbps)
        url = f"{dep.url(pub.origin, 'rtmp')}/{pub.stream}"
        dep.supervisor.start_soon(partial(keep_publishing, url, settings=settings))
        print(f"  publisher  {pub.stream} -> {url}", flush=True)
    for pub in topo.publishers:  # the table is only printed once the streams are live
        await wait_live(f"{dep.url(pub.origin, 'http')}/api/streams/{pub.stream}", 20)
    print(f"\n{url_table(dep)}\n\n  Prometheus scrape config: {prom}\n  stop: Ctrl-C\n", flush=True)
    write_state(dep)
    dep.is_up = True
    task_status.started(dep)
    dep.supervisor.start_soon(run_faults, dep)
    for i, load in enumerate(topo.loads if run_file_loads else []):
        dep.supervisor.start_soon(run_file_load, dep, i, load)
    await trio.sleep(seconds if seconds is not None else math.inf)
    return 0


async def wait_live(api: str, timeout: float) -> bool:
    """Poll a stream's API URL until it answers 200 (or `timeout`); whether it did."""
    with trio.move_on_after(timeout):
        while True:
            try:
                if (await fetch("GET", api, timeout=2))[0] == 200:
                    return True
            except (OSError, HttpClientError, trio.TooSlowError):
                pass
            await trio.sleep(0.2)
    return False


async def start_node(dep: Deployment, node: Node, *, supervise: bool = True) -> trio.Process:
    """Start `node`'s process (stdout discarded, stderr appended to its log file) and, with
    `supervise`, watch it; it is stopped with the deployment."""
    node.log_path = node.log_path or dep.run_dir / f"{node.name}.log"
    with open(node.log_path, "ab") as log_file:  # the child keeps its own descriptor
        proc = await trio.lowlevel.open_process(
            node.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            process_group=0,  # a terminal's Ctrl-C reaches the launcher only; it stops them
        )
    node.proc = proc
    dep.started.append((node.name, proc))
    if supervise and dep.supervisor is not None:
        dep.supervisor.start_soon(watch, node, proc)
    return proc


async def watch(node: Node, proc: trio.Process) -> None:
    """Reap `proc` when it exits and report it: node, exit status, the end of its log."""
    code = await proc.wait()
    tail = await trio.to_thread.run_sync(log_tail, node.log_path, 10)
    lines = [
        f"node {node.name} ({node.kind}, pid {proc.pid}) died: {exit_text(code)}; "
        + (f"last lines of {node.log_path}:" if tail else f"{node.log_path} is empty")
    ]
    lines += [f"  | {line}" for line in tail]
    print("\n".join(lines), file=sys.stderr, flush=True)


def exit_text(code: int) -> str:
    """A process's exit status in words."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def log_tail(path: Path | None, lines: int) -> list[str]:
    """The last `lines` non-empty lines of a log file (reads at most its last 16 KiB)."""
    if path is None:
        return []
    try:
        with open(path, "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - 16384)
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    found = text.splitlines()[1 if start else 0 :]  # past a cut, the first line is partial
    return [line for line in found if line.strip()][-lines:]


def start_failure(node: Node, why: str) -> str:
    """One line: which node, on which ports, could not start, and its own reason."""
    tail = log_tail(node.log_path, 40)
    errors = [line for line in tail if line.startswith("error: ")]
    reason = errors[-1].removeprefix("error: ") if errors else (tail[-1] if tail else "")
    return (
        f"{node.name} ({node.kind}, {node.ports()}) did not start: {why}"
        + (f": {reason}" if reason else "")
        + f" (log: {node.log_path})"
    )


async def run_file_load(dep: Deployment, i: int, load: LoadProfileSpec) -> None:
    """One [[load]] profile of the file: wait for its start, run it, print its summary."""
    from topology.loadrun import run_load, target_for

    await trio.sleep(parse_duration(load.start_at))
    spec = load_spec(load)
    stream = load_stream(dep.topo, load)
    print(f"  load #{i + 1}: {spec.players} {spec.protocol} players on {stream} for "
          f"{spec.duration:g} s ({spec.arrival}, profiles {spec.profiles})", flush=True)  # fmt: skip
    try:
        await run_load(target_for(dep, spec.protocol, stream), spec, out_dir=dep.run_dir,
                       dep=dep, label=f"load{i + 1}", quiet=len(dep.topo.loads) > 1)  # fmt: skip
    except Exception as exc:  # a load run's failure is not the deployment's
        print(f"  load #{i + 1} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


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
    """Carry out one fault."""
    if fault.action == "kill":
        dep.nodes[fault.node].proc.kill()
    elif fault.action == "restart":
        node = dep.nodes[fault.node]
        if node.proc is None or node.proc.poll() is not None:
            proc = await start_node(dep, node)
            print(f"  {node.kind:8} {node.name:10} restarted (pid {proc.pid})", flush=True)
            write_state(dep)
    elif fault.action in ("drain", "undrain"):
        balancer = dep.url("balancer", "http")
        await fetch("POST", f"{balancer}/api/edges/{fault.node}/{fault.action}")
    else:
        proxy = dep.proxies[(fault.edge, fault.parent)]
        base = dep.topo.link(fault.edge, fault.parent)
        if fault.action == "degrade":
            proxy.update(
                delay_ms=fault.delay_ms,
                jitter_ms=fault.jitter_ms,
                rate_mbps=fault.rate_mbps,
                loss=fault.loss,
            )
        elif fault.action == "restore":
            proxy.update(
                delay_ms=base.delay_ms,
                jitter_ms=base.jitter_ms,
                rate_mbps=base.rate_mbps,
                loss=base.loss,
                down=False,
            )
        else:
            proxy.update(down=fault.action == "down")


async def stop(dep: Deployment, timeout: float = 5.0) -> None:
    """SIGTERM every process the deployment started (edges first), SIGKILL what is left
    after `timeout`, and reap them all."""
    path = state_path(dep.topo.name)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("launcher_pid") == os.getpid():
            path.unlink()
    procs: list[tuple[str, Proc]] = []
    for name, proc in reversed([*dep.started, *((n.name, n.proc) for n in dep.nodes.values())]):
        if proc is not None and all(proc is not p for _, p in procs):
            procs.append((name, proc))
    for _, proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    with trio.move_on_after(timeout):
        for _, proc in procs:
            await reap(proc)
    for name, proc in procs:
        if proc.poll() is None:
            print(
                f"  {name} (pid {proc.pid}) ignored SIGTERM for {timeout:g} s: killed", flush=True
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    for _, proc in procs:
        await reap(proc)
    print("topology stopped", flush=True)


async def reap(proc: Proc) -> int:
    """Wait for a process to exit and collect its status, without blocking trio."""
    if isinstance(proc, trio.Process):
        return await proc.wait()
    while (code := proc.poll()) is None:
        await trio.sleep(0.05)
    return code


__all__ = ["Deployment", "Node", "OriginSpec", "StartFailed", "plan", "stop", "up", "url_table"]


def detach(topology: str, name: str, seconds: float | None) -> int:
    """Start `python -m topology up` in the background; return once it is up."""
    if state_path(name).exists():
        print(f"error: {name} is already running (python -m topology down {name})", file=sys.stderr)
        return 1
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    log_path = STATE_DIR / f"{name}.log"
    cmd = [PY, "-m", "topology", "up", topology] + (["--seconds", str(seconds)] if seconds else [])
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 90
    while not state_path(name).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"error: {name} did not come up; see {log_path}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(log_path.read_text())
    print(
        f"{name} runs in the background (pid {proc.pid}): python -m topology status {name} | down {name}"
    )
    return 0


def status(name: str) -> int:
    """Print each node of a detached topology and whether it answers /healthz."""
    path = state_path(name)
    if not path.exists():
        print(f"{name} is not running", file=sys.stderr)
        return 1
    state = json.loads(path.read_text())
    print(f"{name}: launcher pid {state['launcher_pid']}, logs in {state['run_dir']}")

    async def check() -> None:
        for node, info in state["nodes"].items():
            try:
                code = (
                    await fetch("GET", f"http://127.0.0.1:{info['http_port']}/healthz", timeout=2)
                )[0]
                health = "healthy" if code == 200 else f"HTTP {code}"
            except (OSError, trio.TooSlowError, Exception) as exc:
                health = f"down ({type(exc).__name__})"
            print(
                f"  {info['kind']:8} {node:10} pid {info['pid']:<7} http :{info['http_port']:<6} {health}"
            )

    trio.run(check)
    return 0


def down(name: str) -> int:
    """Stop a detached topology (SIGTERM to its launcher, which stops every node)."""
    path = state_path(name)
    if not path.exists():
        print(f"{name} is not running", file=sys.stderr)
        return 1
    pid = json.loads(path.read_text())["launcher_pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink()
        print(f"{name}: launcher {pid} was already gone; state removed")
        return 0
    deadline = time.monotonic() + 20
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    print(
        f"{name} stopped" if not path.exists() else f"{name}: launcher {pid} did not stop in time"
    )
    return 0 if not path.exists() else 1
