"""A lean sans-IO HTTP/1.1 request parser and response-head writer for the node's hot path.

Viewers send thousands of small GETs a second (HLS playlists and segments); this parser does
the few things a server needs (request line, headers, Content-Length bodies, keep-alive,
pipelining) with bytes operations, and rejects the rest with a status and a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus

from common.proto.errors import ProtocolError
from common.proto.streamkey import shown

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_FIELD = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*"
_FIELDS = re.compile(_FIELD + rb"(?:\r\n" + _FIELD + rb")*")
"""Header field lines that are all well-formed (name a token, value visible or blank)."""


class HttpError(ProtocolError):
    """The request cannot be served; `status` is what to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class RequestHead:
    """A parsed request (the body is read separately). Shared by identical requests: read
    it, never change it."""

    method: str
    target: str
    http11: bool
    headers: dict[str, str]
    content_length: int
    keep_alive: bool


MEMO_HEADS = 512
MEMO_HEAD_BYTES = 1024
"""Request heads of up to this size are parsed once: players send the same few heads (the
same playlist, the same new segment) thousands of times. The table is emptied when full."""
_PARSED: dict[bytes, RequestHead] = {}


class RequestParser:
    """Feed bytes; take complete requests (head + body) in order."""

    def __init__(self, *, max_header_bytes: int = 16 * 1024, max_body_bytes: int = 1024 * 1024):
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self.eof = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Add received bytes (b"" marks the end of the connection)."""
        if not data:
            self.eof = True
        self._buf += data

    def next_request(self) -> tuple[RequestHead, bytes] | None:
        """The next complete request and its body, or None if more bytes are needed."""
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.max_header_bytes:
                raise HttpError(431, f"request head larger than {self.max_header_bytes} bytes")
            if self.eof and buf.strip():
                raise HttpError(400, "connection closed in the middle of a request head")
            return None
        if end > self.max_header_bytes:
            raise HttpError(431, f"request head larger than {self.max_header_bytes} bytes")
        raw = bytes(buf[:end])
        head = _PARSED.get(raw)
        if head is None:
            head = parse_head(raw)
            if end <= MEMO_HEAD_BYTES:
                if len(_PARSED) >= MEMO_HEADS:
                    _PARSED.clear()
                _PARSED[raw] = head
        if head.content_length > self.max_body_bytes:
            raise HttpError(
                413, f"body of {head.content_length} bytes exceeds {self.max_body_bytes}"
            )
        total = end + 4 + head.content_length
        if len(buf) < total:
            if self.eof:
                raise HttpError(400, "connection closed in the middle of a request body")
            return None
        body = bytes(buf[end + 4 : total])
        del buf[:total]
        return head, body


def _add_header(headers: dict[str, str], key: str, text: str) -> None:
    """Add one header field; a repeated field joins the first with ", " (RFC 9110 5.3),
    except Content-Length and Host, which must not repeat (a 400)."""
    if key in headers:
        if key in ("content-length", "host"):
            raise HttpError(400, f"duplicate {key} header")
        headers[key] += ", " + text
    else:
        headers[key] = text


def parse_head(raw: bytes) -> RequestHead:
    """Parse a request line and header fields (without the final CRLFCRLF)."""
    lines = raw.split(b"\r\n")
    while lines and not lines[0]:
        lines.pop(0)  # RFC 9112 2.2: ignore empty lines before the request line
    if not lines:
        raise HttpError(400, "empty request")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed HTTP request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise HttpError(400, "malformed HTTP request line")
    if version == b"HTTP/1.1":
        http11 = True
    elif version == b"HTTP/1.0":
        http11 = False
    elif version.startswith(b"HTTP/"):
        raise HttpError(505, f"unsupported version {shown(version.decode('latin-1'))}")
    else:
        raise HttpError(400, "malformed HTTP request line")
    headers: dict[str, str] = {}
    fields = lines[1:]
    block = b"\r\n".join(fields)
    if fields and _FIELDS.fullmatch(block):
        # all well-formed (the common case): checked at once, decoded at once
        for line in block.decode("latin-1").split("\r\n"):
            name, _, text = line.partition(":")
            _add_header(headers, name.lower(), text.strip(" \t"))
        fields = []
    for line in fields:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed HTTP header line")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise HttpError(400, "invalid characters in a header value")
        _add_header(headers, name.decode("ascii").lower(), value.decode("latin-1"))
    if "transfer-encoding" in headers:
        raise HttpError(501, "request bodies with Transfer-Encoding are not supported")
    length_text = headers.get("content-length", "0")
    if not (length_text.isascii() and length_text.isdigit()) or len(length_text) > 12:
        raise HttpError(400, f"bad Content-Length {length_text!r}")
    if http11 and "host" not in headers:
        raise HttpError(400, "HTTP/1.1 request without a Host header")
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if http11 else "keep-alive" in tokens
    return RequestHead(
        method.decode("ascii"),
        target.decode("ascii"),
        http11,
        headers,
        int(length_text),
        keep_alive,
    )


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def response_head(
    status: int,
    headers: list[tuple[str, str]],
    *,
    content_length: int | None,
    close: bool,
) -> bytes:
    """Status line and header fields; `content_length=None` means a chunked body (a 1xx,
    204 or 304 has no body and no length)."""
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b""))]
    for name, value in headers:
        field = f"{name}: {value}"
        if not field.isascii() or not field.isprintable():
            raise ValueError(f"refusing to send an unsafe header field {field[:60]!r}")
        lines.append(field.encode("ascii"))
    if status < 200 or status in (204, 304):
        pass
    elif content_length is None:
        lines.append(b"transfer-encoding: chunked")
    else:
        lines.append(b"content-length: %d" % content_length)
    if close:
        lines.append(b"connection: close")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


class ChunkedDecoder:
    """Sans-IO decoder of a chunked response body (RFC 9112 7.1): `feed` bytes, get the
    body's data back; `done` once the last chunk and trailers have been read. Chunk
    extensions and trailers are skipped; anything malformed raises ProtocolError."""

    def __init__(self, *, max_line: int = 4096) -> None:
        self.max_line = max_line
        self.done = False
        self._buf = bytearray()
        self._left = 0  # data bytes of the current chunk still to come
        self._state = "size"  # size, data, crlf, trailer

    def feed(self, data: bytes) -> list[bytes]:
        """Body data completed by `data` (possibly none)."""
        if self.done:
            if data:
                raise ProtocolError("data after the end of a chunked body")
            return []
        out: list[bytes] = []
        if self._buf:
            data = bytes(self._buf) + data
            self._buf.clear()
        if self._state == "data" and len(data) <= self._left:
            # the common case in a stream: a whole read inside one chunk, no copy
            self._left -= len(data)
            if not self._left:
                self._state = "crlf"
            return [data] if data else []
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == "data":
                take = min(self._left, end - pos)
                out.append(data if take == end else data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = "crlf"
            elif state == "crlf":
                if end - pos < 2:
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                pos += 2
                self._state = "size"
            else:
                nl = data.find(b"\n", pos, pos + self.max_line)
                if nl < 0:
                    if end - pos >= self.max_line:
                        raise ProtocolError("chunk size or trailer line too long")
                    break
                line = data[pos:nl].rstrip(b"\r")
                pos = nl + 1
                if state == "trailer":
                    if not line:
                        self.done = True
                        if pos < end:
                            raise ProtocolError("data after the end of a chunked body")
                        break
                    continue
                size_text = line.partition(b";")[0].strip(b" \t")
                if not _CHUNK_SIZE.fullmatch(size_text):
                    raise ProtocolError(f"bad chunk size line {line[:40]!r}")
                size = int(size_text, 16)
                if size == 0:
                    self._state = "trailer"
                else:
                    self._left = size
                    self._state = "data"
        if pos < end:
            self._buf += data[pos:]  # an unfinished size line or CRLF
        return out
