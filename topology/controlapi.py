"""The launcher's control API: what `topology up` shows the console of its deployment (tiers,
links, loads, processes) and lets it do (kill, restart, drain, kick, degrade or cut a link,
start a load profile, restart the edges one by one), on 127.0.0.1; every request needs the
run's console_token (Authorization: Bearer, or ?token= on a GET, for EventSource).

Its answers allow any page's origin (CORS *): the console page is served by the balancer, at
whatever address the operator reaches it by. That gives a stranger's page nothing, since
nothing answers without the token, which only the console page's URL fragment holds."""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

import trio

from common.net.conn import Conn, ConnClosed, accept_loop, listen_socket
from common.net.http import (
    LAST_CHUNK,
    HttpLimits,
    Request,
    Response,
    StreamingResponse,
    chunk,
    serve_http,
)
from common.net.httpclient import HttpClientError, fetch
from common.proto.admin import check_admin
from common.serve.console import Console
from topology.deployment import Deployment, LoadRun
from topology.faults import FaultFailed, apply_fault
from topology.linkproxy import LinkSettings
from topology.loadrun import run_file_load
from topology.rolling import RollingRestart, plan_restart, run_restart
from topology.schema import FaultSpec, Topology, is_external

T = TypeVar("T")
HOST = "127.0.0.1"
LIMITS = HttpLimits(max_header_bytes=8 * 1024, max_body_bytes=4 * 1024, keepalive_timeout=10.0)
MAX_CONNECTIONS = 64
MAX_SUBSCRIBERS = 6
"""Live feeds (/api/events) at once: the rest of MAX_CONNECTIONS stays for requests."""
STOP_WAIT = 5.0  # seconds a killed node's process may take to be reaped
NODE_TIMEOUT = 5.0  # seconds the balancer or an origin may take to answer an action

LINK_LIMITS = {"delay_ms": 60_000.0, "jitter_ms": 60_000.0, "loss": 1.0, "rate_kbps": 10_000_000.0}
"""The link settings a POST may change, and the largest value of each (the least is 0)."""


NODE_ACTIONS = ("kill", "restart", "drain", "undrain")
"""The actions on one node (named first), which a rolling restart's current edge refuses."""


class ApiError(Exception):
    """A request the API refuses: `status` and the reason sent as {"error": reason}."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Action:
    """A POST's action ("kill", "restart", "drain", "undrain", "kick", "link", "cut",
    "restore", "start", "rolling-restart", "rolling-cancel") and what it names (node, edge, app and name, edge and parent, index)."""

    what: str
    args: tuple[str, ...]


def parse_action(path: str) -> Action | None:
    """The action a POST to `path` asks for; None for no action's path."""
    match path.strip("/").split("/"):
        case ["api", "nodes", node, ("kill" | "restart") as what]:
            return Action(what, (node,))
        case ["api", "edges", edge, ("drain" | "undrain") as what]:
            return Action(what, (edge,))
        case ["api", "streams", app, name, "kick"]:
            return Action("kick", (app, name))
        case ["api", "links", edge, parent]:
            return Action("link", (edge, parent))
        case ["api", "links", edge, parent, ("cut" | "restore") as what]:
            return Action(what, (edge, parent))
        case ["api", "loads", index, "start"]:
            return Action("start", (index,))
        case ["api", "rolling-restart"]:
            return Action("rolling-restart", ())
        case ["api", "rolling-restart", "cancel"]:
            return Action("rolling-cancel", ())
    return None


def link_changes(body: bytes) -> dict[str, float]:
    """A link POST's body ({"delay_ms", "jitter_ms", "loss", "rate_kbps"}, any subset) as
    LinkProxy.update's keywords (rate in Mbit/s); ApiError 400 naming what is wrong."""
    try:
        given = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(given, dict) or not given:
        raise ApiError(400, f"give an object with any of {', '.join(LINK_LIMITS)}")
    changes: dict[str, float] = {}
    for key, value in given.items():
        if key not in LINK_LIMITS:
            raise ApiError(400, f"{key[:40]!r} is not a link setting ({', '.join(LINK_LIMITS)})")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not 0 <= value <= LINK_LIMITS[key]:
            raise ApiError(400, f"{key} must be a number in 0..{LINK_LIMITS[key]:g}")
        changes[key] = float(value)
    if "rate_kbps" in changes:
        changes["rate_mbps"] = changes.pop("rate_kbps") / 1000
    return changes


def tiers(topo: Topology) -> dict[str, int]:
    """Each origin's and edge's tier: origins 0, an edge 1 + the highest of its parents'
    (external parents count as origins)."""
    out = {o.name: 0 for o in topo.origins}
    for e in topo.edges_in_start_order():
        out[e.name] = 1 + max((out.get(p, 0) for p in e.parents), default=0)
    return out


def link_json(edge: str, parent: str, s: LinkSettings) -> dict:
    """A link as /api/topology shows it."""
    return {"edge": edge, "parent": parent, "delay_ms": s.delay_ms, "jitter_ms": s.jitter_ms,
            "loss": s.loss, "rate_kbps": s.rate_mbps * 1000, "state": "cut" if s.down else "up"}  # fmt: skip


def running(dep: Deployment, name: str) -> bool:
    """Whether node `name`'s latest process is running."""
    proc = dep.nodes[name].proc
    return proc is not None and proc.poll() is None


def topology_json(dep: Deployment) -> dict:
    """GET /api/topology: the deployment's nodes (tiers, parents, URLs, process state), its
    links' settings and its load profiles."""
    topo = dep.topo
    tier = tiers(topo)
    nodes = []
    for spec in [*topo.origins, *topo.edges]:
        node, up = dep.nodes[spec.name], running(dep, spec.name)
        parents = [p for p in getattr(spec, "parents", []) if not is_external(p)]
        nodes.append({
            "name": node.name, "kind": node.kind, "tier": tier[node.name], "parents": parents,
            "balanced": bool(getattr(spec, "balanced", False)), "http": dep.url(node.name, "http"),
            "rtmp": dep.url(node.name, "rtmp"), "state": "running" if up else "stopped",
            "pid": node.proc.pid if up and node.proc else None,
        })  # fmt: skip
    loads = [
        {"index": i, "profile": spec.profiles, "players": spec.players, "state": run.state}
        for i, (spec, run) in enumerate(zip(topo.loads, dep.loads, strict=True))
    ]
    return {
        "name": topo.name,
        "balancer": {"http": dep.url("balancer", "http")} if "balancer" in dep.nodes else None,
        "nodes": nodes,
        "links": [link_json(e, p, proxy.settings) for (e, p), proxy in dep.proxies.items()],
        "loads": loads,
    }


def load_json(run: LoadRun) -> dict:
    """GET /api/loads/INDEX: its state and live samples."""
    return {"state": run.state, "samples": list(run.samples)}


def refusal(req: Request, token: str) -> StreamingResponse | None:
    """None if `req` carries `Authorization: Bearer <token>` (or, on a GET, `?token=`); else
    401 (none) or 403 (wrong), and the connection closes after it, so that a stranger holds
    none of the slots an authorized console needs."""
    given = req.query.get("token") if req.method in ("GET", "HEAD") else None
    if given is not None:
        if hmac.compare_digest(given.encode(), token.encode()):
            return None
        status = 403
    else:
        verdict = check_admin(token, req.headers, req.peer)
        if verdict.allowed:
            return None
        status = verdict.status
    reason = "wrong console token" if status == 403 else (
        "the control API needs Authorization: Bearer <console_token> (in the run's "
        "secrets.toml)")  # fmt: skip
    headers = [("www-authenticate", "Bearer")] if status == 401 else []
    return closing(status, {"error": reason}, headers)


def closing(status: int, obj: object, headers: list[tuple[str, str]]) -> StreamingResponse:
    """A JSON answer after which the connection closes."""
    body = json.dumps(obj).encode() + b"\n"

    async def send(conn: Conn) -> None:
        conn.write(chunk(body) + LAST_CHUNK)
        try:
            with trio.move_on_after(1.0):
                await conn.drain()
        except ConnClosed:
            pass

    return StreamingResponse(status, "application/json", send, headers)


def fault_for(action: Action) -> FaultSpec:
    """The fault (topology/faults.py) that carries out a kill, restart, drain, undrain, cut
    (a link down) or restore (the link as the file has it, up)."""
    if action.what in ("cut", "restore"):
        edge, parent = action.args
        return FaultSpec(action="down" if action.what == "cut" else "restore", edge=edge,
                         parent=parent)  # fmt: skip
    return FaultSpec(action=action.what, node=action.args[0])


class ControlApi:
    """The control API of deployment `dep`, its POSTs authorized by `token`."""

    def __init__(self, dep: Deployment, token: str) -> None:
        self.dep = dep
        self.token = token
        self.events = Console(self._snapshot)
        self._acting = trio.Lock()  # one action at a time: no two restarts of one node
        self.rolling: RollingRestart | None = None
        """The latest rolling restart of the edges (GET /api/rolling-restart)."""

    async def serve(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (a free port) until cancelled; `task_status.started(port)`."""
        sock = listen_socket(HOST, 0)
        task_status.started(sock.getsockname()[1])
        await accept_loop(sock, self._connection, max_connections=MAX_CONNECTIONS)

    async def _connection(self, conn: Conn) -> None:
        await serve_http(conn, self.handle, LIMITS)

    async def _snapshot(self, _req: Request) -> dict:
        return topology_json(self.dep)

    async def handle(self, req: Request) -> Response | StreamingResponse:
        """Answer one request (GETs read, POSTs act)."""
        try:
            if req.method not in ("GET", "HEAD", "POST"):
                raise ApiError(405, "GET or POST")
            if (refused := refusal(req, self.token)) is not None:
                return refused
            if req.method in ("GET", "HEAD"):
                return self._read(req)
            action = parse_action(req.path)
            if action is None:
                raise ApiError(404, f"no action at {req.path[:80]}")
            what = f"console: {action.what} {'/'.join(action.args)} (from {req.peer})"
            async with self._acting:
                try:
                    done = await self._act(action, req)
                except ApiError as exc:
                    print(f"{what}: refused ({exc.status}: {exc})", flush=True)
                    raise
            print(what, flush=True)
            return Response.json(done)
        except ApiError as exc:
            return Response.json({"error": str(exc)}, exc.status)

    def _read(self, req: Request) -> Response | StreamingResponse:
        if req.path == "/api/topology":
            return Response.json(topology_json(self.dep))
        if req.path == "/api/events":
            if self.events.clients >= MAX_SUBSCRIBERS:
                return closing(503, {"error": f"{MAX_SUBSCRIBERS} feeds already follow"}, [])
            return self.events.events(req)
        if req.path == "/api/rolling-restart":
            return Response.json(self.rolling.as_json() if self.rolling else {"state": "none"})
        match req.path.strip("/").split("/"):
            case ["api", "loads", index]:
                return Response.json(load_json(self.dep.loads[self._load_index(index)]))
        raise ApiError(404, f"not found: {req.path[:80]}")

    def _load_index(self, text: str) -> int:
        if not text.isdigit() or int(text) >= len(self.dep.loads):
            raise ApiError(404, f"no load profile {text[:20]!r} (0..{len(self.dep.loads) - 1})")
        return int(text)

    def _node(self, name: str, kinds: tuple[str, ...] = ("origin", "edge")):
        node = self.dep.nodes.get(name)
        if node is None or node.kind not in kinds:
            raise ApiError(404, f"no {' or '.join(kinds)} named {name[:40]!r}")
        return node

    def _proxy(self, edge: str, parent: str):
        proxy = self.dep.proxies.get((edge, parent))
        if proxy is None:
            raise ApiError(404, f"no link from {edge[:40]!r} to {parent[:40]!r}")
        return proxy

    def _not_owned(self, action: Action) -> None:
        """ApiError 409 if `action` would act on the edge a running rolling restart owns."""
        owned = self.rolling.owns() if self.rolling is not None else None
        if owned is None or action.what not in NODE_ACTIONS or action.args[0] != owned.edge:
            return
        raise ApiError(
            409,
            f"{owned.edge} is being restarted by the rolling restart ({owned.state}): wait "
            "for it, or cancel the restart (POST /api/rolling-restart/cancel)",
        )

    async def _act(self, action: Action, req: Request) -> dict:
        what, args = action.what, action.args
        self._not_owned(action)
        if what == "kill":
            node = self._node(args[0])
            if not running(self.dep, node.name):
                raise ApiError(409, f"{node.name} is not running")
            await apply_fault(self.dep, fault_for(action))
            with trio.move_on_after(STOP_WAIT):
                await node.proc.wait()
            return {"node": node.name, "state": "running" if running(self.dep, node.name)
                    else "stopped"}  # fmt: skip
        if what == "restart":
            node = self._node(args[0])
            if running(self.dep, node.name):
                raise ApiError(409, f"{node.name} is running")
            await apply_fault(self.dep, fault_for(action))
            return {"node": node.name, "state": "running"}
        if what in ("drain", "undrain"):
            self._node(args[0], ("edge",))
            if "balancer" not in self.dep.nodes:
                raise ApiError(404, "this topology has no balancer")
            await self._remote(apply_fault(self.dep, fault_for(action)))
            return {"edge": args[0], "draining": what == "drain"}
        if what == "kick":
            return await self._kick(*args, req.query.get("ban"))
        if what == "start":
            return self._start_load(self._load_index(args[0]))
        if what == "rolling-restart":
            return self._start_rolling_restart()
        if what == "rolling-cancel":
            return self._cancel_rolling_restart()
        proxy = self._proxy(*args)
        if what == "link":
            proxy.update(**link_changes(req.body))
        else:
            await apply_fault(self.dep, fault_for(action))
        return link_json(*args, proxy.settings)

    async def _remote(self, call: Awaitable[T]) -> T:
        """What `call` (a request to a node) returns; ApiError 502 when it fails or is refused."""
        try:
            with trio.fail_after(NODE_TIMEOUT):
                return await call
        except (OSError, HttpClientError, FaultFailed, trio.TooSlowError) as exc:
            raise ApiError(502, f"{type(exc).__name__}: {exc}") from None

    async def _kick(self, app: str, name: str, ban: str | None) -> dict:
        """Kick the publisher of APP/NAME at the origin that has it (with its admin token)."""
        if ban is not None and not (ban.isdigit() and len(ban) <= 9):
            raise ApiError(400, "ban must be whole seconds")
        path = f"/api/streams/{quote(app, safe='')}/{quote(name, safe='')}"
        for o in self.dep.topo.origins:
            if not running(self.dep, o.name):
                continue
            url = self.dep.url(o.name, "http") + path
            auth = [("authorization", f"Bearer {o.config['admin_token']}")]
            if (await self._remote(fetch("GET", url, headers=auth))).status != 200:
                continue
            url += f"?ban={ban}" if ban else ""
            answer = await self._remote(fetch("DELETE", url, headers=auth))
            if answer.status != 200:
                raise ApiError(502, f"{o.name} answered {answer.status}: {answer.body[:200]!r}")
            return {"origin": o.name, **json.loads(answer.body)}
        raise ApiError(404, f"no origin has {app[:40]}/{name[:40]} live")

    def _start_rolling_restart(self) -> dict:
        """Start restarting the edges one by one (topology/rolling.py); its progress."""
        if self.rolling is not None and self.rolling.state == "running":
            raise ApiError(409, "a rolling restart is running")
        if self.dep.supervisor is None:
            raise ApiError(503, "the deployment is not up")
        run = plan_restart(self.dep)
        if not run.steps:
            raise ApiError(404, "this topology has no edges")
        self.rolling = run
        self.dep.supervisor.start_soon(run_restart, self.dep, run)
        return run.as_json()

    def _cancel_rolling_restart(self) -> dict:
        """Stop the running rolling restart once the edge it works on is back (started)."""
        if self.rolling is None or self.rolling.state != "running":
            raise ApiError(409, "no rolling restart is running")
        self.rolling.cancelling = True
        return self.rolling.as_json()

    def _start_load(self, index: int) -> dict:
        run, sup = self.dep.loads[index], self.dep.supervisor
        if run.state == "running":
            raise ApiError(409, f"load profile {index} is running")
        if sup is None:
            raise ApiError(503, "the deployment is not up")
        sup.start_soon(lambda: run_file_load(self.dep, index, self.dep.topo.loads[index], now=True))
        run.state = "running"  # from now: a second start is refused
        return {"index": index, "state": "running"}
