"""The admin rule, pure: a bearer token when one is configured, else loopback peers only."""

from __future__ import annotations

import pytest

from common.proto.admin import check_admin, is_loopback
from common.proto.peers import peer_host


@pytest.mark.parametrize("peer", ["127.0.0.1:5000", "127.9.8.7:1", "::1:5000", "[::1]:80",
                                  "::ffff:127.0.0.1:9"])  # fmt: skip
def test_no_token_allows_loopback_peers(peer):
    assert check_admin("", {}, peer).allowed
    assert check_admin("", {"host": "127.0.0.1:8080"}, peer).allowed


@pytest.mark.parametrize("peer", ["10.0.0.5:5000", "192.168.1.2:1", "2001:db8::1:80",
                                  "::ffff:10.0.0.1:9", "?", "", "localhost:80"])  # fmt: skip
def test_no_token_refuses_other_peers_with_a_reason(peer):
    verdict = check_admin("", {"authorization": "Bearer anything"}, peer)
    assert not verdict.allowed
    assert verdict.status == 403
    assert "loopback" in verdict.reason


@pytest.mark.parametrize("peer", ["127.0.0.1:5000", "10.0.0.5:5000"])
def test_a_token_is_needed_from_any_peer_once_configured(peer):
    missing = check_admin("s3cret", {}, peer)
    assert (missing.allowed, missing.status) == (False, 401)
    assert check_admin("s3cret", {"authorization": ""}, peer).status == 401
    for wrong in ("Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer "):
        verdict = check_admin("s3cret", {"authorization": wrong}, peer)
        assert (verdict.allowed, verdict.status) == (False, 403), wrong
    assert check_admin("s3cret", {"authorization": "Bearer s3cret"}, peer).allowed
    assert check_admin("s3cret", {"authorization": "bearer  s3cret "}, peer).allowed
    # a bearer token is never sent by a browser on its own: any page origin may use it
    headers = {"authorization": "Bearer s3cret", "origin": "https://console.example"}
    assert check_admin("s3cret", headers, peer).allowed


@pytest.mark.parametrize(
    "headers",
    [{"origin": "https://evil.example"},  # a page's fetch() in the node host's browser
     {"origin": "null"},  # a sandboxed or redirected page
     {"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:8000"},  # another local port's page
     {"host": "localhost:8080", "origin": "http://127.0.0.1:8080"},  # another origin's name
     {"host": "evil.example:8080"},  # DNS rebinding: a same-origin request, no Origin
     {"host": "127.0.0.1:8080", "sec-fetch-site": "cross-site"},
     {"host": "10.1.2.3:8080"}],
)  # fmt: skip
def test_no_token_refuses_what_a_web_page_sends_from_loopback(headers):
    verdict = check_admin("", headers, "127.0.0.1:5000")
    assert (verdict.allowed, verdict.status) == (False, 403)
    assert "without an admin_token" in verdict.reason


@pytest.mark.parametrize(
    "headers",
    [{"host": "localhost:8090", "origin": "http://localhost:8090"},  # the node's own page
     {"host": "[::1]:8090", "origin": "http://[::1]:8090"},
     {"host": "127.0.0.1", "sec-fetch-site": "same-origin"}, {"host": "app.localhost:1"}],
)  # fmt: skip
def test_no_token_allows_the_node_host_s_own_pages_and_tools(headers):
    assert check_admin("", headers, "127.0.0.1:5000").allowed


def test_peer_hosts():
    assert peer_host("127.0.0.1:80") == "127.0.0.1"
    assert peer_host("::1:80") == "::1"
    assert peer_host("[::1]:80") == "::1"
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("nonsense")
