#!/usr/bin/env python3
"""A WebSocket-over-HTTP backend written with Python's `gripcontrol` the way one is written for
Pushpin, served by the standard library's http.server. Run by tests/grip_routes.rs.

    GRIP_URL=http://127.0.0.1:5561 python3 tests/grip/woh_backend.py

It listens on 127.0.0.1 at a port the system picks and prints that port as its first line.
GRIP_URL is the GRIP proxy's publish endpoint, parsed with the library's `parse_grip_uri`; with
`?verify-key=KEY` every request must carry a `Grip-Sig` that `validate_sig` accepts with KEY,
and gets 403 otherwise (what a backend behind Pushpin with a `sig_key` does).

Per connection:

- OPEN: accept, subscribe to the channel named by the request path's last segment (`room`
  when empty), and remember the channel in the connection's meta (`Set-Meta-channel`);
- TEXT `bye`: close with code 4001;
- TEXT `publish:TEXT`: publish TEXT to the connection's channel with `GripPubControl`;
- any other TEXT: answer `echo TEXT`; BINARY: the same bytes back;
- CLOSE from the client: close back; DISCONNECT: nothing more to say.
"""

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from struct import pack
from urllib.parse import urlsplit

from gripcontrol import (
    GripPubControl,
    WebSocketContext,
    WebSocketEvent,
    WebSocketMessageFormat,
    decode_websocket_events,
    encode_websocket_events,
    parse_grip_uri,
    validate_sig,
)
from pubcontrol import Item

GRIP = parse_grip_uri(os.environ["GRIP_URL"])
PUBLISHER = GripPubControl(GRIP)
EVENTS_TYPE = "application/websocket-events"


def meta_of(headers):
    """The connection's meta: the request's `Meta-*` headers, names lower-case."""
    return {
        name[len("meta-") :].lower(): value
        for name, value in headers.items()
        if name.lower().startswith("meta-")
    }


def outgoing(ws):
    """The answer's events and headers for what the handler did with the context."""
    events = []
    if ws.accepted:
        events.append(WebSocketEvent("OPEN"))
    events.extend(ws.out_events)
    if ws.closed:
        events.append(WebSocketEvent("CLOSE", pack(">H", ws.out_close_code)))
    headers = {"Content-Type": EVENTS_TYPE}
    if ws.accepted:
        headers["Sec-WebSocket-Extensions"] = "grip"
    for name in ws.orig_meta:
        if name not in ws.meta:
            headers["Set-Meta-" + name] = ""
    for name, value in ws.meta.items():
        if ws.orig_meta.get(name) != value:
            headers["Set-Meta-" + name] = value
    return encode_websocket_events(events), headers


def handle(ws, path):
    if ws.is_opening():
        ws.accept()
        channel = path.rstrip("/").rsplit("/", 1)[-1] or "room"
        ws.meta["channel"] = channel
        ws.subscribe(channel)
    while ws.can_recv():
        try:
            message = ws.recv()
        except IOError:
            # DISCONNECT: the client is gone.
            return
        if message is None:
            ws.close()
            return
        if isinstance(message, bytes):
            ws.send_binary(message)
        elif message == "bye":
            ws.close(4001)
            return
        elif message.startswith("publish:"):
            text = message[len("publish:") :]
            PUBLISHER.publish(ws.meta["channel"], Item(WebSocketMessageFormat(text)), blocking=True)
        else:
            ws.send("echo " + message)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        verify_key = GRIP.get("verify_key")
        if verify_key is not None:
            sig = self.headers.get("Grip-Sig")
            if sig is None or not validate_sig(sig, verify_key):
                self.answer(403, {"Content-Type": "text/plain"}, b"invalid or missing Grip-Sig\n")
                return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != EVENTS_TYPE:
            self.answer(400, {"Content-Type": "text/plain"}, b"not websocket-over-http\n")
            return
        ws = WebSocketContext(
            self.headers["Connection-Id"], meta_of(self.headers), decode_websocket_events(body)
        )
        handle(ws, urlsplit(self.path).path)
        body, headers = outgoing(ws)
        self.answer(200, headers, body)

    def answer(self, status, headers, body):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
