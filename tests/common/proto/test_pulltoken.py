"""Nodes' pull tokens (cluster_secret, for origins with edges_only): bound to the stream, the
secret and the expiry, domain-separated from play, publish and class tokens; the node's
PullSigner puts them beside its play token."""

from __future__ import annotations

import pytest

from common.proto import auth, playtoken
from common.serve import playauth
from tests.common.proto.test_playtoken import NOW, query

SECRET = "c" * 24


def test_a_pull_token_pulls_its_stream_until_it_expires() -> None:
    q = query(playtoken.pull_query(SECRET, "live/a", NOW + 60))
    assert set(q) == set(playtoken.PULL_PARAMS)
    assert playtoken.check_pull(SECRET, "live/a", q, NOW + 60) is None
    assert "expired 1 s ago" in playtoken.check_pull(SECRET, "live/a", q, NOW + 61)
    for path in ("live/b", "other/a", "live/a2"):
        assert "does not match" in playtoken.check_pull(SECRET, path, q, NOW), path
    assert "does not match" in playtoken.check_pull("d" * 24, "live/a", q, NOW)
    assert "does not match" in playtoken.check_pull(
        SECRET, "live/a", {**q, "nexp": str(NOW + 99)}, NOW
    )
    assert "no pull token" in playtoken.check_pull(SECRET, "live/a", {}, NOW)
    assert "not a Unix time" in playtoken.check_pull(SECRET, "live/a", {**q, "nexp": "1e9"}, NOW)


def test_pull_tokens_and_the_other_tokens_do_not_stand_for_each_other() -> None:
    """The same secret as play_secret, publish_secret or qos_secret signs nothing else."""
    pull = query(playtoken.pull_query(SECRET, "live/a", NOW + 60))
    play = query(playtoken.play_query(SECRET, "live/a", NOW + 60))
    publish = query(auth.token_query(SECRET, "live", "a", NOW + 60))
    for other in (play, {"nexp": play["pexp"], "nsig": play["psig"]}, publish,
                  {"nexp": publish["expires"], "nsig": publish["token"]}):  # fmt: skip
        assert playtoken.check_pull(SECRET, "live/a", other, NOW) is not None, other
    assert playtoken.check(SECRET, "live/a", pull, NOW) is not None
    as_play = {"pexp": pull["nexp"], "psig": pull["nsig"]}
    assert "does not match" in playtoken.check(SECRET, "live/a", as_play, NOW)
    names = {*playtoken.PARAMS, "expires", "token", "lc", "lexp", "lsig"}
    assert not set(playtoken.PULL_PARAMS) & names
    assert playtoken.carried({**play, **pull}) == playtoken.carried(play)  # never to viewers


def test_a_pull_signer_signs_with_each_secret_it_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(playauth.time, "time", lambda: float(NOW))
    play_secret = "p" * 24
    both = query(playauth.PullSigner(play_secret, SECRET).query("live", "a"))
    assert set(both) == {"pexp", "psig", "nexp", "nsig"} and both["pexp"] == both["nexp"]
    assert playtoken.check(play_secret, "live/a", both, NOW) is None
    assert playtoken.check_pull(SECRET, "live/a", both, NOW) is None
    only_pull = query(playauth.PullSigner("", SECRET).query("live", "a"))
    assert set(only_pull) == {"nexp", "nsig"}
    assert playauth.PullSigner("", SECRET).signs and not playauth.PullSigner("").signs
