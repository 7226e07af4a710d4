"""Hostile RTMP clients against every RTMP listener (origin, both edges): generated message
sequences after a valid handshake, raw garbage, and resets in the middle of it all."""

from __future__ import annotations

import collections
import contextlib
import time

from hypothesis import example, given
from hypothesis import strategies as st

from tests.robustness.conftest import (
    Cluster,
    read_for,
    reset,
    rtmp_handshake,
    send_and_end,
)
from tests.robustness.strategies import (
    command,
    encode_conversation,
    fuzz_settings,
    rtmp_conversation,
)

FUZZ = fuzz_settings(max_examples=120)


def _still_alive(cluster: Cluster, history: collections.deque) -> None:
    time.sleep(0.02)
    dead = cluster.alive()
    assert not dead, (
        f"{dead} stopped; the last inputs were (newest last):\n"
        + "\n".join(map(repr, history))
        + "\n\n"
        + "\n".join(str(cluster.node(n).error) for n in dead)
    )


def test_rtmp_message_sequences(cluster: Cluster) -> None:
    """After a real handshake: connect/createStream/publish/play with hostile values, then
    any mix of commands, metadata, control messages, chunk-size changes, aborts, acks, media,
    aggregates, unknown types and garbage; the peer then closes or resets."""
    since = time.monotonic()
    history: collections.deque = collections.deque(maxlen=3)
    targets = cluster.rtmp_targets()

    def attack(target, steps, split, ending) -> None:
        history.append((target[0], ending, steps))
        sock, _ = rtmp_handshake(target[1])
        try:
            parts = encode_conversation(steps)
            with contextlib.suppress(OSError):
                if split:
                    for part in parts:
                        sock.sendall(part)
                else:
                    sock.sendall(b"".join(parts))
            read_for(sock, 0.15 if ending == "linger" else 0.03)
        finally:
            if ending == "reset":
                reset(sock)
            else:
                sock.close()
        _still_alive(cluster, history)

    fuzz = given(
        target=st.sampled_from(targets),
        steps=rtmp_conversation,
        split=st.booleans(),
        ending=st.sampled_from(["close", "reset", "linger"]),
    )(attack)
    for target in targets:  # known killers first: names no upstream URL can carry
        for verb, name in (("play", "a b"), ("play", "é"), ("publish", "a\x00b")):
            steps = [
                command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"}),
                command("createStream", 2.0, None),
                command(verb, 0.0, None, name, stream_id=1),
            ]
            fuzz = example(target=target, steps=steps, split=False, ending="linger")(fuzz)
    FUZZ(fuzz)()
    cluster.wait_frames(1.0)
    cluster.check(since)


def test_rtmp_garbage_and_broken_handshakes(cluster: Cluster) -> None:
    """Bytes that are not RTMP at all, wrong versions, handshakes cut short or reset."""
    since = time.monotonic()
    history: collections.deque = collections.deque(maxlen=3)
    targets = cluster.rtmp_targets()

    @FUZZ
    @given(
        target=st.sampled_from(targets),
        data=st.one_of(
            st.binary(max_size=4000),
            st.binary(max_size=1600).map(lambda b: b"\x03" + b),
            st.binary(max_size=3200).map(lambda b: b"\x06" + b),
            st.just(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            st.just(b"\x03" + b"\x00" * 1536 + b"\x00" * 1536 + b"\xff" * 5000),
        ),
        ending=st.sampled_from(["close", "reset"]),
    )
    def attack(target, data, ending) -> None:
        history.append((target[0], ending, data[:64]))
        send_and_end(target[1], data, ending)
        _still_alive(cluster, history)

    attack()
    cluster.check(since)
