"""Command-line plumbing shared by the nodes: flags generated from the config model, logging,
signals."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

from common.config import ConfigError, load
from common.config.flags import add_config_arguments, config_values
from common.net.conn import listen_socket
from common.net.supervise import leaves
from common.serve.gctune import tune_gc
from common.serve.lifecycle import NodeControls
from common.serve.reload import PartlyApplied, read_off_loop
from common.serve.workerctx import CURRENT
from common.serve.workers import run_supervisor

log = logging.getLogger("livecdn")


def node_parser(config_cls: type, description: str, epilog: str = "") -> argparse.ArgumentParser:
    """`python -m KIND`'s command line: --config FILE and a flag for every config key."""
    p = argparse.ArgumentParser(
        prog=f"python -m {config_cls.kind}",
        description=description,
        epilog=(epilog + " " if epilog else "")
        + f"Every key can also be set by LIVECDN_{config_cls.kind.upper()}_KEY (environment; "
        "lists and tables as JSON or TOML inline, as for flags); a flag wins over the "
        "environment, which wins over the --config file. SIGHUP reloads the config from the "
        "same file, environment and flags without dropping connections; a changed key that "
        "needs a restart (ports, TLS files, ...: the README's key tables) refuses the reload. "
        "SIGTERM drains the node before it stops (an edge gives its viewers drain_timeout "
        "seconds, an origin ends its streams cleanly); SIGINT, or a second SIGTERM, stops it "
        "at once.",
    )
    add_config_arguments(p, config_cls)
    p.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="stop when standard input closes (a launcher passes a pipe it never writes to, "
        "so its nodes stop even if it is killed)",
    )
    return p


def run_node(
    name: str,
    config_cls: type,
    serve: Callable[..., Any],
    args: argparse.Namespace,
    argv: list[str] | None = None,
    before_workers: Callable[[Any], None] | None = None,
) -> int:
    """Load the config (file < environment < flags), set up logging, and serve: SIGTERM drains
    and stops (`handle_signals`), SIGINT stops at once, SIGHUP reloads the config. With
    `workers` > 1 this process supervises that many workers (common.serve.workers), each
    started with `argv` (the command line's arguments), after `before_workers(config)` (what
    the node does once, before any worker runs)."""
    try:
        config = load(config_cls, args.config, config_values(args, config_cls))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if getattr(config, "workers", 1) > 1 and getattr(config, "no_workers", ""):
        print(f"error: {config.no_workers}", file=sys.stderr)
        return 2
    if CURRENT is None and (why := cannot_listen(config)):  # a worker's are bound already
        print(f"error: {why}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s "
        + ("" if CURRENT is None else f"worker {CURRENT.index} ")
        + "%(name)s: %(message)s",
    )
    if CURRENT is None and getattr(config, "workers", 1) > 1:
        try:
            if before_workers is not None:
                before_workers(config)
            run_supervisor(
                name,
                config,
                sys.argv[1:] if argv is None else argv,
                SIGNALS,
                getattr(args, "exit_with_stdin", False),
            )
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        log.info("%s stopped", name)
        return 0

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(*SIGNALS) as signals:
                serving = await nursery.start(serve, config)
                tune_gc()  # after start-up: what exists now lives on
                controls = getattr(serving, "controls", None) or NodeControls()
                if getattr(args, "exit_with_stdin", False):
                    nursery.start_soon(stop_when_stdin_closes, nursery.cancel_scope)
                await handle_signals(
                    signals,
                    controls,
                    nursery,
                    lambda: load(config_cls, args.config, config_values(args, config_cls)),
                )

    try:
        trio.run(main)
    except (OSError, BaseExceptionGroup) as exc:
        errors = leaves(exc)
        if not all(isinstance(e, OSError) for e in errors):
            raise
        print(f"error: {errors[0]}", file=sys.stderr)
        return 1
    log.info("%s stopped", name)
    return 0


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def handle_signals(
    signals: AsyncIterator[int],
    controls: NodeControls,
    nursery: trio.Nursery,
    reload_config: Callable[[], Any],
) -> None:
    """Act on the node's signals until it is to stop, then cancel `nursery`.

    SIGTERM: drain (`controls.drain`), then stop; a second SIGTERM, or SIGINT, stops at once.
    SIGHUP: load the config again (`reload_config`, the same file, environment and flags)
    and hand it to `controls.reload`; one log line says which keys it applied or why not,
    and the node keeps running either way.
    """
    draining = False
    reloads = Reloads(controls, reload_config, nursery)
    async for signum in signals:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            reloads.request()
        elif signum == signal.SIGTERM and not draining and controls.drain is not None:
            draining = True
            log.info("SIGTERM received: draining (SIGINT or a second SIGTERM stops at once)")
            nursery.start_soon(drain_then_stop, controls.drain, nursery.cancel_scope)
        else:
            log.info("%s received: shutting down", name)
            nursery.cancel_scope.cancel()
            return


async def drain_then_stop(drain: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
    """Drain the node, then cancel `scope` (stop it), also when the drain failed."""
    try:
        await drain()
        log.info("drained: shutting down")
    except Exception as exc:  # the node must stop anyway: say why the drain did not finish
        log.error("drain failed (%s: %s): shutting down", type(exc).__name__, exc, exc_info=exc)
    scope.cancel()


class Reloads:
    """The node's SIGHUP reloads, each in a task of its own in `nursery` (so the signal loop
    always answers SIGTERM and SIGINT at once): one at a time, the SIGHUPs that come during
    one merged into one more reload after it."""

    def __init__(
        self, controls: NodeControls, reload_config: Callable[[], Any], nursery: trio.Nursery
    ) -> None:
        self.controls, self.reload_config, self.nursery = controls, reload_config, nursery
        self.running = self.again = False

    def request(self) -> None:
        """A SIGHUP came: reload now, or once more after the running reload."""
        if self.running:
            self.again = True
            return
        self.running = True
        self.nursery.start_soon(self._run)

    async def _run(self) -> None:
        try:
            while True:
                self.again = False
                await reload_node(self.controls, self.reload_config)
                if not self.again:
                    return
        finally:
            self.running = False


async def reload_node(controls: NodeControls, reload_config: Callable[[], Any]) -> None:
    """Load the config again (in a thread, at most READ_TIMEOUT seconds: the files may be a
    FIFO or on a hung mount) and apply it through `controls.reload`; log one line."""
    if controls.reload is None:
        log.warning("SIGHUP received: this node cannot reload its config (restart it instead)")
        return
    try:
        config = await read_off_loop("the config file", reload_config)
        applied = await controls.reload(config)
    except ConfigError as exc:
        log.error("SIGHUP received: config not reloaded, the node keeps its config: %s", exc)
        return
    except PartlyApplied as exc:  # a bug part-way: say what of the new config now holds
        log.error("SIGHUP received: config %s", exc, exc_info=exc.error)
        return
    except Exception as exc:  # a bug in a reload must not stop the node
        log.error(
            "SIGHUP received: config not reloaded (%s: %s)", type(exc).__name__, exc, exc_info=exc
        )
        return
    log.info(
        "SIGHUP received: config reloaded: %s",
        "applied " + ", ".join(applied) if applied else "no key changed",
    )


async def stop_when_stdin_closes(scope: trio.CancelScope) -> None:
    """Cancel `scope` once standard input reaches its end: whoever held the pipe's other end
    (the launcher) is gone."""
    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
        while await stdin.receive_some(4096):
            pass
    log.warning("standard input closed (the launcher is gone): shutting down")
    scope.cancel()


PORT_FIELDS = ("rtmp_port", "http_port", "control_port")
TLS_PORT_FIELDS = ("rtmps_port", "https_port")
"""Listened on only with a tls_cert."""


def cannot_listen(config: Any) -> str | None:
    """Why one of the node's listening ports cannot be bound, naming it; None if all can.

    Opens each port with `common.net.conn.listen_socket` and closes it at once, so a busy port
    or a bad address is reported before anything starts.
    """
    tls = TLS_PORT_FIELDS if getattr(config, "tls_cert", "") else ()
    for name in PORT_FIELDS + tls:
        port = getattr(config, name, 0)
        if port:
            try:
                listen_socket(config.host, port).close()
            except OSError as exc:  # ListenError names the address
                return str(exc)
    return None
