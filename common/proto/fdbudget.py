"""How a node's file descriptors are shared out: connections, and the memory files that
hold large shared bodies for sendfile (`common.net.sendfile`)."""

from __future__ import annotations

BODY_FILES_MAX = 256
"""Memory files (one descriptor each) a process keeps open at most."""
BODY_FILES_SHARE = 16
"""At most one descriptor in this many goes to memory files."""


def body_files(fd_limit: int) -> int:
    """Memory files a process with `fd_limit` descriptors may keep open."""
    return max(0, min(BODY_FILES_MAX, fd_limit // BODY_FILES_SHARE))
