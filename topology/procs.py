"""Node processes: start one, watch it, wait until it answers, stop them all."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import trio

from common.config.sources import ENV_PREFIX
from common.net.httpclient import HttpClientError, fetch
from topology.deployment import Deployment, Node


async def answers_ok(url: str, timeout: float) -> bool:
    """Whether a GET of `url` answers 200 within `timeout` (no answer is False)."""
    try:
        return (await fetch("GET", url, timeout=timeout)).status == 200
    except (OSError, HttpClientError, trio.TooSlowError):
        return False


async def wait_healthy(url: str, proc: trio.Process | None = None, timeout: float = 20.0) -> None:
    """Poll `url`/healthz until 200; fail if `proc` exits first."""
    with trio.fail_after(timeout):
        while True:
            if proc is not None and (code := proc.poll()) is not None:
                raise RuntimeError(exit_text(code))
            if await answers_ok(url + "/healthz", 1):
                return
            await trio.sleep(0.1)


async def wait_live(api: str, timeout: float) -> bool:
    """Poll a stream's API URL until it answers 200 (or `timeout`); whether it did."""
    with trio.move_on_after(timeout):
        while not await answers_ok(api, 2):
            await trio.sleep(0.2)
        return True
    return False


async def start_node(dep: Deployment, node: Node, *, supervise: bool = True) -> trio.Process:
    """Start `node`'s process (stdout discarded, stderr appended to its log file) and, with
    `supervise`, watch it; it is stopped with the deployment, and stops by itself if the
    launcher dies (its standard input is a pipe from the launcher)."""
    node.log_path = node.log_path or dep.run_dir / f"{node.name}.log"
    fd = os.open(node.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # URLs, peers
    with open(fd, "ab") as log_file:  # the child keeps its own descriptor
        proc = await trio.lowlevel.open_process(
            [*node.cmd, "--exit-with-stdin"],
            stdin=subprocess.PIPE,  # never written: it closes when the launcher ends, however
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            process_group=0,  # a terminal's Ctrl-C reaches the launcher only; it stops them
            env=node_environ(os.environ),
        )
    node.proc = proc
    dep.started.append((node.name, proc))
    if supervise and dep.supervisor is not None:
        dep.supervisor.start_soon(watch, node, proc)
    return proc


def node_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a node starts with: the launcher's less every LIVECDN_* variable, so
    the config file the launcher wrote is the node's whole config."""
    return {k: v for k, v in environ.items() if not k.startswith(ENV_PREFIX)}


async def watch(node: Node, proc: trio.Process) -> None:
    """Reap `proc` when it exits and report it: node, exit status, the end of its log (one
    line for a node that stopped cleanly)."""
    code = await proc.wait()
    if code == 0:  # it stopped by itself, cleanly (a drain, for a rolling restart)
        print(f"node {node.name} ({node.kind}, pid {proc.pid}) stopped", flush=True)
        return
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


async def stop_all(procs: list[tuple[str, trio.Process]], timeout: float = 5.0) -> None:
    """SIGINT every process (in the order given), SIGKILL what is left after `timeout`,
    and reap them all. SIGINT stops a node at once (SIGTERM would let an edge drain)."""
    for _, proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
    with trio.move_on_after(timeout):
        for _, proc in procs:
            await proc.wait()
    for name, proc in procs:
        if proc.poll() is None:
            print(f"  {name} (pid {proc.pid}) ignored SIGINT for {timeout:g} s: killed", flush=True)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    for _, proc in procs:
        await proc.wait()
