"""What a worker of an origin with `workers = N` answers for the node (origin.workers holds
its ownership and mirrors): a publish's claim of its name (and asking the owner to let it go),
HLS of another worker's stream, a kick made by the owner and banned by every worker, and the
API lists joined across workers."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

import trio

from common.config import MAX_BAN_SECONDS
from common.net.http import Request, Response
from common.proto.paths import HlsTarget, Media
from common.proto.streamkey import StreamKey
from common.serve.hlsviewers import client_key
from common.serve.refusal import Refusal
from common.serve.workermerge import auth_headers, is_sibling, json_docs
from common.serve.workersowners import BANNED, HOST_LIMIT, UNANSWERED
from origin.publish import Accept, Decision, PublishCode, PublishRequest, Reject, Takeover, decide

if TYPE_CHECKING:
    from origin.server import Origin

log = logging.getLogger("livecdn.origin")

YIELD_PATH = "/_worker/yield"
"""A worker's private route: let a sibling have a name (`yield_name`)."""


async def claimed(origin: Origin, request: PublishRequest, decision: Accept) -> Decision:
    """A new stream's publish on a worker of a node: claim its name for this worker
    first (before the on_publish hook: the hook is asked only about publishes the node would
    take). The worker that owns the name is asked to let it go (`yield_name`: a takeover,
    or its publisher back within the grace, as `decide` says there); else the publish is
    refused as a second publish of a live name is; a full table as a full origin, a banned
    name (a kick on any worker) as banned, and a host's max_publishers_per_ip counted on
    the node. Then the decision as this worker is now."""
    assert origin.workers is not None
    key = decision.key
    owner = await origin.workers.claim(key.app, key.name, request.host)
    if owner is not None and owner >= 0 and owner != origin.workers.index:
        doc = {"host": request.host, "query": request.query, "worker": origin.workers.index}
        got = await origin.workers.forward(
            owner, "POST", f"{YIELD_PATH}/{key.app}/{key.name}", [], body=json.dumps(doc).encode()
        )
        if got is not None and got[0] == 200:
            origin.workers.take_mirror(key.app, key.name)  # its viewers stay with the publish
            origin.workers.take_handover(key.app, key.name, got[1])
            owner = await origin.workers.claim(key.app, key.name, request.host)
    if (refused := _claim_refused(origin, request, key, owner)) is not None:
        return refused
    again = decide(request, origin._publishers(), origin.config, time.time())
    if isinstance(again, Reject) and (key.app, key.name) not in origin.live:
        origin.workers.release(key.app, key.name)
    return again


def _claim_refused(
    origin: Origin, request: PublishRequest, key: StreamKey, owner: int | None
) -> Reject | None:
    """The refusal of a publish whose claim answered `owner` (None: granted here)."""
    assert origin.workers is not None
    config = origin.config
    if owner is None:
        return Reject(
            PublishCode.DENIED,
            Refusal.STREAM_LIMIT,
            f"this origin already has {config.max_streams} streams (max_streams)",
        )
    if owner == UNANSWERED:
        return Reject(
            PublishCode.DENIED,
            Refusal.STREAM_LIMIT,
            f"{key}: the node's stream ownership table did not answer",
        )
    if owner == BANNED:
        return Reject(PublishCode.BAD_NAME, Refusal.BANNED, f"{key} is banned")
    if owner == HOST_LIMIT:
        return Reject(
            PublishCode.DENIED,
            Refusal.PUBLISHER_LIMIT,
            f"{request.host} already publishes {config.max_publishers_per_ip} streams "
            "(max_publishers_per_ip, on this origin's workers)",
        )
    if owner == origin.workers.index:
        return None
    if config.on_republish == "reject":
        return Reject(
            PublishCode.BAD_NAME, Refusal.ALREADY_PUBLISHING, f"{key} is already published"
        )
    return Reject(
        PublishCode.BAD_NAME,
        Refusal.NOT_OWNER,
        f"{key} is live from another publisher (on another worker of this origin)",
    )


async def yield_name(origin: Origin, app: str, name: str, doc: object, peer: str) -> Response:
    """A sibling worker got a publish of app/name, which this worker owns: let the name
    go if `decide` would let that publish (host and query in `doc`) take over or resume
    here (`doc["worker"]`, the asking worker). The stream moves there: here it goes on as a
    mirror of that worker's, which takes this worker's mirror of it as its own, so its
    viewers on every worker are kept, as on one process; the answer says whether the
    publisher resumed and where the stream's HLS playlist stands, for the new owner to
    continue it. 409 with the reason otherwise."""
    workers = origin.workers
    if not isinstance(doc, dict) or not isinstance(doc.get("query"), dict):
        return Response.json({"error": "host and query wanted"}, 400)
    to = doc.get("worker")
    if workers is None or not isinstance(to, int) or to not in workers.ctx.siblings():
        return Response.json({"error": "the asking worker's index wanted"}, 400)
    query = {str(k): str(v) for k, v in doc["query"].items()}
    request = PublishRequest(app, name, query, str(doc.get("host", "")))
    decision = decide(request, origin._publishers(), origin.config, time.time())
    live = origin.live.get((app, name))
    if live is None and await _unused(origin, app, name):
        return Response.json({"yielded": f"{app}/{name}"})
    resumed = isinstance(decision, Accept) and decision.resumed
    if live is None or not (resumed or isinstance(decision, Takeover)):
        why = decision.detail if isinstance(decision, Reject) else "not this worker's"
        return Response.json({"error": why}, 409)
    why = "taken over" if isinstance(decision, Takeover) else "back"
    log.info("%s/%s: its publisher is %s on another worker (%s): the stream moves to worker "
             "%d, its viewers kept", app, name, why, peer, to)  # fmt: skip
    if (pub := live.publisher) is not None:
        live.publisher = None
        pub.rtmp.cancel()
        origin._unpublished(pub)
    if origin.relays.pulled(app, name):
        origin.relays.hand_over(app, name)
    hls = origin.hls.handover((app, name))  # the new owner's playlist continues it
    origin.hand_off(live, to)  # a mirror of the new owner's stream, once it claims the name
    if workers.client is not None:
        await workers.client.release(app, name)  # before the sibling claims again
    doc = {"yielded": f"{app}/{name}", "resumed": resumed}
    if hls is not None:
        doc["hls"] = hls.to_json()
    return Response.json(doc)


async def _unused(origin: Origin, app: str, name: str) -> bool:
    """Whether the table's claim of app/name for this worker is one nothing here uses (no
    stream, no pull of it, no claim of it on its way): if so it is released (a claim whose
    asker went away must never make the name unpublishable on the other workers)."""
    workers = origin.workers
    if workers is None or workers.client is None:
        return False
    if (app, name) in workers.claiming or StreamKey(app, name) in origin.relays.pulls:
        return False
    log.info("%s/%s: released for another worker: nothing here used its claim", app, name)
    await workers.client.release(app, name)
    return (app, name) not in origin.live


async def node_lists(
    origin: Origin, req: Request, mine: Response, fields: tuple[str, ...]
) -> Response:
    """On a worker of a node, a GET answer (`mine`) with the lists `fields` of every
    worker's answer joined (each worker's relays, its recordings in progress)."""
    if origin.workers is None or is_sibling() or req.method != "GET" or mine.status != 200:
        return mine
    doc = json.loads(mine.body)
    answers = await origin.workers.forward_all("GET", req.target, auth_headers(req))
    theirs = json_docs({i: body for i, (status, body, _) in answers.items() if status == 200})
    for _, other in sorted(theirs.items()):
        for field in fields:
            if isinstance(other.get(field), list):
                doc[field] = [*doc.get(field, []), *other[field]]
    return Response.json(doc)


async def kick_on_node(origin: Origin, req: Request, skey: StreamKey) -> Response:
    """DELETE /api/streams/app/name on a worker of a node: every worker bans the name
    (a publish may land on any of them) and the owner kicks its publisher; the owner's
    answer, or 404 if no worker owns the name."""
    assert origin.workers is not None
    owner = await origin.workers.lookup(skey.app, skey.name)
    if owner is None:  # no worker has the name: nothing kicked, nothing banned
        return Response.json({"error": f"no live stream {skey}"}, 404)
    local = origin._api_stream(req, skey)
    answers = await origin.workers.forward_all("DELETE", req.target, auth_headers(req))
    ban = origin.kick_ban(req)
    client = origin.workers.client
    if ban and client is not None and not await client.ban(skey.app, skey.name, ban):
        log.warning("kick of %s: the node's ownership table did not take its ban", skey)
    if owner == origin.workers.index or owner not in answers:
        return local
    status, body, headers = answers[owner]
    return Response(status, body, headers.get("content-type", "application/json"))


async def hls_of_owner(origin: Origin, req: Request, target: HlsTarget) -> Response | None:
    """On a worker of a node: HLS of a stream another worker owns, as that worker
    packages it (every worker answers with the same playlists and segments); None when
    this worker owns it or nobody does."""
    assert origin.workers is not None
    if req.method not in ("GET", "HEAD"):
        return None
    key = (target.key.app, target.key.name)
    stream = origin.registry.get(*key)
    if stream is not None and origin.workers.mirrored(stream) is None:
        return None  # this worker's own
    got = await origin.workers.hls_object(req.path, target.media is Media.SEGMENT)
    if got is None:
        return None
    status, body, ctype, cache = got
    if status == 200:
        client = client_key(req.peer, req.headers.get("user-agent", ""))
        origin.hls.viewers.seen(key, client, trio.current_time())
    headers = [("cache-control", cache)] if cache else []
    return Response(status, body, ctype, headers)


def ban_here(origin: Origin, req: Request, skey: StreamKey) -> Response:
    """A kick's ban on a worker that does not own the stream (404: nothing kicked here)."""
    ban = origin.kick_ban(req)
    if ban is None:
        return Response.json({"error": f"ban must be whole seconds in 0..{MAX_BAN_SECONDS}"}, 400)
    if ban > 0 and not origin.bans.ban((skey.app, skey.name), ban, time.time()):
        return Response.json({"error": f"{origin.bans.max_bans} bans in force already"}, 503)
    return Response.json({"error": f"no live stream {skey} on this worker", "ban_s": ban}, 404)
