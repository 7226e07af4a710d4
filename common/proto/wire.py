"""The control plane's wire format: length-prefixed msgpack maps, each with a `type` and `v`.

Sans-IO: `encode(msg) -> bytes`, `Decoder().feed(bytes) -> list[dict]`. The maps' content is
checked by `common.proto.control`, which turns them into typed messages.
"""

from __future__ import annotations

import msgpack

from common.proto.errors import ProtocolError

VERSION = 1
MAX_FRAME = 1 << 20
MAX_ITEMS = 10_000  # entries of any one map or array in a frame
MAX_BYTES = 64 * 1024  # of any one string, binary or extension value


class WireError(ProtocolError):
    """A malformed or oversized control message."""


def encode(msg: dict) -> bytes:
    """One frame: 4-byte big-endian length, then the msgpack map (with `v` added)."""
    body = msgpack.packb({"v": VERSION, **msg}, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ValueError(f"control message of {len(body)} bytes exceeds {MAX_FRAME}")
    return len(body).to_bytes(4, "big") + body


class Decoder:
    """Reassembles frames from a byte stream."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict]:
        """Consume bytes; return the complete messages (maps with a string `type` and
        this `v`). WireError on an oversized frame, bad msgpack or a wrong version."""
        buf = self._buf
        buf += data
        out = []
        while len(buf) >= 4:
            size = int.from_bytes(buf[:4], "big")
            if size > self.max_frame:
                raise WireError(f"control frame of {size} bytes exceeds {self.max_frame}")
            if len(buf) < 4 + size:
                break
            body = bytes(buf[4 : 4 + size])
            del buf[: 4 + size]
            try:
                msg = msgpack.unpackb(
                    body,
                    raw=False,
                    strict_map_key=True,
                    max_map_len=MAX_ITEMS,
                    max_array_len=MAX_ITEMS,
                    max_str_len=MAX_BYTES,
                    max_bin_len=MAX_BYTES,
                    max_ext_len=MAX_BYTES,
                )
            except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
                raise WireError(f"bad msgpack: {exc}") from exc
            except Exception as exc:  # msgpack raises a few other types on garbage
                raise WireError(f"bad msgpack: {exc!r}") from exc
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise WireError("control message is not a map with a 'type'")
            version = msg.get("v")
            if type(version) is not int or version != VERSION:
                shown = (
                    repr(version)[:40] if isinstance(version, int | str) else type(version).__name__
                )
                raise WireError(f"unsupported control message version {shown}")
            out.append(msg)
        return out
