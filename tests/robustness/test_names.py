"""Stream names with spaces, non-ASCII, traversal (`../`, `%2e%2e`), query and fragment
characters, control characters and absurd lengths, through every entry point: RTMP publish
and play, HTTP-FLV, HLS and API paths, the balancer's redirect and route API."""

from __future__ import annotations

import contextlib
import time
from urllib.parse import quote

from tests.media import aac_frame, aac_header, avc_header, keyframe
from tests.robustness.conftest import (
    Cluster,
    connect,
    hostile_name_ok,
    read_for,
    reset,
    rtmp_handshake,
)
from tests.robustness.strategies import HOSTILE_NAMES, Msg, command, encode_conversation

APPS = ["live", "..", "../x", "a b", "é", "a\r\nb", "x" * 300]


def _rtmp(port: int, app: str, verb: str, name: str, media: bool) -> bytes:
    """Connect, createStream, publish or play `name` (with a little media); the answer."""
    steps = [
        command("connect", 1.0, {"app": app, "tcUrl": f"rtmp://127.0.0.1/{app}"}),
        command("createStream", 2.0, None),
        command(verb, 0.0, None, name, stream_id=1),
    ]
    if media:
        steps += [
            Msg("message", 18, b"\x02\x00\x0aonMetaData\x03\x00\x00\x09", stream_id=1, csid=5),
            Msg("message", 9, avc_header(), stream_id=1, csid=7),
            Msg("message", 8, aac_header(), stream_id=1, csid=6),
            Msg("message", 9, keyframe(), stream_id=1, csid=7, timestamp=0),
            Msg("message", 8, aac_frame(), stream_id=1, csid=6, timestamp=10),
        ]
    sock, _ = rtmp_handshake(port)
    try:
        with contextlib.suppress(OSError):
            sock.sendall(b"".join(encode_conversation(steps)))
        return read_for(sock, 1.0, until=b"NetStream.")
    finally:
        reset(sock)


def _get(port: int, target: str) -> tuple[int, str]:
    """Status and Location of one GET with a raw target (0 if no answer)."""
    sock = connect(port, 3.0)
    data = b""
    try:
        request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode("utf-8", "replace"))
        deadline = time.monotonic() + 3.0
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            more = read_for(sock, 0.2, limit=4096)
            if not more:
                break
            data += more
    finally:
        reset(sock)
    line, _, rest = data.partition(b"\r\n")
    parts = line.split(b" ")
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    location = ""
    for header in rest.split(b"\r\n"):
        if header.lower().startswith(b"location:"):
            location = header[9:].strip().decode("latin-1")
    return status, location


def test_hostile_names_over_rtmp(cluster: Cluster) -> None:
    """Publish at the origin and play everywhere, under every hostile app and name."""
    since = time.monotonic()
    origin = cluster.node("origin")
    combos = [("live", name) for name in HOSTILE_NAMES]
    combos += [(app, name) for app in APPS[1:] for name in ("x", "a b", "../x")]
    for app, name in combos:
        if not hostile_name_ok(app, name):
            continue
        _rtmp(origin.rtmp_port, app, "publish", name, media=True)
        for _, port in cluster.rtmp_targets():
            _rtmp(port, app, "play", name, media=False)
        dead = cluster.alive()
        assert not dead, f"{dead} stopped after app={app!r} name={name!r}:\n" + "\n".join(
            str(cluster.node(n).error) for n in dead
        )
    cluster.check(since)


def test_hostile_names_over_http(cluster: Cluster) -> None:
    """HTTP-FLV, HLS and API paths with hostile names on every node (the balancer's
    redirects are followed to the edge they name); no answer may be a 500."""
    since = time.monotonic()
    errors = []
    names = [quote(n, safe="") for n in HOSTILE_NAMES] + [n for n in HOSTILE_NAMES if "%" in n]
    names += ["..%2f..%2fetc%2fpasswd", "%2e%2e", "a%3fb", "a%23b", "%C0%AE%C0%AE"]
    for name in names:
        if len(name) > 2000:
            name = name[:2000]
        targets = [
            f"/live/{name}.flv",
            f"/{name}/x.flv",
            f"/live/{name}.m3u8",
            f"/live/{name}-abc-1.ts",
            f"/api/streams/live/{name}",
            f"/api/route?app=live&name={name}&proto=flv",
        ]
        for node, port in cluster.http_targets():
            for target in targets:
                status, location = _get(port, target)
                if status >= 500 and status != 503:
                    errors.append(f"{node} GET {target[:80]!r}: {status}")
                if location.startswith("http://127.0.0.1:"):
                    host_port, _, path = location[len("http://") :].partition("/")
                    status, _ = _get(int(host_port.rpartition(":")[2]), "/" + path)
                    if status >= 500:
                        errors.append(f"{node} -> {location[:80]!r}: {status}")
        dead = cluster.alive()
        assert not dead, f"{dead} stopped after name {name!r}:\n" + "\n".join(
            str(cluster.node(n).error) for n in dead
        )
    cluster.check(since)
    assert not errors, "internal errors for hostile names:\n" + "\n".join(errors[:40])
