"""Numbers from untrusted text (URL queries, tokens): plain ASCII digits, in range, or None.

`int()` alone accepts signs, spaces, underscores and non-ASCII digits ("١٢"), and `float()`
accepts "nan" and "inf"; neither is what a URL parameter should mean.
"""

from __future__ import annotations


def parse_uint(text: str | None, maximum: int) -> int | None:
    """`text` as an int in [0, maximum] if it is 1-19 plain ASCII digits, else None."""
    if not text or len(text) > 19 or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= maximum else None
