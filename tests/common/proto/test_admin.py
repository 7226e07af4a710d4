"""The admin rule, pure: a bearer token when one is configured, else loopback peers only."""

from __future__ import annotations

import pytest

from common.proto.admin import check_admin, is_loopback
from common.proto.peers import peer_host


@pytest.mark.parametrize("peer", ["127.0.0.1:5000", "127.9.8.7:1", "::1:5000", "[::1]:80",
                                  "::ffff:127.0.0.1:9"])  # fmt: skip
def test_no_token_allows_loopback_peers(peer):
    assert check_admin("", None, peer).allowed


@pytest.mark.parametrize("peer", ["10.0.0.5:5000", "192.168.1.2:1", "2001:db8::1:80",
                                  "::ffff:10.0.0.1:9", "?", "", "localhost:80"])  # fmt: skip
def test_no_token_refuses_other_peers_with_a_reason(peer):
    verdict = check_admin("", "Bearer anything", peer)
    assert not verdict.allowed
    assert verdict.status == 403
    assert "loopback" in verdict.reason


@pytest.mark.parametrize("peer", ["127.0.0.1:5000", "10.0.0.5:5000"])
def test_a_token_is_needed_from_any_peer_once_configured(peer):
    missing = check_admin("s3cret", None, peer)
    assert (missing.allowed, missing.status) == (False, 401)
    assert check_admin("s3cret", "", peer).status == 401
    for wrong in ("Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer "):
        verdict = check_admin("s3cret", wrong, peer)
        assert (verdict.allowed, verdict.status) == (False, 403), wrong
    assert check_admin("s3cret", "Bearer s3cret", peer).allowed
    assert check_admin("s3cret", "bearer  s3cret ", peer).allowed


def test_peer_hosts():
    assert peer_host("127.0.0.1:80") == "127.0.0.1"
    assert peer_host("::1:80") == "::1"
    assert peer_host("[::1]:80") == "::1"
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("nonsense")
