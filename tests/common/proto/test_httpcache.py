"""HTTP caching rules: Cache-Control parsing and a shared cache's freshness lifetime."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.proto.httpcache import (
    freshness_lifetime,
    parse_cache_control,
    stale_while_revalidate,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 7.0),
        ("", 7.0),
        ("max-age=5", 5.0),
        ("MAX-AGE=5", 5.0),
        ("  public ,  max-age = 12 ", 12.0),
        ('max-age="3"', 3.0),
        ("max-age=abc", 7.0),
        ("max-age=-1", 7.0),
        ("max-age=1.5", 7.0),
        ("max-age=", 7.0),
        ("max-age", 7.0),
        ("max-age=abc, max-age=4", 4.0),
        ("max-age=0", 0.0),
        ("max-age=10, no-cache", 0.0),
        ("No-Store", 0.0),
        ("private", 0.0),
        ("s-maxage=20, max-age=1", 20.0),
        ("max-age=1, s-maxage=x", 1.0),
        (",,,public,,", 7.0),
        ("max-age=\u0661", 7.0),  # a non-ASCII digit
    ],
)
def test_freshness_lifetime(value, expected):
    assert freshness_lifetime(value, 7.0) == expected


def test_parse_cache_control():
    assert parse_cache_control(' Max-Age = "5" , no-store,, x=') == [
        ("max-age", "5"),
        ("no-store", None),
        ("x", ""),
    ]


@given(st.text())
def test_freshness_lifetime_never_fails(value):
    ttl = freshness_lifetime(value, 7.0)
    assert ttl == 7.0 or ttl == 0.0 or (ttl >= 0 and ttl == int(ttl))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, 0.0),
        ("max-age=1", 0.0),
        ("max-age=1, stale-while-revalidate=2", 2.0),
        ("Stale-While-Revalidate=3", 3.0),
        ("stale-while-revalidate=x", 0.0),
        ("no-store, stale-while-revalidate=2", 0.0),
    ],
)
def test_stale_while_revalidate(value, seconds):
    assert stale_while_revalidate(value) == seconds


@pytest.mark.parametrize(
    ("value", "lifetime", "seconds"),
    [
        ("stale-while-revalidate=99999999999", None, 60.0),
        ("max-age=10, stale-while-revalidate=99999999999", 10.0, 10.0),
        ("max-age=1, stale-while-revalidate=2", 1.0, 1.0),
        ("max-age=300, stale-while-revalidate=600", 300.0, 60.0),
        ("max-age=0, stale-while-revalidate=5", 0.0, 0.0),
    ],
)
def test_stale_while_revalidate_is_capped(value, lifetime, seconds):
    # A parent's value is honoured only up to a minute and up to the freshness lifetime.
    assert stale_while_revalidate(value, lifetime) == seconds
