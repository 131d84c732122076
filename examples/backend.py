#!/usr/bin/env python3
"""A complete websocket-bridge backend: answers every message with "echo: <text>"."""
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Backend(BaseHTTPRequestHandler):
    def do_POST(self):  # /frame for each message, /disconnect when a client leaves
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        callback = self.headers.get("x-ws-proxy-send")  # this client's callback URL
        if self.path == "/frame" and callback:
            reply = ("echo: " + body.decode("utf-8", "replace")).encode()
            headers = {"content-type": "text/plain; charset=utf-8"}
            request = urllib.request.Request(callback, data=reply, headers=headers)
            try:
                urllib.request.urlopen(request, timeout=5).close()  # 202: queued for the client
            except OSError as e:
                self.log_error("callback failed: %s", e)
        self.send_response(204)
        self.end_headers()


port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
ThreadingHTTPServer(("127.0.0.1", port), Backend).serve_forever()
