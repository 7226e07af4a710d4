"""A claim of a stream name that this worker of an origin with workers = N never takes is
not left in the node's ownership table: a claim whose asker was cancelled or whose answer came
after ASK_TIMEOUT is released right after it, and a relay pull stopped while it connects lets
its claim go. Before, such a claim stayed for the worker's whole life and every publish of the
name on the other workers was refused."""

from __future__ import annotations

import socket

import trio
import trio.testing

from common.config.relayspec import Source
from common.net.conn import listen_socket
from common.proto.streamkey import StreamKey
from common.serve.metrics import NodeMetrics
from common.serve.workersowners import (
    ASK_TIMEOUT,
    UNANSWERED,
    OwnerClient,
    Owners,
    serve_owners,
)
from origin.relaypull import Puller


async def test_a_claim_whose_asker_is_cancelled_is_not_left_in_the_table():
    """A claim the supervisor grants while the asking task is cancelled (the publisher's
    connection ends, its deadline passes, the node's ask times out after ASK_TIMEOUT)
    stays in the table for the worker's whole life: the worker never learns it got the
    name, so it never releases it; every other worker's publish of the name is then
    refused (yield_name answers 409: `live is None`)."""
    scope = trio.CancelScope()

    class Granting(Owners):
        def answer(self, line: bytes, worker: int) -> bytes:
            got = super().answer(line, worker)
            scope.cancel()  # the asker goes away while the answer is on its way
            return got

    owners = Granting(100)
    sup, wrk = socket.socketpair()
    client = OwnerClient(wrk.detach(), 0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_owners, owners, 0, sup)
        with scope:
            await client.claim("live", "x")
        # the worker's publish never happened; the name must be free for worker 1
        assert owners.claim("live/x", 1) == 1, f"stale claim: {owners.owner}"
        nursery.cancel_scope.cancel()


async def test_a_claim_answered_after_the_ask_timeout_is_not_left_in_the_table(autojump_clock):
    """The supervisor answers after ASK_TIMEOUT (a busy machine): the worker reads the
    claim as refused ("max_streams" to the publisher) but the table keeps it."""
    owners = Owners(100)
    sup, wrk = socket.socketpair()
    client = OwnerClient(wrk.detach(), 0)

    async def slow_supervisor() -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sup))
        line = await stream.receive_some(1024)
        await trio.sleep(3.0)  # past ASK_TIMEOUT
        await stream.send_all(owners.answer(line, 0))
        buf = b""
        while data := await stream.receive_some(1024):  # then lines in order, at once
            buf += data
            while (nl := buf.find(b"\n")) >= 0:
                line, buf = buf[: nl + 1], buf[nl + 1 :]
                await stream.send_all(owners.answer(line, 0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_supervisor)
        got = await client.claim("live", "y")
        await trio.sleep(5)
        assert got == UNANSWERED  # refused, as far as the worker knows
        assert owners.claim("live/y", 1) == 1, f"stale claim: {owners.owner}"
        nursery.cancel_scope.cancel()


class Host:
    """A PullHost that keeps the node's ownership table as the supervisor would."""

    def __init__(self) -> None:
        self.owners = Owners(100)

    def pull_blocked(self, key: StreamKey) -> bool:
        return False

    async def claim(self, key: StreamKey) -> bool:
        return self.owners.claim(f"{key.app}/{key.name}", 0) == 0

    def let_go(self, key: StreamKey) -> None:
        self.owners.release(f"{key.app}/{key.name}", 0)

    def open_pulled(self, key):  # never reached: the source never answers
        raise AssertionError

    def close_pulled(self, stream, why: str) -> None:
        pass

    def viewers(self, stream) -> int:
        return 0

    grace = 1.0


async def test_a_pull_stopped_while_it_connects_lets_its_claim_go():
    """A pull whose run is cancelled while it connects to a source that does not answer
    yet (here `stop()`) ends with no stream, and the claim it took at the top of `_pull`
    is never let go (`let_go` is only on the normal path after `_connection`)."""
    src = listen_socket("127.0.0.1", 0)  # accepts (kernel backlog), never answers
    port = src.getsockname()[1]
    host = Host()
    key = StreamKey.parse("live", "z")
    source = Source(f"http://127.0.0.1:{port}/live/z", f"http://127.0.0.1:{port}", "live", "z")
    puller = Puller(key, source, "test", host, NodeMetrics("origin"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(puller.run)
        with trio.fail_after(5):
            while "live/z" not in host.owners.owner:
                await trio.sleep(0.01)
        await trio.sleep(0.2)  # connecting
        puller.stop()
    src.close()
    assert host.owners.owner == {}, f"stale claim after the pull stopped: {host.owners.owner}"


async def test_an_on_demand_pull_ending_unwatched_during_a_retry_lets_its_claim_go():
    """The realistic way in: an on-demand pull that played before (ready is set) retries its
    source, which accepts but does not answer (CONNECT_TIMEOUT is 5 s); its viewers are gone,
    so `_watch_viewers` cancels the run after `linger` while it connects: the claim stays and
    the name can no longer be published on any other worker of the node."""
    src = listen_socket("127.0.0.1", 0)
    port = src.getsockname()[1]
    host = Host()
    key = StreamKey.parse("live", "w")
    source = Source(f"http://127.0.0.1:{port}/live/w", f"http://127.0.0.1:{port}", "live", "w")
    puller = Puller(key, source, "test", host, NodeMetrics("origin"), linger=0.3)
    puller.ready.set()  # it had played: its stream closed when the source stayed away
    with trio.fail_after(10):
        await puller.run()  # ends by itself: no viewer for linger
    src.close()
    assert host.owners.owner == {}, f"stale claim after the pull ended: {host.owners.owner}"


async def test_a_lost_answer_does_not_undo_a_name_the_worker_holds():
    """A claim of a name this worker has a stream of (the table says it is this worker's
    already) is not released when its answer is lost: the name stays the worker's."""
    scope = trio.CancelScope()

    class Granting(Owners):
        def answer(self, line: bytes, worker: int) -> bytes:
            got = super().answer(line, worker)
            if b" C " in line:
                scope.cancel()
            return got

    owners = Granting(100)
    owners.claim("live/held", 0)
    sup, wrk = socket.socketpair()
    client = OwnerClient(wrk.detach(), 0, held=lambda key: key == "live/held")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_owners, owners, 0, sup)
        with scope:
            await client.claim("live", "held")
        assert await client.lookup("live", "held") == 0
        nursery.cancel_scope.cancel()


async def test_asks_queued_behind_a_silent_supervisor_give_up_together(autojump_clock):
    """Asks waiting their turn behind one the supervisor does not answer give up within
    ASK_TIMEOUT of their queueing plus one ask's own, not one ASK_TIMEOUT after another
    (virtual time: MockClock)."""
    sup, wrk = socket.socketpair()
    client = OwnerClient(wrk.detach(), 0)
    got: list[object] = []

    async def ask(n: int) -> None:
        got.append(await client.lookup("live", f"q{n}"))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(ask, n)
    assert got == [None] * 5
    assert trio.current_time() - start <= 2 * ASK_TIMEOUT
    sup.close()
