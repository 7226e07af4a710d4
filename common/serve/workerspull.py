"""A worker's HTTP-FLV pull from a sibling worker's private port. The run's secret goes in
the `x-livecdn-worker` header, never in the URL: the URL is what a failure's message (and so
the pull's warning log line) shows."""

from __future__ import annotations

from common.net.httpclient import HttpClientError, open_request
from common.serve.feeds import Failure, FlvFeed, NotFound, ParentError, upstream_url
from common.serve.workerctx import SECRET_HEADER


async def open_sibling_feed(parent: str, app: str, name: str, query: str, secret: str) -> FlvFeed:
    """GET app/name.flv?`query` from sibling `parent` (http://127.0.0.1:PORT) proving
    `secret` in a header; NotFound on 404, ParentError on anything else but 200 (the
    messages name the URL, which holds no secret)."""
    url = upstream_url(parent, app, name, ".flv", query)
    try:
        resp = await open_request("GET", url, headers=[(SECRET_HEADER, secret)])
    except OSError as exc:
        raise ParentError(f"cannot GET {url}: {exc}", Failure.CONNECT) from exc
    except HttpClientError as exc:
        raise ParentError(f"GET {url}: {exc}", Failure.BAD_DATA) from exc
    if resp.status == 404:
        resp.close()
        raise NotFound(url)
    if resp.status != 200:
        resp.close()
        raise ParentError(f"GET {url}: HTTP {resp.status}", Failure.REFUSED)
    return FlvFeed(resp)
