"""Each node of a topology in its own Linux network namespace, with its own address: a veth
pair per node joins its namespace to a bridge in the root namespace, which has an address of
the same private /24 (10.77.X.0/24), so the launcher, its link proxies and publishers, viewers
and tests reach every node by address. Needs root and `ip` (iproute2).

Everything a run creates is named after it (its launcher's pid and a sequence number) and
removed when it ends; a run removes what runs whose launcher is gone left behind."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from topology.linkproxy import LinkProxy, LinkSettings
from topology.plan import Hosts

log = logging.getLogger("livecdn.netns")
PREFIX = "lcdn"  # namespaces: lcdn-<pid>s<seq>-<index>-<node>; bridge lcb<pid><seq>; veths lcv<pid><seq><i>
NET = "10.77"  # the /24s a run takes its subnet from: 10.77.X.0/24
LOCK_DIR = Path("/run/livecdn")  # root's only (0700): no other user can take or plant the lock
LOCK_NAME = "netns.lock"  # one run at a time picks a subnet and cleans up, holding it
LOCK_WAIT = 30.0  # seconds a run waits for the lock before it gives up (one line)
PEER = "eth0"  # a node's end of its veth pair, inside its namespace
_SEQ = itertools.count()


class NetnsError(RuntimeError):
    """The namespaces cannot be made (not root, no `ip`, or `ip` failed)."""


def ip(*args: str, check: bool = True, program: str = "ip") -> str:
    """Run `ip ARGS`; its output (a failure with `check` raises NetnsError naming it)."""
    try:
        done = subprocess.run([program, *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise NetnsError(f"--netns needs the {program} command (iproute2)") from None
    if check and done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise NetnsError(f"{program} {' '.join(args)}: {why[0]}")
    return done.stdout


def tc(*args: str) -> str:
    """Run `tc ARGS` (failing as `ip` does)."""
    return ip(*args, program="tc")


def unavailable(rates: bool = False) -> str | None:
    """Why this process cannot make network namespaces (and, with `rates`, limit links'
    rates with `tc`); None if it can."""
    if os.geteuid() != 0:
        return "--netns needs root (network namespaces, veth pairs and a bridge)"
    if shutil.which("ip") is None:
        return "--netns needs the ip command (iproute2)"
    if shutil.which("setpriv") is None:
        return "--netns needs the setpriv command (util-linux) to run the nodes unprivileged"
    if rates and shutil.which("tc") is None:
        return "--netns needs the tc command (iproute2) for links with a rate_mbps"
    return None


@dataclass(frozen=True)
class NodeUser:
    """The unprivileged user the nodes run as under --netns (`setpriv` after `ip netns
    exec`): the user who ran sudo, else nobody."""

    uid: int
    gid: int
    name: str = ""  # "" when the uid has no passwd entry (then no supplementary groups)

    @classmethod
    def pick(cls, environ: Mapping[str, str]) -> NodeUser:
        """$SUDO_UID/$SUDO_GID when set (and not root), else nobody."""
        uid, gid = environ.get("SUDO_UID", ""), environ.get("SUDO_GID", "")
        if uid.isdigit() and int(uid) != 0:
            try:
                entry = pwd.getpwuid(int(uid))
            except KeyError:
                return cls(int(uid), int(gid) if gid.isdigit() else int(uid))
            return cls(entry.pw_uid, int(gid) if gid.isdigit() else entry.pw_gid, entry.pw_name)
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            return cls(65534, 65534)
        return cls(nobody.pw_uid, nobody.pw_gid, nobody.pw_name)

    def prefix(self) -> list[str]:
        """The command prefix that runs a program as this user, with no capabilities."""
        groups = "--init-groups" if self.name else "--clear-groups"
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", groups, "--"]

    def __str__(self) -> str:
        return f"{self.name or 'uid'} ({self.uid}:{self.gid})"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:32]


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    return digits[n // 36 % 36] + digits[n % 36]


@dataclass
class Network:
    """One run's namespaces (one per node, in `names`' order), veths and bridge."""

    names: list[str]
    tag: str = ""  # <launcher pid in hex>s<sequence number in hex>: at most 8 characters
    subnet: int = -1  # X of 10.77.X.0/24
    tbf: bool = False  # the kernel has tbf: links to an edge's only parent are rate-limited by it
    user: NodeUser | None = None  # whom the nodes run as (None: root, as the launcher)

    def __post_init__(self) -> None:
        self.tag = self.tag or f"{os.getpid():x}s{next(_SEQ) % 16:x}"

    @property
    def bridge(self) -> str:
        """The bridge in the root namespace (at most 15 characters, as every link name)."""
        return f"lcb{self.tag}"

    def namespace(self, node: str) -> str:
        """The network namespace of node `node`: named by its index (as its veth) and,
        to be read, its name (names that differ only in punctuation stay apart)."""
        return f"{PREFIX}-{self.tag}-{_base36(self.names.index(node))}-{_safe(node)}"

    @property
    def namespaces(self) -> str:
        """The run's namespaces' names, as a pattern (for the start-up line)."""
        return f"{PREFIX}-{self.tag}-II-NODE"

    def veth(self, node: str) -> str:
        """The root namespace's end of node `node`'s veth pair."""
        return f"lcv{self.tag}{_base36(self.names.index(node))}"

    @property
    def gateway(self) -> str:
        """The bridge's address: the root namespace as the nodes reach it."""
        return f"{NET}.{self.subnet}.1"

    def address(self, node: str) -> str:
        """Node `node`'s address in its namespace."""
        return f"{NET}.{self.subnet}.{self.names.index(node) + 2}"

    def hosts(self, edges: list[str]) -> Hosts:
        """Every node listening on and reached at its own address; `edges` advertise theirs
        to viewers; the link proxies listen on the bridge's address."""
        where = {n: self.address(n) for n in self.names}
        return Hosts(listen=where, address=where, public={e: where[e] for e in edges},
                     links=self.gateway)  # fmt: skip

    def exec_prefix(self, node: str) -> list[str]:
        """The command prefix that runs a program in node `node`'s namespace (as `user`)."""
        return ["ip", "netns", "exec", self.namespace(node),
                *(self.user.prefix() if self.user else [])]  # fmt: skip

    def check_user(self, python: str, run_dir: Path) -> None:
        """Let `user` search `run_dir` (group `user`'s, 0710: its files can be reached by
        name, not listed); NetnsError (one line) if `user` cannot run `python` with this
        project or reach `run_dir` (a parent directory closed to it)."""
        if self.user is None:
            return
        os.chown(run_dir, -1, self.user.gid)
        run_dir.chmod(0o710)
        code = "import os, sys, common.config; os.stat(os.path.join(sys.argv[1], '.'))"
        probe = [*self.user.prefix(), python, "-c", code, str(run_dir)]
        done = subprocess.run(probe, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise NetnsError(f"--netns: the nodes run as {self.user}, who cannot run {python} "
                             f"with this project or reach {run_dir}: {why}")  # fmt: skip

    def grant(self, configs: list[Path]) -> None:
        """Give `user` its config files (its own, 0600; the launcher opens the logs)."""
        for path in configs if self.user else ():
            os.chown(path, self.user.uid, self.user.gid)
            path.chmod(0o600)

    def create(self) -> None:
        """Make the bridge (with a free /24), then each node's namespace and veth pair; what
        was made is removed if a step fails."""
        if len(self.names) > 250:
            raise NetnsError(f"--netns: at most 250 nodes on a /24, not {len(self.names)}")
        try:
            with _locked():
                remove_leftovers()
                self.subnet = free_subnet(self.tag)
                ip("link", "add", self.bridge, "type", "bridge")
                ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
                ip("link", "set", self.bridge, "up")
            for node in self.names:
                ns, veth = self.namespace(node), self.veth(node)
                ip("netns", "add", ns)
                ip("link", "add", veth, "type", "veth", "peer", "name", PEER, "netns", ns)
                ip("link", "set", veth, "master", self.bridge, "up")
                ip("-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", PEER)
                ip("-n", ns, "link", "set", PEER, "up")
                ip("-n", ns, "link", "set", "lo", "up")
                ip("-n", ns, "route", "add", "default", "via", self.gateway)
        except BaseException:
            self.remove()
            raise

    def has_qdisc(self, *qdisc: str) -> bool:
        """Whether this kernel has queueing discipline `qdisc` (e.g. "netem", "delay", "1ms"):
        tried on the bridge, then taken off."""
        try:
            tc("qdisc", "add", "dev", self.bridge, "root", *qdisc)
        except NetnsError:
            return False
        ip("qdisc", "del", "dev", self.bridge, "root", check=False, program="tc")
        return True

    def shape(self, node: str, rate_mbps: float) -> None:
        """Limit what reaches node `node` to `rate_mbps` (tbf on its veth's root-namespace
        end); 0 takes the limit off."""
        if rate_mbps <= 0:
            ip("qdisc", "del", "dev", self.veth(node), "root", check=False, program="tc")
            return
        kbit = max(8, round(rate_mbps * 1000))
        burst = max(16_000, kbit * 1000 // 8 // 50)  # bytes: 20 ms at the rate, at least 16 kB
        tc("qdisc", "replace", "dev", self.veth(node), "root", "tbf", "rate", f"{kbit}kbit",
           "burst", str(burst), "latency", "200ms")  # fmt: skip

    def remove(self) -> None:
        """Remove the namespaces, veths and bridge (those that are there; never fails)."""
        remove_run(self.tag)


TBF = ("tbf", "rate", "1mbit", "burst", "16000", "latency", "200ms")
NETEM = ("netem", "delay", "1ms")


class VethShapedLink(LinkProxy):
    """The link proxy of an edge's only parent, under --netns with tbf: its rate is the
    kernel's (tbf on the edge's veth, changed with the link's settings at run time; a `tc`
    call of a few ms); delay, jitter, loss and down stay the proxy's. Should `tc` fail, the
    proxy limits the rate (one log line)."""

    def __init__(self, network: Network, edge: str, target: tuple[str, int],
                 settings: LinkSettings, name: str) -> None:  # fmt: skip
        super().__init__(name, target, settings, network.gateway)
        self.network, self.edge = network, edge
        self.kernel = self._shape()

    def _shape(self) -> bool:
        try:
            self.network.shape(self.edge, self.settings.rate_mbps)
        except NetnsError as exc:
            log.warning("link %s: the proxy limits the rate, tc failed: %s", self.name, exc)
            return False
        return True

    def rate(self) -> float:
        return 0.0 if self.kernel else super().rate()

    def update(self, **changes: object) -> None:
        super().update(**changes)
        if "rate_mbps" in changes and self.kernel:
            self.kernel = self._shape()


def _lock_file() -> int:
    """The lock file's descriptor, in LOCK_DIR made 0700; NetnsError if the directory or the
    file is not this user's own (a symlink is never followed)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(LOCK_DIR, 0o700)
    info = os.lstat(LOCK_DIR)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise NetnsError(f"--netns: {LOCK_DIR} is not a directory of this user's (remove it)")
    if info.st_mode & 0o077:
        os.chmod(LOCK_DIR, 0o700)
    path = LOCK_DIR / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        raise NetnsError(f"--netns: cannot open {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise NetnsError(f"--netns: {path} is not a file of this user's (remove it)")
    return fd


@contextlib.contextmanager
def _locked():
    """Hold the lock under which runs pick subnets and remove leftovers (its file says the
    holder's pid); NetnsError naming the holder if it is not free within LOCK_WAIT."""
    fd = _lock_file()
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise NetnsError(f"--netns: another run (pid {holder}) has held "
                                     f"{LOCK_DIR / LOCK_NAME} for over {LOCK_WAIT:g} s") from None  # fmt: skip
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def free_subnet(tag: str) -> int:
    """An X whose 10.77.X.0/24 no root-namespace address is in (tried from one that
    depends on `tag`, so parallel runs rarely try the same)."""
    taken = set()
    for line in ip("-o", "-4", "addr", "show").splitlines():
        for word in line.split():
            with contextlib.suppress(ValueError):
                addr = ipaddress.ip_interface(word)
                if str(addr.ip).startswith(f"{NET}."):
                    taken.add(int(str(addr.ip).split(".")[2]))
    start = zlib.crc32(tag.encode()) % 254
    for i in range(254):
        x = (start + i) % 254 + 1
        if x not in taken:
            return x
    raise NetnsError(f"--netns: no free /24 in {NET}.0.0/16")


def tag_of(name: str) -> str | None:
    """The run tag in one of our namespace or link names; None for other names."""
    if m := re.fullmatch(rf"{PREFIX}-([0-9a-f]+s[0-9a-f])-.*", name):
        return m.group(1)
    if m := re.fullmatch(r"lcb([0-9a-f]+s[0-9a-f])|lcv([0-9a-f]+s[0-9a-f])[0-9a-z]{2}", name):
        return m.group(1) or m.group(2)
    return None


def _alive(tag: str) -> bool:
    pid = int(tag.split("s")[0], 16)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _ours() -> tuple[list[str], list[str]]:
    """Our namespaces and root-namespace links (bridges and veths) that exist now."""
    spaces = [line.split()[0] for line in ip("netns", "list", check=False).splitlines() if line]
    links = []
    for line in ip("-o", "link", "show", check=False).splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            links.append(parts[1].strip().split("@")[0])
    return ([s for s in spaces if tag_of(s)], [x for x in links if tag_of(x)])


def remove_run(tag: str) -> None:
    """Remove run `tag`'s namespaces, veths and bridge."""
    spaces, links = _ours()
    for ns in spaces:
        if tag_of(ns) == tag:
            ip("netns", "del", ns, check=False)
    for link in sorted(links, key=lambda x: x.startswith("lcb")):  # veths, then the bridge
        if tag_of(link) == tag:
            ip("link", "del", link, check=False)


def remove_leftovers() -> list[str]:
    """Remove what runs whose launcher is gone left behind; their tags."""
    spaces, links = _ours()
    dead = sorted({t for n in [*spaces, *links] if (t := tag_of(n)) and not _alive(t)})
    for tag in dead:
        remove_run(tag)
    return dead


def leftovers(tag: str) -> list[str]:
    """Run `tag`'s namespaces and links that still exist (for tests: none after a run)."""
    spaces, links = _ours()
    return [n for n in [*spaces, *links] if tag_of(n) == tag]
