"""Copying the audio and video packets of one PyAV container into another (no decoding):
the loop under every remux (FLV to MPEG-TS or MP4, MP4 to MPEG-TS). Blocking: run in a thread."""

from __future__ import annotations

from collections.abc import Callable

import av


def copy_packets(
    src: av.container.InputContainer,
    out: av.container.OutputContainer,
    keep: Callable[[av.Packet], bool | None] = lambda packet: True,
) -> int:
    """Mux `src`'s audio and video packets that have a decode time into `out` (streams added
    from `src`'s): each one `keep` says True for; None from `keep` stops. The packets muxed."""
    media = [s for s in src.streams if s.type in ("video", "audio")]
    mapping = {s.index: out.add_stream_from_template(s) for s in media}
    muxed = 0
    for packet in src.demux(media):
        if packet.dts is None:
            continue
        verdict = keep(packet)
        if verdict is None:
            break
        if verdict:
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)
            muxed += 1
    return muxed
