"""Signed play URLs: sign and check, expiry, the stream and the class they are bound to, and
the query parsing fuzzed."""

from __future__ import annotations

from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st

from common.proto import auth, playtoken
from common.proto.hlsplaylist import with_query

SECRET = "s" * 24
NOW = 1_800_000_000


def query(text: str) -> dict[str, str]:
    return dict(parse_qsl(text))


def test_a_signed_url_plays_its_stream_until_it_expires() -> None:
    q = query(playtoken.play_query(SECRET, "live/a", NOW + 60))
    assert set(q) == {"pexp", "psig"}
    assert playtoken.check(SECRET, "live/a", q, NOW) is None
    assert playtoken.check(SECRET, "live/a", q, NOW + 60) is None
    assert "expired 1 s ago" in playtoken.check(SECRET, "live/a", q, NOW + 61)


def test_a_token_is_bound_to_its_stream_secret_and_class() -> None:
    q = query(playtoken.play_query(SECRET, "live/a", NOW + 60, "premium"))
    assert q["pcls"] == "premium" and playtoken.check(SECRET, "live/a", q, NOW) is None
    replayed = ("live/b", "other/a", "live/a2", "live/A")  # another stream's URL
    for path in replayed:
        assert "does not match" in playtoken.check(SECRET, path, q, NOW), path
    assert "does not match" in playtoken.check("t" * 24, "live/a", q, NOW)
    for tampered in (
        {**q, "pcls": "gold"},
        {k: v for k, v in q.items() if k != "pcls"},  # a class token without its class
        {**q, "pexp": str(NOW + 3600)},  # a later expiry
        {**q, "psig": q["psig"][:-1] + ("0" if q["psig"][-1] != "0" else "1")},
    ):
        assert "does not match" in playtoken.check(SECRET, "live/a", tampered, NOW), tampered
    plain = query(playtoken.play_query(SECRET, "live/a", NOW + 60))
    assert "does not match" in playtoken.check(SECRET, "live/a", {**plain, "pcls": "x"}, NOW)


def test_missing_and_malformed_tokens_say_why() -> None:
    good = query(playtoken.play_query(SECRET, "live/a", NOW + 60))
    assert "no play token" in playtoken.check(SECRET, "live/a", {}, NOW)
    assert "no play token" in playtoken.check(SECRET, "live/a", {"psig": good["psig"]}, NOW)
    for pexp in ("-1", "1e9", " 5", "١٢", str(auth.MAX_EXPIRES + 1), "9" * 30):
        reason = playtoken.check(SECRET, "live/a", {**good, "pexp": pexp}, NOW)
        assert "not a Unix time" in reason, pexp
    assert "too long" in playtoken.check(SECRET, "live/a", {**good, "pcls": "c" * 65}, NOW)


def test_play_publish_and_class_tokens_do_not_stand_for_each_other() -> None:
    """The three HMACs are domain-separated and use their own parameters."""
    publish = query(auth.token_query(SECRET, "live", "a", NOW + 60))
    klass = query(auth.class_query(SECRET, "live/a", "premium", NOW + 60))
    assert playtoken.check(SECRET, "live/a", publish, NOW) is not None
    assert playtoken.check(SECRET, "live/a", klass, NOW) is not None
    as_play = {"pexp": publish["expires"], "psig": publish["token"]}
    assert "does not match" in playtoken.check(SECRET, "live/a", as_play, NOW)
    play = query(playtoken.play_query(SECRET, "live/a", NOW + 60))
    as_publish = {"expires": play["pexp"], "token": play["psig"]}
    assert auth.check(SECRET, "live", "a", as_publish, NOW) is not None
    assert not set(playtoken.PARAMS) & {"expires", "token", "lc", "lexp", "lsig"}


def test_carried_keeps_only_the_play_token() -> None:
    q = query(playtoken.play_query(SECRET, "live/a", NOW + 60, "gold") + "&lc=x&other=1")
    assert query(playtoken.carried(q)) == {k: q[k] for k in ("pexp", "psig", "pcls")}
    assert playtoken.carried({"other": "1"}) == ""


def test_segment_uris_get_the_viewers_token_in_place_of_the_parents() -> None:
    """An edge's cached playlist carries the edge's own pull token; a viewer gets its own."""
    edge = playtoken.play_query(SECRET, "live/a", NOW + 60)
    viewer = playtoken.play_query(SECRET, "live/a", NOW + 600)
    playlist = f"#EXTM3U\n#EXTINF:2.0,\na-s-1.ts?{edge}\n#EXTINF:2.0,\na-s-2.ts?x=1&{edge}\n"
    out = with_query(playlist.encode(), viewer).decode()
    assert out == f"#EXTM3U\n#EXTINF:2.0,\na-s-1.ts?{viewer}\n#EXTINF:2.0,\na-s-2.ts?x=1&{viewer}\n"


@given(st.dictionaries(st.sampled_from([*playtoken.PARAMS, "x"]), st.text(max_size=80)))
def test_any_query_is_refused_with_a_reason_and_never_raises(q: dict[str, str]) -> None:
    assert isinstance(playtoken.check(SECRET, "live/a", q, NOW), str)


@given(st.text(max_size=200))
def test_any_query_string_parses_to_a_decision(text: str) -> None:
    reason = playtoken.check(SECRET, "live/a", query(text), NOW)
    assert reason is None or isinstance(reason, str)
    assert reason is not None  # nothing guessed from a random string passes


@given(
    st.integers(min_value=0, max_value=auth.MAX_EXPIRES),
    st.text(st.characters(codec="utf-8"), max_size=64),
)
def test_every_signed_url_round_trips_through_its_query_string(expires: int, klass: str) -> None:
    q = query(playtoken.play_query(SECRET, "live/a", expires, klass))
    assert playtoken.check(SECRET, "live/a", q, min(NOW, expires)) is None
