"""Viewer and API paths ('/app/name.flv', '.m3u8', '.ts', '/api/streams/app/name', ...)
parsed into stream keys, once for every node."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

from common.proto.streamkey import StreamKey, StreamKeyError, shown


class Media(StrEnum):
    """What a viewer path asks for, by its extension."""

    FLV = ".flv"
    PLAYLIST = ".m3u8"
    SEGMENT = ".ts"
    JPEG = ".jpg"
    PNG = ".png"


def media_of(path: str) -> Media | None:
    """The kind of media `path` asks for (by its extension), None for anything else."""
    for media in Media:
        if path.endswith(media.value):
            return media
    return None


def play_key(path: str, media: Media) -> StreamKey:
    """'/app/name.flv' or '/app/name.m3u8' (percent-decoded) -> StreamKey; StreamKeyError
    with the reason otherwise."""
    suffix = media.value
    if not path.endswith(suffix):
        raise StreamKeyError(f"path does not end with {suffix}")
    parts = path[1:].removesuffix(suffix).split("/") if path.startswith("/") else []
    if len(parts) != 2:
        raise StreamKeyError(f"expected /app/name{suffix}")
    return StreamKey.parse(parts[0], parts[1])


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


@dataclass(frozen=True, slots=True)
class HlsTarget:
    """A validated HLS path: its stream key, the file asked for ('name.m3u8' or
    'name-session-seq.ts') and the canonical, percent-quoted path (what an edge asks its
    parent for, and its cache key)."""

    key: StreamKey
    file: str
    path: str

    @property
    def media(self) -> Media:
        """A playlist or a segment."""
        return Media.PLAYLIST if self.file.endswith(Media.PLAYLIST.value) else Media.SEGMENT


def hls_target(path: str) -> HlsTarget:
    """A viewer's HLS path ('/app/name.m3u8' or '/app/name-session-seq.ts', percent-decoded)
    -> its HlsTarget; StreamKeyError with the reason for anything else."""
    target = hls_path(path)
    if target is None:
        raise StreamKeyError("expected /app/name.m3u8 or /app/name-session-seq.ts")
    app, name, file = target
    key = StreamKey.parse(app, name)
    if file.endswith(".ts") and (_SEGMENT.fullmatch(file) is None or file.count("-") < 2):
        raise StreamKeyError(f"segment name {shown(file)} is not NAME-SESSION-SEQ.ts")
    return HlsTarget(key, file, f"/{quote(key.app, safe='')}/{quote(file, safe='')}")


def snapshot_path(key: StreamKey, media: Media = Media.JPEG) -> str:
    """The percent-quoted path of a stream's snapshot ('/app/name.jpg' or '.png')."""
    return f"/{quote(key.app, safe='')}/{quote(key.name, safe='')}{media.value}"


STREAMS_API = "/api/streams"
"""GET: every live stream; STREAMS_API + '/app/name': one (GET) or a kick (DELETE)."""


def api_stream_key(path: str) -> StreamKey | None:
    """'/api/streams/app/name' -> its StreamKey (StreamKeyError if malformed); None for a
    path outside STREAMS_API + '/'."""
    prefix = STREAMS_API + "/"
    if not path.startswith(prefix):
        return None
    return StreamKey.from_text(path[len(prefix) :])


EDGES_API = "/api/edges"
"""The balancer's edge table; EDGES_API + '/id/drain' (or '/undrain'): POST to drain one."""


class EdgeAction(StrEnum):
    """What an operator can do to one edge (the last part of its API path)."""

    DRAIN = "drain"
    UNDRAIN = "undrain"


@dataclass(frozen=True, slots=True)
class EdgeRequest:
    """'/api/edges/id/action': the edge's id and the action (None: not an EdgeAction)."""

    node: str
    action: EdgeAction | None


def api_edge_action(path: str) -> EdgeRequest | None:
    """'/api/edges/id/action' -> EdgeRequest; None for a path outside EDGES_API + '/'."""
    prefix = EDGES_API + "/"
    if not path.startswith(prefix):
        return None
    node, _, action = path[len(prefix) :].partition("/")
    try:
        return EdgeRequest(node, EdgeAction(action))
    except ValueError:
        return EdgeRequest(node, None)


RECORDINGS = "recordings"
"""The path part of a stream's recordings: '/app/name/recordings/index.m3u8' (a VOD playlist
of a time range) and '/app/name/recordings/FILE/SEGMENT.ts' (its segments)."""
RECORDINGS_API = "/api/recordings"
"""GET: every recording; + '/app/name': one stream's (GET), + '/start' or '/stop' (POST)."""


@dataclass(frozen=True, slots=True)
class RecordingPath:
    """'/app/name/recordings/index.m3u8' (file and segment empty) or
    '/app/name/recordings/FILE/SEGMENT.ts' (not yet checked: see origin.recordfiles)."""

    key: StreamKey
    file: str = ""
    segment: str = ""


def recording_path(path: str) -> RecordingPath | None:
    """A stream's recordings path -> RecordingPath (StreamKeyError if malformed); None for
    a path that is not under '/app/name/recordings/'."""
    parts = path.strip("/").split("/")
    if len(parts) < 4 or parts[2] != RECORDINGS:
        return None
    key = StreamKey.parse(parts[0], parts[1])
    if parts[3:] == ["index.m3u8"]:
        return RecordingPath(key)
    if len(parts) == 5 and parts[4].endswith(".ts"):
        return RecordingPath(key, parts[3], parts[4].removesuffix(".ts"))
    raise StreamKeyError("expected /app/name/recordings/index.m3u8 or .../FILE/SEGMENT.ts")


def api_recording(path: str) -> tuple[StreamKey | None, str] | None:
    """'/api/recordings' -> (None, ''); '/api/recordings/app/name' -> (key, ''); with
    '/start' or '/stop' -> (key, 'start' | 'stop'); StreamKeyError if malformed; None for a
    path outside RECORDINGS_API."""
    if path == RECORDINGS_API:
        return None, ""
    prefix = RECORDINGS_API + "/"
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].split("/")
    if len(parts) == 3 and parts[2] in ("start", "stop"):
        return StreamKey.parse(parts[0], parts[1]), parts[2]
    if len(parts) == 2:
        return StreamKey.parse(parts[0], parts[1]), ""
    raise StreamKeyError("expected /api/recordings/app/name[/start|/stop]")
