"""A small real HTTP hook server for tests: records each hook request (its JSON body) and
answers as the test's policy says (a status, or None: never answer)."""

from __future__ import annotations

import json
from collections.abc import Callable

import h11
import trio

Policy = Callable[[dict], int | None]


def allow_all(body: dict) -> int | None:
    """200 to everything."""
    return 200


class HookServer:
    """Serves POSTs on 127.0.0.1 (port 0); `calls` holds the bodies received, in order."""

    def __init__(self, policy: Policy = allow_all) -> None:
        self.policy = policy
        self.calls: list[dict] = []
        self.port = 0

    def url(self, path: str = "/hook") -> str:
        """The URL of this server's `path` (any path is served)."""
        return f"http://127.0.0.1:{self.port}{path}"

    def of(self, action: str) -> list[dict]:
        """The requests of one hook ("on_play", ...)."""
        return [c for c in self.calls if c.get("action") == action]

    async def wait_for(self, action: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        """Wait (a hang guard of `timeout`) until `count` requests of `action` came."""
        with trio.fail_after(timeout):
            while len(self.of(action)) < count:
                await trio.sleep(0.01)
        return self.of(action)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        h = h11.Connection(h11.SERVER)
        body = b""
        async with stream:
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    h.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            call = json.loads(body) if body else {}
            self.calls.append(call)
            status = self.policy(call)
            if status is None:
                await trio.sleep_forever()
            head = h11.Response(status_code=status, headers=[("content-length", "0")])
            await stream.send_all(h.send(head) + h.send(h11.EndOfMessage()))


async def start_hooks(nursery: trio.Nursery, policy: Policy = allow_all) -> HookServer:
    """A HookServer running in `nursery`."""
    return await nursery.start(HookServer(policy).run)
