"""The players' HTTP-FLV body scanner (chunked framing and FLV tags in one pass) sees what
de-chunking first and then scanning sees, however the bytes are split between reads."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.proto import flv
from common.proto.errors import ProtocolError
from common.proto.flvscan import ChunkedFlvScanner, FlvScanner
from common.proto.http1 import ChunkedDecoder

KEY = bytes([0x17, 1, 0, 0, 0]) + b"k" * 40
INTER = bytes([0x27, 1, 0, 0, 0]) + b"p" * 20
AAC = bytes([0xAF, 1]) + b"a" * 30
STAMP = b"\x02\x00\x0eonLivecdnClock\x03\x00\x00\x09"
TAGS = [(9, KEY), (9, INTER), (8, AAC), (18, STAMP)]


def stream(picks: list[int]) -> bytes:
    """An FLV stream: the header, then the picked tags 40 ms apart (some past 2^24 ms)."""
    tags = [TAGS[k] for k in picks]
    return flv.file_header(audio=True, video=True) + b"".join(
        flv.build_tag(t, 40 * i + (1 << 24) * (i % 5 == 4), body)
        for i, (t, body) in enumerate(tags)
    )


def chunked(raw: bytes, sizes: list[int], ext: bool) -> bytes:
    """`raw` as an HTTP/1.1 chunked body with chunks of `sizes` (cycled), then the end."""
    out, pos, i = [], 0, 0
    while pos < len(raw):
        n = sizes[i % len(sizes)] if sizes else len(raw)
        i += 1
        piece = raw[pos : pos + n]
        pos += n
        head = b"%x" % len(piece) + (b";x=1" if ext and i % 2 else b"")
        out.append(head + b"\r\n" + piece + b"\r\n")
    return b"".join(out) + b"0\r\n\r\n"


def scanned(scanner: FlvScanner, feed) -> tuple[list, int | None, list]:
    """(first, last) per piece, the keyframe and the scripts, feeding with `feed`."""
    spans, keys, scripts = [], [], []
    for _ in feed():
        scan = scanner.take()
        if scan.first_ts is not None:
            spans.append((scan.first_ts, scan.last_ts))
        if scan.keyframe_ts is not None:
            keys.append(scan.keyframe_ts)
        scripts += scan.scripts
    return spans, keys, scripts


def pieces(data: bytes, cuts: list[int]) -> list[tuple[int, int]]:
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return list(zip(bounds, bounds[1:], strict=False))


@given(
    picks=st.lists(st.integers(0, len(TAGS) - 1), max_size=25),
    sizes=st.lists(st.integers(1, 200), max_size=5),
    cuts=st.lists(st.integers(0, 5000), max_size=15),
    ext=st.booleans(),
)
def test_chunked_scan_equals_dechunk_then_scan_however_split(picks, sizes, cuts, ext) -> None:
    raw = stream(picks)
    body = chunked(raw, sizes, ext)
    whole = FlvScanner()
    whole.feed(raw)
    want = whole  # the reference: the de-chunked stream in one piece
    scanner = FlvScanner()
    reader = ChunkedFlvScanner(scanner, chunked=True)
    got_bytes = 0
    buf = bytearray(body)  # read into a reused buffer, as the players do
    for a, b in pieces(body, cuts):
        got_bytes += reader.feed(buf, a, b)
    assert reader.done
    assert got_bytes == len(raw)
    # the same tags as de-chunking with the HTTP layer's decoder, then scanning
    decoder, ref = ChunkedDecoder(), FlvScanner()
    ref_spans, ref_keys, ref_scripts = [], [], []
    for a, b in pieces(body, cuts):
        for piece in decoder.feed(body[a:b]):
            scan = ref.feed(piece)
            if scan.first_ts is not None:
                ref_spans.append((scan.first_ts, scan.last_ts))
            ref_keys += [scan.keyframe_ts] if scan.keyframe_ts is not None else []
            ref_scripts += scan.scripts
    scanner2 = FlvScanner()
    reader2 = ChunkedFlvScanner(scanner2, chunked=True)
    spans, keys, scripts = [], [], []
    for a, b in pieces(body, cuts):
        reader2.feed(body, a, b)
        scan = scanner2.take()
        if scan.first_ts is not None:
            spans.append((scan.first_ts, scan.last_ts))
        keys += [scan.keyframe_ts] if scan.keyframe_ts is not None else []
        scripts += scan.scripts
    assert keys == ref_keys
    assert scripts == ref_scripts
    if ref_spans:
        assert spans[0][0] == ref_spans[0][0] and spans[-1][1] == ref_spans[-1][1]
    else:
        assert not spans
    assert want.keyed == scanner.keyed == scanner2.keyed


@given(picks=st.lists(st.integers(0, len(TAGS) - 1), max_size=20),
       cuts=st.lists(st.integers(0, 3000), max_size=10), sized=st.booleans())  # fmt: skip
def test_sized_and_until_close_bodies(picks, cuts, sized) -> None:
    raw = stream(picks)
    reader = ChunkedFlvScanner(FlvScanner(), chunked=False, length=len(raw) if sized else None)
    total = sum(reader.feed(raw, a, b) for a, b in pieces(raw, cuts))
    assert total == len(raw)
    assert reader.done == sized
    reader.eof()
    assert reader.done


def test_malformed_framing_is_a_protocol_error() -> None:
    raw = stream([0, 1, 2])
    for body in (b"zz\r\n", b"5\r\nFLV\x01\x05XX", b"0x10\r\n", b"-1\r\n", b"1" * 2000):
        with pytest.raises(ProtocolError):
            ChunkedFlvScanner(FlvScanner(), chunked=True).feed(body, 0, len(body))
    reader = ChunkedFlvScanner(FlvScanner(), chunked=True)
    half = chunked(raw, [30], False)[:50]
    reader.feed(half, 0, len(half))
    with pytest.raises(ProtocolError):
        reader.eof()
    done = chunked(raw, [], False) + b"junk"
    with pytest.raises(ProtocolError):
        ChunkedFlvScanner(FlvScanner(), chunked=True).feed(done, 0, len(done))


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6), st.booleans())
def test_arbitrary_bytes_raise_only_protocol_errors(data, cuts, prefix) -> None:
    body = (b"d\r\n" + flv.file_header(audio=True, video=True) + b"\r\n" if prefix else b"") + data
    reader = ChunkedFlvScanner(FlvScanner(), chunked=True)
    with contextlib.suppress(ProtocolError):
        for a, b in pieces(body, cuts):
            reader.feed(bytearray(body), a, b)
        reader.eof()


def tag_chunks(raw_tags: list[bytes], group: list[int]) -> bytes:
    """Whole tags in chunks of `group` tags each (cycled), as servers write them; the FLV
    file header in a chunk of its own."""
    head = flv.file_header(audio=True, video=True)
    out, i, k = [b"%x\r\n" % len(head) + head + b"\r\n"], 0, 0
    while i < len(raw_tags):
        n = group[k % len(group)] if group else 1
        k += 1
        piece = b"".join(raw_tags[i : i + n])
        i += n
        out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
    return b"".join(out)


@given(
    picks=st.lists(st.integers(0, len(TAGS) - 1), min_size=1, max_size=30),
    group=st.lists(st.integers(1, 3), max_size=4),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
)
def test_chunks_of_whole_tags_scan_as_de_chunked_read_by_read(picks, group, cuts) -> None:
    """Chunks that hold whole tags (the fast path once a stream plays) give, read by read,
    the same first/last timestamps, keyframe and scripts as de-chunking then scanning."""
    tags = [TAGS[0]] + [TAGS[k] for k in picks]  # keyed from the start: the fast path
    raw_tags = [
        flv.build_tag(t, 40 * i + (1 << 24) * (i % 7 == 6), body)
        for i, (t, body) in enumerate(tags)
    ]
    body = tag_chunks(raw_tags, group)
    scanner = FlvScanner()
    reader = ChunkedFlvScanner(scanner, chunked=True)
    decoder, ref = ChunkedDecoder(), FlvScanner()
    buf = bytearray(body)
    total = 0
    for a, b in pieces(body, cuts):
        total += reader.feed(buf, a, b)
        got = scanner.take()
        want = ref.feed(b"".join(decoder.feed(body[a:b])))
        assert got == want
    assert total == len(flv.file_header(audio=True, video=True)) + sum(map(len, raw_tags))
    assert not reader.done


@given(
    sizes=st.lists(st.sampled_from([0, 30, 4000, 5000, 70000]), min_size=1, max_size=12),
    style=st.sampled_from([b"%x", b"%X", b"0%x"]),
    group=st.lists(st.integers(1, 2), max_size=3),
    cuts=st.lists(st.integers(0, 200_000), max_size=8),
)
def test_size_lines_of_any_length_and_case_scan_as_de_chunked(sizes, style, group, cuts) -> None:
    """Chunks of 2- to 5-digit sizes, upper or lower case, with a leading zero or not,
    read by read: the same as de-chunking then scanning (the 8-byte line lookup only
    takes lines it has parsed, and learns them across scanners)."""
    tags = [(9, KEY)] + [(9 if i % 2 else 8, bytes([0x27 if i % 2 else 0xAF, 1]) + b"m" * n)
                         for i, n in enumerate(sizes)]  # fmt: skip
    raw_tags = [flv.build_tag(t, 33 * i, body) for i, (t, body) in enumerate(tags)]
    head = flv.file_header(audio=True, video=True)
    pieces_, i, k = [head], 0, 0
    while i < len(raw_tags):
        n = group[k % len(group)] if group else 1
        k += 1
        pieces_.append(b"".join(raw_tags[i : i + n]))
        i += n
    body = b"".join(style % len(p) + b"\r\n" + p + b"\r\n" for p in pieces_) + b"0\r\n\r\n"
    for _ in range(2):  # the second time, the lines are known
        scanner = FlvScanner()
        reader = ChunkedFlvScanner(scanner, chunked=True)
        decoder, ref = ChunkedDecoder(), FlvScanner()
        buf = bytearray(body)
        total = 0
        for a, b in pieces(body, cuts):
            total += reader.feed(buf, a, b)
            assert scanner.take() == ref.feed(b"".join(decoder.feed(body[a:b])))
        assert reader.done and total == sum(map(len, pieces_))
