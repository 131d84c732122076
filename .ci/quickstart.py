#!/usr/bin/env python3
"""End-to-end check of the README quick start.

1. `cargo run --release --example demo` (with DEMO_BRIDGE_ADDRESS=127.0.0.1:0): wait for its
   `ready: ws://...` line, connect two WebSocket clients, send a text message from the first and
   check that both receive it; check that the chat page answers 200 with HTML; stop the demo with
   SIGINT and check that it exits in time.
2. examples/backend.py behind the real binary (target/release/websocket-bridge): send "hi" and
   expect "echo: hi".
3. examples/chat_backend.py behind the real binary with --publish-address: two clients joined to
   the channel by the connect hook; a message from the first reaches both through one publish.

Needs the `websockets` package. Prints one PASS/FAIL line per part and a final summary line;
exits non-zero on any failure. Every process it starts is killed at the end, even on failure.
Only 127.0.0.1 is ever contacted.
"""

import asyncio
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from websockets.asyncio.client import connect as ws_connect

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_TIMEOUT = 600  # the first `cargo run --release` compiles the whole crate
MESSAGE_TIMEOUT = 10
EXIT_TIMEOUT = 10

# Never send localhost traffic through a proxy, whatever the environment says.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
WS_OPTIONS = {"proxy": None} if "proxy" in inspect.signature(ws_connect).parameters else {}
CHILD_ENV = dict(os.environ, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")

STARTED = []  # (name, Popen, log path) of every process started, for cleanup and diagnostics


class Failure(Exception):
    pass


def start(name, argv, env=None, stdout=None):
    """Starts argv in its own process group, stderr (and stdout unless piped) to a log file."""
    log = tempfile.NamedTemporaryFile(prefix=f"quickstart-{name}-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env or CHILD_ENV,
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    STARTED.append((name, proc, log.name))
    return proc


def kill_all(keep_logs=False):
    """Kills every started process group; removes their logs unless asked to keep them."""
    for _, proc, path in STARTED:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if not keep_logs:
            try:
                os.unlink(path)
            except OSError:
                pass
    STARTED.clear()


def show_logs():
    for name, _, path in STARTED:
        try:
            with open(path, errors="replace") as f:
                tail = f.read()[-4000:]
        except OSError:
            continue
        print(f"----- last output of {name} ({path}) -----\n{tail}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with HTTP.open(url, timeout=timeout) as response:
        return response.status, response.headers.get("content-type", ""), response.read()


def wait_until(what, check, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Failure(f"{what}: process exited with {proc.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise Failure(f"{what}: not within {timeout} s")


async def receive(ws, expected, who):
    """Reads messages until `expected` arrives (other chat traffic is skipped)."""
    seen = []

    async def until_expected():
        while True:
            message = await ws.recv()
            if message == expected:
                return
            seen.append(message)

    try:
        await asyncio.wait_for(until_expected(), MESSAGE_TIMEOUT)
    except asyncio.TimeoutError:
        raise Failure(f"{who} did not receive {expected!r} within {MESSAGE_TIMEOUT} s (got {seen!r})")


# ---------------------------------------------------------------------------- part 1: demo


def read_ready_line(proc):
    """Reads the demo's stdout until `ready: ` (max READY_TIMEOUT s); returns all lines."""
    lines = []
    done = []

    def reader():
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            print(f"  demo | {line}", flush=True)
            if line.startswith("ready: "):
                done.append(line)
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    deadline = time.monotonic() + READY_TIMEOUT
    next_note = time.monotonic() + 30
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(1)
        if proc.poll() is not None and thread.is_alive():
            thread.join(2)
            break
        if time.monotonic() > next_note:
            print("  ... still waiting for the demo (compiling?)", flush=True)
            next_note += 30
    if not done:
        code = proc.poll()
        state = f"it exited with {code}" if code is not None else f"not within {READY_TIMEOUT} s"
        raise Failure(f"the demo printed no 'ready: ' line ({state})")
    return lines


async def chat(url):
    async with ws_connect(url, **WS_OPTIONS) as alice, ws_connect(url, **WS_OPTIONS) as bob:
        # The connect hook registers each client and greets it with a first message.
        for ws, who in ((alice, "alice"), (bob, "bob")):
            greeting = await asyncio.wait_for(ws.recv(), MESSAGE_TIMEOUT)
            if not str(greeting).startswith("* welcome!"):
                raise Failure(f"{who}'s first message is {greeting!r}, not the connect hook's greeting")
        await alice.send("* alice joined")
        await receive(alice, "* alice joined", "alice")
        await bob.send("* bob joined")
        await receive(bob, "* bob joined", "bob")
        await receive(alice, "* bob joined", "alice")
        message = "alice: hello from the quick-start check"
        await alice.send(message)
        await receive(alice, message, "alice (the sender)")
        await receive(bob, message, "bob")


def test_demo():
    env = dict(CHILD_ENV, DEMO_BRIDGE_ADDRESS="127.0.0.1:0")
    print("demo: cargo run --release --example demo (DEMO_BRIDGE_ADDRESS=127.0.0.1:0)", flush=True)
    proc = start("demo", ["cargo", "run", "--release", "--example", "demo"], env=env, stdout=subprocess.PIPE)
    lines = read_ready_line(proc)
    url = lines[-1][len("ready: "):].strip()
    if not url.startswith("ws://127.0.0.1:"):
        raise Failure(f"unexpected client URL {url!r}")
    browser = next((m.group(1) for l in lines if (m := re.search(r"browser:\s+(\S+)", l))), None)
    if browser is None:
        raise Failure("the demo printed no 'browser:' line")

    status, content_type, body = http_get(browser)
    if status != 200 or "text/html" not in content_type or b"<html" not in body.lower():
        raise Failure(f"chat page {browser}: {status} {content_type!r}, not an HTML page")
    if url.encode() not in body:
        raise Failure("the chat page does not name the printed client URL")
    print(f"  chat page {browser}: 200 {content_type}", flush=True)

    asyncio.run(chat(url))
    print("  two clients: both received the first client's message", flush=True)

    os.killpg(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Failure(f"the demo did not exit within {EXIT_TIMEOUT} s of SIGINT")
    if code != 0:
        raise Failure(f"the demo exited with {code} after SIGINT")
    print("  SIGINT: the demo exited with 0", flush=True)


# ---------------------------------------------------------------- part 2: examples/backend.py


async def echo(url):
    async with ws_connect(url, **WS_OPTIONS) as ws:
        await ws.send("hi")
        await receive(ws, "echo: hi", "the client")


def test_backend_py():
    print("backend.py: cargo build --release --bin websocket-bridge", flush=True)
    build = subprocess.run(["cargo", "build", "--release", "--bin", "websocket-bridge"], cwd=ROOT, env=CHILD_ENV)
    if build.returncode != 0:
        raise Failure(f"cargo build failed with {build.returncode}")

    backend_port = free_port()
    backend = start("backend.py", [sys.executable, "examples/backend.py", str(backend_port)])
    bridge_port = free_port()
    allowlist = rf"http://127\.0\.0\.1:{backend_port}/.*"
    bridge = start(
        "bridge",
        [
            os.path.join(ROOT, "target", "release", "websocket-bridge"),
            "--address",
            f"127.0.0.1:{bridge_port}",
            "--allowlist",
            allowlist,
        ],
    )

    def backend_up():
        with socket.create_connection(("127.0.0.1", backend_port), timeout=1):
            return True

    wait_until("examples/backend.py listening", backend_up, 30, backend)
    wait_until(
        "bridge GET /healthz answering 200",
        lambda: http_get(f"http://127.0.0.1:{bridge_port}/healthz", timeout=1)[0] == 200,
        30,
        bridge,
    )
    frame = urllib.parse.quote(f"http://127.0.0.1:{backend_port}/frame", safe="")
    asyncio.run(echo(f"ws://127.0.0.1:{bridge_port}/connect?f={frame}"))
    print('  sent "hi", received "echo: hi"', flush=True)


# ---------------------------------------------------------------- part 3: examples/chat_backend.py


async def room(url):
    async with ws_connect(url, **WS_OPTIONS) as first, ws_connect(url, **WS_OPTIONS) as second:
        await first.send("hello, room")
        await receive(first, "hello, room", "the sender")
        await receive(second, "hello, room", "the other member")


def test_chat_backend_py():
    backend_port = free_port()
    publish_port = free_port()
    publish = f"http://127.0.0.1:{publish_port}"
    backend = start("chat_backend.py", [sys.executable, "examples/chat_backend.py", str(backend_port), publish])
    bridge_port = free_port()
    bridge = start(
        "bridge",
        [
            os.path.join(ROOT, "target", "release", "websocket-bridge"),
            "--address",
            f"127.0.0.1:{bridge_port}",
            "--allowlist",
            rf"http://127\.0\.0\.1:{backend_port}/.*",
            "--publish-address",
            f"127.0.0.1:{publish_port}",
        ],
    )

    def backend_up():
        with socket.create_connection(("127.0.0.1", backend_port), timeout=1):
            return True

    wait_until("examples/chat_backend.py listening", backend_up, 30, backend)
    wait_until(
        "bridge GET /healthz answering 200",
        lambda: http_get(f"http://127.0.0.1:{bridge_port}/healthz", timeout=1)[0] == 200,
        30,
        bridge,
    )
    frame = urllib.parse.quote(f"http://127.0.0.1:{backend_port}/frame", safe="")
    hook = urllib.parse.quote(f"http://127.0.0.1:{backend_port}/connect", safe="")
    asyncio.run(room(f"ws://127.0.0.1:{bridge_port}/connect?f={frame}&c={hook}"))
    print('  "hello, room" from one member reached both through one publish', flush=True)


def main():
    results = []
    for name, test in [("demo", test_demo), ("backend.py", test_backend_py), ("chat_backend.py", test_chat_backend_py)]:
        try:
            test()
        except Exception as e:  # report every kind of failure the same way
            reason = str(e) if isinstance(e, Failure) else f"{type(e).__name__}: {e}"
            print(f"FAIL: quickstart {name}: {reason}", flush=True)
            show_logs()
            kill_all(keep_logs=True)
            results.append(False)
        else:
            print(f"PASS: quickstart {name}", flush=True)
            results.append(True)
        finally:
            kill_all()
    passed = sum(results)
    print(f"quickstart: {passed} passed, {len(results) - passed} failed", flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        kill_all()
