"""Bodies sent by the kernel: a large shared body (an HLS segment) is copied once into a
memory file (`memfd_create`), then every viewer gets it with `sendfile`, which hands the
file's pages to the socket without copying them through user space, as nginx does.

The number of memory files open at once is bounded (`common.proto.fdbudget.body_files`, a
share of the descriptor limit that the connection budget leaves free): at the bound the body
used least recently gives its file up, unless it was used within `KEEP_IN_USE` seconds (then
the new body is written from memory: more bodies in use than files never makes a file per
request). Where memfd/sendfile are missing, bodies are written from memory as before.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import time
import weakref
from collections import OrderedDict
from typing import Protocol

import trio

from common.net.conn import Conn, ConnClosed
from common.proto.fdbudget import body_files

MIN_FILE_BYTES = 64 * 1024
"""Smaller bodies (playlists) are written from memory: one sendmsg is cheaper."""
KEEP_IN_USE = 2.0
"""A memory file used within this many seconds is not given up for a new body."""


def _fd_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


MAX_MEMFILES = body_files(_fd_limit())
"""Memory files open at once (each holds a descriptor and its body's pages)."""
CHUNK = 1 << 20
"""At most this much per sendfile call."""
PAGE = 4096
"""A body in a memory file starts at a multiple of this."""

_SUPPORTED = hasattr(os, "memfd_create") and hasattr(os, "sendfile")


class MemFile:
    """A body in an anonymous memory file, after `prefix` (a response head: one sendfile
    then sends head and body together); the descriptor closes with the object. Offsets
    are the file's: the head runs from `head_at` to `start`, the body from `start` (a page
    boundary: the kernel hands whole pages on, as for a file without a head) to `size`."""

    __slots__ = ("fd", "size", "prefix", "head_at", "start")
    open_files = 0
    """MemFiles open now, all together."""

    def __init__(self, data: bytes, prefix: bytes = b"") -> None:
        start = -(-len(prefix) // PAGE) * PAGE
        fd = os.memfd_create("livecdn-body", os.MFD_CLOEXEC)
        try:
            if start > len(prefix):
                os.lseek(fd, start - len(prefix), os.SEEK_SET)  # a hole before the head
            for part in (prefix, data):
                view = memoryview(part)
                written = 0
                while written < len(view):
                    written += os.write(fd, view[written:])
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.prefix = prefix
        self.head_at = start - len(prefix)
        self.start = start
        self.size = start + len(data)
        MemFile.open_files += 1

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            MemFile.open_files -= 1

    def __del__(self) -> None:
        self.close()


class FileOwner(Protocol):
    """What holds a MemFile (a shared response) and can let it go."""

    def drop_file(self) -> None:
        """Forget the MemFile (it closes once no send uses it)."""
        ...


_owners: OrderedDict[weakref.ref[FileOwner], float] = OrderedDict()
"""Holders of MemFiles and when each was last used, least recently used first (dead ones
leave by themselves)."""


def used(owner: FileOwner) -> None:
    """`owner`'s MemFile serves a send now (it is kept over less recently used ones)."""
    ref = weakref.ref(owner)  # equal to the registered ref while `owner` lives
    if ref in _owners:
        _owners[ref] = time.monotonic()
        _owners.move_to_end(ref)


def memfile_for(owner: FileOwner, body: bytes, prefix: bytes = b"") -> MemFile | None:
    """`body` (after `prefix`) in a new MemFile for `owner`, or None: small, unsupported, it
    failed, or every file is in use. At MAX_MEMFILES the least recently used holder gives its file up if it
    was not used within KEEP_IN_USE seconds (sends under way keep theirs open)."""
    if not _SUPPORTED or len(body) < MIN_FILE_BYTES:
        return None
    now = time.monotonic()
    while MemFile.open_files >= MAX_MEMFILES and _owners:
        ref, last = next(iter(_owners.items()))
        if now - last < KEEP_IN_USE:
            return None
        del _owners[ref]
        held = ref()
        if held is not None:
            held.drop_file()
    if MemFile.open_files >= MAX_MEMFILES:
        return None  # all in use by sends under way
    try:
        made = MemFile(body, prefix)
    except OSError:
        return None
    ref = weakref.ref(owner, lambda r: _owners.pop(r, None))
    _owners[ref] = now
    return made


def send_file_now(conn: Conn, head: bytes, body: MemFile) -> int:
    """Send `head` and then as much of `body` as the kernel takes now, on a plain TCP
    `conn` (one sendfile when `head` is the file's prefix); the file offset it got to
    (body.size: all of it), or -1 if the head did not all go out (it waits in conn's
    backlog): then `send_rest` sends the rest."""
    if conn.backlog_bytes or conn.closed:
        conn.write(head)  # after the backlog
        return -1
    sock = conn.sock
    if head is body.prefix or (head == body.prefix and head):
        offset = body.head_at  # the head is in the file, just before the body
    else:
        try:
            sent = sock.send(head, socket.MSG_MORE)  # goes out with the body's first bytes
        except BlockingIOError:
            conn.write(head)
            return -1
        except OSError:
            conn.close()
            return -1
        conn.bytes_out += sent
        if sent < len(head):
            conn.write(head[sent:])
            return -1
        offset = body.start
    try:
        sent = os.sendfile(sock.fileno(), body.fd, offset, min(body.size - offset, CHUNK))
    except OSError:  # BlockingIOError, or a break `send_rest` meets again
        return offset
    conn.bytes_out += sent
    return offset + sent


def send_some(conn: Conn, body: MemFile, offset: int) -> int:
    """Send `body`'s file from `offset` (>= 0) with sendfile while the kernel takes whole chunks;
    the new offset (body.size: all sent; less: the socket is full and will say when it
    has room again). ConnClosed if the connection breaks."""
    fd = conn.sock.fileno()
    size = body.size
    while offset < size:
        want = min(size - offset, CHUNK)
        try:
            sent = os.sendfile(fd, body.fd, offset, want)
        except BlockingIOError:
            return offset
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            conn.close()
            raise ConnClosed from exc
        if sent == 0:  # the file is shorter than it was (never for a MemFile) or fd closed
            conn.close()
            raise ConnClosed
        offset += sent
        conn.bytes_out += sent
        if sent < want:
            return offset
    return offset


async def send_rest(conn: Conn, body: MemFile, offset: int) -> None:
    """Finish what `send_file_now` began (offset -1: the head waits in conn's backlog);
    ConnClosed if the connection breaks. The caller bounds the wait."""
    if offset < 0:
        await conn.drain()
        offset = body.start
    sock = conn.sock
    while True:
        offset = send_some(conn, body, offset)
        if offset >= body.size:
            return
        try:
            await trio.lowlevel.wait_writable(sock)
        except trio.ClosedResourceError as exc:
            raise ConnClosed from exc
        if conn.closed:
            raise ConnClosed


async def send_file(conn: Conn, head: bytes, body: MemFile) -> None:
    """Send `head`, then `body` with sendfile, on a plain TCP `conn` (its backlog goes
    first); ConnClosed if the connection breaks. The caller bounds the wait."""
    offset = send_file_now(conn, head, body)
    if offset < body.size:
        await send_rest(conn, body, offset)
