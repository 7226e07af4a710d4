"""The playback buffer's one-step update for media that arrived together (`on_span`, what
the players' hub calls once per read) ends in the same state as the update per timestamp."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from topology.players.buffer import PlaybackBuffer

reads = st.lists(
    st.tuples(
        st.floats(0.0, 0.2),  # wall time since the last read
        st.floats(-0.1, 0.3),  # first timestamp, relative to the last read's
        st.floats(-0.1, 0.3),  # last timestamp, relative to the first
        st.sampled_from([0.0, 0.0, 0.0, 5.0, -5.0]),  # now and then a jump
    ),
    max_size=60,
)


def state(b: PlaybackBuffer) -> tuple:
    return (b.first_media_at, b.started_at, [(s.at, s.seconds) for s in b.stalls],
            b.received_s, b._media_end, b._play_media, b._play_wall, b._playing, b._last_ts)  # fmt: skip


@given(reads=reads, start=st.sampled_from([0.0, 0.5]), resume=st.sampled_from([0.0, 1.0]))
def test_a_span_is_its_first_and_last_timestamps_one_after_the_other(reads, start, resume):
    one, two = PlaybackBuffer(start, resume), PlaybackBuffer(start, resume)
    now, ts = 0.0, 10.0
    for wait, first, last, jump in reads:
        now += wait
        f = ts + first + jump
        t = f + last
        ts = t
        one.on_span(f, t, now)
        two.on_media(f, now)
        if t != f:
            two.on_media(t, now)
        assert state(one) == state(two)
    assert one.rebuffer_ratio(now + 1) == two.rebuffer_ratio(now + 1)
