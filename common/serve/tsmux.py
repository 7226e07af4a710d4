"""MPEG-TS muxing of an HLS segment through PyAV (remuxing FLV tags, no decoding).

`mux_ts` is blocking CPU work: run it in a thread."""

from __future__ import annotations

import io

import av

from common.media.segmenter import SegmentSpec
from common.media.tscc import align_continuity
from common.proto import flv
from common.proto.rtmp import messages as m


def mux_ts(spec: SegmentSpec) -> bytes:
    """The segment as MPEG-TS: its FLV tags remuxed by PyAV's mpegts muxer (which converts
    AVC to Annex B with SPS/PPS at the keyframe and writes ADTS for AAC). Frames are stamped
    with their output times (`spec.times`); an empty result means nothing could be muxed.
    Continuity counters are aligned (`align_continuity`) so segments played one after
    another never show a counter gap, whichever node muxed them."""
    has_audio = any(h.type_id == m.AUDIO for h in spec.headers)
    has_video = any(h.type_id == m.VIDEO for h in spec.headers)
    parts = [flv.file_header(audio=has_audio, video=has_video)]
    for h in spec.headers:
        ts = 0 if h.type_id == m.DATA_AMF0 else spec.start_ms
        parts.append(flv.build_tag(h.type_id, ts, h.payload))
    times = spec.times or [f.timestamp for f in spec.frames]
    parts += [
        f.flv if t == f.timestamp else flv.build_tag(f.type_id, t, f.payload)
        for f, t in zip(spec.frames, times, strict=True)
    ]
    src = av.open(io.BytesIO(b"".join(parts)), format="flv")
    out_buf = io.BytesIO()
    muxed = 0
    try:
        out = av.open(out_buf, "w", format="mpegts")
        try:
            mapping = {}
            for stream in src.streams:
                if stream.type in ("video", "audio"):
                    mapping[stream.index] = out.add_stream_from_template(stream)
            for packet in src.demux():
                target = mapping.get(packet.stream.index)
                if target is None or packet.dts is None:
                    continue
                packet.stream = target
                out.mux(packet)
                muxed += 1
        finally:
            out.close()
    finally:
        src.close()
    return align_continuity(out_buf.getvalue()) if muxed else b""
