"""The origin's ban table: bounded, expired bans make room."""

from __future__ import annotations

from origin.bans import Bans


def test_a_full_table_refuses_until_bans_expire() -> None:
    bans = Bans(max_bans=2)
    assert bans.ban(("live", "a"), 10, now=100) and bans.ban(("live", "b"), 20, now=100)
    assert not bans.ban(("live", "c"), 10, now=105), "two bans in force"
    assert bans.ban(("live", "a"), 30, now=105), "a key already banned may be banned again"
    assert bans.until[("live", "a")] == 135
    assert bans.ban(("live", "c"), 10, now=120), "b's ban is over: room"
    assert set(bans.until) == {("live", "a"), ("live", "c")}
