"""Mirroring one HLS playlist and its segments into `hls_dir`, refusing any path that would
resolve outside it (symlinks, `..`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import trio

from common.proto.hlsplaylist import HlsPlaylist, Segment


class UnsafePath(OSError):
    """A file under `hls_dir` that would resolve outside it (a symlink, `..` in a key)."""


class DirWriter:
    """Mirrors one playlist into `hls_dir/app/`: each sync writes the segments of the window
    not yet written, then the playlist (atomically), then removes expired segments. A failed
    sync is retried by the next one, so the directory catches up once it is writable; each
    sync's outcome is told to `failed(exc)` or `ok()`."""

    def __init__(
        self,
        directory: str,
        key: tuple[str, str],
        playlist: HlsPlaylist,
        *,
        failed: Callable[[OSError], None],
        ok: Callable[[], None],
    ) -> None:
        self.directory = directory
        self.key = key
        self.playlist = playlist
        self.failed = failed
        self.ok = ok
        self._send, self._receive = trio.open_memory_channel[None](1)
        self._written: set[str] = set()

    def poke(self) -> None:
        """The playlist changed: sync soon (one pending sync covers any number of pokes)."""
        with contextlib.suppress(
            trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
        ):
            self._send.send_nowait(None)

    def close(self) -> None:
        """A last sync (the playlist ended), then `run` returns."""
        self.poke()
        self._send.close()

    async def run(self) -> None:
        """Sync on every poke until closed."""
        async with self._receive:
            async for _ in self._receive:
                playlist = self.playlist
                if not playlist.segments:
                    continue
                segments = list(playlist.segments)
                text = playlist.playlist()
                try:
                    await trio.to_thread.run_sync(
                        self._sync, segments, text, abandon_on_cancel=True
                    )
                except OSError as exc:
                    self.failed(exc)
                else:
                    self.ok()

    def _sync(self, segments: list[Segment], text: str) -> None:
        app, name = self.key
        root = os.path.realpath(self.directory)
        folder = _inside(root, os.path.join(root, app))
        os.makedirs(folder, exist_ok=True)
        written = self._written
        for seg in segments:
            if seg.uri not in written:
                _write_file(_inside(root, os.path.join(folder, seg.uri)), seg.data)
                written.add(seg.uri)
        tmp = _inside(root, os.path.join(folder, f".{name}.m3u8.tmp"))
        _write_file(tmp, text.encode())
        os.replace(tmp, _inside(root, os.path.join(folder, f"{name}.m3u8")))
        keep = {s.uri for s in segments}
        written &= keep
        prefix = f"{name}-{self.playlist.session}-"
        for entry in os.listdir(folder):
            if (
                entry.startswith(prefix)
                and entry.endswith(".ts")
                and entry[len(prefix) : -3].isdigit()
                and entry not in keep
            ):
                os.unlink(os.path.join(folder, entry))  # a symlink goes, never its target


def _inside(root: str, path: str) -> str:
    """`path` resolved (symlinks followed); UnsafePath if that is not inside `root`."""
    real = os.path.realpath(path)
    if real != root and os.path.commonpath([root, real]) != root:
        raise UnsafePath(f"{path!r} resolves outside hls_dir (to {real!r}); refused")
    return real


def _write_file(path: str, data: bytes) -> None:
    """Write `path` (not following a symlink there)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
