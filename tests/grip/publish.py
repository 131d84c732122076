#!/usr/bin/env python3
"""Publishes WebSocket messages to the bridge's publish API with Python's `gripcontrol`, as a
backend would. Run by tests/grip_libraries.rs.

    python3 tests/grip/publish.py URL CHANNEL [--auth MODE] [--key KEY] [--iss ISS] MESSAGE...

URL is the publish API's base (`http://127.0.0.1:5561`, GRIP's `control_uri`). Each MESSAGE is
published as one item, in order, each POST finished before the next:

    text:STRING            a text message
    bin:HEX                a binary message (bytes given as hex; gripcontrol sends content-bin)
    close:CODE[:REASON]    close every member

MODE says what the library is given:

    none         `control_uri` only: no Authorization header
    jwt          `control_iss` and `key`: `Bearer <HS256 JWT>`, `exp` an hour ahead
    bearer       `key` without `control_iss`: `Bearer <key>` as it is
    expired-jwt  a JWT whose `exp` passed a minute ago, minted by the library itself: its
                 client's `set_auth_jwt(claim, key)` keeps an `exp` the claim already has

Prints `published N` on success. When a publish fails, prints `publish failed: status S: BODY`
to stderr (S is the HTTP status, or `none` when there was no answer) and exits 1.
"""

import argparse
import calendar
import re
import sys
import time

from gripcontrol import GripPubControl, WebSocketMessageFormat
from pubcontrol import Item


def message_format(spec):
    kind, _, rest = spec.partition(":")
    if kind == "text":
        return WebSocketMessageFormat(rest)
    if kind == "bin":
        return WebSocketMessageFormat(bytes.fromhex(rest), binary=True)
    if kind == "close":
        code, _, reason = rest.partition(":")
        return WebSocketMessageFormat(action="close", code=int(code), reason=reason or None)
    raise argparse.ArgumentTypeError(f"{spec!r} is not text:…, bin:HEX or close:CODE[:REASON]")


def publisher(url, auth, key, iss):
    if auth == "none":
        return GripPubControl({"control_uri": url})
    if auth == "jwt":
        return GripPubControl({"control_uri": url, "control_iss": iss, "key": key})
    if auth == "bearer":
        return GripPubControl({"control_uri": url, "key": key})
    # expired-jwt
    pub = GripPubControl({"control_uri": url})
    expired = calendar.timegm(time.gmtime()) - 60
    for client in pub.clients:
        client.set_auth_jwt({"iss": iss, "exp": expired}, key)
    return pub


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("channel")
    parser.add_argument("messages", nargs="+", type=message_format, metavar="MESSAGE")
    parser.add_argument("--auth", choices=["none", "jwt", "bearer", "expired-jwt"], default="none")
    parser.add_argument("--key")
    parser.add_argument("--iss", default="backend")
    args = parser.parse_args()
    if args.auth != "none" and not args.key:
        parser.error(f"--auth {args.auth} needs --key")

    pub = publisher(args.url, args.auth, args.key, args.iss)
    for n, fmt in enumerate(args.messages):
        try:
            pub.publish(args.channel, Item(fmt), blocking=True)
        except ValueError as e:
            # pubcontrol raises ValueError("failed to publish: received failed status code 401
            # with message: …"); the status is only in that text.
            found = re.search(r"status code (\d+) with message: (.*)", str(e), re.DOTALL)
            status, body = found.groups() if found else ("none", str(e))
            print(f"publish failed: status {status}: {body.strip()}", file=sys.stderr)
            print(f"published {n}")
            sys.exit(1)
    print(f"published {len(args.messages)}")


if __name__ == "__main__":
    main()
