"""The size of a snapshot image: a viewer's `?w=` checked once, and the picture size it gives
for a source of a given size (aspect kept, never wider than the source)."""

from __future__ import annotations

from collections.abc import Mapping

from common.proto.numparse import parse_uint

MIN_WIDTH = 16
"""Narrower requests are widened to this."""
MAX_WIDTH = 3840
"""Wider requests are narrowed to this (and to the source's width)."""
WIDTH_STEP = 16
"""Widths are rounded to a multiple of this: at most 240 images of a keyframe per format."""


class SizeError(ValueError):
    """A `w` that is not a width (the viewer gets a 400 with the message)."""


def requested_width(query: Mapping[str, str]) -> int | None:
    """The width `query` asks for ('w', decimal digits), to the nearest WIDTH_STEP, clamped
    to MIN_WIDTH..MAX_WIDTH; None without 'w' (the source's size); SizeError for anything
    but digits."""
    text = query.get("w")
    if text is None:
        return None
    value = parse_uint(text, 10**19)
    if value is None:
        raise SizeError(
            f"w must be a width in pixels ({MIN_WIDTH}..{MAX_WIDTH}), not {text[:20]!r}"
        )
    value = (min(value, MAX_WIDTH) + WIDTH_STEP // 2) // WIDTH_STEP * WIDTH_STEP
    return min(max(value, MIN_WIDTH), MAX_WIDTH)


def scaled_size(source: tuple[int, int], width: int | None) -> tuple[int, int]:
    """The picture size for a `source` (width, height) asked for at `width`: the source's
    own below it or without one, else `width` and the height that keeps the aspect (>= 1)."""
    src_w, src_h = source
    if width is None or width >= src_w:
        return src_w, src_h
    return width, max(1, round(src_h * width / src_w))
