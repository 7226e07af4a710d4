"""A snapshot's `?w=`: digits only, clamped, never wider than the source, aspect kept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.proto.snapshotsize import (
    MAX_WIDTH,
    MIN_WIDTH,
    SizeError,
    requested_width,
    scaled_size,
)


def test_widths_are_clamped_and_garbage_refused() -> None:
    assert requested_width({}) is None
    assert requested_width({"w": "320"}) == 320
    assert requested_width({"w": "100"}) == 96 and requested_width({"w": "105"}) == 112
    assert requested_width({"w": "0"}) == MIN_WIDTH
    assert requested_width({"w": "99999999"}) == MAX_WIDTH
    for bad in ("", "abc", "-5", "3.5", "1e3", " 320", "٣٢٠", "9" * 20):
        with pytest.raises(SizeError):
            requested_width({"w": bad})


def test_scaled_size_keeps_the_aspect_and_never_widens() -> None:
    assert scaled_size((320, 240), None) == (320, 240)
    assert scaled_size((320, 240), 160) == (160, 120)
    assert scaled_size((320, 240), 5000) == (320, 240)
    assert scaled_size((1920, 1080), 320) == (320, 180)
    assert scaled_size((4000, 10), 16) == (16, 1)  # a height never rounds to 0


@given(st.text(max_size=30))
def test_any_w_is_a_width_in_range_or_refused(text: str) -> None:
    try:
        width = requested_width({"w": text})
    except SizeError:
        return
    assert width is not None and MIN_WIDTH <= width <= MAX_WIDTH


@given(
    st.integers(1, 10_000),
    st.integers(1, 10_000),
    st.one_of(st.none(), st.integers(MIN_WIDTH, MAX_WIDTH)),
)
def test_any_size_fits_the_source(src_w: int, src_h: int, width: int | None) -> None:
    w, h = scaled_size((src_w, src_h), width)
    assert 1 <= w <= src_w and 1 <= h <= src_h
    if width is not None and width < src_w:
        assert w == width
        assert abs(h / w - src_h / src_w) <= 1 / w + 1e-9 or h == 1
