"""What a running topology shows and leaves behind: the URL table, its state file (for
status and down), every node's command line and a Prometheus scrape config."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import stat
import time
from pathlib import Path
from urllib.parse import urlencode

from common.proto.playtoken import play_query
from topology.deployment import Deployment, url_host
from topology.publisher import signed_url
from topology.runsecrets import FILE as SECRETS_FILE

STATE_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "livecdn-state"


def url_table(dep: Deployment) -> str:
    """The URLs a user needs, as a table."""
    topo = dep.topo
    rows = [("what", "url")]
    streams = [p.stream for p in topo.publishers] or ["live/demo"]
    now = time.time()
    for stream in streams:  # the operator's own terminal: a signed URL, valid for a day
        for o in [o for o in topo.origins if o.name == _origin_of(topo, stream)]:
            url = signed_url(f"{dep.url(o.name, 'rtmp')}/{stream}", o.config["publish_secret"],
                             now, PUBLISH_URL_TTL)  # fmt: skip
            signed = " (signed, 24 h)" if o.config["publish_secret"] else ""
            rows.append((f"publish {stream}{signed}", url))
    if (secrets := dep.run_dir / SECRETS_FILE).exists():
        rows.append(("secrets (mode 0600)", str(secrets)))
    play_secret = topo.balancer.config["play_secret"] if topo.balancer else ""
    if "balancer" in dep.nodes:  # the page to watch the deployment from (and play its first stream)
        console = f"{dep.url('balancer', 'http')}/?play={streams[0]}"
        if play_secret:
            token = play_query(play_secret, streams[0], int(now + PUBLISH_URL_TTL))
            console += "&" + urlencode({"query": token})
        if dep.control_port:  # where the page finds the control API (a fragment reaches no server)
            console += f"#launcher={control_url(dep)}&token={dep.console_token}"
        rows.insert(1, ("console (open in a browser)", console))
    if dep.control_port:
        rows.append(("control API (console_token)", control_url(dep) + "/api/topology"))
    for stream in streams:
        # with a play_secret, the play URLs shown are signed for a day
        signed = " (signed, 24 h)" if play_secret else ""
        token = play_query(play_secret, stream, int(now + PUBLISH_URL_TTL)) if signed else ""

        def play(url: str, token: str = token) -> str:
            return url + ("&" if "?" in url else "?") + token if token else url

        if "balancer" in dep.nodes:
            b = dep.url("balancer", "http")
            rows.append((f"play {stream} (balancer, HTTP-FLV){signed}", play(f"{b}/{stream}.flv")))
            rows.append((f"play {stream} (balancer, HLS){signed}", play(f"{b}/{stream}.m3u8")))
            app, name = stream.split("/")
            route = f"{b}/api/route?app={app}&name={name}&proto=rtmp"
            rows.append((f"RTMP route for {stream}{signed}", play(route)))
        for e in topo.edges:
            flv, rtmp = (
                f"{dep.url(e.name, 'http')}/{stream}.flv",
                f"{dep.url(e.name, 'rtmp')}/{stream}",
            )
            rows.append((f"play {stream} at {e.name}{signed}", f"{play(flv)}  {play(rtmp)}"))
    for name, node in dep.nodes.items():
        base = dep.url(name, "http")
        api = "/api/edges" if node.kind == "balancer" else "/api/streams"
        rows.append((f"{name} ({node.kind}) page / API / metrics",
                     f"{base}/  {base}{api}  {base}/metrics"))  # fmt: skip
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {a.ljust(width)}  {b}" for a, b in rows)


def control_url(dep: Deployment) -> str:
    """The launcher's control API (topology/controlapi.py)."""
    return f"http://127.0.0.1:{dep.control_port}"


PUBLISH_URL_TTL = 24 * 3600.0  # seconds the table's signed publish URLs stay valid


def _origin_of(topo, stream: str) -> str:
    """The origin `stream` is published to: its publisher's, else the first origin."""
    pubs = [p.origin for p in topo.publishers if p.stream == stream]
    return pubs[0] if pubs else (topo.origins[0].name if topo.origins else "")


class StateError(PermissionError):
    """The state directory or a state file is not this user's own: it is not trusted."""


def state_dir() -> Path:
    """STATE_DIR, made private: created 0700; StateError if it is a symlink, another user's,
    or writable by others (it holds the detached launchers' logs, whose URL tables carry
    signed URLs, and state files that say where the console token goes)."""
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = STATE_DIR.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise StateError(f"{STATE_DIR} is not a directory of this user's: not used")
    if info.st_mode & 0o022:
        raise StateError(f"{STATE_DIR} is writable by others: not used (chmod 700 it)")
    if info.st_mode & 0o077:
        STATE_DIR.chmod(0o700)
    return STATE_DIR


def private_file(path: Path) -> int:
    """A new file descriptor writing `path` from scratch, readable by its owner only (an
    existing symlink there is refused, not followed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def state_path(name: str) -> Path:
    """Where a running topology named `name` records itself (for status and down); read it
    with read_state, which checks who wrote it."""
    return STATE_DIR / f"{name}.json"


def read_state(name: str) -> dict | None:
    """The state a detached topology `name` recorded (write_state); None if there is none.
    StateError (one line) if the state directory or file is not this user's own or is
    writable by others: a planted file must not say where to send the console token or
    whom to signal."""
    path = state_dir() / f"{name}.json"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symlink
        raise StateError(f"{path}: not trusted ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise StateError(f"{path} is not a file of this user's: not trusted")
        if info.st_mode & 0o022:
            raise StateError(f"{path} is writable by others: not trusted")
        try:
            state = json.loads(f.read(1 << 20))
        except ValueError as exc:
            raise StateError(f"{path} is not a state file: {exc}") from None
    if not isinstance(state, dict):
        raise StateError(f"{path} is not a state file")
    return state


def write_state(dep: Deployment) -> Path:
    """Record the running deployment (launcher pid, nodes, ports), readable by this user only."""
    state_dir()
    path = state_path(dep.topo.name)
    nodes = {
        n.name: {
            "kind": n.kind,
            "pid": n.proc.pid if n.proc else None,
            "host": n.host,
            "http_port": n.http_port,
            "rtmp_port": n.rtmp_port,
        }  # fmt: skip
        for n in dep.nodes.values()
    }
    state = {
        "topology": str(dep.topo.path),
        "launcher_pid": os.getpid(),
        "run_dir": str(dep.run_dir),
        "control_port": dep.control_port,  # the launcher's control API (console_token)
        "nodes": nodes,
    }
    # whole or not at all: `status`, `down` and scripts may read it while it changes
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(private_file(tmp), "w") as f:
        f.write(json.dumps(state, indent=1))
    os.replace(tmp, path)
    return path


def remove_state(dep: Deployment) -> None:
    """Remove the state file, if this process wrote it."""
    with contextlib.suppress(OSError):  # StateError too: a file not ours is left alone
        if (read_state(dep.topo.name) or {}).get("launcher_pid") == os.getpid():
            state_path(dep.topo.name).unlink()


def write_commands(dep: Deployment) -> Path:
    """Every node's command line, to restart one by hand."""
    path = dep.run_dir / "commands.sh"
    lines = ["# each node of this topology; restart one by running its line"]
    lines += [f"# {n.name}\n{shlex.join(n.cmd)} &" for n in dep.nodes.values()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_prometheus(dep: Deployment) -> Path:
    """A Prometheus scrape config for every node, next to the run."""
    targets = ", ".join(f"'{url_host(n.host)}:{n.http_port}'" for n in dep.nodes.values())
    path = dep.run_dir / "prometheus.yml"
    path.write_text(
        "scrape_configs:\n"
        f"  - job_name: livecdn-{dep.topo.name}\n"
        "    scrape_interval: 5s\n"
        f"    static_configs:\n      - targets: [{targets}]\n"
    )
    return path
