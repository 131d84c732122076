#!/usr/bin/env python3
"""A backend that checks x-ws-proxy-signature (scheme v2) on every request from websocket-bridge.

Usage: WS_BRIDGE_SIGNING_SECRET=... [PUBLIC_ORIGIN=https://api.example.com] python3 examples/verify_signature.py PORT
PUBLIC_ORIGIN is the scheme://host[:port] that the bridge's URLs for this backend name (default
http://127.0.0.1:PORT, where it listens). Answers 204 to correctly signed requests and 401 to
the rest, printing one line per request: "<path> ok" or "<path> refused".
"""
import hashlib
import hmac
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["WS_BRIDGE_SIGNING_SECRET"].encode()
PORT = int(sys.argv[1])
# This backend's public origin, as written in the URLs clients give the bridge: lower-case,
# without a default port. Configured, never taken from the Host header, which a replay can set.
ORIGIN = os.environ.get("PUBLIC_ORIGIN") or f"http://127.0.0.1:{PORT}"
TOLERANCE = 300  # seconds: refuse signatures older (or newer) than this, against replays
SIGNED_HEADERS = (  # in the order of the signed string; a header that is absent counts as empty
    "x-ws-proxy-request-id",
    "x-ws-proxy-seq",
    "content-type",
    "x-ws-proxy-send",
    "x-ws-proxy-request-uri",
    "x-ws-proxy-close-code",
    "x-ws-proxy-close-reason",
    "x-ws-proxy-close-initiator",
    "x-ws-proxy-close-cause",
)


def verify(method, url, headers, body, secret=SECRET, now=None):
    """True if a v2= value of x-ws-proxy-signature signs this request and its t is fresh.

    url: the URL the bridge requested, i.e. ORIGIN + the request target exactly as received.
    headers: the request's headers (case-insensitive get). body: the raw body (bytes)."""
    signature = headers.get("x-ws-proxy-signature") or ""
    parts = [p.split("=", 1) for p in signature.split(",") if "=" in p]
    timestamps = [v for k, v in parts if k == "t"]
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        return False
    t = timestamps[0]
    if abs((now or time.time()) - int(t)) > TOLERANCE:
        return False
    fields = ["v2", t, method, url] + [headers.get(name) or "" for name in SIGNED_HEADERS]
    signed = "\n".join(fields).encode() + b"\n" + body
    expected = hmac.new(secret, signed, hashlib.sha256).hexdigest().encode()
    return any(hmac.compare_digest(expected, v.encode()) for k, v in parts if k == "v2")


class Backend(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        # self.path is the request target as received: path and query, not decoded.
        good = verify(self.command, ORIGIN + self.path, self.headers, body)
        print(self.path, "ok" if good else "refused", flush=True)
        self.send_response(204 if good else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Backend).serve_forever()
