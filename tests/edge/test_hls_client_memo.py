"""The HLS viewer-key memo stays small whatever user agents clients send."""

from __future__ import annotations

from common.serve.hlsviewers import client_key
from edge.hls import MAX_MEMO, MAX_MEMO_AGENT, ClientMemo


def test_long_agents_are_keyed_but_not_memoized() -> None:
    memo = ClientMemo()
    agent = "x" * 16_000
    for port in range(100):
        peer = f"10.0.0.1:{port}"
        assert memo(peer, agent) == client_key(peer, agent)
    assert len(memo) == 0


def test_short_agents_are_memoized_and_bounded() -> None:
    memo = ClientMemo()
    agent = "a" * MAX_MEMO_AGENT
    assert memo("10.0.0.1:1", agent) == client_key("10.0.0.1:1", agent)
    assert len(memo) == 1
    for port in range(MAX_MEMO + 10):
        memo(f"10.0.0.2:{port}", "player/1.0")
    assert len(memo) <= MAX_MEMO
