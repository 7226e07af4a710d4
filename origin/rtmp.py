"""The origin's RTMP connection: plays like any node's, and publishes into the origin's
streams (the origin decides on each publish)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from common.net.conn import Conn
from common.proto.clock import stamp_payload
from common.proto.rtmp import messages as m
from common.proto.rtmp import session as rs
from common.serve.rtmpserver import ConnState, RtmpConnection, RtmpLimits
from origin.live import Publisher, StreamEnd

if TYPE_CHECKING:
    from origin.server import Origin


class OriginRtmp(RtmpConnection):
    """An origin's RTMP connection: plays, and publishes into the origin's streams."""

    def __init__(self, origin: Origin, conn: Conn) -> None:
        super().__init__(conn, origin, RtmpLimits.from_config(origin.config), origin.refuse)
        self.origin = origin
        self.publisher: Publisher | None = None

    def on_publish(self, event: rs.Publish) -> str | None:
        reason = self.origin.publish(self, event)
        if reason is None:
            self.set_state(ConnState.PUBLISHING)
        return reason

    def on_media(self, event: rs.Media | rs.Metadata) -> None:
        pub = self.publisher
        if pub is None or event.stream_id != pub.stream_id:
            return
        if isinstance(event, rs.Media):
            frame = pub.stream.push(event.type_id, event.timestamp, event.payload)
            if frame is not None and frame.keyframe and self.origin.config.clock_stamps:
                pub.stream.push(m.DATA_AMF0, event.timestamp, stamp_payload(time.time()))
        else:
            pub.stream.set_metadata(event.payload, event.values)

    def on_delete(self, stream_id: int) -> None:
        pub = self.publisher
        if pub is not None and pub.stream_id == stream_id:
            self.publisher = None
            self.set_state(ConnState.OPEN)
            self.origin.unpublish(pub, StreamEnd.DELETED, grace=True)

    def on_close(self) -> None:
        self.origin.bytes_in += self.bytes_in
        if self.publisher is not None:
            self.origin.unpublish(self.publisher, StreamEnd.DISCONNECTED, grace=True)
