"""Recording live streams to files (DVR): one reader of the stream per recording, files cut
at keyframes every `record_segment_seconds`, written in a thread; started by `record_apps`
or the API, ended by the stream's end, the API or a disk error (never the stream's)."""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial

import trio

from common.config import OriginConfig
from common.media.stream import Stream
from common.net.hooks import HookClient
from common.net.supervise import contained, describe
from common.proto.hooks import HookCall, HookEvent
from common.serve.metrics import NodeMetrics
from common.serve.workerctx import CURRENT
from origin import recorddisk
from origin.recordcut import FileCutter, FileStart, file_bytes
from origin.recordfiles import RecordedFile, iso, to_remove
from origin.recordmp4 import remux_mp4

log = logging.getLogger("livecdn.record")

FLUSH_BYTES = 256 * 1024
"""Bytes gathered before a write (a batch is written at most every FLUSH_SECONDS anyway)."""
FLUSH_SECONDS = 1.0
BATCH_FRAMES = 512
"""Frames taken from the ring at once."""
RETENTION_SECONDS = 60.0
"""How often retention looks at record_dir (besides after each file)."""
REANCHOR_MS = 5000
"""A file whose wall-clock start (from media time) falls this far behind the clock starts at
the clock (the publisher paused)."""
MAX_RECORDINGS = 1000
"""Recordings at once."""
MAX_LISTED = 1000
"""Files a listing shows (the newest)."""
LISTING_TTL = 2.0
"""A listing (anyone may ask) is read from disk at most this often per app/name, by one
thread of its own: recordings' writes never wait behind listings."""
MAX_LISTINGS_KEPT = 64


class Stop(Exception):
    """A recording ends for a reason (a disk error)."""


@dataclass(eq=False)
class Recording:
    """One stream's recording in progress."""

    app: str
    name: str
    by: str  # "config" or "api"
    started: float = field(default_factory=time.time)
    files: int = 0
    bytes: int = 0
    current: str = ""  # the file being written
    current_bytes: int = 0  # its size so far
    failure: str = ""  # why its last file could not be finished
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    def as_json(self, admin: bool) -> dict:
        """What the API shows of it: the file being written by its path for admin requests,
        else by its name under record_dir."""
        shown = self.current
        if shown and not admin:
            shown = f"{self.app}/{self.name}/{os.path.basename(shown)}"
        return {
            "app": self.app,
            "name": self.name,
            "by": self.by,
            "since": iso(int(self.started * 1000)),
            "files": self.files,
            "bytes": self.bytes,
            "file": shown,
        }


class Recorder:
    """The origin's recordings: the active ones by (app, name), retention, metrics."""

    def __init__(self, config: OriginConfig, hooks: HookClient, metrics: NodeMetrics) -> None:
        self.config = config
        self.directory = config.record_dir
        self.hooks = hooks
        self.active: dict[tuple[str, str], Recording] = {}
        self.limiter = trio.CapacityLimiter(4)
        self.remux_limiter = trio.CapacityLimiter(1)
        self.list_limiter = trio.CapacityLimiter(1)
        self._listing_lock = trio.Lock()
        self._listed: OrderedDict[tuple[str, str], tuple[float, list[RecordedFile], int]] = (
            OrderedDict()
        )
        self.nursery: trio.Nursery | None = None
        self.files = 0
        self.bytes = 0
        self.removed = 0
        self.dropped = 0
        self.failures: dict[str, int] = {"disk": 0, "remux": 0, "retention": 0}
        self._retention = trio.Event()
        metrics.gauge("recordings", "Recordings in progress.", (), lambda: {(): len(self.active)})
        metrics.counter(
            "record_files_total", "Recording files finished.", (), lambda: {(): self.files}
        )
        metrics.counter(
            "record_bytes_total", "Bytes written to recordings.", (), lambda: {(): self.bytes}
        )
        metrics.counter(
            "record_removed_total", "Recording files removed by retention.", (),
            lambda: {(): self.removed},
        )  # fmt: skip
        metrics.counter(
            "record_dropped_frames_total",
            "Frames a recording skipped (it fell behind the stream).",
            (),
            lambda: {(): self.dropped},
        )
        metrics.counter(
            "record_failures_total",
            "Recording failures, by kind (disk: a recording ended; remux: an MP4 not made, "
            "the FLV kept; retention: a file not removed).",
            ("kind",),
            lambda: {(k,): v for k, v in self.failures.items()},
        )

    @property
    def enabled(self) -> bool:
        """Whether recording is configured (record_dir)."""
        return bool(self.directory)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Finish files a previous run left, then host the recordings and run retention
        until cancelled."""
        if CURRENT is None:  # a node's workers: the supervisor recovered before starting them
            await contained("recovery of left-over recording files", self._recover, logger=log)
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            try:
                while True:
                    with trio.move_on_after(RETENTION_SECONDS):
                        await self._retention.wait()
                    self._retention = trio.Event()
                    if CURRENT is None or CURRENT.index == 0:  # once per node
                        await contained("recording retention", self.retain, logger=log)
            finally:
                self.nursery = None

    async def _recover(self) -> None:
        """Finish the files a previous run left being written (before any recording)."""
        for line in await trio.to_thread.run_sync(recorddisk.recover_parts, self.directory):
            log.info("recording left over: %s", line)

    def stream_opened(self, stream: Stream) -> None:
        """A new live stream: recorded if its app is in record_apps."""
        if self.enabled and stream.app in self.config.record_apps:
            self.start(stream, "config")

    def start(self, stream: Stream, by: str) -> Recording | str:
        """Start recording `stream`: the Recording, or why not."""
        key = (stream.app, stream.name)
        if not self.enabled or self.nursery is None:
            return "recording is off (no record_dir)"
        if key in self.active:
            return f"{stream.app}/{stream.name} is being recorded already"
        if len(self.active) >= MAX_RECORDINGS:
            return f"{MAX_RECORDINGS} recordings in progress already"
        rec = self.active[key] = Recording(stream.app, stream.name, by)
        self.nursery.start_soon(self._record, stream, rec)
        log.info("recording %s/%s (%s)", stream.app, stream.name, by)
        return rec

    def stop(self, app: str, name: str) -> Recording | None:
        """End app/name's recording (its file is finished): the Recording, None if none."""
        rec = self.active.get((app, name))
        if rec is not None:
            rec.scope.cancel()
        return rec

    async def _record(self, stream: Stream, rec: Recording) -> None:
        key = (stream.app, stream.name)
        try:
            with rec.scope:
                await self._loop(stream, rec)
            if rec.failure:
                raise Stop(rec.failure)
            log.info("recording %s/%s ended: %d files, %d bytes", *key, rec.files, rec.bytes)
        except Stop as exc:
            self.failures["disk"] += 1
            log.warning("recording %s/%s ended: %s", *key, exc)
        except Exception as exc:  # a bug: this recording ends, nothing else
            self.failures["disk"] += 1
            log.error("recording %s/%s ended: %s", *key, describe(exc), exc_info=exc)
        finally:
            if self.active.get(key) is rec:
                del self.active[key]

    async def _loop(self, stream: Stream, rec: Recording) -> None:
        cutter = FileCutter(
            int(self.config.record_segment_seconds * 1000),
            max_bytes=file_bytes(self.config.record_max_bytes),
        )
        reader = stream.add_reader("record")
        writer: recorddisk.FileWriter | None = None
        batch: list[bytes] = []
        size = 0
        anchor: tuple[int, int] | None = None  # (media ts, wall ms) of the recording's start
        last_write = trio.current_time()
        try:
            cutter.seed(stream.header_frames(stream.start_timestamp(reader)))
            while True:
                with trio.move_on_after(FLUSH_SECONDS):
                    await stream.wait_beyond(reader.cursor)
                dropped = reader.dropped
                for frame in stream.pending(reader, BATCH_FRAMES):
                    start, data = cutter.push(frame)
                    if start is not None:
                        if writer is not None:
                            await self._write(writer, batch, rec)
                            batch, size = [], 0
                            await self._finish(writer, start.ended_ms or 1, rec)
                            writer = None
                        anchor = _anchor(anchor, start)
                        wall = anchor[1] + start.start_ts - anchor[0]
                        writer = await self._open(stream, wall, rec)
                        data = start.data
                    if data and writer is not None:
                        batch.append(data)
                        size += len(data)
                self.dropped += reader.dropped - dropped
                now = trio.current_time()
                if batch and (size >= FLUSH_BYTES or now - last_write >= FLUSH_SECONDS):
                    await self._write(writer, batch, rec)
                    batch, size, last_write = [], 0, now
                if stream.closed and reader.cursor >= stream.head:
                    break
        except Stop:
            if writer is not None:
                writer.close()  # left as .part
                writer = None
            raise
        finally:
            stream.remove_reader(reader)
            if writer is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    try:
                        await self._write(writer, batch, rec)
                        await self._finish(writer, cutter.duration(), rec)
                    except Stop as exc:
                        rec.failure = f"{exc}; its last file is lost"

    async def _open(self, stream: Stream, wall_ms: int, rec: Recording) -> recorddisk.FileWriter:
        try:
            writer = await trio.to_thread.run_sync(
                recorddisk.FileWriter, self.directory, stream.app, stream.name, wall_ms,
                limiter=self.limiter,
            )  # fmt: skip
        except OSError as exc:
            raise Stop(f"cannot create a file in record_dir ({describe(exc)})") from None
        rec.current = writer.path
        return writer

    async def _write(
        self, writer: recorddisk.FileWriter | None, batch: list[bytes], rec: Recording
    ) -> None:
        if writer is None or not batch:
            return
        data = b"".join(batch)
        batch.clear()  # written once, whatever happens next
        try:
            await trio.to_thread.run_sync(writer.write, data, limiter=self.limiter)
        except OSError as exc:
            await trio.to_thread.run_sync(writer.close)
            raise Stop(f"cannot write {writer.path} ({describe(exc)})") from None
        rec.bytes += len(data)
        rec.current_bytes = writer.size
        self.bytes += len(data)
        limit = self.config.record_max_bytes
        if limit and writer.size > limit and not rec.failure:
            rec.failure = f"its file {writer.path} alone is beyond record_max_bytes ({limit})"
            rec.scope.cancel()  # the file is finished; retention removes it

    async def _finish(
        self, writer: recorddisk.FileWriter, duration_ms: int, rec: Recording
    ) -> None:
        try:
            path = await trio.to_thread.run_sync(writer.finish, duration_ms, limiter=self.limiter)
        except OSError as exc:
            raise Stop(f"cannot finish {writer.path} ({describe(exc)})") from None
        rec.files += 1
        rec.current = ""
        rec.current_bytes = 0
        self.files += 1
        self._listed.clear()
        done = RecordedFile(
            writer.app, writer.name, writer.start_ms, duration_ms, "flv", writer.size
        )
        if self.nursery is not None:
            self.nursery.start_soon(self._done, path, done)

    async def _done(self, path: str, rec: RecordedFile) -> None:
        """A file is finished: remuxed to MP4 if asked, on_record_done, retention."""
        if self.config.record_format == "mp4":
            try:
                path = await trio.to_thread.run_sync(remux_mp4, path, limiter=self.remux_limiter)
            except Exception as exc:  # whatever PyAV or the disk says: the FLV stays
                self.failures["remux"] += 1
                log.warning("recording %s/%s: %s not remuxed to MP4 (%s); the FLV is kept",
                            rec.app, rec.name, path, describe(exc))  # fmt: skip
        call = HookCall(
            HookEvent.RECORD_DONE, rec.app, rec.name, "", "record",
            details=(
                ("path", path), ("start", iso(rec.start_ms)),
                ("duration", round(rec.duration_ms / 1000, 3)), ("bytes", rec.size),
            ),
        )  # fmt: skip
        self._listed.clear()
        self.hooks.notify(call)
        self._retention.set()

    async def retain(self) -> None:
        """Remove the files beyond record_max_bytes (the files being written count, but are
        never removed) or older than record_max_age_seconds."""
        cfg = self.config
        if not self.enabled or not (cfg.record_max_bytes or cfg.record_max_age_seconds):
            return
        files = await trio.to_thread.run_sync(
            recorddisk.list_files, self.directory, limiter=self.limiter
        )
        now = int(time.time() * 1000)
        writing = sum(r.current_bytes for r in self.active.values())
        max_bytes = cfg.record_max_bytes and max(1, cfg.record_max_bytes - writing)
        for rec in to_remove(files, now, max_bytes, cfg.record_max_age_seconds):
            try:
                await trio.to_thread.run_sync(
                    recorddisk.remove, self.directory, rec, limiter=self.limiter
                )
            except OSError as exc:
                self.failures["retention"] += 1
                log.warning("recording retention: %s/%s/%s not removed (%s)",
                            rec.app, rec.name, rec.file, describe(exc))  # fmt: skip
                return
            self.removed += 1
            self._listed.clear()
            log.info("recording retention removed %s/%s/%s", rec.app, rec.name, rec.file)

    async def listing(self, app: str = "", name: str = "", *, admin: bool = False) -> dict:
        """The finished files (all, or app/name's; the newest MAX_LISTED), their number and
        the recordings in progress."""
        shown, total = await self._files(app, name)
        active = [
            r.as_json(admin)
            for (a, n), r in self.active.items()
            if (not app or (a, n) == (app, name))
        ]
        return {
            "recordings": [f.as_json() for f in shown],
            "total": total,
            "active": active,
        }

    async def _files(self, app: str, name: str) -> tuple[list[RecordedFile], int]:
        """The newest MAX_LISTED files of a listing and their number: read again once
        LISTING_TTL old or after record_dir changed, one listing at a time."""
        key = (app, name)
        async with self._listing_lock:
            kept = self._listed.get(key)
            if kept is None or trio.current_time() - kept[0] >= LISTING_TTL:
                files = await trio.to_thread.run_sync(
                    partial(recorddisk.list_files, self.directory, app, name),
                    limiter=self.list_limiter,
                )
                kept = (trio.current_time(), files[-MAX_LISTED:], len(files))
                self._listed[key] = kept
                while len(self._listed) > MAX_LISTINGS_KEPT:
                    self._listed.popitem(last=False)
            return kept[1], kept[2]


def _anchor(anchor: tuple[int, int] | None, start: FileStart) -> tuple[int, int]:
    """The (media ts, wall ms) a file's wall-clock start is reckoned from: the recording's
    first file, unless media time fell REANCHOR_MS behind the clock (a pause)."""
    now = int(time.time() * 1000)
    if anchor is None or anchor[1] + start.start_ts - anchor[0] < now - REANCHOR_MS:
        return (start.start_ts, now)
    return anchor
