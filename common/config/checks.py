"""Checks of single config values: each takes (key, value) and says what is wrong, or None."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from common.config.model import Check
from common.proto import control, cors, hooks, streamkey


def port(name: str, value: int) -> str | None:
    """A TCP port (0: any free port)."""
    return None if 0 <= value <= 65535 else f"{name} {value} is not a TCP port"


def number(value: float) -> str:
    """A bound in words: 2592000 rather than 2.592e+06."""
    return str(int(value)) if value == int(value) else f"{value:g}"


def in_range(low: float, high: float, unit: str = "") -> Check:
    """A finite number in low..high."""
    suffix = f" {unit}" if unit else ""

    def check(name: str, value: float) -> str | None:
        ok = math.isfinite(value) and low <= value <= high
        return (
            None
            if ok
            else f"{name} must be a finite number in {number(low)}..{number(high)}{suffix}"
        )

    return check


def above(low: float, high: float, unit: str = "") -> Check:
    """A finite number greater than low and at most high (NaN fails too)."""
    suffix = f" {unit}" if unit else ""

    def check(name: str, value: float) -> str | None:
        ok = low < value <= high
        return (
            None if ok else f"{name} must be a number > {number(low)} and <= {number(high)}{suffix}"
        )

    return check


def stream_parts(what: str) -> Check:
    """A list of stream-key parts (`what`: "app" or "name") in the stream-key grammar."""

    def check(name: str, value: list[str]) -> str | None:
        for part in value:
            try:
                streamkey.check_part(part, what)
            except streamkey.StreamKeyError as exc:
                return f"{name}: {exc}"
        return None

    return check


def one_of(*choices: str, fold: Callable[[str], str] = str) -> Check:
    """One of `choices` (compared after `fold`, e.g. str.lower)."""
    quoted = [repr(c) for c in choices]
    words = " or ".join(quoted) if len(quoted) == 2 else "one of " + ", ".join(quoted)

    def check(name: str, value: str) -> str | None:
        return None if fold(value) in choices else f"{name} must be {words}, not {value!r}"

    return check


def urls(*schemes: str) -> Check:
    """A list of URLs with one of `schemes` (e.g. "rtmp", "http")."""
    prefixes = tuple(f"{s}://" for s in schemes)
    words = " or ".join(filter(None, (", ".join(prefixes[:-1]), prefixes[-1])))

    def check(name: str, value: list[str]) -> str | None:
        bad = next((u for u in value if not u.startswith(prefixes)), None)
        return None if bad is None else f"{name}: {bad!r} must be an {words} URL"

    return check


def origins(name: str, value: list[str]) -> str | None:
    """Page origins allowed to read responses (CORS): "*", "null" or scheme://host[:port]."""
    if not value:
        return f'{name} must list at least one origin ("*" for any page)'
    problems = [p for p in map(cors.check_origin, value) if p is not None]
    return f"{name}: {problems[0]}" if problems else None


def accepted_by(parse: Callable[[str], object]) -> Check:
    """A string `parse` (a control-plane check) accepts, or empty."""

    def check(name: str, value: str) -> str | None:
        try:
            if value:
                parse(value)
        except (ValueError, control.ControlError) as exc:
            return f"{name}: {exc}"
        return None

    return check


hook_url = accepted_by(hooks.check_hook_url)
"""An http:// or https:// hook URL (empty: none)."""

address = accepted_by(control.parse_address)
"""host:port of a balancer's control port (empty: none)."""

node_id = accepted_by(control.check_node_id)
"""A name the balancer accepts (empty: the node picks one)."""


_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Fa-f:.]{2,45}")


def host_name(name: str, value: str) -> str | None:
    """A host name or IP address (empty: none)."""
    ok = not value or _HOST.fullmatch(value)
    return None if ok else f"{name} {value!r} is not a host name or IP address"


def short_text(name: str, value: str) -> str | None:
    """At most 256 printable characters."""
    ok = len(value) <= 256 and value.isprintable()
    return None if ok else f"{name} must be at most 256 printable characters"
