"""The stream ownership table of an origin with `workers = N`: claims, releases, lookups,
its bound, a dead worker's claims, and the socket pair conversation between a worker and the
supervisor."""

from __future__ import annotations

import socket

import trio

from common.serve.workersowners import MAX_LINE, UNANSWERED, OwnerClient, Owners, serve_owners


def test_a_name_is_owned_by_the_first_worker_that_claims_it():
    owners = Owners(10)
    assert owners.claim("live/a", 1) == 1
    assert owners.claim("live/a", 1) == 1  # again: still its own
    assert owners.claim("live/a", 0) == 1  # refused: worker 1 owns it
    assert owners.lookup("live/a") == 1
    assert owners.lookup("live/b") is None


def test_only_the_owner_releases_a_name():
    owners = Owners(10)
    owners.claim("live/a", 1)
    owners.release("live/a", 0)
    assert owners.lookup("live/a") == 1
    owners.release("live/a", 1)
    assert owners.lookup("live/a") is None
    assert owners.claim("live/a", 0) == 0


def test_the_table_is_bounded():
    owners = Owners(2)
    assert owners.claim("live/a", 0) == 0
    assert owners.claim("live/b", 1) == 1
    assert owners.claim("live/c", 0) is None  # full: the node's max_streams
    assert owners.claim("live/a", 0) == 0  # a name held already is still answered
    owners.release("live/b", 1)
    assert owners.claim("live/c", 0) == 0


def test_a_dead_workers_claims_go():
    owners = Owners(10)
    owners.claim("live/a", 1)
    owners.claim("live/b", 1)
    owners.claim("live/c", 0)
    assert owners.drop(1) == 2
    assert owners.lookup("live/a") is None and owners.lookup("live/c") == 0
    assert owners.claim("live/a", 0) == 0


def test_bad_requests_get_no_owner():
    owners = Owners(10)
    assert owners.answer(b"1 X live/a", 0) == b"1 -\n"
    assert owners.answer(b"2 C", 0) == b"2 -\n"
    assert owners.answer(b"3 C live/a", 3) == b"3 3\n"
    assert owners.answer(b"4 L live/a", 0) == b"4 3\n"
    assert owners.answer(b"5 R live/a", 3) == b"5 3\n"
    assert owners.answer(b"6 L live/a", 0) == b"6 -\n"


async def test_an_answer_that_came_too_late_is_not_taken_for_the_next_ask():
    sup, mine = socket.socketpair()
    client = OwnerClient(mine.detach(), 0)
    with trio.socket.from_stdlib_socket(sup) as s:
        await s.send(b"0 7\n")  # as if the answer to an ask that timed out
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                line = await s.recv(100)
                await s.send(line.split(b" ")[0] + b" 1\n")

            nursery.start_soon(answer)
            assert await client.lookup("live", "a") == 1


async def test_workers_claim_through_their_socket_pairs():
    owners = Owners(100)
    pairs = [socket.socketpair() for _ in range(2)]
    async with trio.open_nursery() as nursery:
        for i, (sup, _) in enumerate(pairs):
            nursery.start_soon(serve_owners, owners, i, sup)
        w0 = OwnerClient(pairs[0][1].detach(), 0)
        w1 = OwnerClient(pairs[1][1].detach(), 1)
        assert await w0.claim("live", "a") == 0
        assert await w1.claim("live", "a") == 0  # refused: worker 0 owns it
        assert await w1.lookup("live", "a") == 0
        assert await w1.claim("live", "b") == 1

        async def claim_many(client: OwnerClient, i: int) -> None:
            for n in range(20):
                await client.claim("many", str(n))

        async with trio.open_nursery() as both:  # asks at once: one owner per name
            both.start_soon(claim_many, w0, 0)
            both.start_soon(claim_many, w1, 1)
        assert all(owners.lookup(f"many/{n}") in (0, 1) for n in range(20))
        await w0.release("live", "a")
        assert await w1.claim("live", "a") == 1
        nursery.cancel_scope.cancel()


async def test_a_worker_gets_no_owner_when_the_supervisor_is_gone():
    sup, mine = socket.socketpair()
    client = OwnerClient(mine.detach(), 0)
    sup.close()
    assert await client.claim("live", "a") == UNANSWERED
    assert await client.lookup("live", "a") is None


async def test_an_overlong_request_ends_that_workers_conversation():
    owners = Owners(10)
    sup, mine = socket.socketpair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_owners, owners, 0, sup)
        with trio.socket.from_stdlib_socket(mine) as s:
            await s.send(b"C " + b"x" * (MAX_LINE + 10))
            assert await s.recv(10) == b""  # the supervisor closed its end
        nursery.cancel_scope.cancel()
    assert not owners.owner


def test_a_claim_carries_its_workers_limit_and_host() -> None:
    """A claim's own max_streams (a worker's, reloaded) bounds the table; a host's claims are
    counted on the node (max_publishers_per_ip); a ban refuses the name to every worker."""
    owners = Owners(1)
    assert owners.answer(b"1 C live/a 3 10.0.0.1 1\n", 0, now=0) == b"1 0\n"
    assert owners.answer(b"2 C live/b 3 10.0.0.1 1\n", 1, now=0) == b"2 -2\n"  # the host's 2nd
    assert owners.answer(b"3 C live/b 3 10.0.0.2 1\n", 1, now=0) == b"3 1\n"  # under 3, not 1
    assert owners.answer(b"4 C live/c 2\n", 1, now=0) == b"4 -\n"  # full at that worker's 2
    assert owners.answer(b"5 R live/a\n", 0, now=0) == b"5 0\n"
    assert owners.answer(b"6 C live/d 3 10.0.0.1 1\n", 0, now=0) == b"6 0\n"  # host's one freed
    assert owners.answer(b"7 B live/x 60\n", 1, now=100) == b"7 1\n"
    assert owners.answer(b"8 C live/x 9\n", 0, now=159) == b"8 -1\n"  # banned on the node
    assert owners.answer(b"9 C live/x 9\n", 0, now=161) == b"9 0\n"  # the ban ran out
