"""A node's signals (common.serve.cli.handle_signals): SIGTERM drains then stops, a second
SIGTERM or SIGINT stops at once, SIGHUP reloads and the node keeps running."""

from __future__ import annotations

import logging
import signal

import pytest
import trio

from common.config import ConfigError
from common.serve.cli import handle_signals
from common.serve.lifecycle import NodeControls

pytestmark = pytest.mark.usefixtures("inline_threads")


class Signals:
    """Signals sent by the test, received as from trio.open_signal_receiver."""

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[int](10)

    def __aiter__(self):
        return self.recv.__aiter__()


async def run_node(controls: NodeControls, sent: list[signal.Signals], load=lambda: "new config"):
    """Run handle_signals on `sent` in a node nursery; whether the node was stopped (the
    tests that wait run on the autojumping MockClock: the wait takes no time)."""
    signals = Signals()
    for sig in sent:
        signals.send.send_nowait(sig)
    with trio.move_on_after(60) as guard:  # a node still running after a minute runs on
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)  # the node serving
            await handle_signals(signals, controls, nursery, load)
            await trio.sleep_forever()  # until the handler (or a drain) stops the node
    return not guard.cancelled_caught


async def test_sigterm_drains_before_the_node_stops(autojump_clock):
    drained = []

    async def drain():
        await trio.sleep(0.1)
        drained.append(trio.current_time())

    assert await run_node(NodeControls(drain=drain), [signal.SIGTERM])
    assert len(drained) == 1


async def test_a_second_sigterm_or_sigint_stops_a_draining_node_at_once():
    started = []

    async def drain():
        started.append(1)
        await trio.sleep_forever()

    for second in (signal.SIGTERM, signal.SIGINT):
        assert await run_node(NodeControls(drain=drain), [signal.SIGTERM, second])
    assert started == [1, 1]


async def test_sigterm_stops_a_node_that_cannot_drain_at_once():
    assert await run_node(NodeControls(), [signal.SIGTERM])


async def test_sighup_reloads_and_logs_one_line_and_the_node_keeps_running(autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="livecdn")
    given = []

    def reload(config):
        given.append(config)
        if len(given) == 2:
            raise ConfigError("rtmp_port cannot change without a restart")
        return ["max_connections", "classes"] if len(given) == 1 else []

    controls = NodeControls(reload=reload)
    stopped = await run_node(controls, [signal.SIGHUP, signal.SIGHUP, signal.SIGHUP])
    assert not stopped and given == ["new config"] * 3
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SIGHUP")]
    assert lines == [
        "SIGHUP received: config reloaded: applied max_connections, classes",
        "SIGHUP received: config not reloaded, the node keeps its config: "
        "rtmp_port cannot change without a restart",
        "SIGHUP received: config reloaded: no key changed",
    ]


async def test_sighup_with_a_bad_config_file_keeps_the_node_running(autojump_clock, caplog):
    def load():
        raise ConfigError("node.toml: max_connections: must be at least 1")

    stopped = await run_node(NodeControls(reload=lambda c: ["x"]), [signal.SIGHUP], load)
    assert not stopped
    assert "config not reloaded, the node keeps its config: node.toml" in caplog.text


async def test_a_reload_that_fails_unexpectedly_keeps_the_node_running(autojump_clock, caplog):
    def reload(config):
        raise KeyError("a bug")

    assert not await run_node(NodeControls(reload=reload), [signal.SIGHUP])
    assert "SIGHUP received: config not reloaded (KeyError: 'a bug')" in caplog.messages
