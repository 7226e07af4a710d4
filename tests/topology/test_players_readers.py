"""A player's RTMP reader counts every media byte it reads, also a read that holds only part
of a message (a large keyframe arriving over several reads)."""

from __future__ import annotations

import select
import socket
from types import SimpleNamespace

from common.net.conn import Conn
from common.proto.flvscan import FlvScanner
from common.proto.rtmp.chunk import encode_message
from common.proto.rtmpscan import Handover
from topology.players.readers import RtmpReader


class Player:
    """What a reader hands media to: bytes counted, spans and scans noted."""

    def __init__(self) -> None:
        self.result = SimpleNamespace(bytes=0)
        self.spans: list[tuple[int, int]] = []
        self.scans: list[object] = []

    def _span(self, first: int, last: int, now: float) -> None:
        self.spans.append((first, last))

    def _scanned(self, scan: object, now: float) -> None:
        self.scans.append(scan)

    def _joined(self, edge: str) -> None:
        pass


def test_an_rtmp_reader_counts_the_media_bytes_of_reads_that_end_mid_message() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    ours = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    try:
        conn = Conn(ours)
        client = SimpleNamespace(conn=conn, handover=lambda: (Handover(chunk_size=4096), []))
        player = Player()
        reader = RtmpReader(player, client, FlvScanner(), "edge")  # type: ignore[arg-type]
        keyframe = bytes([0x17, 1]) + bytes(2998)
        audio = bytes([0xAF, 1]) + bytes(198)
        server.sendall(
            encode_message(6, 9, 1, 40, keyframe, 4096) + encode_message(4, 8, 1, 60, audio, 4096)
        )
        server.shutdown(socket.SHUT_WR)
        buf = bytearray(1000)  # the keyframe's message comes in several reads
        reads = 0
        while True:
            select.select([ours], [], [])
            reads += 1
            if reader.on_readable(buf, 1.0):
                break  # the end: the server closed
        assert reads > 4
        assert player.result.bytes == len(keyframe) + len(audio)
        assert player.scans and not player.spans  # the keyframe: a whole scan
    finally:
        ours.close()
        server.close()
