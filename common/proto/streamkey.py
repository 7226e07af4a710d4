"""Stream keys: the one grammar for `app` and `name`, checked where a key enters a node.

A part is 1-128 characters of ASCII letters, digits and `_ . ~ -`, starting with a letter,
digit or `_` (so never `.` or `..`, never a hidden file, never a path separator, a query or
a fragment). Anything else is refused with the reason, so every stream has exactly one
spelling: an edge can never pull one stream twice under two names, and a key is always
safe in a URL, a file name under `hls_dir`, a log line or a response header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_PART = 128
_PART = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.~-]{{0,{MAX_PART - 1}}}")


class StreamKeyError(ValueError):
    """A stream key that does not fit the grammar; the message says why."""


def check_part(value: object, what: str = "name") -> str:
    """`value` if it is a valid app or name part, else StreamKeyError with the reason."""
    if not isinstance(value, str) or not value:
        raise StreamKeyError(f"empty {what}")
    if len(value) > MAX_PART:
        raise StreamKeyError(f"{what} longer than {MAX_PART} characters")
    if _PART.fullmatch(value) is None:
        raise StreamKeyError(
            f"{what} {shown(value)} has characters outside [A-Za-z0-9_.~-] "
            "or does not start with a letter, digit or '_'"
        )
    return value


def shown(value: str, limit: int = 40) -> str:
    """A bounded, printable rendering of an untrusted string for log lines and errors."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return ascii(text)


@dataclass(frozen=True, slots=True)
class StreamKey:
    """A validated (app, name)."""

    app: str
    name: str

    @classmethod
    def parse(cls, app: object, name: object) -> StreamKey:
        """Validate both parts; StreamKeyError with the reason otherwise."""
        return cls(check_part(app, "app"), check_part(name, "name"))

    @classmethod
    def from_text(cls, text: str) -> StreamKey:
        """'app/name' -> StreamKey (the one parser of that text); StreamKeyError with the
        reason otherwise."""
        app, sep, name = text.partition("/")
        if not sep:
            raise StreamKeyError(f"{shown(text)} is not app/name")
        return cls.parse(app, name)

    def __str__(self) -> str:
        return f"{self.app}/{self.name}"
