"""Plays on one RTMP connection: the connection's own task serves the first and reads what
the client sends meanwhile; a second play at once on another message stream gets a task;
deleteStream stops a play and the connection may play again."""

from __future__ import annotations

import trio

from common.net.rtmpclient import RtmpClient
from common.proto.rtmp import session as rs
from tests.conftest import start_origin
from tests.media import publish_synthetic


async def _play_on_new_stream(client: RtmpClient, name: str) -> int:
    """createStream + play `name` on it; the message stream id once Play.Start is in."""
    client.session.create_stream()
    await client._flush()
    created = await client._wait_for(rs.StreamCreated)
    client.session.play(created.stream_id, name)
    await client._flush()
    await client._wait_status("NetStream.Play.Start")
    return created.stream_id


async def _media_until(client: RtmpClient, done) -> list[int]:
    """Message stream ids of the media received until `done(ids)` holds."""
    ids: list[int] = []
    while not done(ids):
        for event in await client.next_events():
            if isinstance(event, rs.Media):
                ids.append(event.stream_id)
    return ids


async def test_two_plays_at_once_then_one_stopped(nursery):
    _, addr = await start_origin(nursery)
    url = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/two"
    await publish_synthetic(nursery, url)
    client = await RtmpClient.connect(url)
    with trio.fail_after(20):
        first = await _play_on_new_stream(client, "two")
        second = await _play_on_new_stream(client, "two")
        assert first != second
        ids = await _media_until(client, lambda ids: {first, second} <= set(ids[-200:]))
        assert {first, second} <= set(ids)

        client.session.delete_stream(first)  # the first play stops; the second goes on
        await client._flush()
        ids = await _media_until(client, lambda ids: ids[-40:].count(second) == 40)
        assert ids[-40:] == [second] * 40
    client.close()


async def test_delete_stream_stops_the_play_and_the_connection_plays_again(nursery):
    _, addr = await start_origin(nursery)
    url = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/again"
    await publish_synthetic(nursery, url)
    client = await RtmpClient.connect(url)
    with trio.fail_after(20):
        first = await _play_on_new_stream(client, "again")
        await _media_until(client, lambda ids: len(ids) >= 10)
        client.session.delete_stream(first)
        await client._flush()
        again = await _play_on_new_stream(client, "again")
        assert again != first
        ids = await _media_until(client, lambda ids: ids[-20:].count(again) == 20)
        assert ids[-20:] == [again] * 20
    client.close()
