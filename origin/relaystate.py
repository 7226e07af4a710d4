"""What the origin's relays (pushes to other servers, pulls of external sources) share: their
state as the API shows it, and one log line per state change, within a budget."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

import trio

from common.net.logbudget import LogBudget
from common.proto.backoff import Backoff

log = logging.getLogger("livecdn.relay")

RETRY_FIRST = 1.0
RETRY_MOST = 30.0
STABLE = 10.0
"""Backoff of a relay's reconnects: 1 s doubling to 30 s, back to 1 s after 10 s of media."""
CONNECT_TIMEOUT = 10.0
"""Connect, handshake and publish/play must be done within this."""
STALL_TIMEOUT = 10.0
"""A push target that takes nothing (a pull source that sends nothing) this long has failed."""
SETTLE = 1.0
"""A relay counts as active in the logs once it has stayed up this long (STABLE after a
failure was logged: a target that takes a few seconds and stalls logs no more lines)."""

budget = LogBudget(log, "relay state changes", burst=20, window=10.0)


class RelayState(StrEnum):
    """Where one relay is."""

    CONNECTING = "connecting"
    ACTIVE = "active"  # pushing to its target, or pulling media from its source
    RETRYING = "retrying"  # failed; waits its backoff
    WAITING = "waiting"  # a pull while a local publisher has its stream
    ENDED = "ended"


def shown_url(url: str, admin: bool) -> str:
    """`url` as an API reader may see it: in full for admins, else scheme://host:port/app
    (stream names and queries can be keys for the target)."""
    if admin:
        return url
    parts = urlsplit(url)
    app = parts.path.strip("/").split("/")[0]
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/{app}" + ("/..." if "/" in parts.path.strip("/") else "")


@dataclass
class RelayStatus:
    """One relay's state and counters (the JSON API's view of it)."""

    what: str  # e.g. "push of live/cam to rtmp://host/app" (for its log lines)
    state: RelayState = RelayState.CONNECTING
    since: float = field(default_factory=time.time)  # wall clock of the last state change
    bytes: int = 0
    reconnects: int = 0
    last_error: str = ""
    error_kind: str = ""  # what non-admins see of last_error (its text may echo a key)
    dropped_frames: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(RETRY_FIRST, RETRY_MOST, STABLE))
    _logged: RelayState | None = None
    _active_at: float = 0.0  # trio clock

    def set(self, state: RelayState, error: str = "", note: str = "", kind: str = "") -> None:
        """Change state, logged once per change: not CONNECTING, and ACTIVE only once it has
        lasted SETTLE seconds (`settle`), so a relay that fails again and again, or whose
        target accepts and drops it at once, logs nothing more (its last_error says why);
        `note` goes only into the log line, `kind` names the error for non-admins."""
        if error:
            self.last_error = error
            self.error_kind = kind or state.value
        if state is not self.state:
            self.since = time.time()
        self.state = state
        if state is RelayState.ACTIVE:
            self._active_at = trio.current_time()
            return
        if state is not RelayState.CONNECTING:
            self._log(state, error, note)

    def settle(self) -> None:
        """Log ACTIVE once the relay has been active for SETTLE seconds (STABLE after a
        logged failure)."""
        needed = STABLE if self._logged is RelayState.RETRYING else SETTLE
        if (
            self.state is RelayState.ACTIVE
            and self._logged is not RelayState.ACTIVE
            and trio.current_time() - self._active_at >= needed
        ):
            self._log(RelayState.ACTIVE, "", "")

    def _log(self, state: RelayState, error: str, note: str) -> None:
        if state is self._logged:
            return
        self._logged = state
        detail = f": {error}" if error else ""
        budget.info(trio.current_time(), "%s: %s%s%s", self.what, state.value, detail, note)

    def as_json(self, admin: bool) -> dict:
        """The API's fields (besides the relay's own): the last error's text for admin
        requests, its kind for others."""
        return {
            "state": self.state.value,
            "since": round(self.since, 3),
            "bytes": self.bytes,
            "reconnects": self.reconnects,
            "dropped_frames": self.dropped_frames,
            "last_error": (self.last_error if admin else self.error_kind) or None,
        }
