#!/usr/bin/env python3
"""A frame backend for tests/faults.rs that can be killed with SIGKILL and restarted.

Usage: recorder.py PORT LOG_FILE

Listens on 127.0.0.1:PORT (HTTP/1.1 keep-alive, SO_REUSEADDR so a restart can take the port
again at once), appends one line "{x-ws-proxy-seq} {body}\\n" per POST to /frame to LOG_FILE
and flushes it before answering 204 with Content-Length: 0. Other POSTs are answered 204 and
not logged. Prints "ready" on stdout once listening. Python 3 standard library only.
"""
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
LOG = open(sys.argv[2], "a", encoding="utf-8")
LOCK = threading.Lock()


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the bridge reuses its pooled connection

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/frame":
            seq = self.headers.get("x-ws-proxy-seq", "-")
            line = "%s %s\n" % (seq, body.decode("utf-8", "replace"))
            with LOCK:
                LOG.write(line)
                LOG.flush()
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):  # keep the test output quiet
        pass


class Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


server = Server(("127.0.0.1", PORT), Recorder)
print("ready", flush=True)
server.serve_forever()
