"""Typed control messages: round trips, every rejection rule, and fuzzing through the framing."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.proto.control import (
    MAX_FRAME,
    MAX_STREAMS,
    ControlDecoder,
    ControlError,
    Heartbeat,
    Rejection,
    StreamInfo,
    StreamsAnnouncement,
    UnknownType,
    encode_message,
    from_wire,
)
from common.proto.errors import ProtocolError
from common.proto.wire import WireError, encode


def frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def beat(**fields: object) -> dict:
    """A valid heartbeat map with `fields` changed (None deletes a field)."""
    msg: dict = {
        "type": "heartbeat",
        "v": 1,
        "node": "edge-1",
        "http": "http://127.0.0.1:8081",
        "rtmp": "rtmp://127.0.0.1:1936",
        "viewers": 3,
        "egress_bps": 1.5e6,
        "streams": {"live/a": 2, "live/b": 1},
        "capacity_viewers": 100,
        "capacity_bps": 1e9,
        "weight": 1.0,
        "region": "eu-west",
        "draining": False,
    }
    for k, v in fields.items():
        if v is None:
            del msg[k]
        else:
            msg[k] = v
    return msg


def announce(**fields: object) -> dict:
    msg: dict = {
        "type": "streams",
        "v": 1,
        "node": "origin-1",
        "streams": [{"app": "live", "name": "a", "bitrate": 3e5, "viewers": 0, "since": 1.7e9}],
    }
    msg.update(fields)
    return msg


# ---------------------------------------------------------------------- valid messages


def test_heartbeat_from_wire_is_typed() -> None:
    hb = from_wire(beat())
    assert isinstance(hb, Heartbeat)
    assert hb.node == "edge-1" and hb.viewers == 3 and hb.egress_bps == 1.5e6
    assert dict(hb.streams) == {"live/a": 2, "live/b": 1}
    with pytest.raises(TypeError):
        hb.streams["live/c"] = 1  # type: ignore[index]  # read-only
    with pytest.raises(AttributeError):
        hb.viewers = 4  # type: ignore[misc]  # frozen


def test_optional_fields_default_and_ints_become_floats() -> None:
    hb = from_wire({"type": "heartbeat", "node": "e", "http": "http://h:1", "weight": 2})
    assert isinstance(hb, Heartbeat)
    assert hb.rtmp == "" and hb.viewers == 0 and dict(hb.streams) == {} and not hb.draining
    assert hb.weight == 2.0 and isinstance(hb.weight, float)


def test_unknown_keys_are_ignored() -> None:
    hb = from_wire(beat(future_field={"x": [1, 2]}, upstreams=7))
    assert hb == from_wire(beat())
    ann = from_wire(announce(extra=1, streams=[{"app": "live", "name": "a", "video": {"w": 1}}]))
    assert isinstance(ann, StreamsAnnouncement) and ann.streams[0].key == "live/a"


def test_round_trip_through_the_framing() -> None:
    hb = from_wire(beat())
    ann = from_wire(announce())
    data = encode_message(hb) + encode_message(ann)
    decoder = ControlDecoder()
    got = [m for i in range(len(data)) for m in decoder.feed(data[i : i + 1])]
    assert got == [hb, ann]


def test_ipv6_and_hostnames_are_fine() -> None:
    for url in ("http://[::1]:80", "http://edge-1.example.com:8081", "http://10.0.0.1:65535"):
        assert Heartbeat("e", url).http == url


def test_the_largest_valid_messages_fit_a_frame() -> None:
    host, app = "h" * 240, "a" * 128
    streams = {f"{app}/{i:04d}{'n' * 124}": 10**9 for i in range(MAX_STREAMS)}
    hb = Heartbeat("n" * 64, f"http://{host}:65535", f"rtmp://{host}:65535", 10**9, 1e15,
                   streams, 10**9, 1e15, 1e6, "r" * 256, True)  # fmt: skip
    infos = tuple(StreamInfo(app, f"{i:04d}{'n' * 124}", 1e15, 10**9, 1e11) for i in range(1000))
    ann = StreamsAnnouncement("n" * 64, infos)
    for msg in (hb, ann):
        data = encode_message(msg)
        assert len(data) <= MAX_FRAME
        assert ControlDecoder().feed(data) == [msg]


def test_unknown_type_is_skipped_not_fatal() -> None:
    decoder = ControlDecoder()
    data = encode({"type": "hello", "node": "x"}) + encode(beat())
    assert [m.node for m in decoder.feed(data)] == ["edge-1"]
    assert decoder.skipped == 1
    with pytest.raises(UnknownType):
        from_wire({"type": "hello"})


_WORD = "ABCxyz019_"
node_ids = st.text(_WORD + ".:-", min_size=1, max_size=64)
parts = st.builds(str.__add__, st.sampled_from(_WORD), st.text(_WORD + ".~-", max_size=12))
counts = st.integers(0, 10**9)
rates = st.floats(0, 1e15, allow_nan=False)
hosts = st.sampled_from(["127.0.0.1", "edge.example", "[::1]", "a"])
ports = st.integers(1, 65535)

heartbeats = st.builds(
    Heartbeat,
    node=node_ids,
    http=st.builds(lambda h, p: f"http://{h}:{p}", hosts, ports),
    rtmp=st.just("") | st.builds(lambda h, p: f"rtmp://{h}:{p}", hosts, ports),
    viewers=counts,
    egress_bps=rates,
    streams=st.dictionaries(st.builds(lambda a, n: f"{a}/{n}", parts, parts), counts, max_size=8),
    capacity_viewers=counts,
    capacity_bps=rates,
    weight=st.floats(0, 1e6, allow_nan=False),
    region=st.text(
        st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30
    ).filter(str.isprintable),
    draining=st.booleans(),
)
announcements = st.builds(
    StreamsAnnouncement,
    node=node_ids,
    streams=st.lists(
        st.builds(
            StreamInfo,
            app=parts,
            name=parts,
            bitrate=rates,
            viewers=counts,
            since=st.none() | st.floats(0, 1e11, allow_nan=False),
        ),
        max_size=5,
    ).map(tuple),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(heartbeats | announcements, min_size=1, max_size=3), st.integers(1, 64))
def test_round_trip_property(messages: list, step: int) -> None:
    data = b"".join(encode_message(m) for m in messages)
    decoder = ControlDecoder()
    got = []
    for i in range(0, len(data), step):
        got += decoder.feed(data[i : i + step])
    assert got == messages
    assert [from_wire(m.to_wire()) for m in messages] == messages


# ---------------------------------------------------------------------- rejections

NAN, INF = math.nan, math.inf

HEARTBEAT_REJECTS = {
    "not a map": ([1, 2], "map"),
    "missing node": (beat(node=None), "without 'node'"),
    "missing http": (beat(http=None), "without 'http'"),
    "node not a string": (beat(node=42), "node must be a string"),
    "node empty": (beat(node=""), "node id"),
    "node too long": (beat(node="e" * 65), "longer than 64"),
    "node with a space": (beat(node="edge 1"), "outside"),
    "node with a slash": (beat(node="edge/1"), "outside"),
    "node non-ASCII": (beat(node="édge"), "outside"),
    "http https": (beat(http="https://h:1"), "not a http://"),
    "http userinfo": (beat(http="http://user:pw@h:1"), "userinfo"),
    "http path": (beat(http="http://h:1/x"), "a path"),
    "http trailing slash": (beat(http="http://h:1/"), "a path"),
    "http query": (beat(http="http://h:1?a=1"), "a query"),
    "http fragment": (beat(http="http://h:1#"), "a fragment"),
    "http no port": (beat(http="http://h"), "no port"),
    "http port 0": (beat(http="http://h:0"), "no port"),
    "http port too big": (beat(http="http://h:65536"), "no port"),
    "http port signed": (beat(http="http://h:+80"), "no port"),
    "http port non-ASCII digits": (beat(http="http://h:\u0663"), "not ASCII"),
    "http host non-ASCII": (beat(http="http://hö:1"), "not ASCII"),
    "http host empty": (beat(http="http://:1"), "no valid host"),
    "http host odd": (beat(http="http://h_x:1"), "no valid host"),
    "http whitespace": (beat(http="http://h :1"), "whitespace"),
    "http control char": (beat(http="http://h\r\n:1"), "control characters"),
    "http too long": (beat(http="http://" + "a" * 300 + ":1"), "longer than 256"),
    "http not a string": (beat(http=b"http://h:1"), "must be a string"),
    "rtmp with http scheme": (beat(rtmp="http://h:1"), "not a rtmp://"),
    "viewers NaN": (beat(viewers=NAN), "must be an integer"),
    "viewers negative": (beat(viewers=-1), "outside"),
    "viewers huge": (beat(viewers=2**63), "outside"),
    "viewers bool": (beat(viewers=True), "must be an integer"),
    "viewers string": (beat(viewers="3"), "must be an integer"),
    "egress NaN": (beat(egress_bps=NAN), "not finite"),
    "egress inf": (beat(egress_bps=INF), "not finite"),
    "egress -inf": (beat(egress_bps=-INF), "not finite"),
    "egress negative": (beat(egress_bps=-1.0), "outside"),
    "egress too big": (beat(egress_bps=1e300), "outside"),
    "egress bool": (beat(egress_bps=False), "must be a number"),
    "capacity_bps string": (beat(capacity_bps="1e9"), "must be a number"),
    "capacity_viewers float": (beat(capacity_viewers=1.5), "must be an integer"),
    "weight string": (beat(weight="heavy"), "must be a number"),
    "weight too big": (beat(weight=1e7), "outside"),
    "weight null": (beat() | {"weight": None}, "must be a number"),
    "streams a list": (beat(streams=["live/a"]), "streams must be a map"),
    "too many streams": (
        beat(streams={f"live/s{i}": 0 for i in range(MAX_STREAMS + 1)}),
        "exceed 1000",
    ),
    "stream key without slash": (beat(streams={"live": 1}), "not app/name"),
    "stream key dot-dot": (beat(streams={"live/..": 1}), "outside"),
    "stream key three parts": (beat(streams={"a/b/c": 1}), "outside"),
    "stream key empty name": (beat(streams={"live/": 1}), "empty name"),
    "stream key too long": (beat(streams={"live/" + "n" * 129: 1}), "longer than 128"),
    "stream key bytes": (beat(streams={b"live/a": 1}), "must be a string"),
    "stream viewers negative": (beat(streams={"live/a": -1}), "outside"),
    "stream viewers map": (beat(streams={"live/a": {}}), "must be an integer"),
    "region too long": (beat(region="r" * 257), "longer than 256"),
    "region control char": (beat(region="eu\x1b[31m"), "control characters"),
    "draining a number": (beat(draining=1), "true or false"),
}


@pytest.mark.parametrize("case", sorted(HEARTBEAT_REJECTS))
def test_heartbeat_rejections(case: str) -> None:
    raw, reason = HEARTBEAT_REJECTS[case]
    with pytest.raises(ControlError, match=reason) as err:
        from_wire(raw)
    assert err.value.code != "invalid", "a rejection names the rule it broke"
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (beat(node=42), "type"),
        (beat(node="e" * 65), "size"),
        (beat(viewers=-1), "range"),
        (beat(http="http://h"), "syntax"),
        (beat(node=None), "missing"),
    ],
)
def test_a_rejection_names_its_rule_for_metrics(raw: dict, code: str) -> None:
    with pytest.raises(ControlError) as err:
        from_wire(raw)
    assert err.value.code is Rejection(code)


ANNOUNCE_REJECTS = {
    "missing node": ({"type": "streams", "streams": []}, "without 'node'"),
    "bad node": (announce(node="a b"), "outside"),
    "streams a map": (announce(streams={"live/a": {}}), "must be a list"),
    "too many streams": (
        announce(streams=[{"app": "live", "name": f"s{i}"} for i in range(MAX_STREAMS + 1)]),
        "exceed 1000",
    ),
    "stream not a map": (announce(streams=["live/a"]), "must be a map"),
    "stream without name": (announce(streams=[{"app": "live"}]), "without 'name'"),
    "stream bad app": (announce(streams=[{"app": ".hidden", "name": "a"}]), "outside"),
    "stream name with slash": (announce(streams=[{"app": "live", "name": "a/b"}]), "outside"),
    "bitrate NaN": (announce(streams=[{"app": "l", "name": "a", "bitrate": NAN}]), "not finite"),
    "bitrate negative": (announce(streams=[{"app": "l", "name": "a", "bitrate": -5}]), "outside"),
    "viewers float": (announce(streams=[{"app": "l", "name": "a", "viewers": 1.0}]), "integer"),
    "since inf": (announce(streams=[{"app": "l", "name": "a", "since": INF}]), "not finite"),
    "since a string": (announce(streams=[{"app": "l", "name": "a", "since": "now"}]), "number"),
}


@pytest.mark.parametrize("case", sorted(ANNOUNCE_REJECTS))
def test_announcement_rejections(case: str) -> None:
    raw, reason = ANNOUNCE_REJECTS[case]
    with pytest.raises(ControlError, match=reason):
        from_wire(raw)


def test_since_may_be_null() -> None:
    ann = from_wire(announce(streams=[{"app": "live", "name": "a", "since": None}]))
    assert isinstance(ann, StreamsAnnouncement) and ann.streams[0].since is None


def test_type_must_be_a_string() -> None:
    with pytest.raises(ControlError, match="type"):
        from_wire({"node": "e"})
    with pytest.raises(ControlError):
        from_wire({"type": 1})


def test_messages_built_in_process_are_checked_too() -> None:
    with pytest.raises(ControlError, match="node id"):
        Heartbeat("bad id", "http://h:1")
    with pytest.raises(ControlError, match="not finite"):
        Heartbeat("e", "http://h:1", egress_bps=NAN)
    with pytest.raises(ControlError, match="outside"):
        StreamInfo("live", "../etc")
    with pytest.raises(ControlError, match="holds a dict"):
        StreamsAnnouncement("o", ({"app": "live"},))  # type: ignore[arg-type]


def test_decoder_errors_are_protocol_errors() -> None:
    with pytest.raises(WireError):
        ControlDecoder().feed(frame({"type": "heartbeat", "v": 2}))
    with pytest.raises(WireError):
        ControlDecoder().feed(frame({"type": "heartbeat", "v": True}))
    with pytest.raises(WireError):
        ControlDecoder().feed(frame({"type": "heartbeat", "v": 1.0}))
    with pytest.raises(ControlError):
        ControlDecoder().feed(frame(beat(viewers=-1)))


# ---------------------------------------------------------------------- fuzzing

KEYS = ["type", "v", "node", "http", "rtmp", "viewers", "egress_bps", "streams",
        "capacity_viewers", "capacity_bps", "weight", "region", "draining",
        "app", "name", "bitrate", "since"]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=80)
    | st.binary(max_size=20)
    | st.sampled_from(["heartbeat", "streams", "live/a", "http://h:1", "rtmp://h:2", "e1"])
)
msgpack_values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=6)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=12), kids, max_size=6)
    ),
    max_leaves=12,
)


def shaped(kind: str) -> st.SearchStrategy[dict]:
    """Maps that look like a `kind` message, with arbitrary values in its fields."""
    return st.fixed_dictionaries(
        {"type": st.just(kind), "v": st.just(1) | msgpack_values},
        optional={k: msgpack_values for k in KEYS[2:]},
    )


def valid_then_mutated() -> st.SearchStrategy[dict]:
    return st.builds(
        lambda base, key, value: {**base, key: value},
        st.sampled_from([beat(), announce()]),
        st.sampled_from(KEYS),
        msgpack_values,
    )


def only_protocol_errors(data: bytes, step: int) -> None:
    decoder = ControlDecoder(max_frame=64 * 1024)
    try:
        for i in range(0, len(data), step):
            for msg in decoder.feed(data[i : i + step]):
                assert isinstance(msg, Heartbeat | StreamsAnnouncement)
                assert from_wire(msg.to_wire()) == msg
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(msgpack_values | shaped("heartbeat") | shaped("streams") | valid_then_mutated(),
             min_size=1, max_size=3),
    st.integers(1, 50),
)  # fmt: skip
def test_fuzz_msgpack_values_only_raise_protocol_errors(values: list, step: int) -> None:
    only_protocol_errors(b"".join(frame(v) for v in values), step)


@settings(max_examples=200, deadline=None)
@given(shaped("heartbeat") | shaped("streams") | valid_then_mutated() | msgpack_values)
def test_fuzz_from_wire_only_raises_control_errors(raw: object) -> None:
    try:
        msg = from_wire(raw)
    except ControlError:
        return
    assert from_wire(msg.to_wire()) == msg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 40))
def test_fuzz_bytes_only_raise_protocol_errors(data: bytes, step: int) -> None:
    only_protocol_errors(data, step)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes_inside_a_valid_frame(body: bytes) -> None:
    only_protocol_errors(len(body).to_bytes(4, "big") + body, 7)
