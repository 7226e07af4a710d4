"""A paced (viewer-class) HTTP-FLV viewer, over real loopback sockets: it gets new frames
after an idle spell, and one that leaves while the stream is idle is gone at once, with
no frame needed to notice."""

from __future__ import annotations

import trio
import trio.testing

from common.proto.rtmp import messages as m
from common.proto.shaping import TokenBucket
from common.serve.play import Fanout, Player, PlayStats
from tests.common.serve.test_play_batching import connected, live_stream, received
from tests.media import interframe


async def test_a_paced_viewer_that_leaves_an_idle_stream_is_gone_at_once(mock_clock) -> None:
    conn, viewer = connected()
    stream = live_stream()
    fanout = Fanout(stream, PlayStats())
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fanout.run)
            player = Player(
                conn, stream.add_reader("flv"), "flv", bucket=TokenBucket(0), watch=True
            )
            nursery.start_soon(fanout.serve, player)
            await trio.testing.wait_all_tasks_blocked()
            assert received(viewer)  # the join burst
            frame = stream.push(m.VIDEO, 33, interframe(fill=1))
            await trio.testing.wait_all_tasks_blocked()
            assert received(viewer).endswith(frame.flv + b"\r\n")  # paced, still served
            assert player in fanout.players
            viewer.close()  # leaves while nothing new comes
            await trio.testing.wait_all_tasks_blocked()
            assert player not in fanout.players
            assert fanout.viewers()["flv"] == 0
            nursery.cancel_scope.cancel()
    finally:
        conn.close()
        viewer.close()
