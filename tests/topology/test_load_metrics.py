"""`load --metrics-port`: the players' QoE as Prometheus metrics while they play, scraped over
HTTP from a real load run against an in-process origin; the numbers agree with the run's
own results (the JSON), in one process and summed from worker processes (--procs)."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_origin, wait_for_stream
from tests.media import publish_synthetic
from tests.metrics import scrape
from topology import loadmetrics
from topology.__main__ import parse_args
from topology.loadmetrics import LoadMetrics, serve_metrics
from topology.loadrun import run_load
from topology.players.crowd import LoadSpec
from topology.players.player import Target

HANG = 30  # seconds: only a guard against hangs
LABELS = {"run": "load", "shard": "0/1", "protocol": "flv"}


def value(text: str, name: str, **labels: str) -> float:
    """The sum of sample `name` (e.g. a histogram's _count) over rows with `labels`;
    AssertionError when no row has them (a missing metric cannot pass as 0)."""
    rows = [s for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name and labels.items() <= s.labels.items()]  # fmt: skip
    assert rows, f"no {name} with {labels} in:\n{text}"
    return sum(s.value for s in rows)


@pytest.fixture
def served() -> Iterator[tuple[LoadMetrics, int]]:
    metrics, server = serve_metrics("127.0.0.1", 0)
    yield metrics, server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("procs", [1, pytest.param(2, marks=pytest.mark.slow)])
async def test_qoe_metrics_agree_with_the_results(
    nursery: trio.Nursery, tmp_path: Path, served: tuple[LoadMetrics, int], procs: int
) -> None:
    metrics, port = served
    origin, o = await start_origin(nursery, clock_stamps=True)
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{o.rtmp_port}/live/q")
    await wait_for_stream(origin, "live", "q")
    target = Target.direct(f"http://127.0.0.1:{o.http_port}/live/q.flv")
    spec = LoadSpec(players=3, duration=4.0 if procs == 1 else 6.0, ramp_s=0.3,
                    profiles="lan:2,4g:1")  # fmt: skip
    playing: list[float] = []

    async def watch() -> None:
        """Scrape while the players play, until all three are counted playing."""
        while True:
            text = await scrape(port)
            if "livecdn_load_players{" in text:  # workers report after they start
                n = value(text, "livecdn_load_players", state="playing", **LABELS)
                if n == 3:
                    playing.append(n)
                    return
            await trio.sleep(0.1)

    with trio.fail_after(HANG):
        async with trio.open_nursery() as n:
            n.start_soon(watch)
            summary = await run_load(target, spec, out_dir=tmp_path, procs=procs, quiet=True,
                                     metrics=metrics)  # fmt: skip
        text = await scrape(port)
    assert playing == [3], "all three counted playing during the run"
    assert summary["played"] == 3 and summary["failures"] == 0, summary
    players = json.loads((tmp_path / "load.json").read_text())["players"]
    assert value(text, "livecdn_load_players", state="done", **LABELS) == 3
    assert value(text, "livecdn_load_players", state="playing", **LABELS) == 0
    for profile in ("lan", "4g"):  # labelled by client profile, never by player
        mine = [p for p in players if p["profile"] == profile]
        labels = {**LABELS, "profile": profile}
        assert value(text, "livecdn_load_ttff_seconds_count", **labels) == len(mine)
        assert value(text, "livecdn_load_ttff_seconds_sum", **labels) == pytest.approx(
            sum(p["ttff_s"] for p in mine)
        )
        assert value(text, "livecdn_load_received_bytes_total", **labels) == sum(
            p["bytes"] for p in mine
        )
        assert value(text, "livecdn_load_latency_seconds_count", **labels) == sum(
            len(p["latency_s"]) for p in mine
        )
        assert value(text, "livecdn_load_stalls_total", **labels) == sum(p["stalls"] for p in mine)
    assert summary["latency_samples"] >= 3, "a clock stamp per keyframe (1 s GOP)"
    latency = summary["latency_samples"]
    assert value(text, "livecdn_load_latency_seconds_bucket", le="+Inf", **LABELS) == latency
    assert value(text, "livecdn_load_session_failures_total", **LABELS) == 0
    assert value(text, "livecdn_load_reconnects_total", **LABELS) == 0


def test_metrics_flags() -> None:
    """Off by default; a port (0: a free one) and the host it listens on."""
    args = parse_args(["load", "--url", "http://h/a.flv", "--players", "3"])
    assert args.metrics_port is None and args.metrics_host == "127.0.0.1"
    args = parse_args(["load", "--url", "http://h/a.flv", "--players", "3", "--metrics-port",
                       "0", "--metrics-host", "0.0.0.0"])  # fmt: skip
    assert (args.metrics_port, args.metrics_host) == (0, "0.0.0.0")
    for bad in ("-1", "65536", "x"):
        with pytest.raises(SystemExit):
            parse_args(["load", "--url", "http://h/a.flv", "--metrics-port", bad])


def test_idle_connections_cannot_pile_up_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slowloris: many idle connections hold at most CONNECTIONS threads; the extra ones are
    closed at once, idle ones after IDLE_TIMEOUT, and /metrics answers again afterwards."""
    monkeypatch.setattr(loadmetrics, "IDLE_TIMEOUT", 0.5)
    before = threading.active_count()
    _, server = serve_metrics("127.0.0.1", 0)
    address = server.server_address[:2]
    try:
        idle = [socket.create_connection(address, timeout=HANG) for _ in range(200)]
        closed = sum(conn.recv(1) == b"" for conn in idle[loadmetrics.CONNECTIONS :])
        assert closed == 200 - loadmetrics.CONNECTIONS  # each extra one closed, not served
        assert threading.active_count() <= before + 1 + loadmetrics.CONNECTIONS
        assert all(conn.recv(1) == b"" for conn in idle[: loadmetrics.CONNECTIONS])  # timed out
        for conn in idle:
            conn.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{address[1]}/metrics", timeout=HANG) as r:
            assert r.status == 200
    finally:
        server.shutdown()
        server.server_close()
