"""CORS policy: which origin a response allows and what a preflight answers."""

from __future__ import annotations

import pytest

from common.proto.cors import NULL, CorsPolicy, check_origin


def allowed(headers: list[tuple[str, str]]) -> str | None:
    return dict(headers).get("access-control-allow-origin")


def test_any_page_by_default_whatever_it_sends() -> None:
    policy = CorsPolicy()
    for origin in (None, NULL, "https://x.example"):
        assert allowed(policy.headers(origin)) == "*"


def test_a_list_echoes_only_its_origins_and_varies_by_origin() -> None:
    policy = CorsPolicy(("https://a.example", NULL))
    assert policy.headers("https://a.example") == [
        ("access-control-allow-origin", "https://a.example"),
        ("vary", "origin"),
    ]
    assert allowed(policy.headers(NULL)) == NULL  # a page redirected across origins
    assert allowed(policy.headers("https://evil.example")) is None
    assert allowed(policy.headers(None)) is None
    assert ("vary", "origin") in policy.headers("https://evil.example")


def test_a_preflight_allows_range_and_authorization() -> None:
    headers = dict(CorsPolicy().preflight("https://x.example"))
    assert "range" in headers["access-control-allow-headers"]
    assert "authorization" in headers["access-control-allow-headers"]
    assert "DELETE" in headers["access-control-allow-methods"]


@pytest.mark.parametrize("good", ["*", "null", "https://a.b:8443", "http://[::1]:80", "http://x"])
def test_allowed_origin_entries(good: str) -> None:
    assert check_origin(good) is None


@pytest.mark.parametrize("bad", ["", "a.example", "https://a.example/", "ftp://x", 3, "https://"])
def test_bad_origin_entries_are_named(bad: object) -> None:
    assert repr(bad) in (check_origin(bad) or "")
