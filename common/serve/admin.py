"""The admin gate of every node's HTTP API: one rule (common.proto.admin) for origin, edge and
balancer."""

from __future__ import annotations

import logging

from common.net.http import Request, Response
from common.proto.admin import check_admin

log = logging.getLogger("livecdn.admin")


def is_admin(req: Request, token: str) -> bool:
    """Would this request be allowed on admin routes (for what listings show)?"""
    return check_admin(token, req.headers, req.peer).allowed


def admin_refusal(req: Request, token: str) -> Response | None:
    """None if the request may use an admin route; else the 401/403 to answer with."""
    verdict = check_admin(token, req.headers, req.peer)
    if verdict.allowed:
        return None
    log.info("refused %s %s from %s: %s", req.method, req.path, req.peer, verdict.reason)
    resp = Response.json({"error": verdict.reason}, verdict.status)
    if verdict.status == 401:
        resp.headers.append(("WWW-Authenticate", 'Bearer realm="livecdn admin"'))
    return resp
