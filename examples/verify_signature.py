#!/usr/bin/env python3
"""A backend that checks x-ws-proxy-signature on every request from websocket-bridge.

Usage: WS_BRIDGE_SIGNING_SECRET=... python3 examples/verify_signature.py PORT
Answers 204 to correctly signed requests and 401 to the rest, printing one line per request:
"<path> ok" or "<path> refused".
"""
import hashlib
import hmac
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["WS_BRIDGE_SIGNING_SECRET"].encode()
TOLERANCE = 300  # seconds: refuse signatures older (or newer) than this, against replays


def verify(signature_header, send_header, body, secret=SECRET, now=None):
    """True if any v1= signature matches HMAC-SHA256(secret, "<t>.<send>.<body>") and t is fresh."""
    parts = [p.split("=", 1) for p in (signature_header or "").split(",") if "=" in p]
    timestamps = [v for k, v in parts if k == "t"]
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        return False
    t = timestamps[0]
    if abs((now or time.time()) - int(t)) > TOLERANCE:
        return False
    signed = t.encode() + b"." + (send_header or "").encode() + b"." + body
    expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for k, v in parts if k == "v1")


class Backend(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        good = verify(self.headers.get("x-ws-proxy-signature"), self.headers.get("x-ws-proxy-send"), body)
        print(self.path, "ok" if good else "refused", flush=True)
        self.send_response(204 if good else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Backend).serve_forever()
