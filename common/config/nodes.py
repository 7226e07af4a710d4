"""The config model of each node kind (origin, edge, balancer): every key declared once."""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Any, ClassVar

from common.config import checks, relayspec
from common.config.model import ConfigError, setting
from common.proto.controlauth import MIN_SECRET, check_secret
from common.proto.fdbudget import body_files

FD_RESERVE = 64
"""File descriptors kept back from connections (listeners, upstreams, files, the runtime)."""


def fd_limit() -> int:
    """This process's soft limit on open file descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_budget() -> int:
    """The most connections this process can hold: its descriptor limit less a reserve
    (FD_RESERVE, or a quarter of a small limit) and the memory files of shared bodies
    (`body_files`), so a refusal comes before EMFILE."""
    limit = fd_limit()
    return max(8, limit - min(FD_RESERVE, limit // 4) - body_files(limit))


def default_max_connections() -> int:
    """Connections a node accepts by default: the budget, at most 20000."""
    return min(20000, connection_budget())


HOUR = 3600
DAY = 24 * HOUR
MAX_BAN_SECONDS = 30 * DAY
"""The longest ban a kick can set (30 days): a ban is always finite."""

LOG_LEVELS = ("debug", "info", "warning", "error")
BALANCER_POLICIES = ("round_robin", "least_load", "p2c", "consistent_hash", "bounded_hash")


def hls_target_key(text: str) -> Any:
    """The HLS target duration key of a node that packages HLS."""
    return setting(2.0, help=text, unit="s", check=checks.in_range(0.5, 60))


def hls_window_key(text: str) -> Any:
    """The HLS playlist window key of a node that packages HLS."""
    return setting(6, help=text, check=checks.in_range(1, 1000))


def hls_grace_key(text: str) -> Any:
    """How long a node keeps an ended HLS playlist."""
    return setting(30.0, help=text, unit="s", check=checks.in_range(0, DAY))


def host_key() -> Any:
    """The listen address key."""
    return setting("0.0.0.0", help="address to listen on")


def rtmp_port_key(default: int) -> Any:
    """The RTMP port key of an origin or edge."""
    return setting(
        default, help="RTMP port (0: any free port)", flags=["--rtmp"], check=checks.port
    )


def http_port_key(default: int) -> Any:
    """The HTTP port key of a node."""
    return setting(
        default, help="HTTP port (0: any free port)", flags=["--http"], check=checks.port
    )


def rtmps_port_key(default: int) -> Any:
    """The RTMPS port key of an origin or edge."""
    return setting(
        default,
        help="RTMPS port, open when tls_cert and tls_key are set (0: any free port)",
        flags=["--rtmps"],
        check=checks.port,
    )


def https_port_key(default: int) -> Any:
    """The HTTPS port key of a node."""
    return setting(
        default,
        help="HTTPS port (the HTTP routes over TLS), open when tls_cert and tls_key are set "
        "(0: any free port)",
        flags=["--https"],
        check=checks.port,
    )


def cors_origins_key() -> Any:
    """The page origins that may read a node's HTTP responses."""
    return setting(
        ["*"],
        help='page origins (CORS) allowed to read responses: ["*"] any; or e.g. '
        '["https://my.site", "null"] ("null": pages redirected by a balancer)',
        check=checks.origins,
        reloadable=True,
    )


def tls_cert_key() -> Any:
    """The certificate of a node's TLS listeners."""
    return setting("", help="PEM certificate chain of the TLS listeners (empty: no TLS)")


def tls_key_key() -> Any:
    """The private key of a node's TLS listeners."""
    return setting("", help="PEM private key of tls_cert")


def check_tls(config: Any) -> None:
    """tls_cert and tls_key come together."""
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("tls_cert and tls_key must be set together (PEM file paths)")


def log_level_key() -> Any:
    """The log level key."""
    return setting(
        "info",
        help="debug, info, warning or error",
        check=checks.one_of(*LOG_LEVELS, fold=str.lower),
        reloadable=True,
    )


def balancer_key(what: str) -> Any:
    """The balancer address key of a node that reports to it."""
    return setting(
        "",
        help=f"host:port of the balancer's control port ({what})",
        check=checks.address,
        reloadable=True,
    )


def node_id_key() -> Any:
    """The node id key of a node that reports to a balancer."""
    return setting("", help="name in the balancer (default KIND-HTTPPORT)", check=checks.node_id)


def classes_key() -> Any:
    """Viewer classes, shared by the balancer and its edges."""
    return setting(
        {},
        help="viewer classes: {name = {rate_mbps = R, ceil_mbps = C}} (needs qos_secret)",
        reloadable=True,
    )


def secret_setting(help: str, **extra: Any) -> Any:
    """A secret key: empty by default (off), else at least MIN_SECRET characters."""
    return setting("", help=help, check=checks.accepted_by(check_secret), **extra, reloadable=True)


def admin_token_key() -> Any:
    """The bearer token of the admin routes."""
    return secret_setting(
        "bearer token of the admin API (kick/ban, drain, publisher addresses); "
        f"at least {MIN_SECRET} characters; empty: admin routes answer only on loopback"
    )


def cluster_secret_key() -> Any:
    """The secret every control-plane connection authenticates with."""
    return secret_setting(
        "secret shared by the balancer, its edges and origins: each control connection "
        "authenticates with it, and edges sign their pulls with it for edges_only origins "
        f"(at least {MIN_SECRET} characters; empty: unauthenticated)"
    )


def hook_key(what: str) -> Any:
    """The URL of one HTTP hook (README, Security, Hooks)."""
    return setting(
        "",
        help=f"http(s):// URL POSTed {what} (empty: none)",
        check=checks.hook_url,
        reloadable=True,
    )


def qos_secret_key() -> Any:
    """The secret that signs class tokens."""
    return secret_setting(
        "secret shared by the balancer and edges to sign class tokens "
        f"(at least {MIN_SECRET} characters)"
    )


def play_secret_key() -> Any:
    """The secret of signed play URLs."""
    return secret_setting(
        "secret of signed play URLs (?pexp=&psig=), shared by the origins, edges and "
        f"balancer: with it, every play needs one (at least {MIN_SECRET} characters; empty: "
        "anyone may play)"
    )


@dataclass(frozen=True)
class ServeConfig:
    """Settings every node that serves viewers has (origin and edge)."""

    kind: ClassVar[str] = ""
    no_workers: ClassVar[str] = ""

    host: str = host_key()
    rtmp_port: int = rtmp_port_key(1935)
    http_port: int = http_port_key(8080)
    rtmps_port: int = rtmps_port_key(4935)
    https_port: int = https_port_key(8443)
    tls_cert: str = tls_cert_key()
    tls_key: str = tls_key_key()
    gop_cache: bool = setting(
        True, help="new viewers start at the cached keyframe (GOP)", reloadable=True
    )
    gop_max_frames: int = setting(2048, help="frames in a stream's GOP ring",
                                 check=checks.in_range(1, 1_000_000), reloadable=True)  # fmt: skip
    gop_max_bytes: int = setting(
        16 * 1024 * 1024,
        help="bytes in a stream's GOP ring",
        unit="bytes",
        check=checks.in_range(1, 1 << 34),
        reloadable=True,
    )
    max_message_size: int = setting(
        8 * 1024 * 1024,
        help="largest RTMP message accepted (at most 16777215, RTMP's 24-bit length)",
        unit="bytes",
        check=checks.in_range(1, 0xFFFFFF),
        reloadable=True,
    )
    handshake_timeout: float = setting(
        10.0, help="close a connection silent during its handshake", unit="s",
        check=checks.above(0, HOUR),
    )  # fmt: skip
    idle_timeout: float = setting(
        30.0,
        help="close a silent connection or publisher",
        unit="s",
        check=checks.above(0, DAY),
        reloadable=True,
    )
    slow_timeout: float = setting(
        10.0, help="disconnect a viewer that cannot take data for this long", unit="s",
        check=checks.above(0, HOUR), reloadable=True,
    )  # fmt: skip
    max_lag_ms: int = setting(
        5000,
        help="a viewer further behind (media time) skips to the newest keyframe",
        unit="ms",
        check=checks.in_range(1, HOUR * 1000),
        reloadable=True,
    )
    batch_ms: float = setting(
        250.0, help="the longest new frames wait for a large fan-out's next write (a few "
        "viewers get each frame at once)", unit="ms",
        check=checks.above(0, 10_000), reloadable=True,
    )  # fmt: skip
    max_connections: int = setting(
        help="connections of all listeners together; a larger value is lowered to the "
        "file-descriptor budget at start-up, with a warning",
        factory=default_max_connections,
        default_text="file-descriptor limit - 64 (- a quarter of a small limit), at most 20000",
        check=checks.in_range(1, 1 << 24),
        reloadable=True,
    )
    max_streams: int = setting(
        1000,
        help="live streams (origin) or upstreams (edge)",
        check=checks.in_range(1, 1_000_000),
        reloadable=True,
    )
    http_header_timeout: float = setting(
        10.0,
        help="time to send a request head",
        unit="s",
        check=checks.above(0, HOUR),
        reloadable=True,
    )
    http_keepalive_timeout: float = setting(
        30.0, help="an idle keep-alive connection is closed after this", unit="s",
        check=checks.above(0, DAY), reloadable=True,
    )  # fmt: skip
    http_max_header_bytes: int = setting(
        16 * 1024,
        help="larger request heads get 431",
        unit="bytes",
        check=checks.in_range(256, 1 << 20),
        reloadable=True,
    )
    admin_token: str = admin_token_key()
    cors_origins: list[str] = cors_origins_key()
    play_secret: str = play_secret_key()
    on_play: str = hook_key("before each play; a 2xx allows it")
    on_play_done: str = hook_key("when a play ends (HLS: when its viewer stops asking)")
    hook_timeout: float = setting(
        3.0, help="a hook that does not answer within this refuses", unit="s",
        check=checks.above(0, 60), reloadable=True,
    )  # fmt: skip
    hook_cache_seconds: float = setting(
        0.0, help="reuse a hook's answer to the same request for this long", unit="s",
        check=checks.in_range(0, HOUR), reloadable=True,
    )  # fmt: skip
    snapshots: bool = setting(
        True,
        help="serve /app/name.jpg and .png: a live stream's newest keyframe as an image",
        reloadable=True,
    )
    snapshot_wait: float = setting(
        5.0, help="a snapshot of a stream without a keyframe yet waits this long for one",
        unit="s", check=checks.above(0, 60), reloadable=True,
    )  # fmt: skip
    log_level: str = log_level_key()
    workers: int = setting(
        1,
        help="processes serving this node (one per core): they share its ports; an edge "
        "still pulls each stream once (one worker pulls, the others are fed by it); on an "
        "origin a stream lives on the worker its publisher (or pull) landed on, a second "
        "publish of its name on any worker is refused, the other workers' viewers are fed "
        "by it, and hooks, recordings, relays, bans and the publish limits hold for the node; "
        "a takeover, or a publisher back within publisher_grace, that lands on another "
        "worker moves the stream there with its viewers; /metrics and the API answer for the "
        "node as one",
        check=checks.in_range(1, 256),
    )

    def validate(self) -> None:
        """Raise ConfigError for combinations of values that cannot work."""
        check_tls(self)


@dataclass(frozen=True)
class OriginConfig(ServeConfig):
    """Settings of one origin node (keys of origin.toml)."""

    kind: ClassVar[str] = "origin"

    on_republish: str = setting(
        "owner",
        help="a second publisher of a live name: replaces the first only if it owns the name "
        "(a valid publish token, or the first sent no media for takeover_idle_seconds), "
        "replaces it always, or is refused",
        check=checks.one_of("owner", "takeover", "reject"),
        reloadable=True,
    )
    takeover_idle_seconds: float = setting(
        3.0, unit="s", check=checks.in_range(0, 600),
        help='with on_republish = "owner": a publisher silent this long may be replaced '
        "(a reconnect after a network blip)", reloadable=True,
    )  # fmt: skip
    publish_secret: str = secret_setting(
        f"require publish tokens signed with this (at least {MIN_SECRET} characters)",
        flags=["--secret"],
    )
    on_publish: str = hook_key("before a publish is accepted; a 2xx allows it")
    on_unpublish: str = hook_key("when a publisher leaves")
    kick_ban_seconds: float = setting(
        0.0,
        help="default ban for DELETE /api/streams/... (at most 30 days)",
        unit="s",
        check=checks.in_range(0, MAX_BAN_SECONDS),
        reloadable=True,
    )
    publisher_grace: float = setting(
        3.0,
        help="viewers wait this long for a publisher to come back; keep it below the "
        "edges' stall_timeout (5 s), so an edge still connected gets the clean end",
        unit="s",
        check=checks.in_range(0, 600),
        reloadable=True,
    )
    max_publishers_per_ip: int = setting(
        32, help="publishers from one address", check=checks.in_range(1, 1_000_000), reloadable=True
    )
    max_ingest_mbps: float = setting(
        100.0, help="per publisher; a faster one is read more slowly", unit="Mbit/s",
        check=checks.above(0, 100_000), reloadable=True,
    )  # fmt: skip
    hls: bool = setting(True, help="package live streams as HLS", reloadable=True)
    hls_apps: list[str] = setting(
        [],
        help="package HLS for these apps only (empty: all)",
        check=checks.stream_parts("app"),
        reloadable=True,
    )
    hls_target_duration: float = hls_target_key("HLS segment target duration")
    hls_window: int = hls_window_key("segments in an HLS playlist")
    hls_grace_seconds: float = hls_grace_key("keep an ended playlist this long")
    hls_dir: str = setting("", help="also write HLS files to this directory")
    record_dir: str = setting(
        "", help="directory of recordings (empty: no recording, no playback of recordings)"
    )
    record_apps: list[str] = setting(
        [], help="record every stream of these apps, from publish to end (needs record_dir)",
        check=checks.stream_parts("app"), reloadable=True,
    )  # fmt: skip
    record_format: str = setting(
        "flv", help="recording files: flv, or mp4 (each FLV file remuxed when it is done)",
        check=checks.one_of("flv", "mp4"),
    )  # fmt: skip
    record_segment_seconds: float = setting(
        60.0, help="a recording goes on in a new file at the first keyframe after this",
        unit="s", check=checks.in_range(1, 24 * 3600),
    )  # fmt: skip
    record_max_bytes: int = setting(
        0, help="remove the oldest recording files beyond this total (0: no bound)",
        unit="bytes", check=checks.in_range(0, 2**50), reloadable=True,
    )  # fmt: skip
    record_max_age_seconds: float = setting(
        0.0, help="remove recording files older than this (0: keep)", unit="s",
        check=checks.in_range(0, 100 * 365 * DAY), reloadable=True,
    )  # fmt: skip
    on_record_done: str = hook_key("when a recording file is done (its path, start, duration)")
    balancer: str = balancer_key("stream announcements")
    node_id: str = node_id_key()
    cluster_secret: str = cluster_secret_key()
    edges_only: bool = setting(
        False,
        help="serve plays only to edges that prove they hold cluster_secret (signed pulls); "
        "viewers must go through edges, which shape their classes",
        reloadable=True,
    )
    clock_stamps: bool = setting(
        False,
        help="put the ingest wall clock after every video keyframe (load-run latency)",
        reloadable=True,
    )
    push: list[str] = setting(
        [],
        help='republish each live stream of an app to another RTMP server: "app=rtmp://host/app" '
        "(each stream goes to that URL/NAME; rtmps:// too)",
        item_flag="--push-to",
        check=relayspec.items(relayspec.push_target),
    )
    pull_static: list[str] = setting(
        [],
        help='pull an external stream in while the origin runs: "app/name=rtmp://host/app/name" '
        "(or http(s)://host/app/name.flv)",
        item_flag="--pull",
        check=relayspec.items(relayspec.static_pull),
    )
    pull_on_demand: list[str] = setting(
        [],
        help="pull an app's streams when a viewer asks for one that is not live: "
        '"app=rtmp://host/app/{name}" (or an http(s):// .flv URL)',
        check=relayspec.items(relayspec.pull_template),
    )
    pull_linger_seconds: float = setting(
        10.0, help="an on-demand pull outlives its last viewer by this long", unit="s",
        check=checks.in_range(0, DAY), reloadable=True,
    )  # fmt: skip
    relay_tls_ca: str = setting(
        "",
        help="PEM CA bundle that rtmps:// and https:// push targets and pull sources are "
        "verified against (empty: the system's trust store)",
    )

    def validate(self) -> None:
        """Raise ConfigError for combinations of values that cannot work."""
        super().validate()
        if self.edges_only and not self.cluster_secret:
            raise ConfigError(
                "edges_only needs a cluster_secret (the edges sign their pulls with it)"
            )
        if self.record_apps and not self.record_dir:
            raise ConfigError("record_apps needs a record_dir")


@dataclass(frozen=True)
class EdgeConfig(ServeConfig):
    """Settings of one edge node (keys of edge.toml)."""

    kind: ClassVar[str] = "edge"

    rtmp_port: int = rtmp_port_key(1936)
    http_port: int = http_port_key(8081)
    rtmps_port: int = rtmps_port_key(4936)
    https_port: int = https_port_key(8444)
    parents: list[str] = setting(
        [],
        help="rtmp://, rtmps://, http:// or https:// URLs of the parents (origins or edges), "
        "in failover order",
        item_flag="--parent",
        check=checks.urls("rtmp", "rtmps", "http", "https"),
        reloadable=True,
    )
    tls_ca: str = setting(
        "",
        help="PEM CA bundle that rtmps:// and https:// parents' certificates are verified "
        "against, with their host names (empty: the system's trust store)",
        reloadable=True,
    )
    linger_seconds: float = setting(
        10.0, help="an upstream outlives its last viewer by this long", unit="s",
        flags=["--linger"], check=checks.in_range(0, DAY), reloadable=True,
    )  # fmt: skip
    not_found_ttl: float = setting(
        2.0, help="remember a parent's 'not found' this long", unit="s",
        check=checks.in_range(0, HOUR), reloadable=True,
    )  # fmt: skip
    connect_timeout: float = setting(
        5.0,
        help="time to connect to a parent",
        unit="s",
        check=checks.above(0, HOUR),
        reloadable=True,
    )
    stall_timeout: float = setting(
        5.0,
        help="time without media before failing over",
        unit="s",
        check=checks.above(0, HOUR),
        reloadable=True,
    )
    retry_seconds: float = setting(
        10.0, help="a stream no parent serves ends after this", unit="s",
        check=checks.in_range(0, DAY), reloadable=True,
    )  # fmt: skip
    hls_parents: list[str] = setting(
        [], help="http:// or https:// URLs to fetch HLS from (default: those parents)",
        check=checks.urls("http", "https"), reloadable=True,
    )  # fmt: skip
    hls_cache_bytes: int = setting(
        256 * 1024 * 1024,
        help="bound of the HLS object cache (LRU)",
        unit="bytes",
        check=checks.in_range(0, 1 << 40),
        reloadable=True,
    )
    hls_mode: str = setting(
        "auto",
        help='"package": cut HLS here from the upstream FLV/RTMP viewers share; "cache": '
        'fetch it from the HTTP parents; "auto": cache when hls_parents is set or the first '
        "parent is http(s)://, else package",
        check=checks.one_of("auto", "package", "cache"),
    )
    hls_target_duration: float = hls_target_key(
        'HLS segment target duration (hls_mode "package", for a parent that does not give its '
        "segment clock: a livecdn parent's wins)"
    )
    hls_window: int = hls_window_key('segments in an HLS playlist (hls_mode "package")')
    hls_grace_seconds: float = hls_grace_key(
        'keep an ended playlist this long (hls_mode "package")'
    )
    balancer: str = balancer_key("heartbeats")
    node_id: str = node_id_key()
    cluster_secret: str = cluster_secret_key()
    public_host: str = setting(
        "", help="host name viewers are redirected to", check=checks.host_name, reloadable=True
    )
    capacity_viewers: int = setting(
        0,
        help="viewers the balancer may send (0: no limit)",
        check=checks.in_range(0, 1e9),
        reloadable=True,
    )
    capacity_mbps: float = setting(
        0.0, help="egress the balancer may fill, and the link classes share (0: no limit)",
        unit="Mbit/s", check=checks.in_range(0, 1e9), reloadable=True,
    )  # fmt: skip
    weight: float = setting(
        1.0, help="relative weight for the balancer", check=checks.in_range(0, 1e6), reloadable=True
    )
    region: str = setting(
        "", help="region reported to the balancer", check=checks.short_text, reloadable=True
    )
    drain_timeout: float = setting(
        30.0, help="on SIGTERM, wait this long for the viewers to leave before closing them "
        "and stopping (the balancer is told first; 0: close them at once)", unit="s",
        check=checks.in_range(0, DAY), reloadable=True,
    )  # fmt: skip
    qos_secret: str = qos_secret_key()
    classes: dict[str, dict] = classes_key()

    def http_parents(self) -> list[str]:
        """The parents that also serve HLS (http:// and https://)."""
        return [p for p in self.parents if p.startswith(("http://", "https://"))]

    def packages_hls(self) -> bool:
        """Whether this edge cuts HLS itself (hls_mode, "auto" resolved)."""
        if self.hls_mode != "auto":
            return self.hls_mode == "package"
        return not self.hls_parents and not self.parents[0].startswith(("http://", "https://"))

    def validate(self) -> None:
        """Raise ConfigError for combinations of values that cannot work."""
        if not self.parents:
            raise ConfigError("an edge needs at least one parent (--parent rtmp://host:port)")
        check_tls(self)
        check_classes(self.classes, self.qos_secret)
        if self.hls_mode == "cache" and not self.hls_parents and not self.http_parents():
            raise ConfigError('hls_mode "cache" needs an http(s):// parent or hls_parents')
        assured = sum(rate for rate, _ in class_rates(self.classes).values()) / 125_000
        if self.capacity_mbps and assured > self.capacity_mbps + 1e-9:
            raise ConfigError(
                f"the classes' rate_mbps add up to {assured:g}, more than capacity_mbps "
                f"{self.capacity_mbps:g} (HTB: the assured rates must fit the link)"
            )


@dataclass(frozen=True)
class BalancerConfig:
    """Settings of the balancer (keys of balancer.toml)."""

    kind: ClassVar[str] = "balancer"

    host: str = host_key()
    http_port: int = http_port_key(8090)
    https_port: int = https_port_key(8453)
    tls_cert: str = tls_cert_key()
    tls_key: str = tls_key_key()
    control_port: int = setting(
        8091, help="port edges and origins send heartbeats to", flags=["--control"],
        check=checks.port,
    )  # fmt: skip
    policy: str = setting(
        "least_load",
        help=f"how an edge is chosen: {', '.join(BALANCER_POLICIES)}",
        check=checks.one_of(*BALANCER_POLICIES),
        reloadable=True,
    )
    hash_balance_factor: float = setting(
        1.25, help="bounded_hash: no edge above this times the average load",
        check=checks.in_range(1, 100), reloadable=True,
    )  # fmt: skip
    heartbeat_timeout: float = setting(
        2.5, help="an edge whose heartbeats stop this long is out", unit="s",
        check=checks.above(0, HOUR), reloadable=True,
    )  # fmt: skip
    check_interval: float = setting(
        1.0,
        help="time between health checks of each edge",
        unit="s",
        check=checks.above(0, HOUR),
        reloadable=True,
    )
    rise: int = setting(2, help="passed health checks that bring an edge in",
                    check=checks.in_range(1, 100), reloadable=True)  # fmt: skip
    fall: int = setting(2, help="failed health checks that take an edge out",
                    check=checks.in_range(1, 100), reloadable=True)  # fmt: skip
    overflow: str = setting(
        "reject", help="when every edge is full: answer 503, or queue the viewer",
        check=checks.one_of("reject", "queue"), reloadable=True,
    )  # fmt: skip
    queue_max: int = setting(100, help="viewers waiting at once (overflow = queue)",
                             check=checks.in_range(0, 1_000_000), reloadable=True)  # fmt: skip
    queue_timeout: float = setting(
        5.0,
        help="a queued viewer waits at most this long",
        unit="s",
        check=checks.above(0, HOUR),
        reloadable=True,
    )
    retry_after: int = setting(5, help="Retry-After of a 503", unit="s",
                              check=checks.in_range(0, DAY), reloadable=True)  # fmt: skip
    max_connections: int = setting(20000, help="HTTP connections at once",
                                   check=checks.in_range(1, 1 << 24), reloadable=True)  # fmt: skip
    admin_token: str = admin_token_key()
    cors_origins: list[str] = cors_origins_key()
    qos_secret: str = qos_secret_key()
    play_secret: str = play_secret_key()
    classes: dict[str, dict] = classes_key()
    token_ttl: int = setting(
        300,
        help="validity of a class token",
        unit="s",
        check=checks.in_range(0, 30 * DAY),
        reloadable=True,
    )
    log_level: str = log_level_key()
    control_max_connections: int = setting(
        256, help="control connections open at once", check=checks.in_range(1, 1_000_000)
    )
    cluster_secret: str = cluster_secret_key()
    control_idle_timeout: float = setting(
        5.0, help="a control connection without a complete message is closed after this",
        unit="s", check=checks.above(0, HOUR), reloadable=True,
    )  # fmt: skip
    forget_after: float = setting(
        60.0, help="a silent node is forgotten after this (at least heartbeat_timeout)",
        unit="s", check=checks.above(0, 30 * DAY), reloadable=True,
    )  # fmt: skip
    max_edges: int = setting(1000, help="edges remembered at once",
                         check=checks.in_range(1, 1_000_000), reloadable=True)  # fmt: skip
    max_origins: int = setting(64, help="origins remembered at once",
                           check=checks.in_range(1, 100_000), reloadable=True)  # fmt: skip

    def validate(self) -> None:
        """Raise ConfigError for combinations of values that cannot work."""
        if self.forget_after < self.heartbeat_timeout:
            raise ConfigError(
                f"forget_after ({self.forget_after:g} s) must be at least heartbeat_timeout "
                f"({self.heartbeat_timeout:g} s): an edge is forgotten only after it is out"
            )
        check_tls(self)
        check_classes(self.classes, self.qos_secret)


MODELS: dict[str, type] = {c.kind: c for c in (OriginConfig, EdgeConfig, BalancerConfig)}
"""The config model of each node kind."""


def class_rates(classes: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """{class: (rate, ceil)} in bytes/s from validated class specs."""
    return {
        name: (spec["rate_mbps"] * 125_000, spec.get("ceil_mbps", spec["rate_mbps"]) * 125_000)
        for name, spec in classes.items()
    }


def default_class(classes: dict[str, dict]) -> str | None:
    """The class of a viewer without a class token: the lowest-rate one (then the lowest
    ceil, then the first name); None without classes."""
    rates = class_rates(classes)
    return min(rates, key=lambda name: (*rates[name], name), default=None)


def check_classes(classes: dict[str, dict], secret: str) -> None:
    """Viewer classes: {name: {rate_mbps, ceil_mbps}}, which need a qos_secret."""
    if classes and not secret:
        raise ConfigError("viewer classes need a qos_secret (shared by balancer and edges)")
    for name, spec in classes.items():
        if not isinstance(spec, dict) or set(spec) - {"rate_mbps", "ceil_mbps"}:
            raise ConfigError(f"class {name!r}: expected rate_mbps and ceil_mbps")
        rate, ceil = spec.get("rate_mbps", 0), spec.get("ceil_mbps", spec.get("rate_mbps", 0))
        if not all(isinstance(v, (int, float)) and v > 0 for v in (rate, ceil)) or ceil < rate:
            raise ConfigError(f"class {name!r}: need 0 < rate_mbps <= ceil_mbps")
