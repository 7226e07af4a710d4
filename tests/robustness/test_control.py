"""Malformed and oversized control messages (4-byte length + msgpack map) on the balancer's
control port: the balancer keeps running, and keeps routing viewers and answering its API
with valid JSON afterwards (bad values must not poison its state)."""

from __future__ import annotations

import collections
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.robustness.conftest import Cluster, connect, http_get, reset, send_and_end, strict_json
from tests.robustness.strategies import ctl_message, fuzz_settings

FUZZ = fuzz_settings(max_examples=120)
SECRET = "robustness cluster secret"


@pytest.fixture
def secured_cluster():
    """The cluster with a cluster_secret on every node: its edges and origin authenticate."""
    c = Cluster(
        balancer_overrides={"cluster_secret": SECRET},
        edge_overrides={"cluster_secret": SECRET},
        cluster_secret=SECRET,
    ).start()
    try:
        yield c
    finally:
        c.stop()


KNOWN_POISON = [
    {"type": "heartbeat", "v": 1, "node": "evil-weight", "weight": "abc", "streams": [1, 2]},
    {"type": "heartbeat", "v": 1, "node": "evil-inf", "viewers": float("inf")},
    {
        "type": "heartbeat",
        "v": 1,
        "node": "evil-nan",
        "weight": float("nan"),
        "capacity_viewers": float("nan"),
        "egress_bps": float("nan"),
    },  # fmt: skip
    {"type": "heartbeat", "v": 1, "node": "evil-streams", "streams": {"live/canary": "x"}},
    {"type": "heartbeat", "v": 1, "node": "evil-cap", "capacity_viewers": "x", "weight": -1},
    {"type": "heartbeat", "v": 1, "node": "evil-http", "http": "http://\u2603:1"},
    {"type": "heartbeat", "v": 1, "node": "evil-crlf", "http": "http://127.0.0.1:1\r\nX: y"},
    {"type": "heartbeat", "v": 1, "node": ["a"], "http": {"x": 1}},
    {"type": "streams", "v": 1, "node": "evil-origin", "streams": 5},
    {"type": "streams", "v": 1, "node": "evil-origin2", "streams": [{"app": [], "name": {}}]},
    {
        "type": "streams",
        "v": 1,
        "node": "evil-origin3",
        "streams": [{"app": "live", "name": "x", "bitrate": "fast"}],
    },  # fmt: skip
]


def _api_problems(cluster: Cluster) -> list[str]:
    port = cluster.node("balancer").http_port
    out = []
    for path in ("/api/edges", "/api/streams", "/metrics", "/api/route?app=live&name=canary&proto=flv",
                 "/live/canary.flv"):  # fmt: skip
        try:
            status, headers, body = http_get(port, path)
        except Exception as exc:  # noqa: BLE001
            out.append(f"balancer GET {path}: {exc!r}")
            continue
        expected = 302 if path.endswith(".flv") else 200
        if status != expected:
            out.append(f"balancer GET {path}: {status} {body[:200]!r}")
        elif path.startswith("/api/"):
            try:
                strict_json(body)
            except ValueError as exc:
                out.append(f"balancer GET {path}: invalid JSON ({exc})")
        if status == 302 and not headers.get("location", "").startswith("http://127.0.0.1:"):
            out.append(f"balancer GET {path}: redirected to {headers.get('location')!r}")
    return out


def test_known_poison_messages(cluster: Cluster) -> None:
    """Each message with a wrong type where a number, string or map belongs."""
    import msgpack

    since = time.monotonic()
    ctl = cluster.node("balancer").control_port
    problems = []
    for msg in KNOWN_POISON:
        body = msgpack.packb(msg, use_bin_type=True)
        send_and_end(ctl, len(body).to_bytes(4, "big") + body, "close")
        time.sleep(0.05)
        problems += [f"after {msg!r}: {p}" for p in _api_problems(cluster)]
    cluster.wait_frames(3.0)  # past the heartbeat timeout: the fake edges go stale
    problems += [f"later: {p}" for p in _api_problems(cluster)]
    cluster.check(since)
    assert not problems, "\n".join(problems[:20])


def test_generated_control_frames(cluster: Cluster) -> None:
    """Generated frames: wrong types and versions, hostile values, truncated, oversized,
    garbage, non-map bodies; several per connection; closed or reset."""
    since = time.monotonic()
    history: collections.deque = collections.deque(maxlen=3)
    ctl = cluster.node("balancer").control_port

    def attack(frames, ending) -> None:
        history.append(frames)
        send_and_end(ctl, b"".join(frames), ending)
        dead = cluster.alive()
        assert not dead, f"{dead} stopped after {list(history)!r}"[:4000]

    import msgpack

    fuzz = given(frames=st.lists(ctl_message(), min_size=1, max_size=4),
                 ending=st.sampled_from(["close", "reset"]))(attack)  # fmt: skip
    for msg in KNOWN_POISON[-3:]:  # known killers first
        body = msgpack.packb(msg, use_bin_type=True)
        fuzz = example(frames=[len(body).to_bytes(4, "big") + body], ending="close")(fuzz)
    FUZZ(fuzz)()
    problems = _api_problems(cluster)
    cluster.wait_frames(3.0)
    problems += [f"later: {p}" for p in _api_problems(cluster)]
    cluster.check(since)
    assert not problems, "\n".join(problems[:20])


def test_oversized_and_endless_frames(cluster: Cluster) -> None:
    """A frame that declares 4 GiB, one just over the cap, and a peer that streams a 900 KB
    frame one byte at a time and stops: the balancer buffers at most one capped frame."""
    since = time.monotonic()
    ctl = cluster.node("balancer").control_port
    for size in (0xFFFFFFFF, (1 << 20) + 1, 1 << 31):
        send_and_end(ctl, size.to_bytes(4, "big") + b"\x80" * 1000, "reset")
    slow = [connect(ctl) for _ in range(20)]
    for sock in slow:
        sock.sendall((900 * 1024).to_bytes(4, "big") + b"\x81" + b"\xa1" * 60000)
    cluster.wait_frames(2.0)
    for sock in slow:
        reset(sock)
    cluster.check(since)
    assert not _api_problems(cluster)


def test_strangers_frames_on_an_authenticated_control_plane(secured_cluster: Cluster) -> None:
    """With a cluster_secret: the poison and generated frames of a stranger (plain, or after
    a guessed auth) are refused, the authenticated edges keep getting the viewers."""
    import msgpack

    cluster = secured_cluster
    since = time.monotonic()
    ctl = cluster.node("balancer").control_port
    guess = msgpack.packb({"type": "auth", "v": 1, "node": "x", "nonce": b"n" * 32,
                           "mac": b"m" * 32}, use_bin_type=True)  # fmt: skip
    guessed = len(guess).to_bytes(4, "big") + guess

    def attack(frames, ending, auth) -> None:
        send_and_end(ctl, (guessed if auth else b"") + b"".join(frames), ending)
        assert not cluster.alive()

    for msg in KNOWN_POISON:
        body = msgpack.packb(msg, use_bin_type=True)
        attack([len(body).to_bytes(4, "big") + body], "close", False)
    FUZZ(given(frames=st.lists(ctl_message(), min_size=1, max_size=4),
               ending=st.sampled_from(["close", "reset"]), auth=st.booleans())(attack))()  # fmt: skip
    problems = _api_problems(cluster)
    cluster.wait_frames(3.0)  # longer than the heartbeat timeout: the real edges still heartbeat
    problems += [f"later: {p}" for p in _api_problems(cluster)]
    assert set(cluster.node("balancer").obj.edges) == {"edge-http", "edge-rtmp"}
    cluster.check(since)
    assert not problems, "\n".join(problems[:20])
