// A backend that checks x-ws-proxy-signature (scheme v2) on every request from websocket-bridge
// (Node 18+).
//
// Usage: WS_BRIDGE_SIGNING_SECRET=... [PUBLIC_ORIGIN=https://api.example.com] node examples/verify_signature.mjs PORT
// PUBLIC_ORIGIN is the scheme://host[:port] that the bridge's URLs for this backend name (default
// http://127.0.0.1:PORT, where it listens). Answers 204 to correctly signed requests and 401 to
// the rest, printing one line per request: "<path> ok" or "<path> refused".
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const SECRET = process.env.WS_BRIDGE_SIGNING_SECRET;
const PORT = Number(process.argv[2]);
// This backend's public origin, as written in the URLs clients give the bridge: lower-case,
// without a default port. Configured, never taken from the Host header, which a replay can set.
const ORIGIN = process.env.PUBLIC_ORIGIN || `http://127.0.0.1:${PORT}`;
const TOLERANCE = 300; // seconds: refuse signatures older (or newer) than this, against replays
const SIGNED_HEADERS = [ // in the order of the signed string; a header that is absent counts as empty
  "x-ws-proxy-request-id",
  "x-ws-proxy-seq",
  "content-type",
  "x-ws-proxy-send",
  "x-ws-proxy-request-uri",
  "x-ws-proxy-close-code",
  "x-ws-proxy-close-reason",
  "x-ws-proxy-close-initiator",
  "x-ws-proxy-close-cause",
];

// url: the URL the bridge requested, i.e. ORIGIN + the request target exactly as received.
// headers: Node's lower-cased request headers. body: the raw body (a Buffer).
export function verify(method, url, headers, body, secret = SECRET, now = Date.now() / 1000) {
  const signature = headers["x-ws-proxy-signature"] ?? "";
  const parts = signature.split(",").map((p) => p.split("=", 2)).filter((p) => p.length === 2);
  const timestamps = parts.filter(([k]) => k === "t").map(([, v]) => v);
  if (timestamps.length !== 1 || !/^\d+$/.test(timestamps[0])) return false;
  const t = timestamps[0];
  if (Math.abs(now - Number(t)) > TOLERANCE) return false;
  const fields = ["v2", t, method, url, ...SIGNED_HEADERS.map((name) => headers[name] ?? "")];
  const expected = createHmac("sha256", secret)
    .update(fields.join("\n") + "\n")
    .update(body)
    .digest();
  return parts
    .filter(([k]) => k === "v2")
    .some(([, v]) => {
      const given = Buffer.from(v, "hex");
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
}

createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    // req.url is the request target as received: path and query, not decoded.
    const good = verify(req.method, ORIGIN + req.url, req.headers, Buffer.concat(chunks));
    console.log(`${req.url} ${good ? "ok" : "refused"}`);
    res.writeHead(good ? 204 : 401).end();
  });
}).listen(PORT, "127.0.0.1");
