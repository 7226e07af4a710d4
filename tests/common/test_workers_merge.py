"""The merged /api/streams of a node with workers >= 3 describes a stream by the worker that
owns it whatever the workers' order: before, when two mirroring workers came before the owner,
the second mirror's merge dropped the mark and the owner's description never replaced the
mirror's (publisher null, upstream null)."""

from __future__ import annotations

from common.serve.workerctx import WorkerContext
from common.serve.workermerge import merge_streams_api


def doc(ctx: WorkerContext, owner: int, i: int) -> dict:
    info = {"app": "live", "name": "s", "viewers": {"flv": 2, "rtmp": 0, "hls": 0, "total": 2}}
    if i == owner:
        info["publisher"] = {"since": 1.0, "peer": "1.2.3.4:5"}
        info["upstream"] = None
        n = 2 + ctx.count - 1  # its 2 and the mirrors' pulls
        info["viewers"] = {"flv": n, "rtmp": 0, "hls": 0, "total": n}
    else:  # a mirror, as Origin.stream_info describes it
        info["publisher"] = None
        info["upstream"] = {"parent": ctx.url(owner)}
    return {"streams": [info]}


def test_the_owner_describes_the_stream_whatever_the_worker_order():
    for count in (2, 3, 4):
        ctx = WorkerContext(0, count, [], -1, [40001 + i for i in range(count)], "s")
        for owner in range(count):
            docs = {i: doc(ctx, owner, i) for i in range(count)}
            merged, status = merge_streams_api(ctx, docs, {})
            (stream,) = merged["streams"]
            assert stream["viewers"]["total"] == 2 * count, (count, owner, stream)
            assert stream["publisher"] is not None, f"{owner} of {count}: a mirror's: {stream}"
            assert "_fed_by_sibling" not in stream
