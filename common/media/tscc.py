"""MPEG-TS continuity counters that continue across independently muxed HLS segments (pure).

Each segment is muxed by a fresh muxer, so every PID's continuity_counter restarts at 0 and
a player reading segment after segment sees a gap at each boundary. `align_continuity`
makes every PID's count of counted packets (those with payload) a multiple of 16, numbered
from 0: a segment then ends every PID at 15 and the next one, whoever muxed it and whenever,
continues it. Packets are added (or repeated tables dropped) without changing the media
(ISO/IEC 13818-1):

- PSI PIDs (PAT, PMT, SDT): the PID's last table packet is repeated (repeated tables are
  legal), the copies right after it; or, when fewer, the PID's last repeats of an unchanged
  table are dropped (never its first packet).
- PES PIDs: the PID's last PES packet (and earlier ones if it is too small) is spread over
  more TS packets, each carrying at least one payload byte, with adaptation-field stuffing;
  the PES bytes and every packet's adaptation field contents (PCR, random access, ...) are
  kept, the added packets follow the PES's last packet.

The output depends on the input bytes only, so every node aligning the same segment writes
the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

PACKET_SIZE = 188
SYNC_BYTE = 0x47
NULL_PID = 0x1FFF
CC_MODULUS = 16
_BODY = PACKET_SIZE - 4  # bytes after the 4-byte header
_PES_START = b"\x00\x00\x01"


@dataclass
class _Packet:
    """One TS packet, split into the parts alignment touches."""

    head: bytes  # bytes 1..2 of the header: flags and PID (the sync byte is implied)
    af_core: bytes  # adaptation field flags + optional fields, stuffing dropped (b"" if none)
    payload: bytes
    raw: bytes = b""  # the input packet, written back as it was (but its counter) if set

    @property
    def unit_start(self) -> bool:
        return bool(self.head[0] & 0x40)


class _Input:
    """The input's packets, parsed when alignment needs to look inside one."""

    def __init__(self, ts: bytes) -> None:
        self.ts = ts
        self._parsed: dict[int, _Packet] = {}

    def __getitem__(self, index: int) -> _Packet:
        packet = self._parsed.get(index)
        if packet is None:
            packet = self._parsed[index] = _parse(self.ts, index * PACKET_SIZE)
        return packet


Slots = dict[int, list[_Packet]]
"""What replaces an input packet (by index): its new version, followed by added packets."""


def align_continuity(ts: bytes) -> bytes:
    """`ts` with every PID's payload-carrying packets counted 0, 1, ... 15, 0, ... and a
    multiple of 16 of them (see the module docstring); packets without payload repeat the
    PID's last counter. A PID that cannot be aligned (its PES bytes are too few to spread,
    or its last table spans packets) keeps its own count. Null packets are untouched, other
    packets too but for their counter unless alignment rewrites them.

    Raises ValueError if `ts` is not whole 188-byte packets each starting with 0x47, or a
    packet is malformed (reserved adaptation_field_control, adaptation field too long)."""
    _check_framing(ts)
    by_pid: dict[int, list[int]] = {}  # a PID's payload packets
    starts: dict[int, list[int]] = {}  # which of them start a PES or section (positions)
    scrambled: set[int] = set()  # PIDs whose payload cannot be split differently
    heads = zip(ts[1::PACKET_SIZE], ts[2::PACKET_SIZE], ts[3::PACKET_SIZE], strict=True)
    for index, (flags_pid, pid_low, control_cc) in enumerate(heads):
        if control_cc & 0x30 != 0x10:
            _control(ts, index * PACKET_SIZE)  # checks the adaptation field (or raises)
        pid = ((flags_pid & 0x1F) << 8) | pid_low
        if control_cc & 0x10 and pid != NULL_PID:
            indices = by_pid.setdefault(pid, [])
            if flags_pid & 0x40:
                starts.setdefault(pid, []).append(len(indices))
            if control_cc & 0xC0:
                scrambled.add(pid)
            indices.append(index)
    packets, slots = _Input(ts), Slots()
    for pid, indices in by_pid.items():
        extra = -len(indices) % CC_MODULUS
        if extra and pid in starts and pid not in scrambled:
            _pad(packets, indices, starts[pid], extra, slots)
    return _renumber(ts, slots)


def _check_framing(ts: bytes) -> None:
    if len(ts) % PACKET_SIZE:
        raise ValueError(f"MPEG-TS length {len(ts)} is not a multiple of {PACKET_SIZE}")
    syncs = ts[::PACKET_SIZE]
    if unsynced := len(syncs.lstrip(bytes([SYNC_BYTE]))):
        offset = (len(syncs) - unsynced) * PACKET_SIZE
        raise ValueError(f"MPEG-TS packet at byte {offset} has no sync byte")


def _control(ts: bytes, offset: int) -> int:
    """The adaptation_field_control of the packet at `offset`, after checking its sync
    byte and adaptation field length."""
    if ts[offset] != SYNC_BYTE:
        raise ValueError(f"MPEG-TS packet at byte {offset} has no sync byte")
    control = (ts[offset + 3] >> 4) & 3
    if control == 0:
        raise ValueError(f"MPEG-TS packet at byte {offset}: reserved adaptation_field_control")
    if control & 2 and ts[offset + 4] > (_BODY - 2 if control == 3 else _BODY - 1):
        raise ValueError(f"MPEG-TS packet at byte {offset}: adaptation field too long")
    return control


def _parse(ts: bytes, offset: int) -> _Packet:
    raw = ts[offset : offset + PACKET_SIZE]
    control = _control(ts, offset)
    af_core, body = b"", 4
    if control & 2:
        af_core, body = _af_core(raw[5 : 5 + raw[4]]), 5 + raw[4]
    return _Packet(raw[1:3], af_core, raw[body:] if control & 1 else b"", raw)


def _af_core(field: bytes) -> bytes:
    """An adaptation field's flags and optional fields without its stuffing; b"" when it
    holds nothing but stuffing (no flag set)."""
    if not field or field[0] == 0:
        return b""
    flags, end = field[0], 1
    end += 6 * bool(flags & 0x10) + 6 * bool(flags & 0x08) + bool(flags & 0x04)  # PCR, OPCR, splice
    if flags & 0x02 and end < len(field):  # transport_private_data
        end += 1 + field[end]
    if flags & 0x01 and end < len(field):  # adaptation_field_extension
        end += 1 + field[end]
    return field[: min(end, len(field))]


def _pad(packets: _Input, indices: list[int], starts: list[int], extra: int, slots: Slots) -> None:
    """Add `extra` payload packets to the PID whose payload packets are `packets[indices]`
    (`indices[n]` for n in `starts` begin a PES or section), writing the new packets into
    `slots` (left unchanged when the PID cannot be padded)."""
    if not packets[indices[starts[0]]].payload.startswith(_PES_START):
        _pad_table(packets, indices, extra, slots)
        return
    units = [indices[a:b] for a, b in zip(starts, starts[1:] + [len(indices)], strict=True)]
    plan: list[tuple[list[int], int]] = []
    for unit in reversed(units):
        room = sum(len(packets[i].payload) for i in unit) - len(unit)
        take = min(room, extra)
        if take > 0:
            plan.append((unit, take))
            extra -= take
        if not extra:
            break
    if extra:
        return
    for unit, take in plan:
        spread = _spread([packets[i] for i in unit], take)
        for i, new in zip(unit, spread, strict=False):
            slots[i] = [new]
        slots[unit[-1]] += spread[len(unit) :]


def _pad_table(packets: _Input, indices: list[int], extra: int, slots: Slots) -> None:
    """Align a PSI PID: drop its last repeats of the table when that takes fewer packets
    than adding, else repeat its last packet `extra` times (if it holds whole sections)."""
    surplus = CC_MODULUS - extra
    last = packets[indices[-1]]
    if not _whole_sections(last):
        return
    if surplus < extra and len(indices) > surplus:
        kept = packets[indices[-surplus - 1]]
        if all(packets[i].payload == kept.payload for i in indices[-surplus:]):
            slots.update((i, []) for i in indices[-surplus:])
            return
    slots[indices[-1]] = [last] * (1 + extra)


def _whole_sections(p: _Packet) -> bool:
    """Whether `p`'s payload starts a section (pointer_field 0) that ends in it."""
    data = p.payload
    if not p.unit_start or len(data) < 4 or data[0] != 0:
        return False
    return 1 + 3 + (((data[2] & 0x0F) << 8) | data[3]) <= len(data)


def _spread(unit: list[_Packet], extra: int) -> list[_Packet]:
    """The PES carried by `unit` (its payload packets) over `len(unit) + extra` packets:
    packet k keeps unit[k]'s header and adaptation field contents, the added ones have none;
    each carries as many PES bytes as fit, leaving one for every packet after it."""
    data = b"".join(p.payload for p in unit)
    count = len(unit) + extra
    continuation = _Packet(bytes([unit[0].head[0] & ~0x40 & 0xFF, unit[0].head[1]]), b"", b"")
    out: list[_Packet] = []
    pos = 0
    for k in range(count):
        model = unit[k] if k < len(unit) else continuation
        room = _BODY - (1 + len(model.af_core) if model.af_core else 0)
        size = min(room, len(data) - pos - (count - k - 1))
        out.append(_Packet(model.head, model.af_core, data[pos : pos + size]))
        pos += size
    return out


def _renumber(ts: bytes, slots: Slots) -> bytes:
    """The output: the input's packets, each replaced by its slot if it has one, with each
    PID's payload packets counted from 0 (packets without payload repeat the last counter,
    15 before the first)."""
    out, view, start = bytearray(), memoryview(ts), 0
    for index in sorted(slots):
        out += view[start : index * PACKET_SIZE]
        out += b"".join(map(_bytes, slots[index]))
        start = (index + 1) * PACKET_SIZE
    out += view[start:]
    counters: dict[int, int] = {}
    for offset in range(0, len(out), PACKET_SIZE):
        pid = ((out[offset + 1] & 0x1F) << 8) | out[offset + 2]
        if pid != NULL_PID:
            cc = counters.get(pid, -1)
            if out[offset + 3] & 0x10:
                cc = counters[pid] = (cc + 1) % CC_MODULUS
            out[offset + 3] = out[offset + 3] & 0xF0 | cc % CC_MODULUS
    return bytes(out)


def _bytes(p: _Packet) -> bytes:
    return p.raw or _serialise(p)


def _serialise(p: _Packet) -> bytes:
    """A new packet with payload (unscrambled, counter 0): header, adaptation field (its
    contents then 0xFF stuffing, sized so the payload fills the packet), payload."""
    space = _BODY - len(p.payload)
    if space == 0:
        af, control = b"", 1
    elif space == 1 and not p.af_core:
        af, control = b"\x00", 3  # adaptation_field_length 0: one stuffing byte
    else:
        field = p.af_core or b"\x00"
        af = bytes([space - 1]) + field + b"\xff" * (space - 1 - len(field))
        control = 3
    header = bytes([SYNC_BYTE, *p.head, control << 4])
    return header + af + p.payload
