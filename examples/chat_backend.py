#!/usr/bin/env python3
"""A chat room as a websocket-bridge backend: every message goes to every client, one publish."""
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Chat(BaseHTTPRequestHandler):
    def do_POST(self):  # /connect (hook), /frame for each message, /disconnect
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204)
        if self.path == "/connect":
            self.send_header("x-ws-proxy-subscribe", "chat")  # join the room before it opens
        elif self.path == "/frame":
            kind = self.headers.get("content-type", "application/octet-stream")
            request = urllib.request.Request(PUBLISH + "/channels/chat", data=body, headers={"content-type": kind})
            try:
                urllib.request.urlopen(request, timeout=5).close()  # 200: queued for every member
            except OSError as e:
                self.log_error("publish failed: %s", e)
        self.end_headers()


port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
PUBLISH = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:5561"  # bridge --publish-address
ThreadingHTTPServer(("127.0.0.1", port), Chat).serve_forever()
