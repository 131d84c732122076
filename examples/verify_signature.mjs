// A backend that checks x-ws-proxy-signature on every request from websocket-bridge (Node 18+).
//
// Usage: WS_BRIDGE_SIGNING_SECRET=... node examples/verify_signature.mjs PORT
// Answers 204 to correctly signed requests and 401 to the rest, printing one line per request:
// "<path> ok" or "<path> refused".
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const SECRET = process.env.WS_BRIDGE_SIGNING_SECRET;
const TOLERANCE = 300; // seconds: refuse signatures older (or newer) than this, against replays

export function verify(signatureHeader, sendHeader, body, secret = SECRET, now = Date.now() / 1000) {
  const parts = (signatureHeader ?? "").split(",").map((p) => p.split("=", 2)).filter((p) => p.length === 2);
  const timestamps = parts.filter(([k]) => k === "t").map(([, v]) => v);
  if (timestamps.length !== 1 || !/^\d+$/.test(timestamps[0])) return false;
  const t = timestamps[0];
  if (Math.abs(now - Number(t)) > TOLERANCE) return false;
  const expected = createHmac("sha256", secret)
    .update(`${t}.${sendHeader ?? ""}.`)
    .update(body)
    .digest();
  return parts
    .filter(([k]) => k === "v1")
    .some(([, v]) => {
      const given = Buffer.from(v, "hex");
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
}

createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const good = verify(req.headers["x-ws-proxy-signature"], req.headers["x-ws-proxy-send"], Buffer.concat(chunks));
    console.log(`${req.url} ${good ? "ok" : "refused"}`);
    res.writeHead(good ? 204 : 401).end();
  });
}).listen(Number(process.argv[2]), "127.0.0.1");
