#!/usr/bin/env python3
"""The kernel's floor for a fan-out: what one 64-byte write to each of N loopback TCP
connections costs in system CPU, with nothing else in the sending process.

A receiver process opens N connections to the sender and reads them all through epoll (as
the bench's members do); the sender writes one 64-byte message to every connection per
publication, at a steady rate, and reports its own system and user CPU per write over the
publishing window (os.times of the sending process only), and how long one publication's
writes take from the first to the last. The system CPU per write is what
any bridge pays in the kernel for one delivery on this machine's loopback, whatever its code:
compare it with the bridge's system CPU per delivery in the `fanout` scenario.

    python3 bench/floor/fanout_floor.py [--members 10000] [--rate 20] [--seconds 10]
"""

import argparse
import os
import resource
import selectors
import socket
import subprocess
import sys
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def receive(port, members, expected):
    """Opens `members` connections to 127.0.0.1:port and reads until `expected` bytes came."""
    raise_nofile()
    sel = selectors.EpollSelector()
    for _ in range(members):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    print("connected", flush=True)
    got = 0
    while got < expected:
        for key, _ in sel.select(timeout=30):
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            got += len(data)
    print("received", got, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=20.0, help="publications per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    p.add_argument("--expected", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.receiver:
        receive(a.receiver, a.members, a.expected)
        return

    raise_nofile()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    publications = int(a.rate * a.seconds)
    payload = b"\x82" + bytes([a.size - 2]) + b"x" * (a.size - 2)  # a WebSocket binary frame
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receiver", str(port), "--members", str(a.members),
         "--expected", str(publications * a.members * len(payload))],
        stdout=subprocess.PIPE, text=True)
    conns = []
    while len(conns) < a.members:
        c, _ = listener.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(c)
    assert receiver.stdout.readline().strip() == "connected"

    spans = []  # seconds from a publication's first write to its last
    start_times = os.times()
    start = time.monotonic()
    for i in range(publications):
        due = start + i / a.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        began = time.monotonic()
        for c in conns:
            c.send(payload)
        spans.append(time.monotonic() - began)
    end_times = os.times()
    elapsed = time.monotonic() - start
    print(receiver.stdout.readline().strip())
    receiver.wait()
    writes = publications * a.members
    system = end_times.system - start_times.system
    user = end_times.user - start_times.user
    print(f"members {a.members}, {publications} publications at {a.rate}/s over {elapsed:.1f} s, "
          f"{writes} writes of {len(payload)} bytes")
    print(f"sender system CPU per write: {system * 1e6 / writes:.2f} us (the kernel's floor per delivery)")
    print(f"sender user CPU per write:   {user * 1e6 / writes:.2f} us (Python's own overhead, not a floor)")
    spans.sort()
    p50, p99 = (spans[min(len(spans) - 1, int(q * len(spans)))] * 1e3 for q in (0.5, 0.99))
    print(f"first to last write of a publication, one thread: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
          f"(a floor for publish-to-last-delivery latency, Python's overhead included)")


if __name__ == "__main__":
    main()
