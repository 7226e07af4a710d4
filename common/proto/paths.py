"""Viewer paths: '/app/name.ext' parsed into a stream key and file, once for every node."""

from __future__ import annotations

import re
from urllib.parse import quote

from common.proto.streamkey import StreamKey, StreamKeyError, shown


def hls_path(path: str) -> tuple[str, str, str] | None:
    """'/app/name.m3u8' or '/app/name-session-seq.ts' -> (app, name, file); None otherwise."""
    parts = path.strip("/").split("/")
    if len(parts) != 2:
        return None
    app, file = parts
    if file.endswith(".m3u8"):
        return app, file[: -len(".m3u8")], file
    if file.endswith(".ts"):
        return app, file.rsplit("-", 2)[0], file
    return None


_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.~-]{0,250}\.ts")
"""An HLS segment file name (the origin's NAME-SESSION-SEQ.ts)."""


def hls_target(path: str) -> tuple[StreamKey, str]:
    """A viewer's HLS path ('/app/name.m3u8' or '/app/name-session-seq.ts', percent-decoded)
    -> its stream key and the canonical, percent-quoted path (what an edge asks its parent
    for, and its cache key); StreamKeyError with the reason for anything else."""
    target = hls_path(path)
    if target is None:
        raise StreamKeyError("expected /app/name.m3u8 or /app/name-session-seq.ts")
    app, name, file = target
    key = StreamKey.parse(app, name)
    if file.endswith(".ts") and (_SEGMENT.fullmatch(file) is None or file.count("-") < 2):
        raise StreamKeyError(f"segment name {shown(file)} is not NAME-SESSION-SEQ.ts")
    return key, f"/{quote(key.app, safe='')}/{quote(file, safe='')}"
