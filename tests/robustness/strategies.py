"""Hypothesis strategies for hostile input: AMF0 values, RTMP message sequences, HTTP
requests and control-plane frames."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import msgpack
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from common.proto import amf0
from common.proto.rtmp.chunk import encode_message
from tests.robustness.conftest import hostile_name_ok


def fuzz_settings(max_examples: int) -> settings:
    """Fuzzing a running cluster: the same examples every run, no deadline, and no shrinking
    (a dead node fails every input after it)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


# ---------------------------------------------------------------------------- values

HOSTILE_NAMES = [
    "",
    " ",
    "a b",
    "é",
    "名前",
    "emoji\U0001f600",
    "..",
    "../x",
    "../../etc/passwd",
    "%2e%2e",
    "%2e%2e%2fx",
    "a/../../b",
    "a?b=c",
    "a?expires=1&token=%ff",
    "?",
    "#",
    "a#b",
    "/",
    "a/b",
    "a\r\nb",
    "a\nX-Injected: 1",
    "a\x00b",
    "a\tb",
    ".hidden",
    "-dash",
    "x" * 300,
    "x" * 70000,
    "\\..\\x",
    "a%20b",
    "a%00b",
    "a%0d%0ab",
    "CON",
    "live",
    "s1",
]

HOSTILE_NUMBERS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    2.0**31,
    2.0**32,
    2.0**32 - 1,
    2.0**53 + 1,
    2.0**64,
    1e308,
    -1e308,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
]

numbers = st.one_of(
    st.sampled_from(HOSTILE_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**63), 2**63).map(float),
)
short_text = st.one_of(st.sampled_from(HOSTILE_NAMES[:-8]), st.text(max_size=24))
text = st.one_of(
    short_text,
    st.sampled_from(["x" * 65535, "y" * 65536, "\r\n" * 5000, "é" * 40000]),
)
amf_scalar = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    text,
    st.just(amf0.UNDEFINED),
    st.builds(amf0.AMFDate, numbers, st.integers(-0x8000, 0x7FFF)),
)
amf_value = st.recursive(
    amf_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(short_text, children, max_size=4),
        st.dictionaries(short_text, children, max_size=4).map(amf0.ECMAArray),
    ),
    max_leaves=12,
)


def deep_object(depth: int) -> bytes:
    """An AMF0 object nested `depth` levels (past the encoder's own limit if asked)."""
    return b"\x03" + b"\x00\x01a\x03" * (depth - 1) + b"\x00\x00\x09" * depth


def raw_amf(value: object) -> bytes:
    """AMF0 bytes of `value`; values the encoder refuses become a string."""
    try:
        return amf0.encode(value)
    except (TypeError, ValueError):
        return amf0.encode(repr(value)[:100])


hostile_metadata = st.one_of(
    st.dictionaries(short_text, amf_value, max_size=8).map(raw_amf),
    st.dictionaries(short_text, amf_value, max_size=8).map(lambda d: raw_amf(amf0.ECMAArray(d))),
    st.sampled_from(
        [
            raw_amf({"width": math.nan, "height": math.inf, "framerate": math.nan}),
            raw_amf({"videocodecid": 7.0, "width": -math.inf, "height": 1e308, "fps": math.nan}),
            raw_amf(amf0.ECMAArray({"0": 1.0, "": 2.0, "\r\n": "x\r\ny", "width": "wide"})),
            raw_amf({"duration": math.nan, "filesize": -1.0, "encoder": "e" * 65535}),
            raw_amf([1.0, 2.0, "x"]),
            raw_amf("not an object"),
            raw_amf(math.nan),
            deep_object(64),
            deep_object(65),
            deep_object(500),
            b"\x08\xff\xff\xff\xff\x00\x00\x09",  # ECMA array claiming 4 billion entries
            b"\x0a\xff\xff\xff\xff",  # strict array claiming 4 billion entries
            b"\x0c\xff\xff\xff\xffabc",  # long string claiming 4 GiB
            b"\x07\x00\x00",  # reference
            b"\x11\x0a\x0b\x01",  # AMF3 switch
        ]
    ),
    st.binary(max_size=64),
)


# ---------------------------------------------------------------------------- RTMP


@dataclass(frozen=True)
class Msg:
    """One step of a hostile RTMP conversation."""

    kind: str
    type_id: int = 0
    payload: bytes = b""
    stream_id: int = 0
    csid: int = 3
    timestamp: int = 0

    def __repr__(self) -> str:
        body = self.payload if len(self.payload) <= 48 else self.payload[:48] + b"..."
        return (
            f"Msg({self.kind}, type={self.type_id}, sid={self.stream_id}, csid={self.csid}, "
            f"ts={self.timestamp}, {len(self.payload)}B {body!r})"
        )


def command(name: str, txn: float, obj: object, *args: object, stream_id: int = 0) -> Msg:
    return Msg("message", 20, raw_amf(name) + raw_amf(txn) + b"".join(map(raw_amf, (obj, *args))),
               stream_id=stream_id)  # fmt: skip


COMMAND_NAMES = [
    "connect",
    "createStream",
    "publish",
    "play",
    "play2",
    "deleteStream",
    "closeStream",
    "releaseStream",
    "FCPublish",
    "FCUnpublish",
    "FCSubscribe",
    "getStreamLength",
    "pause",
    "seek",
    "receiveAudio",
    "receiveVideo",
    "_result",
    "_error",
    "onStatus",
    "@setDataFrame",
]

stream_ids = st.one_of(st.sampled_from([0, 1, 2, 16, 17]), st.integers(0, 2**32 - 1))
csids = st.one_of(st.sampled_from([2, 3, 4, 5, 6, 7, 63, 64, 319, 320]), st.integers(2, 65599))
u32 = st.one_of(st.sampled_from([0, 1, 127, 128, 4096, 0xFFFFFF, 0x1000000, 0x7FFFFFFF,
                                 0x80000000, 0xFFFFFFFF]), st.integers(0, 2**32 - 1))  # fmt: skip
timestamps = st.one_of(st.sampled_from([0, 1, 0xFFFFFE, 0xFFFFFF, 0x1000000, 2**32 - 1]),
                       st.integers(0, 2**32 - 1))  # fmt: skip

hostile_command = st.builds(
    lambda name, txn, obj, args, sid: Msg(
        "message",
        20,
        raw_amf(name) + raw_amf(txn) + raw_amf(obj) + b"".join(map(raw_amf, args)),
        stream_id=sid,
    ),
    st.one_of(st.sampled_from(COMMAND_NAMES), short_text),
    st.one_of(numbers, amf_value),
    amf_value,
    st.lists(amf_value, max_size=4),
    stream_ids,
)
raw_command = st.builds(
    lambda body, sid, amf3: Msg(
        "message", 17 if amf3 else 20, (b"\x00" if amf3 else b"") + body, stream_id=sid
    ),  # fmt: skip
    st.one_of(st.binary(max_size=80), hostile_metadata),
    stream_ids,
    st.booleans(),
)
metadata_message = st.builds(
    lambda prefix, body, sid, ts: Msg(
        "message",
        18,
        (raw_amf("@setDataFrame") if prefix else b"") + raw_amf("onMetaData") + body,
        stream_id=sid,
        csid=5,
        timestamp=ts,
    ),
    st.booleans(),
    hostile_metadata,
    st.sampled_from([1, 0, 2]),
    timestamps,
)
protocol_control = st.builds(
    lambda t, value, extra, csid: Msg(
        "message", t, struct.pack(">I", value)[:extra] + b"\x02", csid=csid
    ),  # fmt: skip
    st.sampled_from([1, 2, 3, 5, 6]),
    u32,
    st.integers(0, 4),
    st.sampled_from([2, 3, 4]),
)
chunk_size_change = st.builds(
    lambda size: Msg("chunk_size", 1, struct.pack(">I", size), csid=2),
    st.one_of(
        st.sampled_from([1, 2, 127, 129, 4096, 65536, 0xFFFFFF, 0, 0x1000000, 0x80000000]),
        st.integers(1, 70000),
    ),  # fmt: skip
)
user_control = st.builds(
    lambda event, value, extra: Msg(
        "message", 4, struct.pack(">HI", event, value) + extra, csid=2
    ),  # fmt: skip
    st.one_of(st.integers(0, 7), st.integers(0, 0xFFFF)),
    u32,
    st.binary(max_size=8),
)
media_payload = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"\x17",
            b"\x17\x00",
            b"\x17\x05\x00\x00\x00",
            b"\x27\x01",
            b"\xaf",
            b"\xaf\x00",
            b"\xaf\x00\xff\xff",
            b"\x9f",
            b"\x90hvc1",
            b"\x17\x00\x00\x00\x00\x01",
            b"\x1c\x00\x00\x00\x00",
        ]
    ),  # fmt: skip
    st.binary(max_size=40).map(lambda b: b"\x17\x00\x00\x00\x00" + b),
    st.binary(max_size=40).map(lambda b: b"\xaf\x00" + b),
)
media = st.builds(
    lambda t, payload, sid, ts: Msg(
        "message", t, payload, stream_id=sid, csid=6 + (t == 9), timestamp=ts
    ),  # fmt: skip
    st.sampled_from([8, 9]),
    media_payload,
    st.sampled_from([1, 0, 2]),
    timestamps,
)
odd_message = st.builds(
    lambda t, payload, sid, csid, ts: Msg(
        "message", t, payload, stream_id=sid, csid=csid, timestamp=ts
    ),  # fmt: skip
    st.integers(0, 255),
    st.binary(max_size=300),
    stream_ids,
    csids,
    timestamps,
)
garbage = st.builds(lambda b: Msg("raw", payload=b), st.binary(min_size=1, max_size=300))
declared_huge = st.builds(
    lambda length, t: Msg(
        "raw",
        payload=bytes([0x03]) + b"\x00\x00\x00" + length.to_bytes(3, "big") + bytes([t])
        + b"\x00\x00\x00\x00" + b"\x00" * 64,
    ),
    st.sampled_from([0xFFFFFF, 8 * 1024 * 1024, 8 * 1024 * 1024 + 1, 1]),
    st.sampled_from([8, 9, 18, 20, 22]),
)  # fmt: skip
aggregate = st.builds(
    lambda body: Msg("message", 22, body, stream_id=1, csid=6),
    st.one_of(
        st.binary(max_size=120),
        st.lists(
            st.tuples(st.sampled_from([8, 9, 18, 20, 1]), media_payload, timestamps),
            max_size=4,
        ).map(
            lambda subs: b"".join(
                bytes([t]) + len(p).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
                + bytes([ts >> 24 & 0xFF]) + b"\x00\x00\x00" + p + (len(p) + 11).to_bytes(4, "big")
                for t, p, ts in subs
            )
        ),
    ),
)  # fmt: skip

any_message = st.one_of(
    hostile_command,
    raw_command,
    metadata_message,
    protocol_control,
    chunk_size_change,
    user_control,
    media,
    aggregate,
    odd_message,
    garbage,
    declared_huge,
)

hostile_key = st.tuples(
    st.one_of(st.sampled_from(["live"] * 4 + ["", "/live/", "a b", "..", "../x", "é"]), short_text),
    st.one_of(st.sampled_from(HOSTILE_NAMES), short_text),
).filter(lambda k: hostile_name_ok(*k))


@st.composite
def prologue(draw: st.DrawFn) -> list[Msg]:
    """Often a valid start (connect, createStream, publish or play) with hostile values."""
    depth = draw(st.sampled_from([0, 1, 2, 3, 3, 3, 3, 3]))
    app, name = draw(hostile_key)
    props = {"app": app, "tcUrl": draw(st.one_of(short_text, st.just("rtmp://127.0.0.1/" + app)))}
    if draw(st.booleans()):
        props.update(draw(st.dictionaries(short_text, amf_value, max_size=3)))
    steps = []
    if depth >= 1:
        steps.append(command("connect", 1.0, props))
    if depth >= 2:
        steps.append(command("createStream", 2.0, None))
    if depth >= 3:
        verb = draw(st.sampled_from(["publish", "play"]))
        extra = draw(st.lists(amf_value, max_size=2))
        steps.append(command(verb, 0.0, None, name, *extra, stream_id=1))
    return steps


rtmp_conversation = st.builds(
    lambda head, tail: head + tail, prologue(), st.lists(any_message, max_size=8)
)


def encode_conversation(steps: list[Msg]) -> list[bytes]:
    """Wire bytes of each step, chunked with the chunk size announced so far."""
    chunk_size = 128
    out = []
    for msg in steps:
        if msg.kind == "raw":
            out.append(msg.payload)
            continue
        out.append(
            encode_message(
                msg.csid, msg.type_id, msg.stream_id, msg.timestamp, msg.payload, chunk_size
            )
        )
        if msg.kind == "chunk_size":
            size = int.from_bytes(msg.payload, "big")
            if 1 <= size <= 0xFFFFFF:
                chunk_size = size
    return out


# ---------------------------------------------------------------------------- HTTP

BASE_PATHS = [
    "/",
    "/healthz",
    "/metrics",
    "/api/streams",
    "/api/streams/live/x",
    "/api/streams/live/",
    "/api/edges",
    "/api/route?app=live&name=x&proto=flv",
    "/api/route?app=live&name=canary&proto=hls&class=gold",
    "/live/x.flv",
    "/live/canary.flv",
    "/live/canary.m3u8",
    "/live/x.m3u8",
    "/live/x-abc-1.ts",
    "/live/canary-0-0.ts",
    "/x.flv",
    "/a/b/c.flv",
    "//[",
    "//[::1]:x/live/x.flv",
    "http://127.0.0.1/live/x.flv",
    "*",
]
PATH_PIECES = [
    " ",
    "%20",
    "é",
    "%C3%A9",
    "%ff",
    "%",
    "%2",
    "%00",
    "%0d%0a",
    "..",
    "../",
    "%2e%2e/",
    "%2e%2e%2f",
    "?",
    "??",
    "?a=1&a=2&&=",
    "?lc=gold&lexp=%C2%B2&lsig=%E2%98%83",
    "?lc=gold&lexp=99999999999999999999&lsig=x",
    "#",
    "#frag",
    "//",
    "/",
    ";",
    "\\",
    "\x7f",
    "\t",
    ".flv",
    ".m3u8",
    ".ts",
    "-1-2.ts",
    "x" * 5000,
]


@st.composite
def http_target(draw: st.DrawFn) -> str:
    path = draw(st.sampled_from(BASE_PATHS))
    for _ in range(draw(st.integers(0, 3))):
        piece = draw(st.one_of(st.sampled_from(PATH_PIECES), st.text(max_size=6)))
        pos = draw(st.integers(0, len(path)))
        path = path[:pos] + piece + path[pos:]
    return path


HEADER_NAMES = ["Host", "Content-Length", "Transfer-Encoding", "Connection", "User-Agent",
                "Range", "X-Forwarded-For", "Expect", "Upgrade", "Bad Header", "", "Ü",
                "Host"]  # fmt: skip
HEADER_VALUES = ["x", "", "0", "-1", "1e3", "abc", "99999999999999999999", "18446744073709551616",
                 "chunked", "gzip, chunked", "close", "keep-alive", "100-continue", "websocket",
                 "bytes=0-", "\x00", "é", "a\rb", "x" * 9000, " 5 ", "5, 5"]  # fmt: skip


def _header_line(name: str, value: str) -> bytes:
    return name.encode("utf-8", "replace") + b": " + value.encode("utf-8", "replace")


@st.composite
def http_request(draw: st.DrawFn) -> bytes:
    """One (possibly malformed) request: line, headers, body."""
    method = draw(st.one_of(
        st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS", "TRACE", "CONNECT", "PATCH",
                         "get", "G ET", "", "\x00GET"]),
        st.text(min_size=1, max_size=8),
    ))  # fmt: skip
    target = draw(http_target())
    if method.strip().upper() == "DELETE" or "drain" in target:
        method = "GET"  # unauthenticated admin actions would legitimately stop the canary
    version = draw(st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2.0", "HTTP/1.10",
                                                       "HTTP/9", "http/1.1", "", "HTTP/1.1 x"]))  # fmt: skip
    headers: list[bytes] = []
    if draw(st.integers(0, 9)):
        headers.append(b"Host: 127.0.0.1")
    for _ in range(draw(st.integers(0, 4))):
        headers.append(
            _header_line(
                draw(st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=10))),
                draw(st.one_of(st.sampled_from(HEADER_VALUES), st.text(max_size=20))),
            )
        )
    flood = draw(st.sampled_from([0] * 8 + [200, 2000]))
    headers += [b"X-Flood-%d: %s" % (i, b"v" * 10) for i in range(flood)]
    body = draw(st.one_of(
        st.just(b""),
        st.binary(max_size=200),
        st.just(b"5\r\nhello\r\n0\r\n\r\n"),
        st.just(b"ffffffffffffffff\r\nx"),
        st.just(b"-1\r\n\r\n"),
    ))  # fmt: skip
    if body and draw(st.booleans()):
        headers.append(
            b"Content-Length: %d" % draw(st.sampled_from([len(body), 0, len(body) + 50]))
        )
    line = method.encode("utf-8", "replace") + b" " + target.encode("utf-8", "replace")
    if version:
        line += b" " + version.encode()
    terminator = draw(st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r"]))
    return terminator.join([line, *headers, b""]) + terminator + body


http_exchange = st.tuples(
    st.lists(http_request(), min_size=1, max_size=4),  # pipelined in one write
    st.sampled_from(["read", "read", "reset", "half"]),
)


# ---------------------------------------------------------------------------- control plane

CTL_TYPES = ["heartbeat", "streams", "hello", "", "HEARTBEAT"]
ctl_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    short_text,
    st.binary(max_size=16),
    st.lists(st.one_of(st.integers(), short_text), max_size=3),
    st.dictionaries(short_text, st.one_of(st.integers(), st.floats(), short_text), max_size=3),
)
ctl_node = st.one_of(
    st.sampled_from(["evil", "", "x" * 1000, "edge-é", None, 5]), short_text
).filter(lambda n: n not in ("edge-http", "edge-rtmp", "origin"))
ctl_fields = ["node", "http", "rtmp", "viewers", "egress_bps", "streams", "capacity_viewers",
              "capacity_bps", "weight", "region", "draining", "v", "type"]  # fmt: skip


@st.composite
def ctl_message(draw: st.DrawFn) -> bytes:
    """One length-prefixed frame, usually msgpack, with hostile values."""
    msg = {"type": draw(st.one_of(st.sampled_from(CTL_TYPES), ctl_value)),
           "v": draw(st.sampled_from([1, 1, 1, 0, 2, "1", None])),
           "node": draw(ctl_node)}  # fmt: skip
    for name in draw(st.lists(st.sampled_from(ctl_fields), max_size=6)):
        if name in ("node", "type"):
            continue
        msg[name] = draw(ctl_value)
    if draw(st.booleans()):
        msg["streams"] = draw(st.one_of(
            st.dictionaries(short_text, ctl_value, max_size=3),
            st.lists(st.dictionaries(st.sampled_from(["app", "name", "bitrate", "viewers"]),
                                     ctl_value, max_size=4), max_size=3),
            ctl_value,
        ))  # fmt: skip
    if draw(st.booleans()):
        msg["http"] = draw(st.sampled_from(["http://127.0.0.1:1", "http://\u2603", "http://[",
                                            "x\r\nLocation: evil", "", "http://127.0.0.1:1/" + "x" * 9000]))  # fmt: skip
    try:
        body = msgpack.packb(msg, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        body = msgpack.packb({"type": "heartbeat", "v": 1, "node": "evil"})
    kind = draw(st.sampled_from(["ok"] * 6 + ["short", "huge", "garbage", "notmap", "badlen"]))
    if kind == "short":
        return len(body).to_bytes(4, "big") + body[: max(0, len(body) - 3)]
    if kind == "huge":
        return (1 << 20 | 1).to_bytes(4, "big") + body
    if kind == "badlen":
        return (0xFFFFFFFF).to_bytes(4, "big") + body
    if kind == "garbage":
        junk = draw(st.binary(min_size=1, max_size=64))
        return len(junk).to_bytes(4, "big") + junk
    if kind == "notmap":
        other = msgpack.packb(draw(st.one_of(st.lists(st.integers(-9, 9), max_size=3), short_text)))
        return len(other).to_bytes(4, "big") + other
    return len(body).to_bytes(4, "big") + body
