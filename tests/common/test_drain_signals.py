"""A node's signals (common.serve.cli.handle_signals): SIGTERM drains then stops, a second
SIGTERM or SIGINT stops at once, SIGHUP reloads and the node keeps running."""

from __future__ import annotations

import logging
import signal
import threading

import pytest
import trio

from common.config import ConfigError
from common.serve.cli import handle_signals
from common.serve.lifecycle import NodeControls
from common.serve.reload import READ_TIMEOUT, PartlyApplied

pytestmark = pytest.mark.usefixtures("inline_threads")
REAL_THREADS = trio.to_thread.run_sync


class Signals:
    """Signals sent by the test, received as from trio.open_signal_receiver."""

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[int](10)

    def __aiter__(self):
        return self.recv.__aiter__()


async def run_node(
    controls: NodeControls, sent: list[signal.Signals], load=lambda: "new config", gap: float = 0
):
    """Run handle_signals on `sent` (all at once, or `gap` seconds apart) in a node nursery;
    whether the node was stopped (the tests that wait run on the autojumping MockClock: the
    wait takes no time)."""
    signals = Signals()

    async def send() -> None:
        for sig in sent:
            signals.send.send_nowait(sig)
            if gap:
                await trio.sleep(gap)

    with trio.move_on_after(60) as guard:  # a node still running after a minute runs on
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)  # the node serving
            if gap:
                nursery.start_soon(send)
            else:
                await send()
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

    async def reload(config):
        given.append(config)
        if len(given) == 2:
            raise ConfigError("rtmp_port cannot change without a restart")
        return ["max_connections", "classes"] if len(given) == 1 else []

    controls = NodeControls(reload=reload)
    stopped = await run_node(controls, [signal.SIGHUP] * 3, gap=1)
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

    async def reload(config):
        return ["x"]

    stopped = await run_node(NodeControls(reload=reload), [signal.SIGHUP], load)
    assert not stopped
    assert "config not reloaded, the node keeps its config: node.toml" in caplog.text


async def test_a_reload_that_fails_unexpectedly_keeps_the_node_running(autojump_clock, caplog):
    async def reload(config):
        raise KeyError("a bug")

    assert not await run_node(NodeControls(reload=reload), [signal.SIGHUP])
    assert "SIGHUP received: config not reloaded (KeyError: 'a bug')" in caplog.messages


async def test_a_reload_that_fails_part_way_says_what_it_applied(autojump_clock, caplog):
    async def reload(config):
        raise PartlyApplied(["config", "limits"], "classes", KeyError("a bug"))

    assert not await run_node(NodeControls(reload=reload), [signal.SIGHUP])
    (line,) = [r for r in caplog.records if r.getMessage().startswith("SIGHUP")]
    assert line.levelno == logging.ERROR
    assert line.getMessage() == (
        "SIGHUP received: config partly applied: config, limits applied, then classes failed "
        "(KeyError: 'a bug'); the rest not applied"
    )


async def test_sighups_during_a_reload_merge_into_one_more(autojump_clock):
    given = []

    async def reload(config):
        given.append(config)
        await trio.sleep(1)
        return []

    sent = [signal.SIGHUP] * 4
    assert not await run_node(NodeControls(reload=reload), sent)
    assert len(given) == 2


@pytest.fixture
def hung_config(monkeypatch):
    """A config read that hangs (a FIFO nobody writes, a hung mount) in a real thread,
    released when the test ends."""
    monkeypatch.setattr(trio.to_thread, "run_sync", REAL_THREADS)
    release = threading.Event()
    yield release.wait
    release.set()


async def test_sigterm_and_sigint_are_answered_while_a_config_read_hangs(hung_config):
    async def reload(config):
        return []

    for stop in (signal.SIGTERM, signal.SIGINT):
        sent = [signal.SIGHUP, stop]
        with trio.fail_after(5):  # in real time: the node stops at once
            assert await run_node(NodeControls(reload=reload), sent, hung_config)


async def test_a_config_read_that_hangs_fails_the_reload_after_a_bound(
    autojump_clock, hung_config, caplog
):
    given = []

    async def reload(config):
        given.append(config)
        return []

    assert not await run_node(NodeControls(reload=reload), [signal.SIGHUP], hung_config)
    assert not given
    assert (
        caplog.messages.count(
            "SIGHUP received: config not reloaded, the node keeps its config: the config file not "
            f"read in {READ_TIMEOUT:g} s (a FIFO or a hung mount?)"
        )
        == 1
    )
