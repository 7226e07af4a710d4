"""`topology up --netns` / hosts = "netns": each node in its own network namespace at its own
address. The address plan is checked without root; the rest needs root and `ip` (CI runs as
root) and checks real namespaces: a three-edge topology played through the balancer from the
root namespace, and that nothing of a run is left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import av
import pytest
import trio

from common.config import BalancerConfig, EdgeConfig, OriginConfig, load
from common.net.httpclient import fetch
from tests.topologies import balancer, edge, origin, publisher, table, topology
from topology import launch, netns, schema
from topology.launch import node_names
from topology.plan import plan

NEEDS_ROOT = pytest.mark.skipif(
    netns.unavailable() is not None, reason=netns.unavailable() or "network namespaces usable"
)
TOPOLOGY = topology(
    balancer(),
    origin(),
    edge("edge1"),
    edge("edge2"),
    edge("edge3", parent_protocol="http"),
    publisher(size="160x90", fps=10, kbps=100),
)


def test_the_address_plan_puts_each_node_at_its_own_address(tmp_path) -> None:
    link = table("[[link]]", {"edge": "edge3", "parent": "origin", "delay_ms": 20})
    path = tmp_path / "t.toml"
    path.write_text('hosts = "netns"\n' + TOPOLOGY + link)
    topo = schema.load(str(path))
    assert topo.hosts == "netns"
    network = netns.Network(node_names(topo), tag="3fffffsf", subnet=9)
    hosts = network.hosts([e.name for e in topo.edges])
    dep = plan(topo, tmp_path, links={("edge3", "origin"): 4000}, hosts=hosts)
    at = {name: f"10.77.9.{i + 2}" for i, name in enumerate(node_names(topo))}
    assert network.gateway == "10.77.9.1" and len(set(at.values())) == 5
    b = load(BalancerConfig, tmp_path / "balancer.toml", environ={})
    o = load(OriginConfig, tmp_path / "origin.toml", environ={})
    assert (b.host, o.host) == (at["balancer"], at["origin"])
    assert o.balancer == f"{at['balancer']}:{b.control_port}"
    for name in ("edge1", "edge2", "edge3"):
        e = load(EdgeConfig, tmp_path / f"{name}.toml", environ={})
        assert (e.host, e.public_host) == (at[name], at[name])
        assert e.balancer == o.balancer
        assert dep.url(name, "http") == f"http://{at[name]}:{e.http_port}"
    edge1 = load(EdgeConfig, tmp_path / "edge1.toml", environ={})
    edge3 = load(EdgeConfig, tmp_path / "edge3.toml", environ={})
    assert edge1.parents == [f"rtmp://{at['origin']}:{o.rtmp_port}"]
    assert edge3.parents == ["http://10.77.9.1:4000"]  # through its link proxy, on the bridge
    names = [network.bridge, *(network.veth(n) for n in network.names)]
    assert all(len(n) <= 15 and netns.tag_of(n) == "3fffffsf" for n in names), names
    assert netns.tag_of(network.namespace("edge1")) == "3fffffsf"


def test_namespaces_are_named_by_index_as_well_as_by_name() -> None:
    network = netns.Network(["a:b", "a_b", "x" * 40], tag="3fffffsf", subnet=9)
    spaces = [network.namespace(n) for n in network.names]
    assert spaces[:2] == ["lcdn-3fffffsf-00-a_b", "lcdn-3fffffsf-01-a_b"]
    assert len(set(spaces)) == 3 and all(netns.tag_of(s) == "3fffffsf" for s in spaces)


def test_nodes_run_as_the_sudo_user_or_nobody() -> None:
    nobody = netns.NodeUser.pick({})
    assert nobody.uid != 0 and nobody.name == "nobody"
    assert netns.NodeUser.pick({"SUDO_UID": "0", "SUDO_GID": "0"}) == nobody
    user = netns.NodeUser.pick({"SUDO_UID": "4242", "SUDO_GID": "4343"})
    assert (user.uid, user.gid) == (4242, 4343)
    network = netns.Network(["origin"], tag="3fffffsf", user=user)
    prefix = ["ip", "netns", "exec", network.namespace("origin"), "setpriv", "--reuid=4242",
              "--regid=4343", "--clear-groups" if not user.name else "--init-groups", "--"]  # fmt: skip
    assert network.exec_prefix("origin") == prefix


def test_hosts_must_be_local_or_netns(tmp_path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('hosts = "cloud"\n' + TOPOLOGY)
    with pytest.raises(schema.TopologyError, match="hosts must be one of 'local', 'netns'"):
        schema.load(str(path))
    path.write_text(TOPOLOGY)
    assert schema.load(str(path)).hosts == "local"


async def test_without_root_netns_fails_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    path = tmp_path / "t.toml"
    path.write_text(TOPOLOGY)
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert await launch.up(schema.load(str(path)), netns=True, run_dir=tmp_path / "run") == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: --netns needs root (network namespaces, veth pairs and a bridge)"
    ]
    assert not (tmp_path / "run").exists()  # nothing started


async def test_without_tc_links_with_a_rate_fail_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    path = tmp_path / "t.toml"
    path.write_text(TOPOLOGY + table("[[link]]", {"edge": "edge3", "parent": "origin",
                                                  "rate_mbps": 5}))  # fmt: skip
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda cmd: None if cmd == "tc" else f"/bin/{cmd}")
    assert await launch.up(schema.load(str(path)), netns=True, run_dir=tmp_path / "run") == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: --netns needs the tc command (iproute2) for links with a rate_mbps"
    ]
    with pytest.raises(netns.NetnsError, match="needs the no-such-tc command"):
        netns.ip("qdisc", "show", program="no-such-tc")


HOLD = """import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, b"%d\\n" % os.getpid(), 0)
print("held", flush=True)
time.sleep(60)
"""


def take_lock() -> None:
    with netns._locked():
        pass


def test_the_lock_is_private_and_waited_for_a_bounded_time(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(netns, "LOCK_DIR", tmp_path / "lock")
    monkeypatch.setattr(netns, "LOCK_WAIT", 0.3)
    lock = tmp_path / "lock" / netns.LOCK_NAME
    with netns._locked():
        assert (tmp_path / "lock").stat().st_mode & 0o777 == 0o700
        assert lock.read_text() == f"{os.getpid()}\n" and lock.stat().st_mode & 0o777 == 0o600
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout and holder.stdout.readline() == b"held\n"
        with pytest.raises(netns.NetnsError, match=f"another run \\(pid {holder.pid}\\) has held"):
            take_lock()
    finally:
        holder.kill()
        holder.wait()
    lock.unlink()
    os.symlink(tmp_path / "elsewhere", lock)  # root's open would create any file
    with pytest.raises(netns.NetnsError, match="cannot open"):
        take_lock()
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_lock_directory_of_another_user_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(netns, "LOCK_DIR", tmp_path / "lock")
    (tmp_path / "lock").mkdir(mode=0o700)
    os.chown(tmp_path / "lock", 65534, 65534)
    with pytest.raises(netns.NetnsError, match="is not a directory of this user's"):
        take_lock()


@NEEDS_ROOT
def test_a_run_removes_what_a_dead_launcher_left() -> None:
    code = "from topology.netns import Network; n = Network(['a', 'b']); n.create(); print(n.tag)"
    left = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()  # fmt: skip
    assert len(netns.leftovers(left)) == 5  # the launcher died without removing them
    network = netns.Network(["c"])
    try:
        network.create()
        assert netns.leftovers(left) == []
        assert len(netns.leftovers(network.tag)) == 3  # its namespace, veth and bridge
    finally:
        network.remove()
    assert netns.leftovers(network.tag) == []


def decode_video(url: str, frames: int) -> int:
    """Pictures PyAV (ffmpeg's HTTP client, FLV demuxer and H.264 decoder) makes of the
    first `frames` video frames of `url`."""
    with av.open(url, options={"rw_timeout": "15000000"}) as container:
        decoded = 0
        for frame in container.decode(video=0):
            decoded += frame.width > 0
            if decoded == frames:
                break
        return decoded


HANG_GUARD = 60  # seconds: a step taking longer has hung


@pytest.mark.slow
@NEEDS_ROOT
@pytest.mark.skipif(shutil.which("ip") is None, reason="needs ip (iproute2)")
async def test_three_edges_in_namespaces_play_through_the_balancer(tmp_path) -> None:
    link = table("[[link]]", {"edge": "edge3", "parent": "origin", "rate_mbps": 20})
    path = tmp_path / "topology.toml"
    path.write_text('hosts = "netns"\n' + TOPOLOGY + link)
    # the unprivileged nodes reach their configs in it: not under pytest's root-only tmp_path
    run_dir = Path(tempfile.mkdtemp(prefix="livecdn-netns-test-"))
    try:
        await play_through_namespaces(path, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


async def play_through_namespaces(path: Path, run_dir: Path) -> None:
    async with trio.open_nursery() as nursery:
        dep = await launch.start(nursery, path, run_dir)
        tag = netns.tag_of(dep.nodes["origin"].cmd[3])  # ip netns exec NAMESPACE ...
        assert tag and len(netns.leftovers(tag)) == 2 * 5 + 1  # namespaces, veths, bridge
        address = {name: node.host for name, node in dep.nodes.items()}
        assert all(a.startswith("10.77.") for a in address.values()), address
        for name, node in dep.nodes.items():  # unprivileged, each reading its own config
            assert node.proc is not None
            uids = proc_status(node.proc.pid, "Uid")
            assert uids and "0" not in uids, (name, uids)
            config = dep.run_dir / f"{name}.toml"
            assert config.stat().st_uid == int(uids[0]) and config.stat().st_mode & 0o077 == 0
        balancer_url = dep.url("balancer", "http")
        with trio.fail_after(HANG_GUARD):  # until every edge is in the rotation
            while True:
                resp = await fetch("GET", f"{balancer_url}/live/demo.flv")
                if resp.status == 302:
                    break
                await trio.sleep(0.2)
        location = resp.headers["location"]
        host = urlsplit(location).hostname
        edge_name = next(n for n, a in address.items() if a == host and n.startswith("edge"))
        with trio.fail_after(HANG_GUARD):
            assert await trio.to_thread.run_sync(decode_video, location, 10) == 10
        if edge_name == "edge3":  # it pulls through its link proxy, from the bridge's address
            edge_name, url = "edge1", f"{dep.url('edge1', 'http')}/live/demo.flv"
            with trio.fail_after(HANG_GUARD):
                assert await trio.to_thread.run_sync(decode_video, url, 1) == 1
        origin_log = dep.run_dir / "origin.log"
        pull = f"play live/demo by {address[edge_name]}:"
        assert pull in origin_log.read_text()  # the edge pulled from its own address
        link = dep.proxies[("edge3", "origin")]  # edge3's only parent: the kernel limits its rate
        if isinstance(link, netns.VethShapedLink):
            veth = link.network.veth("edge3")
            assert link.rate() == 0 and "tbf" in qdisc(veth) and "rate 20Mbit" in qdisc(veth)
            link.update(rate_mbps=5)  # as the console or a degrade fault does
            assert "rate 5Mbit" in qdisc(veth)
        else:  # a kernel without tbf: the proxy limits it
            assert link.rate() == 20 * 125_000
        nursery.cancel_scope.cancel()
    assert netns.leftovers(tag) == []


def proc_status(pid: int, field: str) -> list[str]:
    """A field of /proc/PID/status, e.g. Uid: real, effective, saved and filesystem uid."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return line.split()[1:]
    return []


def qdisc(dev: str) -> str:
    return subprocess.run(["tc", "qdisc", "show", "dev", dev], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
