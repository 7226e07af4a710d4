"""Recording files on disk (blocking: run in a thread): writing one file, listing, removing
and reading them, indexing an FLV file's keyframes and remuxing one to MP4. Every path is
inside `record_dir`: a path that resolves outside it (a symlink, `..`) is refused, and no
file is opened through a symlink."""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import zlib

from common.proto import flv
from common.proto.streamkey import StreamKeyError, check_part
from origin.recordfiles import (
    FileIndex,
    RecordedFile,
    file_name,
    parse_file,
    parse_part,
    part_name,
    stamp,
)

MAX_FILES = 100_000
"""Most recording files looked at in one listing (the oldest names first)."""
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_TAG = struct.Struct(">II")
MAX_HEADER_BYTES = 64 * 1024
"""Bytes of a sequence header that its file's `FileIndex.headers` checksum covers."""


class UnsafePath(OSError):
    """A path under record_dir that would resolve outside it."""


def inside(root: str, *parts: str) -> str:
    """root/parts resolved (symlinks followed); UnsafePath if that leaves `root`."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, *parts))
    if real != real_root and os.path.commonpath([real_root, real]) != real_root:
        raise UnsafePath(f"{os.path.join(*parts)!r} resolves outside record_dir; refused")
    return real


def stream_dir(root: str, app: str, name: str, *, create: bool = False) -> str:
    """record_dir/app/name (made if `create`)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"record_dir {root!r} is not a directory")
    folder = inside(root, app, name)
    if create:
        os.makedirs(folder, exist_ok=True)
        folder = inside(root, app, name)
    return folder


MAX_COLLISIONS = 1000
"""Start times tried (a millisecond apart) when a file of that start exists already."""


class FileWriter:
    """One recording file being written: record_dir/app/name/START.flv.part, renamed to
    START_DURATION.flv when finished. A start taken by another file (finished or being
    written) moves on by a millisecond: no file is ever overwritten."""

    def __init__(self, root: str, app: str, name: str, start_ms: int) -> None:
        self.root = root
        self.app = app
        self.name = name
        self.folder = stream_dir(root, app, name, create=True)
        taken = {e.split("_")[0].split(".")[0] for e in os.listdir(self.folder)}
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
        for start in range(start_ms, start_ms + MAX_COLLISIONS):
            if stamp(start) in taken:
                continue
            try:
                self.fd = os.open(inside(root, app, name, part_name(start)), flags, 0o644)
            except FileExistsError:
                continue
            break
        else:
            raise FileExistsError(f"{MAX_COLLISIONS} files start at {stamp(start_ms)} already")
        self.start_ms = start
        self.path = os.path.join(self.folder, part_name(start))
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append `data`; OSError if the file was removed (its directory deleted) too."""
        if os.fstat(self.fd).st_nlink == 0:
            raise FileNotFoundError(f"{self.path} was removed while recording")
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.size += n

    def finish(self, duration_ms: int) -> str:
        """Close and give the file its final name (returned)."""
        self.close()
        final = inside(self.root, self.app, self.name, file_name(self.start_ms, duration_ms, "flv"))
        os.rename(inside(self.root, self.app, self.name, part_name(self.start_ms)), final)
        return final

    def close(self) -> None:
        """Close the file (left as .part)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def abort(self) -> None:
        """Close, and remove what was written if it is still there."""
        self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def list_files(root: str, app: str = "", name: str = "") -> list[RecordedFile]:
    """The finished recording files (all, or app/name's), by start time; at most MAX_FILES."""
    if not root or not os.path.isdir(root):
        return []
    out: list[RecordedFile] = []
    apps = [app] if app else _entries(root)
    for a in apps:
        names = [name] if name else _entries(root, a)
        for n in names:
            try:
                folder = inside(root, a, n)
                entries = sorted(os.listdir(folder))
            except OSError:
                continue
            for entry in entries:
                rec = parse_file(a, n, entry)
                if rec is None:
                    continue
                try:
                    st = os.lstat(os.path.join(folder, entry))
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue  # a symlink or a directory is not a recording
                out.append(
                    RecordedFile(a, n, rec.start_ms, rec.duration_ms, rec.format, st.st_size)
                )
                if len(out) >= MAX_FILES:
                    return sorted(out, key=lambda f: f.start_ms)
    return sorted(out, key=lambda f: f.start_ms)


def _entries(root: str, *parts: str) -> list[str]:
    """Subdirectories of root/parts that are valid stream key parts (others are not ours)."""
    try:
        folder = inside(root, *parts)
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    out = []
    for entry in names:
        try:
            check_part(entry)
        except StreamKeyError:
            continue
        path = os.path.join(folder, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            out.append(entry)
    return out


MAX_RECOVERED = 1000
"""Most left-over files finished by one `recover_parts`."""


def recover_parts(root: str) -> list[str]:
    """Finish the files left being written (.part) by a node that stopped while recording:
    each is cut after its last whole tag and given its final name (its duration from its
    tags), or removed if it holds no media. What was done, for the log."""
    done: list[str] = []
    if not root or not os.path.isdir(root):
        return done
    for app in _entries(root):
        for name in _entries(root, app):
            try:
                entries = sorted(os.listdir(inside(root, app, name)))
            except OSError:
                continue
            for entry in entries:
                start = parse_part(entry)
                if start is None:
                    continue
                if len(done) >= MAX_RECOVERED:
                    return done
                try:
                    done.append(_recover(root, app, name, entry, start))
                except OSError as exc:
                    done.append(f"{app}/{name}/{entry}: left alone ({exc})")
    return done


def _recover(root: str, app: str, name: str, entry: str, start: int) -> str:
    path = inside(root, app, name, entry)
    fd = os.open(path, os.O_RDWR | _NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return f"{path}: not a file, left alone"
        try:
            with os.fdopen(fd, "rb", buffering=256 * 1024, closefd=False) as f:
                index = _index(f, os.fstat(fd).st_size)
        except flv.FlvError as exc:
            os.unlink(path)
            return f"{path}: removed ({exc})"
        os.ftruncate(fd, index.size)
    finally:
        os.close(fd)
    duration = max(1, index.last_ts - index.first_ts)
    final = inside(root, app, name, file_name(start, duration, "flv"))
    os.rename(path, final)
    return f"{final}: finished ({duration} ms)"


def stat_file(root: str, rec: RecordedFile) -> RecordedFile | None:
    """`rec` with its size, None if it is not (or not a regular file) in record_dir."""
    try:
        st = os.lstat(inside(root, rec.app, rec.name, rec.file))
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return RecordedFile(rec.app, rec.name, rec.start_ms, rec.duration_ms, rec.format, st.st_size)


def remove(root: str, rec: RecordedFile) -> int:
    """Remove a recording file (a symlink there goes, never its target): its size."""
    os.unlink(os.path.join(inside(root, rec.app, rec.name), rec.file))
    return rec.size


def open_file(root: str, rec: RecordedFile) -> int:
    """A read-only descriptor of a recording file (never through a symlink)."""
    return os.open(inside(root, rec.app, rec.name, rec.file), os.O_RDONLY | _NOFOLLOW)


def read_range(root: str, rec: RecordedFile, ranges: list[tuple[int, int]]) -> bytes:
    """The bytes of `ranges` (offset, stop) of a recording file, joined."""
    fd = open_file(root, rec)
    try:
        return b"".join(os.pread(fd, stop - off, off) for off, stop in ranges)
    finally:
        os.close(fd)


def index_flv(root: str, rec: RecordedFile) -> FileIndex:
    """Walk a recorded FLV file's tag headers (bodies skipped): where its head ends, its
    keyframes, its first and last media timestamps. FlvError if it is not FLV."""
    fd = open_file(root, rec)
    try:
        with os.fdopen(fd, "rb", buffering=256 * 1024, closefd=False) as f:
            return _index(f, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _index(f, size: int) -> FileIndex:  # noqa: ANN001 - a binary file
    head = f.read(13)
    if len(head) < 13 or head[:3] != b"FLV":
        raise flv.FlvError("not an FLV file")
    pos = int.from_bytes(head[5:9], "big") + 4
    keyframes: list[tuple[int, int]] = []
    head_end: int | None = None
    first: int | None = None
    last = 0
    has_video = bool(head[4] & 0x01)
    headers = 0
    while pos + 11 <= size:
        f.seek(pos)
        hdr = f.read(27)
        if len(hdr) < 11:
            break
        w0, w1 = _TAG.unpack_from(hdr)
        tag_type, body_size = w0 >> 24, w0 & 0xFFFFFF
        ts = (w1 >> 8) | (w1 & 0xFF) << 24
        stop = pos + 11 + body_size + 4
        if tag_type not in (flv.TAG_AUDIO, flv.TAG_VIDEO, flv.TAG_SCRIPT):
            raise flv.FlvError(f"unknown FLV tag type {tag_type} at {pos}")
        if stop > size:
            break  # a file cut short: its last tag is left out
        prefix = hdr[11 : 11 + body_size]
        media = tag_type != flv.TAG_SCRIPT and not _is_header(tag_type, prefix)
        if tag_type != flv.TAG_SCRIPT and not media and head_end is None:
            f.seek(pos + 11)
            headers = zlib.crc32(f.read(min(body_size, MAX_HEADER_BYTES)), headers)
        if media:
            if head_end is None:
                head_end = pos
            if first is None:
                first = ts
            last = max(last, ts)
            if tag_type == flv.TAG_VIDEO and _is_keyframe(prefix):
                keyframes.append((ts, pos))
        pos = stop
    if head_end is None or first is None:
        raise flv.FlvError("no media in the file")
    return FileIndex(head_end, tuple(keyframes), first, last, pos, has_video, headers)


def _is_header(tag_type: int, prefix: bytes) -> bool:
    try:
        return flv.is_sequence_header(tag_type, prefix)
    except flv.FlvError:
        return False


def _is_keyframe(prefix: bytes) -> bool:
    try:
        info = flv.video_info(prefix)
    except flv.FlvError:
        return False
    return info.keyframe and not info.sequence_header
