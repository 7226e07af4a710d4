"""`python -m topology up`: every node of a topology as its own process, publishers, URLs."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import trio

from common.net.httpclient import fetch
from topology.controlapi import ControlApi
from topology.deployment import Deployment, Node, url_host
from topology.faults import run_faults
from topology.linkproxy import LinkProxy, LinkSettings
from topology.loadrun import run_file_load
from topology.netns import (
    NETEM,
    TBF,
    NetnsError,
    Network,
    NodeUser,
    VethShapedLink,
    unavailable,
)
from topology.output import (
    StateError,
    private_file,
    read_state,
    remove_state,
    state_dir,
    state_path,
    url_table,
    write_commands,
    write_prometheus,
    write_state,
)
from topology.plan import ONE_MACHINE, Hosts, assign_ports, parent_port, plan
from topology.ports import PortBook
from topology.procs import start_failure, start_node, stop_all, wait_healthy, wait_live, watch
from topology.publisher import SourceSettings, keep_publishing
from topology.runsecrets import ensure_secrets, generate
from topology.schema import OriginSpec, Topology
from topology.schema import load as load_topology

log = logging.getLogger("livecdn.topology")
PY = sys.executable


class StartFailed(RuntimeError):
    """A node of the topology did not start (the reason has been printed)."""


async def up(
    topo: Topology,
    *,
    seconds: float | None = None,
    run_dir: Path | None = None,
    run_file_loads: bool = True,
    netns: bool = False,
    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED,
) -> int:
    """Start everything, print the URLs, run until Ctrl-C/SIGTERM (or `seconds`), stop all.

    `task_status.started(deployment)` once every node is healthy and publishers started.
    A node that cannot start is reported in one line on stderr; `up` then stops the others
    and returns 1 (or, started with a `task_status`, raises `StartFailed`, as it does when
    stopped by a signal before it was up). With `netns` (or the file's `hosts = "netns"`)
    each node runs in its own network namespace, at its own address (topology/netns.py);
    they are removed however the run ends.
    """
    network = None
    if netns or topo.hosts == "netns":
        if why := unavailable(rates=any(link.rate_mbps for link in topo.links)):
            return _cannot_start(why, task_status)
        network = Network(node_names(topo), user=NodeUser.pick(os.environ))
    run_dir = (
        run_dir
        or Path(os.environ.get("TMPDIR", "/tmp"))
        / f"livecdn-{topo.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)  # the nodes' config files and secrets.toml hold secrets
    console_token = generate()  # the control API's, for the console page
    ensure_secrets(topo, run_dir, console_token=console_token)
    book = PortBook()
    try:
        hosts = ONE_MACHINE
        if network is not None:
            try:
                await open_network(topo, network, run_dir)
            except NetnsError as exc:
                return _cannot_start(str(exc), task_status)
            hosts = network.hosts([e.name for e in topo.edges])
        return await _up(topo, run_dir, console_token, hosts, network, seconds, run_file_loads,
                         book, task_status)  # fmt: skip
    finally:
        book.close()
        if network is not None:  # made in a thread: it may exist though the await was cancelled
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(network.remove)


def _cannot_start(why: str, task_status) -> int:
    """Say `why` in one line on stderr; 1, or StartFailed for a caller waiting to be started."""
    print(f"error: {why}", file=sys.stderr, flush=True)
    if task_status is not trio.TASK_STATUS_IGNORED:
        raise StartFailed(why)
    return 1


def node_names(topo: Topology) -> list[str]:
    """The balancer's ("balancer"), the origins' and the edges' names."""
    return [
        *(["balancer"] if topo.balancer else []),
        *(n.name for n in [*topo.origins, *topo.edges]),
    ]


async def open_network(topo: Topology, network: Network, run_dir: Path) -> None:
    """Make `network`'s namespaces; one line says where the nodes are, one how the links are
    emulated; NetnsError (one line) when they cannot be made."""
    await trio.to_thread.run_sync(network.check_user, PY, run_dir)
    await trio.to_thread.run_sync(network.create)
    first, last = network.address(network.names[0]), network.address(network.names[-1])
    print(f"network namespaces {network.namespaces}: the nodes at {first}..{last}, the "
          f"root namespace at {network.gateway} (bridge {network.bridge}); the nodes run as "
          f"{network.user or 'root'}", flush=True)  # fmt: skip
    if topo.links:
        network.tbf = await trio.to_thread.run_sync(network.has_qdisc, *TBF)
        netem = await trio.to_thread.run_sync(network.has_qdisc, *NETEM)
        rate = ("tbf on an edge's veth limits the rate of the link to its only parent, the "
                "proxies that of other links" if network.tbf else
                "the proxies limit their rate too (this kernel has no tbf)")  # fmt: skip
        print(f"  links: the link proxies at {network.gateway} add delay, jitter and loss"
              f"{'' if netem else ' (this kernel has no netem)'}; {rate}", flush=True)  # fmt: skip


async def _up(
    topo: Topology,
    run_dir: Path,
    console_token: str,
    hosts: Hosts,
    network: Network | None,
    seconds: float | None,
    run_file_loads: bool,
    book: PortBook,
    task_status,
) -> int:
    """`up` once the run directory and, with --netns, the namespaces are there; `book` holds
    the ports picked for nodes given port 0."""
    async with trio.open_nursery() as links_nursery:
        ports = assign_ports(topo, book)
        proxies: dict[tuple[str, str], LinkProxy] = {}
        for link in topo.links:
            edge = next(e for e in topo.edges if e.name == link.edge)
            target = (
                hosts.reach(link.parent),
                parent_port(ports, link.parent, edge.parent_protocol),
            )
            settings = LinkSettings(
                link.delay_ms, link.jitter_ms, link.rate_mbps, link.loss, link.down
            )
            name = f"{link.edge}->{link.parent}"
            if network is not None and network.tbf and edge.parents == [link.parent]:
                proxy: LinkProxy = VethShapedLink(network, link.edge, target, settings, name)
            else:
                proxy = LinkProxy(name, target, settings, hosts.links)
            await links_nursery.start(proxy.run)
            proxies[(link.edge, link.parent)] = proxy
        links = {k: p.port for k, p in proxies.items()}
        dep = plan(topo, run_dir, ports, links, hosts, book)
        if network is not None:
            configs = [Path(n.cmd[n.cmd.index("--config") + 1]) for n in dep.nodes.values()]
            network.grant(configs)
            for node in dep.nodes.values():
                node.cmd = [*network.exec_prefix(node.name), *node.cmd]
        dep.proxies = proxies
        dep.console_token = console_token
        dep.control_port = await links_nursery.start(ControlApi(dep, console_token).serve)
        try:
            code = await _run(dep, run_dir, seconds, task_status, run_file_loads)
        finally:
            links_nursery.cancel_scope.cancel()
    if task_status is not trio.TASK_STATUS_IGNORED and not dep.is_up:
        raise StartFailed(f"topology {topo.name} stopped before it was up")
    return code


async def start(nursery: trio.Nursery, path: Path, run_dir: Path) -> Deployment:
    """Load the topology file `path` and bring it up (`up`, logs in `run_dir`) in `nursery`;
    the Deployment once every node is healthy and the publishers are started."""
    topo = load_topology(str(path))
    return await nursery.start(partial(up, topo, run_dir=run_dir))


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
                    remove_state(dep)
                    await stop_all(dep.processes())
                    print("topology stopped", flush=True)
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
LIVE_TIMEOUT = 20.0  # seconds a built-in publisher may take to be live


async def _serve(dep: Deployment, seconds: float | None, task_status, run_file_loads: bool) -> int:
    """Start the nodes one by one, then publishers, faults and loads; run until `seconds`."""
    topo = dep.topo
    assert dep.supervisor is not None
    for node in dep.nodes.values():
        proc = await start_node(dep, node, supervise=False)
        try:
            await wait_healthy(dep.url(node.name, "http"), proc, START_TIMEOUT)
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
        secret = topo.node(pub.origin).config["publish_secret"]
        dep.supervisor.start_soon(
            partial(keep_publishing, url, settings=settings, publish_secret=secret)
        )
        signed = " (with a publish token)" if secret else ""
        print(f"  publisher  {pub.stream} -> {url}{signed}", flush=True)
    for pub in topo.publishers:  # the table is only printed once the streams are live
        api = f"{dep.url(pub.origin, 'http')}/api/streams/{pub.stream}"
        if not await wait_live(api, LIVE_TIMEOUT):
            print(
                f"warning: publisher {pub.stream} is not live on {pub.origin} after "
                f"{LIVE_TIMEOUT:g} s ({api} does not answer 200); why: the "
                f"'publisher {pub.stream}:' lines",
                file=sys.stderr,
                flush=True,
            )
    write_state(dep)  # first: who reads the table may read the state file next
    print(f"\n{url_table(dep)}\n\n  Prometheus scrape config: {prom}\n  stop: Ctrl-C\n", flush=True)
    dep.is_up = True
    task_status.started(dep)
    dep.supervisor.start_soon(run_faults, dep)
    for i, load in enumerate(topo.loads if run_file_loads else []):
        dep.supervisor.start_soon(run_file_load, dep, i, load)
    await trio.sleep(seconds if seconds is not None else math.inf)
    return 0


__all__ = ["Deployment", "Node", "OriginSpec", "StartFailed", "plan", "up", "url_table"]


async def detach(topology: str, name: str, seconds: float | None, netns: bool = False) -> int:
    """Start `python -m topology up` (with `--netns`) in the background; return once it is up."""
    try:
        running = read_state(name)
        log_path = state_dir() / f"{name}.log"  # it holds signed URLs: the owner's only
    except StateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if running is not None:
        print(f"error: {name} is already running (python -m topology down {name})", file=sys.stderr)
        return 1
    cmd = [PY, "-m", "topology", "up", topology] + (["--seconds", str(seconds)] if seconds else [])
    cmd += ["--netns"] if netns else []
    with open(private_file(log_path), "wb") as log_file:
        proc = await trio.lowlevel.open_process(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    with trio.move_on_after(90):
        while not state_path(name).exists() and proc.poll() is None:
            await trio.sleep(0.2)
    if not state_path(name).exists():
        print(f"error: {name} did not come up; see {log_path}", file=sys.stderr)
        return 1
    stop = f"python -m topology down {name} (or ./livecdn topology down {name})"
    print(log_path.read_text().replace("stop: Ctrl-C", f"stop: {stop}"))
    print(
        f"{name} runs in the background (pid {proc.pid}); status: python -m topology status {name}"
    )
    print(f"stop: {stop}")
    return 0


def _running(name: str) -> dict | None:
    """A detached topology's recorded state; None (and a line on stderr) if it is not running."""
    try:
        state = read_state(name)
    except StateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if state is None:
        print(f"{name} is not running", file=sys.stderr)
    return state


async def status(name: str) -> int:
    """Print each node of a detached topology and whether it answers /healthz."""
    if (state := _running(name)) is None:
        return 1
    print(f"{name}: launcher pid {state['launcher_pid']}, logs in {state['run_dir']}")
    for node, info in state["nodes"].items():
        where = f"{url_host(info.get('host', '127.0.0.1'))}:{info['http_port']}"
        try:
            code = (await fetch("GET", f"http://{where}/healthz", timeout=2)).status
            health = "healthy" if code == 200 else f"HTTP {code}"
        except Exception as exc:
            health = f"down ({type(exc).__name__})"
        print(f"  {info['kind']:8} {node:10} pid {info['pid']:<7} http {where:<21} {health}")
    return 0


async def down(name: str) -> int:
    """Stop a detached topology (SIGTERM to its launcher, which stops every node)."""
    if (state := _running(name)) is None:
        return 1
    path, pid = state_path(name), state["launcher_pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink()
        print(f"{name}: launcher {pid} was already gone; state removed")
        return 0
    with trio.move_on_after(20):
        while path.exists():
            await trio.sleep(0.2)
    print(
        f"{name} stopped" if not path.exists() else f"{name}: launcher {pid} did not stop in time"
    )
    return 0 if not path.exists() else 1
