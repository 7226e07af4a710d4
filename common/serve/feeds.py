"""Upstream feeds: one stream pulled from a parent over RTMP play or HTTP-FLV.

A feed yields typed events: the RTMP session's own `Media` and `Metadata` (an HTTP-FLV feed
builds the same from its tags), `Tracks` when the parent declares the stream's tracks (the
HTTP-FLV file header's flags), and `End` when the parent ends the stream cleanly (the
publisher stopped).

Whatever a parent does wrong (refuses, resets, sends garbage) is a `ParentError` whose
`kind` (a `Failure`) names the failure for metrics; upstream URLs are built only from
validated, percent-quoted stream keys.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from enum import StrEnum
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


class Failure(StrEnum):
    """Why one upstream connection failed (the `reason` label of pull_failures_total)."""

    CONNECT = "connect"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    BROKEN = "broken"
    BAD_DATA = "bad_data"
    STALLED = "stalled"
    NOT_FOUND = "not_found"
    """A stream that was live is missing at a parent (restarting, say)."""
    UNEXPECTED = "unexpected"
    """Something no feed maps: a bug, logged with its traceback."""


class ParentError(Exception):
    """The parent could not be reached, refused, broke the connection or sent garbage."""

    def __init__(self, message: str, kind: Failure = Failure.BROKEN) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Tracks:
    """The parent declared which tracks the stream has."""

    audio: bool
    video: bool


@dataclass(frozen=True, slots=True)
class End:
    """The parent ended the stream cleanly (the publisher stopped)."""


END = End()

FeedEvent = rs.Media | rs.Metadata | Tracks | End


class Feed(Protocol):
    """A connected upstream."""

    bytes_in: int

    async def receive(self) -> list[FeedEvent]:
        """The next events; raises ParentError if the upstream breaks."""
        ...

    def close(self) -> None:
        """Drop the upstream connection."""
        ...


def upstream_url(parent: str, app: str, name: str, suffix: str = "", query: str = "") -> str:
    """`parent`/app/name`suffix`[?`query`], from a validated key with each part
    percent-quoted (`query`: the node's own, urlencoded)."""
    key = StreamKey.parse(app, name)
    url = f"{parent.rstrip('/')}/{quote(key.app, safe='')}/{quote(key.name, safe='')}{suffix}"
    return f"{url}?{query}" if query else url


class RtmpFeed:
    """RTMP play from a parent (origin, edge, nginx-rtmp, SRS, ...)."""

    def __init__(self, client: RtmpClient) -> None:
        self.client = client

    @property
    def bytes_in(self) -> int:
        return self.client.conn.bytes_in

    @classmethod
    async def open(
        cls, parent: str, app: str, name: str, tls: ssl.SSLContext | None = None, query: str = ""
    ) -> RtmpFeed:
        """Connect and play (`query` after the name); NotFound or ParentError on failure."""
        url = upstream_url(parent, app, name, query=query)
        try:
            client = await RtmpClient.connect(url, tls=tls)
        except OSError as exc:
            raise ParentError(f"cannot connect to {url}: {exc}", Failure.CONNECT) from exc
        except RtmpClientError as exc:
            raise ParentError(f"{url} refused the connection: {exc}", Failure.REFUSED) from exc
        except ProtocolError as exc:
            raise ParentError(f"{url} broke the RTMP handshake: {exc}", Failure.BAD_DATA) from exc
        try:
            await client.play()
        except RtmpClientError as exc:
            client.close()
            if exc.code == "NetStream.Play.StreamNotFound":
                raise NotFound(url) from exc
            raise ParentError(f"{url} refused play: {exc}", Failure.REFUSED) from exc
        except OSError as exc:
            client.close()
            raise ParentError(f"{url} failed during play: {exc}", Failure.BROKEN) from exc
        except ProtocolError as exc:
            client.close()
            raise ParentError(f"{url} sent garbage during play: {exc}", Failure.BAD_DATA) from exc
        except BaseException:
            client.close()  # cancelled (connect timeout) or a bug: never leak the socket
            raise
        return cls(client)

    async def receive(self) -> list[FeedEvent]:
        try:
            events = await self.client.next_events()
        except (OSError, RtmpClientError) as exc:
            raise ParentError(f"upstream broke: {exc}", Failure.BROKEN) from exc
        except ProtocolError as exc:
            raise ParentError(f"bad RTMP from upstream: {exc}", Failure.BAD_DATA) from exc
        out: list[FeedEvent] = []
        for e in events:
            if isinstance(e, (rs.Media, rs.Metadata)):
                out.append(e)
            elif ends_play(e):
                out.append(END)
                break
            elif isinstance(e, rs.Status) and e.level == "error":
                raise ParentError(f"upstream error {e.code}: {e.description}", Failure.REFUSED)
        return out

    def close(self) -> None:
        self.client.close()


class FlvFeed:
    """HTTP-FLV from a parent (`http(s)://host:port` -> GET /app/name.flv)."""

    def __init__(self, resp: HttpResponse) -> None:
        self.resp = resp
        self.parser = FlvParser()
        self._chunks = resp.chunks()
        self._declared = False

    @property
    def bytes_in(self) -> int:
        return self.resp.conn.bytes_in

    @classmethod
    async def open(
        cls,
        parent: str,
        app: str,
        name: str,
        tls: ssl.SSLContext | None = None,
        query: str = "",
        headers: list[tuple[str, str]] | None = None,
    ) -> FlvFeed:
        """GET the stream (with `query`, and `headers` if given); NotFound on 404,
        ParentError on anything else but 200 (the messages name the URL)."""
        url = upstream_url(parent, app, name, ".flv", query)
        try:
            resp = await open_request("GET", url, tls=tls, headers=headers)
        except OSError as exc:
            raise ParentError(f"cannot GET {url}: {exc}", Failure.CONNECT) from exc
        except HttpClientError as exc:
            raise ParentError(f"GET {url}: {exc}", Failure.BAD_DATA) from exc
        if resp.status == 404:
            resp.close()
            raise NotFound(url)
        if resp.status != 200:
            resp.close()
            raise ParentError(f"GET {url}: HTTP {resp.status}", Failure.REFUSED)
        return cls(resp)

    async def receive(self) -> list[FeedEvent]:
        try:
            data = await anext(self._chunks, None)
        except MalformedResponse as exc:
            raise ParentError(f"bad HTTP body from upstream: {exc}", Failure.BAD_DATA) from exc
        except (OSError, HttpClientError) as exc:
            raise ParentError(f"upstream broke: {exc}", Failure.BROKEN) from exc
        if data is None:
            return [END]
        try:
            tags = self.parser.feed(data)
        except ProtocolError as exc:
            raise ParentError(f"bad FLV from upstream: {exc}", Failure.BAD_DATA) from exc
        out: list[FeedEvent] = []
        if not self._declared and self.parser.header_seen:
            self._declared = True
            out.append(Tracks(self.parser.has_audio, self.parser.has_video))
        for tag in tags:
            if tag.tag_type == flv.TAG_SCRIPT and tag.body[:13] == ONMETADATA:
                with contextlib.suppress(ProtocolError):  # unreadable metadata is dropped
                    values = metadata_values(tag.body)
                    out.append(rs.Metadata(0, tag.timestamp, tag.body, values))
                continue
            out.append(rs.Media(0, tag.tag_type, tag.timestamp, tag.body))
        return out

    def close(self) -> None:
        self.resp.close()


async def open_feed(
    parent: str, app: str, name: str, *, tls: ssl.SSLContext | None = None, query: str = ""
) -> Feed:
    """Open app/name at `parent` (rtmp://, rtmps://, http:// or https://; a TLS parent is
    verified with `tls`, default the system's trust), `query` added to the URL (the edge's
    signed play token)."""
    if parent.startswith(("rtmp://", "rtmps://")):
        return await RtmpFeed.open(parent, app, name, tls, query)
    return await FlvFeed.open(parent, app, name, tls, query)
