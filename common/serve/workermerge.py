"""A node with `workers = N` answers /metrics and its JSON API as one: the worker that gets
the request asks its siblings' private ports (bounded; a sibling that does not answer is
skipped and named in the answer) and merges what they say with its own answer."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, TypeVar

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from common.net.http import Request, Response, StreamingResponse, Upgrade
from common.net.httpclient import fetch
from common.net.logbudget import LogBudget
from common.proto.paths import STREAMS_API
from common.proto.streamkey import shown
from common.serve.metrics import CONTENT_TYPE
from common.serve.playgate import PlayGate, PlayRequest
from common.serve.workerctx import SECRET_HEADER, WorkerContext
from common.serve.workersviewers import node_hls_viewers

log = logging.getLogger("livecdn.workers")

ASK_TIMEOUT = 2.0
"""Seconds a sibling has to answer before the merged answer goes without it."""
METRICS_PATH = "/metrics"
ASK_LIMIT = 16 * 1024 * 1024
"""Bytes of a sibling's answer at most."""
SIBLING_PULLS = "livecdn_worker_sibling_pulls"
"""The gauge of a worker's upstreams fed by a sibling: each is a viewer on that sibling,
which the merged viewers leave out."""
MAX_GAUGES = ("livecdn_draining",)
"""Gauges merged by their largest value (the node's state), not summed."""

Answer = Response | StreamingResponse | Upgrade
Route = Callable[[Request], Awaitable[Answer]]
T = TypeVar("T")


async def each_sibling(
    ctx: WorkerContext, ask: Callable[[int], Awaitable[T | None]]
) -> dict[int, T]:
    """`ask(i)` of every sibling `i` at once: the answers (not None) by worker index."""
    answers: dict[int, T] = {}

    async def one(i: int) -> None:
        if (got := await ask(i)) is not None:
            answers[i] = got

    async with trio.open_nursery() as nursery:
        for i in ctx.siblings():
            nursery.start_soon(one, i)
    return answers


async def ask_siblings(ctx: WorkerContext, req: Request) -> tuple[dict[int, bytes], dict[int, str]]:
    """GET `req`'s path and query from every sibling, at once: their bodies (2xx and 404)
    by worker index, and why the others gave none."""
    target = req.target if req.target.startswith("/") else req.path
    missing: dict[int, str] = {}

    async def ask(i: int) -> bytes | None:
        try:
            got = await fetch(
                "GET",
                ctx.url(i) + target,
                timeout=ASK_TIMEOUT,
                limit=ASK_LIMIT,
                headers=[(SECRET_HEADER, ctx.secret), *_auth(req)],
            )
        except (OSError, trio.TooSlowError, Exception) as exc:  # any failure skips it
            missing[i] = f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__
            return None
        if got.status < 300 or got.status == 404:
            return got.body
        missing[i] = f"HTTP {got.status}"
        return None

    answers = await each_sibling(ctx, ask)
    for i, why in sorted(missing.items()):
        log.warning("worker %d did not answer %s: %s", i, req.path, why)
    return answers, missing


def json_docs(bodies: dict[int, bytes], missing: dict[int, str] | None = None) -> dict[int, dict]:
    """The JSON objects among `bodies`, by worker index; a body that is not JSON is named
    in `missing` (if given)."""
    docs: dict[int, dict] = {}
    for i, body in bodies.items():
        try:
            doc = json.loads(body)
        except ValueError:
            if missing is not None:
                missing[i] = "not JSON"
            continue
        if isinstance(doc, dict):
            docs[i] = doc
    return docs


PEER_HEADER = "x-livecdn-peer"
"""Header of a sibling's request on a private port: the peer of the request it forwards
(trusted only with the run's secret), so the sibling judges that request, not a loopback one."""
FORWARDED = {"host": "x-livecdn-host", "origin": "x-livecdn-origin",
             "sec-fetch-site": "x-livecdn-fetch-site"}  # fmt: skip
"""The headers the admin rule reads besides the credentials, passed on under these names."""
NO_CLIENT_HOST = "sibling.invalid"
"""The Host a private port's request is judged with when it forwards no client's request (a
mirror's pull, an HLS fetch): not a loopback name, so it is never an admin's."""


def auth_headers(req: Request) -> list[tuple[str, str]]:
    """What a sibling needs to judge `req` as this worker does (the admin rule): its
    credentials, its peer and the headers the rule reads."""
    headers = [(k, v) for k, v in req.headers.items() if k in ("authorization", "cookie")]
    headers.append((PEER_HEADER, req.peer))
    headers += [(FORWARDED[k], v) for k, v in req.headers.items() if k in FORWARDED]
    return headers


def as_forwarded(req: Request) -> Request:
    """A sibling's request on a private port (its secret proven) as the request it forwards:
    that request's peer and Host/Origin/Sec-Fetch-Site; with none forwarded, a request of no
    client, judged with a Host that is no loopback name. A loopback peer on a private port is
    always a sibling, never by itself an admin."""
    headers = {k: v for k, v in req.headers.items() if k not in FORWARDED}
    peer = req.headers.get(PEER_HEADER)
    if peer is None:
        headers["host"] = NO_CLIENT_HOST
        return replace(req, headers=headers)
    for name, carried in FORWARDED.items():
        if carried in req.headers:
            headers[name] = req.headers[carried]
    return replace(req, headers=headers, peer=peer)


_auth = auth_headers


# ---------------------------------------------------------------------- metrics


def merge_metrics(
    texts: dict[int, str], missing: dict[int, str], hls: dict[str, int] | None = None
) -> bytes:
    """One exposition for the node from each worker's (by index): counters and gauges of the
    same name and labels summed (MAX_GAUGES: the largest), the viewers on HTTP-FLV less the
    sibling pulls (an edge's are worker 0's: it alone pulls from outside; an origin's are
    labelled with the worker they pull from, the stream's owner), the HLS viewers from
    `hls` (each viewer once, by stream: `node_hls_viewers`) when known, livecdn_workers{state},
    livecdn_worker_viewers{worker}, and a comment naming each silent worker."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    worker_viewers: dict[int, float] = {}
    for i in sorted(texts):
        worker_viewers[i] = 0.0
        for fam in text_string_to_metric_families(texts[i]):
            if fam.name == "livecdn_viewers":
                worker_viewers[i] += sum(s.value for s in fam.samples)
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                values[fam.name] = {}
            merged = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if fam.name in MAX_GAUGES:
                    merged[key] = max(merged.get(key, s.value), s.value)
                else:
                    merged[key] = merged.get(key, 0.0) + s.value
    pulls = sum(values.get(SIBLING_PULLS, {}).values())
    pulled_from: dict[int, float] = {}  # an origin's mirrors are labelled by their owner
    for (_, labels), n in values.get(SIBLING_PULLS, {}).items():
        owner = dict(labels).get("worker", "0")
        i = int(owner) if owner.isdigit() else 0
        pulled_from[i] = pulled_from.get(i, 0.0) + n
    flv = ("livecdn_viewers", (("protocol", "flv"),))
    if pulls and flv in values.get("livecdn_viewers", {}):
        values["livecdn_viewers"][flv] = max(0.0, values["livecdn_viewers"][flv] - pulls)
    hls_row = ("livecdn_viewers", (("protocol", "hls"),))
    if hls is not None and hls_row in values.get("livecdn_viewers", {}):
        values["livecdn_viewers"][hls_row] = float(sum(hls.values()))
    state = Metric("livecdn_workers", "Worker processes of this node, by state.", "gauge")
    state.add_sample("livecdn_workers", {"state": "answered"}, len(texts))
    state.add_sample("livecdn_workers", {"state": "missing"}, len(missing))
    own = Metric(
        "livecdn_worker_viewers",
        "Viewers of each worker that answered (every protocol; sibling pulls left out).",
        "gauge",
    )
    for i, n in sorted(worker_viewers.items()):
        own.add_sample("livecdn_worker_viewers", {"worker": str(i)}, n - pulled_from.get(i, 0.0))
    for name, fam in families.items():
        for (sample, labels), value in values[name].items():
            fam.add_sample(sample, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([state, own, *families.values()]))
    notes = "".join(
        f"# worker {i} did not answer: {why.replace(chr(10), ' ')}\n"
        for i, why in sorted(missing.items())
    )
    return notes.encode() + generate_latest(registry)


class _Fixed:
    """A collector of families already built."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


# ---------------------------------------------------------------------- API


def merge_streams_api(
    ctx: WorkerContext,
    docs: dict[int, dict],
    missing: dict[int, str],
    hls: dict[str, int] | None = None,
) -> tuple[dict, int]:
    """One /api/streams answer (or one stream's) from each worker's: per stream the viewers
    summed (less the sibling pulls, which are viewers of a sibling; HLS viewers from `hls`,
    each once, when known), the upstream that comes from outside the node, and "workers":
    who answered and who did not; its HTTP status."""
    if not docs:
        return {"error": "no worker answered", "workers": _who(ctx, docs, missing)}, 503
    base = dict(docs[min(docs)])
    if isinstance(base.get("streams"), list):
        merged: dict[tuple[str, str], dict] = {}
        for i in sorted(docs):
            for info in docs[i].get("streams", []):
                _merge_stream(ctx, merged, info)
        base["streams"] = [merged[k] for k in sorted(merged)]
        status = 200
    else:
        singles = [d for _, d in sorted(docs.items()) if "app" in d and "name" in d]
        if not singles:
            base["workers"] = _who(ctx, docs, missing)
            return base, 404
        merged = {}
        for info in singles:
            _merge_stream(ctx, merged, info)
        base = next(iter(merged.values()))
        status = 200
    for info in merged.values():
        info.pop(_FED, None)
    if hls is not None:
        for info in merged.values():
            _count_hls_once(info, hls)
    base["workers"] = _who(ctx, docs, missing)
    return base, status


def _count_hls_once(info: dict, hls: dict[str, int]) -> None:
    """A merged stream's HLS viewers (and total) with each viewer once."""
    viewers = info.get("viewers")
    if not isinstance(viewers, dict) or not isinstance(viewers.get("hls"), int | float):
        return
    once = hls.get(f"{info.get('app')}/{info.get('name')}", 0)
    if isinstance(viewers.get("total"), int | float):
        viewers["total"] += once - viewers["hls"]
    viewers["hls"] = once


def _merge_stream(ctx: WorkerContext, merged: dict[tuple[str, str], dict], info: dict) -> None:
    key = (str(info.get("app")), str(info.get("name")))
    up = info.get("upstream")
    from_sibling = isinstance(up, dict) and ctx.sibling_of(str(up.get("parent")))
    viewers = dict(info.get("viewers") or {})
    if from_sibling:  # this worker's pull is one HTTP-FLV viewer of its sibling
        for field in ("flv", "total"):
            if field in viewers:
                viewers[field] -= 1
    if key not in merged:
        first = dict(info)
        first["viewers"] = viewers
        if from_sibling:
            first["upstream"] = None
            first[_FED] = True
        merged[key] = first
        return
    into = merged[key]
    for field, n in viewers.items():
        if isinstance(n, int | float):
            into["viewers"][field] = into["viewers"].get(field, 0) + n
    if into.get(_FED) and not from_sibling:  # the worker that owns it describes it
        summed = into["viewers"]
        into.clear()
        into.update(info)
        into["viewers"] = summed
    if into.get("upstream") is None and not from_sibling and up is not None:
        into["upstream"] = up


_FED = "_fed_by_sibling"
"""Marks a merged stream described so far only by workers fed by a sibling."""


def _who(ctx: WorkerContext, docs: dict[int, Any], missing: dict[int, str]) -> dict:
    return {
        "count": ctx.count,
        "answered": sorted(docs),
        "missing": {str(i): why for i, why in sorted(missing.items())},
    }


def _clamp(doc: dict) -> dict:
    for info in doc.get("streams", []) if isinstance(doc.get("streams"), list) else [doc]:
        for field, n in (info.get("viewers") or {}).items():
            if isinstance(n, int | float) and n < 0:
                info["viewers"][field] = 0
    return doc


# ---------------------------------------------------------------------- routes


def merged_route(ctx: WorkerContext, local: Route) -> Route:
    """`local` (this worker's routes) with GET /metrics and the streams API answered for
    the whole node. Anyone may GET them and each merge asks every worker, so a worker
    merges one at a time, and the requests that waited for a merge begun after they came
    take its answer (the HLS viewer count inside is shared for a while too:
    `workersviewers.COUNT_FRESH`)."""

    async def route(req: Request) -> Answer:
        if req.method != "GET" or not (
            req.path == METRICS_PATH
            or req.path == STREAMS_API
            or req.path.startswith(STREAMS_API + "/")
        ):
            return await local(req)
        mine = await local(req)
        if not isinstance(mine, Response) or (mine.status >= 300 and mine.status != 404):
            return mine  # refused here (admin, bad name): the siblings would say the same
        arrived = latest[0]  # merges begun before this request came
        async with merging:  # one merge at a time, so a flood of scrapes costs one each turn
            number, target, answer = latest
            if answer is not None and target == req.target and number > arrived:
                return replace(answer, headers=list(answer.headers))  # begun after it came
            latest[:] = [number + 1, req.target, None]
            latest[2] = answer = await _merge(ctx, req, mine)
            return answer

    merging = trio.Lock()
    latest: list[Any] = [0, None, None]  # the last merge: its number, target and answer
    return route


async def _merge(ctx: WorkerContext, req: Request, mine: Response) -> Response:
    """`mine` and the siblings' answers to `req` as the node's."""
    hls: dict[str, int] | None = None

    async def count_hls() -> None:
        nonlocal hls
        hls = await node_hls_viewers(ctx)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count_hls)
        answers, missing = await ask_siblings(ctx, req)
    answers[ctx.index] = mine.body
    if req.path == METRICS_PATH:
        texts = {i: body.decode(errors="replace") for i, body in answers.items()}
        return Response(200, merge_metrics(texts, missing, hls), CONTENT_TYPE)
    doc, status = merge_streams_api(ctx, json_docs(answers, missing), missing, hls)
    return Response.json(_clamp(doc), status)


SIBLING: ContextVar[trio.lowlevel.Task | None] = ContextVar("livecdn_sibling", default=None)
"""The private port's connection task that proved the run's secret (its plays are a sibling
worker's pulls). A task, not a flag: trio copies the context into every task spawned from
it (a cache fill, an upstream pull), and those must not count as serving a sibling."""


def is_sibling() -> bool:
    """Whether the running task serves a sibling's request on a private port (only the
    connection's own task does, never a task it started)."""
    task = SIBLING.get()
    return task is not None and task is trio.lowlevel.current_task()


def private_route(ctx: WorkerContext, local: Route) -> Route:
    """The routes of a worker's private port: `local` for a sibling that proves the run's
    secret (in a header, never in the URL, so no log line or hook sees it), 403 for anyone
    else."""

    refused = LogBudget(log, "requests refused on a worker's private port")

    async def route(req: Request) -> Answer:
        if not ctx.proves(req.headers):
            refused.info(
                trio.current_time(),
                "refused %s %s on a worker's private port from %s",
                req.method,
                shown(req.path),
                req.peer,
            )
            return Response.text(403, "a worker's private port serves only its siblings")
        SIBLING.set(trio.lowlevel.current_task())  # this connection's task serves siblings
        return await local(as_forwarded(req))

    return route


def exempt_siblings(gate: PlayGate) -> None:
    """Let a sibling worker's pulls past `gate`'s checks (play tokens, on_play hooks,
    draining): the viewers they feed passed the gate on their own worker, and a hook must not
    see, count or refuse the node's internal pulls."""
    admit, ended = gate.admit, gate.ended

    async def sibling_admit(req: PlayRequest) -> None:
        if not is_sibling():
            await admit(req)

    def sibling_ended(req: PlayRequest) -> None:
        if not is_sibling():
            ended(req)

    gate.admit = sibling_admit  # type: ignore[method-assign]
    gate.ended = sibling_ended  # type: ignore[method-assign]
