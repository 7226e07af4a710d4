"""The play gate: checks in order, the first refusal wins, admitted checks hear the end."""

from __future__ import annotations

import pytest

from common.proto.streamkey import StreamKey
from common.serve.playgate import PlayDenied, PlayGate, PlayProtocol, PlayRequest
from common.serve.refusal import Refusal

REQ = PlayRequest(PlayProtocol.FLV, StreamKey.parse("live", "s"), {}, "1.2.3.4:5")


class Check:
    def __init__(self, log: list[str], name: str, refuse: bool = False) -> None:
        self.log, self.name, self.refuse = log, name, refuse

    async def admit(self, req: PlayRequest) -> None:
        self.log.append(f"admit {self.name}")
        if self.refuse:
            raise PlayDenied(Refusal.AUTH, f"{self.name} says no")

    def ended(self, req: PlayRequest) -> None:
        self.log.append(f"ended {self.name}")


async def test_all_admit_then_all_hear_the_end() -> None:
    log: list[str] = []
    gate = PlayGate([Check(log, "a"), Check(log, "b")])
    await gate.admit(REQ)
    gate.ended(REQ)
    assert log == ["admit a", "admit b", "ended a", "ended b"]


async def test_a_refusal_stops_the_rest_and_ends_the_admitted() -> None:
    log: list[str] = []
    gate = PlayGate([Check(log, "a"), Check(log, "b", refuse=True), Check(log, "c")])
    with pytest.raises(PlayDenied) as info:
        await gate.admit(REQ)
    assert info.value.reason is Refusal.AUTH
    assert log == ["admit a", "admit b", "ended a"]


async def test_no_checks_admit_everyone() -> None:
    await PlayGate().admit(REQ)


def test_a_pull_signer_repeats_its_query_for_a_while_and_never_expires_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from urllib.parse import parse_qs

    from common.serve import playauth

    signer = playauth.PullSigner("s" * 24, ttl=60)
    queries = []
    for now in (1000.0, 1001.0, 1019.0):
        monkeypatch.setattr(playauth.time, "time", lambda now=now: now)
        queries.append(signer.query("live", "s"))
        expires = int(parse_qs(queries[-1])["pexp"][0])
        assert now + 60 <= expires <= now + 90
    assert len(set(queries)) == 1  # one HLS viewer at the parent, not one per fetch
    assert playauth.PullSigner("").query("live", "s") == ""
