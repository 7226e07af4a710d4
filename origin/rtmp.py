"""The origin's side of an RTMP connection's publishing: the origin decides on each publish,
and the accepted publisher's media goes into its stream."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import trio

from common.proto.clock import stamp_payload
from common.proto.rtmp import messages as m
from common.proto.rtmp import session as rs
from common.serve.rtmpserver import PublishRefused, RtmpConnection
from origin.live import Publisher, StreamEnd
from origin.publish import Reject

if TYPE_CHECKING:
    from origin.server import Origin


class IngestBytes:
    """Bytes received from publishers: those of closed connections plus, read at each
    scrape, those of connections still publishing (so a rate moves while one is live)."""

    def __init__(self) -> None:
        self.closed = 0
        self.live: set[RtmpConnection] = set()

    def total(self) -> int:
        """All bytes received so far (each connection's counted once)."""
        return self.closed + sum(rtmp.bytes_in for rtmp in self.live)

    def close(self, rtmp: RtmpConnection | None, bytes_in: int) -> None:
        """A connection ended having received `bytes_in` while publishing."""
        if rtmp is not None:
            self.live.discard(rtmp)
        self.closed += bytes_in


class OriginIngest:
    """Ingest (common.serve.rtmpserver) of one connection into the origin's streams."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.publisher: Publisher | None = None
        self.rtmp: RtmpConnection | None = None

    async def publish(self, rtmp: RtmpConnection, event: rs.Publish) -> PublishRefused | None:
        """As the origin decides (and its on_publish hook): None if accepted, else why not."""
        accepted = await self.origin.publish(rtmp, event)
        if isinstance(accepted, Reject):
            return PublishRefused(accepted.reason, accepted.detail)
        self.publisher = accepted
        self.rtmp = rtmp
        self.origin.ingest_bytes.live.add(rtmp)
        return None

    def media(self, event: rs.Media | rs.Metadata) -> None:
        """Into the publisher's stream (with a clock stamp at keyframes, if configured)."""
        pub = self.publisher
        if pub is None or event.stream_id != pub.stream_id:
            return
        pub.last_media = trio.current_time()
        if isinstance(event, rs.Media):
            frame = pub.stream.push(event.type_id, event.timestamp, event.payload)
            if frame is not None and frame.keyframe and self.origin.config.clock_stamps:
                pub.stream.push(m.DATA_AMF0, event.timestamp, stamp_payload(time.time()))
        else:
            pub.stream.set_metadata(event.payload, event.values)

    def delete(self, stream_id: int) -> bool:
        """The publisher deleted its stream: viewers wait `publisher_grace` for it."""
        pub = self.publisher
        if pub is None or pub.stream_id != stream_id:
            return False
        self.publisher = None
        self.origin.unpublish(pub, StreamEnd.DELETED, grace=True)
        return True

    def close(self, bytes_in: int) -> None:
        """Count the bytes received; a publisher still on air disconnected."""
        self.origin.ingest_bytes.close(self.rtmp, bytes_in)
        if self.publisher is not None:
            self.origin.unpublish(self.publisher, StreamEnd.DISCONNECTED, grace=True)
