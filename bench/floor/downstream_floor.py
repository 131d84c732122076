#!/usr/bin/env python3
"""The kernel's floor for the downstream path: what the three syscalls that any bridge makes
per callback message cost in system CPU on this machine's loopback, with nothing else in the
process.

A peer process opens N poster connections and N client connections to the "bridge" (this
process). Each poster sends a callback POST (HTTP/1.1 keep-alive, a 64-byte body, headers
like the bench's) and waits for the answer before sending the next, as the bench's posters
do; the clients read everything. The bridge, in one epoll loop, makes per message exactly
what a bridge must: one `recv` of the POST, one `send` of the `202` answer to the poster and
one `send` of the WebSocket frame to the client. It reports its own system and user CPU per
message over the window (os.times of this process only). The system CPU is the floor a bridge
pays in the kernel per downstream message, whatever its code: compare it with the bench's
`bridge kernel CPU per event` of the `downstream` scenario, and with half the original's CPU
per message (issue 12's target).

    python3 bench/floor/downstream_floor.py [--connections 64] [--seconds 10]
"""

import argparse
import os
import selectors
import socket
import subprocess
import sys
import time

BODY = b"m" * 64
REQUEST = (
    b"POST /ws/0123456789abcdef0123456789abcdef HTTP/1.1\r\n"
    b"host: 127.0.0.1\r\ncontent-type: application/octet-stream\r\n"
    b"content-length: 64\r\n\r\n" + BODY
)
ANSWER = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n"
FRAME = b"\x82" + bytes([len(BODY)]) + BODY  # a WebSocket binary frame, server to client


def peers(post_port, client_port, connections, seconds):
    """N posters in a closed loop and N clients reading, until `seconds` have passed."""
    sel = selectors.EpollSelector()
    clients = [socket.create_connection(("127.0.0.1", client_port)) for _ in range(connections)]
    posters = [socket.create_connection(("127.0.0.1", post_port)) for _ in range(connections)]
    for s in clients + posters:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
    for s in clients:
        sel.register(s, selectors.EVENT_READ, "client")
    for s in posters:
        sel.register(s, selectors.EVENT_READ, "poster")
    print("connected", flush=True)
    sys.stdin.readline()  # the bridge has accepted everything and started its clock
    end = time.monotonic() + seconds
    for s in posters:
        s.send(REQUEST)
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=1):
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            if key.data == "poster" and data:
                key.fileobj.send(REQUEST)
    print("done", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--peers", nargs=2, type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.peers:
        peers(a.peers[0], a.peers[1], a.connections, a.seconds)
        return

    listeners = []
    for _ in range(2):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        listeners.append(listener)
    post_port, client_port = (l.getsockname()[1] for l in listeners)
    peer = subprocess.Popen(
        [sys.executable, __file__, "--peers", str(post_port), str(client_port),
         "--connections", str(a.connections), "--seconds", str(a.seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    clients = [listeners[1].accept()[0] for _ in range(a.connections)]
    posters = [listeners[0].accept()[0] for _ in range(a.connections)]
    assert peer.stdout.readline().strip() == "connected"
    sel = selectors.EpollSelector()
    for poster, client in zip(posters, clients):
        for s in (poster, client):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        poster.setblocking(False)
        sel.register(poster, selectors.EVENT_READ, client)

    start_times = os.times()
    start = time.monotonic()
    peer.stdin.write("go\n")
    peer.stdin.flush()
    messages = 0
    end = start + a.seconds
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=1):
            try:
                request = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            if not request:
                sel.unregister(key.fileobj)
                continue
            key.fileobj.send(ANSWER)
            key.data.send(FRAME)
            messages += 1
    end_times = os.times()
    elapsed = time.monotonic() - start
    peer.stdout.readline()
    peer.wait()
    system = end_times.system - start_times.system
    user = end_times.user - start_times.user
    print(f"{a.connections} posters and clients, {messages} messages over {elapsed:.1f} s "
          f"({messages / elapsed:,.0f}/s); syscalls per message: 3 (recv, send, send) plus epoll")
    print(f"bridge system CPU per message: {system * 1e6 / messages:.2f} us (the kernel's floor per downstream message)")
    print(f"bridge user CPU per message:   {user * 1e6 / messages:.2f} us (Python's own overhead, not a floor)")


if __name__ == "__main__":
    main()
