"""Upstream feeds: one stream pulled from a parent over RTMP play or HTTP-FLV.

A feed yields items: ("media", type_id, timestamp, payload), ("meta", payload, values),
("tracks", audio, video) when the parent declares the stream's tracks (the HTTP-FLV file
header's flags), or ("end",) when the parent ends the stream cleanly (the publisher stopped).

Whatever a parent does wrong (refuses, resets, sends garbage) is a `ParentError` whose
`kind` names the failure for metrics; upstream URLs are built only from validated,
percent-quoted stream keys.
"""

from __future__ import annotations

import contextlib
from typing import Protocol
from urllib.parse import quote

from common.media.stream import metadata_values
from common.net.httpclient import HttpClientError, HttpResponse, MalformedResponse, open_request
from common.net.rtmpclient import RtmpClient, RtmpClientError, ends_play
from common.proto import amf0, flv
from common.proto.errors import ProtocolError
from common.proto.flv import FlvParser
from common.proto.rtmp import session as rs
from common.proto.streamkey import StreamKey

ONMETADATA = amf0.encode("onMetaData")


class NotFound(Exception):
    """The parent says the stream does not exist."""


class ParentError(Exception):
    """The parent could not be reached, refused, broke the connection or sent garbage.

    `kind` is one of "connect", "refused", "broken", "bad_data", "stalled", "timeout".
    """

    def __init__(self, message: str, kind: str = "broken") -> None:
        super().__init__(message)
        self.kind = kind


Item = tuple


class Feed(Protocol):
    """A connected upstream."""

    bytes_in: int

    async def receive(self) -> list[Item]:
        """The next items; raises ParentError if the upstream breaks."""
        ...

    def close(self) -> None:
        """Drop the upstream connection."""
        ...


def upstream_url(parent: str, app: str, name: str, suffix: str = "") -> str:
    """`parent`/app/name`suffix`, from a validated key with each part percent-quoted."""
    key = StreamKey.parse(app, name)
    return f"{parent.rstrip('/')}/{quote(key.app, safe='')}/{quote(key.name, safe='')}{suffix}"


class RtmpFeed:
    """RTMP play from a parent (origin, edge, nginx-rtmp, SRS, ...)."""

    def __init__(self, client: RtmpClient) -> None:
        self.client = client

    @property
    def bytes_in(self) -> int:
        return self.client.conn.bytes_in

    @classmethod
    async def open(cls, parent: str, app: str, name: str) -> RtmpFeed:
        """Connect and play; NotFound or ParentError on failure."""
        url = upstream_url(parent, app, name)
        try:
            client = await RtmpClient.connect(url)
        except OSError as exc:
            raise ParentError(f"cannot connect to {url}: {exc}", "connect") from exc
        except RtmpClientError as exc:
            raise ParentError(f"{url} refused the connection: {exc}", "refused") from exc
        except ProtocolError as exc:
            raise ParentError(f"{url} broke the RTMP handshake: {exc}", "bad_data") from exc
        try:
            await client.play()
        except RtmpClientError as exc:
            client.close()
            if exc.code == "NetStream.Play.StreamNotFound":
                raise NotFound(url) from exc
            raise ParentError(f"{url} refused play: {exc}", "refused") from exc
        except OSError as exc:
            client.close()
            raise ParentError(f"{url} failed during play: {exc}", "broken") from exc
        except ProtocolError as exc:
            client.close()
            raise ParentError(f"{url} sent garbage during play: {exc}", "bad_data") from exc
        except BaseException:
            client.close()  # cancelled (connect timeout) or a bug: never leak the socket
            raise
        return cls(client)

    async def receive(self) -> list[Item]:
        try:
            events = await self.client.next_events()
        except (OSError, RtmpClientError) as exc:
            raise ParentError(f"upstream broke: {exc}", "broken") from exc
        except ProtocolError as exc:
            raise ParentError(f"bad RTMP from upstream: {exc}", "bad_data") from exc
        out: list[Item] = []
        for e in events:
            if isinstance(e, rs.Media):
                out.append(("media", e.type_id, e.timestamp, e.payload))
            elif isinstance(e, rs.Metadata):
                out.append(("meta", e.payload, e.values))
            elif ends_play(e):
                out.append(("end",))
                break
            elif isinstance(e, rs.Status) and e.level == "error":
                raise ParentError(f"upstream error {e.code}: {e.description}", "refused")
        return out

    def close(self) -> None:
        self.client.close()


class FlvFeed:
    """HTTP-FLV from a parent (`http://host:port` -> GET /app/name.flv)."""

    def __init__(self, resp: HttpResponse) -> None:
        self.resp = resp
        self.parser = FlvParser()
        self._chunks = resp.chunks()
        self._declared = False

    @property
    def bytes_in(self) -> int:
        return self.resp.conn.bytes_in

    @classmethod
    async def open(cls, parent: str, app: str, name: str) -> FlvFeed:
        """GET the stream; NotFound on 404, ParentError on anything else but 200."""
        url = upstream_url(parent, app, name, ".flv")
        try:
            resp = await open_request("GET", url)
        except OSError as exc:
            raise ParentError(f"cannot GET {url}: {exc}", "connect") from exc
        except HttpClientError as exc:
            raise ParentError(f"GET {url}: {exc}", "bad_data") from exc
        if resp.status == 404:
            resp.close()
            raise NotFound(url)
        if resp.status != 200:
            resp.close()
            raise ParentError(f"GET {url}: HTTP {resp.status}", "refused")
        return cls(resp)

    async def receive(self) -> list[Item]:
        try:
            data = await anext(self._chunks, None)
        except MalformedResponse as exc:
            raise ParentError(f"bad HTTP body from upstream: {exc}", "bad_data") from exc
        except (OSError, HttpClientError) as exc:
            raise ParentError(f"upstream broke: {exc}", "broken") from exc
        if data is None:
            return [("end",)]
        try:
            tags = self.parser.feed(data)
        except ProtocolError as exc:
            raise ParentError(f"bad FLV from upstream: {exc}", "bad_data") from exc
        out: list[Item] = []
        if not self._declared and self.parser.header_seen:
            self._declared = True
            out.append(("tracks", self.parser.has_audio, self.parser.has_video))
        for tag in tags:
            if tag.tag_type == flv.TAG_SCRIPT and tag.body[:13] == ONMETADATA:
                with contextlib.suppress(ProtocolError):  # unreadable metadata is dropped
                    out.append(("meta", tag.body, metadata_values(tag.body)))
                continue
            out.append(("media", tag.tag_type, tag.timestamp, tag.body))
        return out

    def close(self) -> None:
        self.resp.close()


async def open_feed(parent: str, app: str, name: str) -> Feed:
    """Open app/name at `parent` (rtmp:// or http://)."""
    if parent.startswith("rtmp://"):
        return await RtmpFeed.open(parent, app, name)
    return await FlvFeed.open(parent, app, name)
