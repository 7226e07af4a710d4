"""Stream ownership across the workers of an origin with `workers = N`: the supervisor keeps
one bounded table stream -> worker, and each worker asks it over a socket pair of its own
(passed down like its private listener). A worker claims a name before it opens a stream
(a publish, a relay pull); a second worker's claim of the same name is refused with the
owner's index, so a name is published once per node and the other workers' viewers are fed
from the owner. A worker's claims go when it dies (its process exits).

Wire format (one line each way, ASCII): `ID C app/name [LIMIT [HOST PER_HOST]]` (claim; with
the claimer's current max_streams, and its publisher's host with max_publishers_per_ip),
`ID R app/name` (release), `ID L app/name` (lookup), `ID B app/name SECONDS` (ban: claims of
the name are refused for that long, whichever worker asks, one restarted since included) ->
`ID K` (the owner's index; for a claim, the claimer's own index when granted), `ID -1` (a claim
of a banned name), `ID -2` (a claim past the host's PER_HOST names) or `ID -` (no owner; for a
claim: the table is full). ID is the worker's request number, so an answer that came too late
for its request is never taken for the next one's."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import trio

log = logging.getLogger("livecdn.workers")

MAX_LINE = 1024
"""Longest request line (a stream key is far shorter)."""
ASK_TIMEOUT = 2.0
"""Seconds a worker waits for the supervisor's answer (it answers at once, from memory)."""


BANNED = -1
"""A claim's answer: the name is banned (a kick's ban on some worker of the node)."""
HOST_LIMIT = -2
"""A claim's answer: the publisher's host has its max_publishers_per_ip names on the node."""
UNANSWERED = -3
"""A claim's outcome when the supervisor gave no answer."""
MAX_BANS = 10_000
"""Bans the table keeps at most (expired ones are dropped first)."""


class Owners:
    """The node's table stream key -> owning worker (pure), at most `limit` keys (or the
    claim's own limit: a worker's reloaded max_streams), with each key's publisher host and
    the node's bans (wall-clock ends)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.owner: dict[str, int] = {}
        self.host: dict[str, str] = {}
        self.bans: dict[str, float] = {}

    def claim(
        self,
        key: str,
        worker: int,
        limit: int | None = None,
        host: str = "",
        per_host: int = 0,
        now: float = 0.0,
    ) -> int | None:
        """Give `key` to `worker` unless another worker owns it: the owner after the claim
        (`worker` when granted), None when the table has `limit` keys (else its own),
        BANNED, or HOST_LIMIT when `host` has `per_host` keys already (0: no such limit)."""
        if self.bans.get(key, 0.0) > now:
            return BANNED
        owner = self.owner.get(key)
        if owner is not None:
            return owner
        if len(self.owner) >= (self.limit if limit is None else limit):
            return None
        if host and per_host > 0 and sum(1 for h in self.host.values() if h == host) >= per_host:
            return HOST_LIMIT
        self.owner[key] = worker
        if host:
            self.host[key] = host
        return worker

    def release(self, key: str, worker: int) -> None:
        """`worker` no longer holds `key` (a release by another worker is ignored)."""
        if self.owner.get(key) == worker:
            del self.owner[key]
            self.host.pop(key, None)

    def lookup(self, key: str) -> int | None:
        return self.owner.get(key)

    def ban(self, key: str, seconds: float, now: float) -> bool:
        """Refuse claims of `key` for `seconds` (False: MAX_BANS in force already)."""
        if key not in self.bans and len(self.bans) >= MAX_BANS:
            for k in [k for k, until in self.bans.items() if until <= now]:
                del self.bans[k]
            if len(self.bans) >= MAX_BANS:
                return False
        self.bans[key] = max(self.bans.get(key, 0.0), now + seconds)
        return True

    def drop(self, worker: int) -> int:
        """Forget every claim of `worker` (it died); how many there were."""
        gone = [k for k, w in self.owner.items() if w == worker]
        for k in gone:
            del self.owner[k]
            self.host.pop(k, None)
        return len(gone)

    def answer(self, line: bytes, worker: int, now: float | None = None) -> bytes:
        """The reply to one request line from `worker` (`now`: the wall clock)."""
        now = time.time() if now is None else now
        ident, _, rest = line.strip().partition(b" ")
        op, _, args_bytes = rest.partition(b" ")
        key, *args = args_bytes.decode("ascii", errors="replace").split(" ") or [""]
        got: int | None
        try:
            if op == b"C" and key:
                limit = int(args[0]) if args else None
                host, per_host = (args[1], int(args[2])) if len(args) >= 3 else ("", 0)
                got = self.claim(key, worker, limit, host, per_host, now)
            elif op == b"R" and key:
                self.release(key, worker)
                got = worker
            elif op == b"L" and key:
                got = self.lookup(key)
            elif op == b"B" and key and args:
                got = worker if self.ban(key, min(float(args[0]), 1e7), now) else None
            else:
                got = None
        except ValueError:
            got = None
        return ident[:20] + (b" -\n" if got is None else b" %d\n" % got)


async def serve_owners(owners: Owners, worker: int, sock: socket.socket) -> None:
    """Answer worker `worker`'s requests on `sock` (the supervisor's end) until it closes;
    a line longer than MAX_LINE ends the conversation (the worker's asks then fail)."""
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    buf = b""
    async with stream:
        while True:
            try:
                data = await stream.receive_some(4096)
            except trio.BrokenResourceError:
                return
            if not data:
                return
            buf += data
            replies = []
            while (nl := buf.find(b"\n")) >= 0:
                line, buf = buf[:nl], buf[nl + 1 :]
                replies.append(owners.answer(line, worker))
            if len(buf) > MAX_LINE:
                log.warning("worker %d sent an overlong ownership request: ignoring it", worker)
                return
            if replies:
                try:
                    await stream.send_all(b"".join(replies))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return


class OwnerClient:
    """A worker's side of the table (one request at a time over its socket)."""

    def __init__(self, fd: int, index: int, held: Callable[[str], bool] | None = None) -> None:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        self.index = index
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self.lock = trio.Lock()
        self.buf = b""
        self.asked = 0
        self.held = held or (lambda key: False)
        """Whether this worker has a stream of "app/name" (so a claim of it whose answer was
        lost must not be undone: the name was this worker's before)."""

    def _line(self, op: str, key: str) -> tuple[bytes, bytes]:
        self.asked += 1
        ident = b"%d" % self.asked
        return ident, ident + f" {op} {key}\n".encode("ascii", errors="replace")

    async def _answer_to(self, ident: bytes) -> bytes:
        """The answer to request `ident` (earlier requests' late answers skipped)."""
        while True:
            while (nl := self.buf.find(b"\n")) < 0:
                data = await self.stream.receive_some(4096)
                if not data:
                    raise trio.BrokenResourceError("the supervisor closed")
                self.buf += data
            reply, self.buf = self.buf[:nl], self.buf[nl + 1 :]
            got_ident, _, answer = reply.partition(b" ")
            if got_ident == ident:  # else the late answer to an earlier ask
                return answer

    async def _ask(self, op: str, key: str) -> int | None | bool:
        """The supervisor's answer to `op` on `key` ("app/name", then the op's arguments):
        an index or None, or False if it gave none. A claim
        whose answer is lost once its line went out (it timed out, or the asker was
        cancelled) is released right after it, unless `held`: the supervisor may have
        granted it, and a name nobody takes must not stay this worker's."""
        ident, line = self._line(op, key)
        if len(line) > MAX_LINE:
            return False
        try:  # the asks before it wait their turn within ASK_TIMEOUT too, not one after another
            with trio.fail_after(ASK_TIMEOUT):
                await self.lock.acquire()
        except trio.TooSlowError:
            log.warning("stream ownership: no answer from the supervisor (asks queued)")
            return False
        try:
            sent = False
            try:
                with trio.fail_after(ASK_TIMEOUT):
                    await self.stream.send_all(line)
                    sent = True
                    answer = await self._answer_to(ident)
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError,
                    OSError) as exc:  # fmt: skip
                log.warning("stream ownership: no answer from the supervisor (%s)", exc)
                if sent and op == "C":
                    await self._undo(key.partition(" ")[0], wait=False)
                return False
            except trio.Cancelled:
                if sent and op == "C":
                    with trio.CancelScope(shield=True):
                        await self._undo(key.partition(" ")[0], wait=True)
                raise
        finally:
            self.lock.release()
        return None if answer == b"-" else int(answer)

    async def _undo(self, key: str, *, wait: bool) -> None:
        """Release `key`, claimed by a request whose answer was lost (the lock held); `wait`:
        for the supervisor's answer too (bounded)."""
        if self.held(key):
            return
        ident, line = self._line("R", key)
        with trio.move_on_after(ASK_TIMEOUT):
            try:
                await self.stream.send_all(line)
                if wait:
                    await self._answer_to(ident)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return  # the supervisor is gone: it drops this worker's claims with it
        log.info("stream ownership: released %s, claimed by a request whose answer was lost", key)

    async def claim(
        self, app: str, name: str, limit: int | None = None, host: str = "", per_host: int = 0
    ) -> int | None:
        """Claim app/name for this worker (`limit`: its max_streams; `host`: its publisher's,
        with max_publishers_per_ip `per_host`): the owner (this worker's index when granted),
        None when the node's table is full, BANNED, HOST_LIMIT, or UNANSWERED."""
        args = f"{app}/{name}"
        if limit is not None:
            args += f" {limit}"
            if host and per_host > 0:
                args += f" {host} {per_host}"
        got = await self._ask("C", args)
        return UNANSWERED if got is False else got  # type: ignore[return-value]

    async def ban(self, app: str, name: str, seconds: int) -> bool:
        """Ban app/name on the node (claims refused) for `seconds`: whether the table took it."""
        got = await self._ask("B", f"{app}/{name} {seconds}")
        return got is not False and got is not None

    async def release(self, app: str, name: str) -> None:
        await self._ask("R", f"{app}/{name}")

    async def lookup(self, app: str, name: str) -> int | None:
        """The worker that owns app/name, or None."""
        got = await self._ask("L", f"{app}/{name}")
        return None if got is False else got  # type: ignore[return-value]
