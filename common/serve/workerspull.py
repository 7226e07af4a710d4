"""A worker's HTTP-FLV pull from a sibling worker's private port. The run's secret goes in
the `x-livecdn-worker` header, never in the URL: the URL is what a failure's message (and so
the pull's warning log line) shows."""

from __future__ import annotations

from common.serve.feeds import FlvFeed
from common.serve.workerctx import SECRET_HEADER


async def open_sibling_feed(parent: str, app: str, name: str, query: str, secret: str) -> FlvFeed:
    """GET app/name.flv?`query` from sibling `parent` (http://127.0.0.1:PORT) proving
    `secret` in a header; NotFound on 404, ParentError on anything else but 200 (the
    messages name the URL, which holds no secret)."""
    return await FlvFeed.open(parent, app, name, query=query, headers=[(SECRET_HEADER, secret)])
