#!/usr/bin/env python3
"""What the kernel alone charges for a fan-out on this machine: N loopback TCP connections
each sent `--kbps` of data, one send of a prepared buffer per connection per period (the
least any server could do: no framing, no copies in user space, no event loop), read by
another process. Prints the sender's CPU per 1000 viewers, split into user and kernel time,
for each period (how long a server coalesces before it writes).

Compare with the fan-out's own CPU per 1000 viewers (bench/fanout_before_after.sh, or the
edge rows of bench/edge_vs_nginx.sh) run in the same shell session, on a quiet machine:

  .venv/bin/python bench/loopback_floor.py -n 2000 --periods 20,50,100,250
  flock /tmp/h19/bench.lock .venv/bin/python bench/loopback_floor.py -n 2000 --seconds 10

On loopback the sender's send also runs the receiver's half of TCP (the softirq that queues
the data on the receiving socket), so the "kernel" column is what one core pays per viewer
for the bytes alone, whatever the server is written in.
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import subprocess
import sys
import time

SEND_BUFFER = 256 * 1024  # as the nodes' (common/net/conn.py SEND_BUFFER)


def receive(port: int, n: int) -> None:
    """The players: open n connections, read everything until the sender closes them."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        socks.append(sock)
    buf = bytearray(1 << 20)
    open_ = n
    while open_:
        for key, _ in sel.select():
            try:
                got = key.fileobj.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                got = 0
            if not got:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                open_ -= 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{usage.ru_utime + usage.ru_stime:.3f}", flush=True)


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def send_for(socks: list[socket.socket], payload: bytes, period: float, seconds: float) -> dict:
    """One send of `payload` to every socket every `period` s for `seconds`."""
    (u0, s0), t0 = cpu(), time.monotonic()
    sent = short = 0
    tick = t0
    while tick < t0 + seconds:
        for sock in socks:
            try:
                got = sock.send(payload)
            except BlockingIOError:
                got = 0
            sent += got
            short += got < len(payload)
        tick += period
        time.sleep(max(0.0, tick - time.monotonic()))
    (u1, s1), wall = cpu(), time.monotonic() - t0
    return {"user": u1 - u0, "sys": s1 - s0, "wall": wall, "sent": sent, "short": short}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="connections (viewers)")
    ap.add_argument("--kbps", type=float, default=1500, help="per connection, kbit/s")
    ap.add_argument("--periods", default="20,50,100,250", help="ms between sends, a list")
    ap.add_argument("--seconds", type=float, default=10, help="per period")
    ap.add_argument("--receive", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receive:
        receive(args.receive, args.n)
        return
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    cmd = [sys.executable, __file__, "-n", str(args.n), "--receive", str(port)]
    reader = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    socks = []
    for _ in range(args.n):
        sock, _ = listener.accept()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        sock.setblocking(False)
        socks.append(sock)
    print(f"{args.n} loopback connections at {args.kbps:g} kbit/s each, {args.seconds:g} s per "
          f"period, on {os.cpu_count()} cores")  # fmt: skip
    print(f"{'period ms':>9} {'user %/1000':>11} {'kernel %/1000':>13} {'total %/1000':>12} "
          f"{'sends/s':>8} {'sent/wanted':>11} {'short':>6}")  # fmt: skip
    per_k = 1000 / args.n
    for period_ms in (float(p) for p in args.periods.split(",")):
        period = period_ms / 1000
        payload = bytes(int(args.kbps * 1000 / 8 * period))
        r = send_for(socks, payload, period, args.seconds)
        wanted = args.kbps * 1000 / 8 * r["wall"] * args.n
        user = 100 * r["user"] / r["wall"] * per_k
        kern = 100 * r["sys"] / r["wall"] * per_k
        print(f"{period_ms:9g} {user:11.1f} {kern:13.1f} {user + kern:12.1f} "
              f"{args.n / period:8.0f} {r['sent'] / wanted:11.2f} {r['short']:6d}", flush=True)  # fmt: skip
    for sock in socks:
        sock.close()
    reader_cpu = reader.communicate(timeout=60)[0].strip()
    print(f"(the reading process used {reader_cpu} s of CPU in all)")


if __name__ == "__main__":
    main()
