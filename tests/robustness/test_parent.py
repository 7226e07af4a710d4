"""Hostile parents: an edge that pulls from a server sending malformed FLV or RTMP loses
only that upstream (its viewer is refused or cut), never the whole edge."""

from __future__ import annotations

import pytest
import trio

from common.config import EdgeConfig, build
from common.net.httpclient import open_request
from common.proto import flv
from tests.media import avc_header, keyframe
from tests.robustness.conftest import Node, healthz

BAD_TAGS = [
    flv.build_tag(9, 40, b"\x17"),  # AVC tag cut after its first byte
    flv.build_tag(9, 40, b"\x17\x07\x00\x00\x00"),  # unknown AVCPacketType
    flv.build_tag(9, 40, b"\x9f\x00\x00\x00\x00"),  # enhanced: reserved packet type
    flv.build_tag(9, 40, b"\x90zzzz"),  # enhanced: unknown FourCC
    flv.build_tag(8, 40, b"\xaf"),  # AAC tag cut short
    flv.build_tag(8, 40, b"\xaf\x07"),  # unknown AACPacketType
    flv.build_tag(8, 40, b"\xaf\x00\xff\xff"),  # AudioSpecificConfig with a reserved rate
    flv.build_tag(18, 0, b"\x02\x00\x0aonMetaData\x03\x00\x01a\x00"),  # truncated metadata
    b"\x09\xff\xff\xff" + b"\x00" * 7 + b"x" * 100,  # a tag that claims 16 MB
    b"not flv at all" * 10,
]


async def _fake_parent(bad: bytes, task_status: trio.TaskStatus[int]) -> None:
    """An HTTP-FLV "parent" that sends a good start and then `bad`, and then silence."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    task_status.started(listener.getsockname()[1])
    async with trio.open_nursery() as nursery:
        while True:
            sock, _ = await listener.accept()

            async def serve(sock=sock) -> None:
                with sock:
                    await sock.recv(65536)
                    body = (
                        flv.file_header()
                        + flv.build_tag(9, 0, avc_header())
                        + flv.build_tag(9, 0, keyframe())
                        + bad
                    )
                    head = b"HTTP/1.1 200 OK\r\ncontent-type: video/x-flv\r\n"
                    head += b"transfer-encoding: chunked\r\n\r\n"
                    await sock.send(head + b"%x\r\n%b\r\n" % (len(body), body))
                    await trio.sleep(3)

            nursery.start_soon(serve)


@pytest.mark.parametrize("index", range(len(BAD_TAGS)))
async def test_malformed_media_from_a_parent(index: int) -> None:
    from edge.server import Edge

    async with trio.open_nursery() as nursery:
        parent = await nursery.start(_fake_parent, BAD_TAGS[index])
        cfg = {"host": "127.0.0.1", "rtmp_port": 0, "http_port": 0,
               "parents": [f"http://127.0.0.1:{parent}"], "stall_timeout": 1.0,
               "retry_seconds": 1.0}  # fmt: skip
        node = Node("edge", Edge(build(EdgeConfig, cfg)))
        address = await nursery.start(node.run)
        try:
            resp = await open_request("GET", f"http://127.0.0.1:{address.http_port}/live/x.flv")
            with trio.move_on_after(0.8):
                async for _ in resp.chunks():
                    pass
            resp.close()
        except Exception:  # noqa: BLE001, S110 - the viewer may be refused or cut: fine
            pass
        await trio.sleep(0.3)
        assert not node.finished, f"the edge stopped:\n{node.error}"
        status = await trio.to_thread.run_sync(healthz, address.http_port)
        assert status == 200, status
        nursery.cancel_scope.cancel()
    assert node.error is None, node.error
