"""HTTP caching rules (RFC 9111) for a shared cache: Cache-Control directives and how long a
response may be kept."""

from __future__ import annotations


def parse_cache_control(value: str) -> list[tuple[str, str | None]]:
    """Cache-Control directives in order, as (lower-case name, value or None); quotes around
    values are removed and empty items skipped."""
    directives: list[tuple[str, str | None]] = []
    for item in value.split(","):
        name, sep, arg = item.partition("=")
        name = name.strip().lower()
        if name:
            directives.append((name, arg.strip().strip('"').strip() if sep else None))
    return directives


def freshness_lifetime(cache_control: str | None, default_ttl: float) -> float:
    """Seconds a 200 response may be kept, from its Cache-Control (<= 0: do not keep).

    `no-store`, `no-cache` and `private` -> 0; else `s-maxage` (we are a shared cache), then
    `max-age` (the first well-formed one of each; malformed values are ignored); no usable
    directive -> `default_ttl`.
    """
    if cache_control is None:
        return default_ttl
    ages: dict[str, int] = {}
    for name, value in parse_cache_control(cache_control):
        if name in ("no-store", "no-cache", "private"):
            return 0.0
        if name in ("s-maxage", "max-age") and value and value.isascii() and value.isdigit():
            ages.setdefault(name, int(value))
    for name in ("s-maxage", "max-age"):
        if name in ages:
            return float(ages[name])
    return default_ttl


def age_of(value: str | None) -> float:
    """Seconds an `Age` header says a response has spent in caches already (0 without a
    well-formed one)."""
    if value is None:
        return 0.0
    value = value.strip()
    return float(value) if value and value.isascii() and value.isdigit() else 0.0


MAX_STALE_WHILE_REVALIDATE = 60.0  # seconds; a parent cannot make us serve stale for longer


def stale_while_revalidate(cache_control: str | None, lifetime: float | None = None) -> float:
    """Seconds past its freshness a response may still be served while one refresh runs
    (RFC 5861 `stale-while-revalidate`; 0 without a well-formed one, or with `no-store`,
    `no-cache` or `private`).

    Capped at `MAX_STALE_WHILE_REVALIDATE` and at the response's freshness `lifetime` when
    given, so a parent that is down (or sends a huge value) gets us to fail over or answer
    502 soon, instead of serving a stale live playlist for ever."""
    if not cache_control:
        return 0.0
    directives = parse_cache_control(cache_control)
    if any(name in ("no-store", "no-cache", "private") for name, _ in directives):
        return 0.0
    for name, value in directives:
        if name == "stale-while-revalidate" and value and value.isascii() and value.isdigit():
            cap = MAX_STALE_WHILE_REVALIDATE
            if lifetime is not None:
                cap = min(cap, max(lifetime, 0.0))
            return min(float(value), cap)
    return 0.0
