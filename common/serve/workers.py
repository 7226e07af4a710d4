"""`workers = N`: the node's process becomes a supervisor of N worker processes. It holds the
public ports (port 0 resolved once: bound with SO_REUSEPORT, never listening) and gives each
worker process public listeners of its own in that SO_REUSEPORT group, among which the kernel
spreads new connections by their addresses (a shared listener went to whichever worker was
awake first, most often the busiest), and a private loopback listener per worker (held across
that worker's restarts). It passes them down, restarts a worker that
dies (bounded backoff, one log line naming it and why), forwards SIGTERM (drain) and SIGHUP
(reload), and stops every worker when it stops."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import trio

from common.net.conn import hold_sockets, listen_socket, listen_sockets
from common.serve.workerctx import ENV, PRIVATE_HOST, WorkerContext, public_ports
from common.serve.workersowners import Owners, serve_owners

log = logging.getLogger("livecdn.workers")

FIRST_BACKOFF = 0.5
"""Seconds before restarting a worker that died; doubled after each quick death."""
MAX_BACKOFF = 30.0
STEADY = 30.0
"""A worker that ran this long before dying is restarted after FIRST_BACKOFF again."""
STOP_GRACE = 10.0
"""Seconds workers have to stop after SIGINT before they are killed."""


def describe_exit(code: int) -> str:
    """'exited with 1' or 'was killed by SIGKILL'."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with {code}"


@dataclass
class Worker:
    """One worker process slot: its index, its private listener, the running process."""

    index: int
    private: socket.socket
    proc: trio.Process | None = None
    restarts: int = 0
    starting: bool = False
    exited: trio.Event = field(default_factory=trio.Event)
    owners: socket.socket | None = None
    """The supervisor's end of the running process's ownership socket pair."""


class Supervisor:
    """Runs `python -m KIND ARGV` `count` times as workers of one node."""

    def __init__(self, kind: str, config: Any, argv: list[str]) -> None:
        self.kind, self.config, self.argv = kind, config, argv
        self.count: int = config.workers
        self.secret = secrets.token_urlsafe(24)
        self.public = hold_sockets(config.host, public_ports(config), reuse_port=True)
        """The public ports, held (bound, not listening): a worker's own listeners join them,
        and close with its process."""
        self.ports = [s.getsockname()[1] for s in self.public]
        self.workers = [Worker(i, listen_socket(PRIVATE_HOST, 0)) for i in range(self.count)]
        self.private_ports = [w.private.getsockname()[1] for w in self.workers]
        self.owners = Owners(getattr(config, "max_streams", 1000))
        """Which worker owns each stream (an origin's publishes and pulls)."""
        self.stopping = False
        self.stop_signal: int | None = None
        """SIGTERM (drain) or SIGINT once the node stops: also sent to a worker that was being
        started when the signal went out."""

    def close(self) -> None:
        """Close the listeners (after the workers are gone)."""
        for sock in self.public + [w.private for w in self.workers]:
            sock.close()

    def context(
        self, worker: Worker, public: list[socket.socket], owners_fd: int = -1
    ) -> WorkerContext:
        """What worker `worker` is told (`public`: its own public listeners)."""
        return WorkerContext(
            index=worker.index,
            count=self.count,
            fds=[s.fileno() for s in public],
            private_fd=worker.private.fileno(),
            private_ports=self.private_ports,
            secret=self.secret,
            owners_fd=owners_fd,
        )

    async def start(self, worker: Worker) -> None:
        """Start `worker`'s process: it inherits its listeners (its public ones are its own:
        they close with it) and a pipe on its standard input that it stops with (so it never
        outlives the supervisor)."""
        public = listen_sockets(self.config.host, self.ports, reuse_port=True)
        mine, theirs = socket.socketpair()
        ctx = self.context(worker, public, theirs.fileno())
        env = {**os.environ, ENV: ctx.to_env()}
        worker.exited = trio.Event()
        try:
            worker.proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", self.kind, *self.argv, "--exit-with-stdin"],
                stdin=subprocess.PIPE,
                env=env,
                pass_fds=[*ctx.fds, ctx.private_fd, ctx.owners_fd],
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
            for sock in public:
                sock.close()
        worker.owners = mine

    async def keep(self, worker: Worker) -> None:
        """Run `worker` until the node stops, restarting it when it dies (or when it could
        not be started: fork/exec failing, e.g. under the memory pressure that killed it)."""
        backoff = FIRST_BACKOFF
        while True:
            if not await self._started(worker, backoff):
                await trio.sleep(backoff)
                if self.stopping:
                    return
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            assert worker.proc is not None
            if self.stop_signal is not None:  # the node began stopping while it started
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(self.stop_signal)
            started = trio.current_time()
            code = await self._run_one(worker)
            worker.exited.set()
            if self.stopping:
                return
            if trio.current_time() - started >= STEADY:
                backoff = FIRST_BACKOFF
            worker.restarts += 1
            log.warning(
                "%s worker %d (pid %d) %s: restarting it in %.1f s",
                self.kind,
                worker.index,
                worker.proc.pid,
                describe_exit(code),
                backoff,
            )
            await trio.sleep(backoff)
            if self.stopping:
                return
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _run_one(self, worker: Worker) -> int:
        """Answer `worker`'s ownership requests until its process exits; then its claims
        go. Its exit code."""
        assert worker.proc is not None
        async with trio.open_nursery() as nursery:
            if worker.owners is not None:
                nursery.start_soon(serve_owners, self.owners, worker.index, worker.owners)
            code = await worker.proc.wait()
            nursery.cancel_scope.cancel()
        worker.owners = None
        if dropped := self.owners.drop(worker.index):
            log.info("worker %d's %d streams are owned by no worker now", worker.index, dropped)
        return code

    async def _started(self, worker: Worker, backoff: float) -> bool:
        """Start `worker`; False (one log line) if its process could not be created."""
        worker.starting = True
        try:
            await self.start(worker)
        except OSError as exc:
            log.warning(
                "%s worker %d could not be started (%s): trying again in %.1f s",
                self.kind,
                worker.index,
                exc,
                backoff,
            )
            return False
        finally:
            worker.starting = False
        return True

    def signal_all(self, signum: int) -> None:
        """Send `signum` to every running worker."""
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signum)

    async def wait_all(self) -> None:
        """Until every worker process has exited (one being started meanwhile included)."""
        while True:
            running = [w.proc for w in self.workers if w.proc and w.proc.returncode is None]
            if running:
                await running[0].wait()
            elif any(w.starting for w in self.workers):
                await trio.sleep(0.05)
            else:
                return

    async def stop_all(self) -> None:
        """Stop every worker now (SIGINT), killing those that linger past STOP_GRACE."""
        self.stopping, self.stop_signal = True, signal.SIGINT
        self.signal_all(signal.SIGINT)
        with trio.move_on_after(STOP_GRACE) as waited:
            await self.wait_all()
        if waited.cancelled_caught:
            log.warning("workers still running %g s after SIGINT: killing them", STOP_GRACE)
            self.signal_all(signal.SIGKILL)
            await self.wait_all()

    async def run(self, signals: Any, stop_on_stdin: bool) -> None:
        """Run the workers until a signal or the end of standard input stops the node."""
        address = "  ".join(
            f"{scheme}://{self.config.host}:{s.getsockname()[1]}"
            for scheme, s in zip(("rtmp", "http", "rtmps", "https"), self.public, strict=False)
        )
        log.info("%s up: %d workers: %s", self.kind, self.count, address)
        try:
            async with trio.open_nursery() as nursery:
                for w in self.workers:
                    nursery.start_soon(self.keep, w)
                if stop_on_stdin:
                    nursery.start_soon(self._stdin_watch, nursery.cancel_scope)
                await self._signals(signals, nursery)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self.stop_all()
            self.close()

    async def _signals(self, signals: Any, nursery: trio.Nursery) -> None:
        draining = False
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                log.info("SIGHUP received: each worker reloads its config")
                self.signal_all(signal.SIGHUP)
            elif signum == signal.SIGTERM and not draining:
                draining = self.stopping = True
                self.stop_signal = signal.SIGTERM
                log.info("SIGTERM received: every worker drains, then stops")
                self.signal_all(signal.SIGTERM)
                nursery.start_soon(self._stop_when_drained, nursery.cancel_scope)
            else:
                log.info("%s received: stopping the workers", name)
                return

    async def _stop_when_drained(self, scope: trio.CancelScope) -> None:
        await self.wait_all()
        log.info("every worker has stopped")
        scope.cancel()

    async def _stdin_watch(self, scope: trio.CancelScope) -> None:
        async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
            while await stdin.receive_some(4096):
                pass
        log.warning("standard input closed (the launcher is gone): stopping the workers")
        scope.cancel()


def run_supervisor(kind: str, config: Any, argv: list[str], signals_: tuple, stdin: bool) -> None:
    """Serve node `kind` as `config.workers` worker processes until stopped."""
    sup = Supervisor(kind, config, argv)

    async def main() -> None:
        with trio.open_signal_receiver(*signals_) as signals:
            await sup.run(signals, stdin)

    trio.run(main)
