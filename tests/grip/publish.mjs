// Publishes WebSocket messages to the bridge's publish API with Node's `@fanoutio/grip`, as a
// backend would. Run by tests/grip_libraries.rs; needs `npm ci` in tests/grip.
//
//   node tests/grip/publish.mjs URL CHANNEL [--auth MODE] [--key KEY] [--iss ISS] MESSAGE...
//
// URL is the publish API's base (`http://127.0.0.1:5561`, GRIP's `control_uri`). Each MESSAGE
// is published as one item, in order, each POST finished before the next:
//
//   text:STRING            a text message
//   bin:HEX                a binary message (a Uint8Array: the library sends content-bin)
//   close:CODE             close every member (the library's close carries no reason)
//
// MODE says what the library is given:
//
//   none         `control_uri` only: no Authorization header
//   jwt          `control_iss` and `key`: `Bearer <HS256 JWT>` (jose), `exp` 10 minutes ahead
//   bearer       `key` without `control_iss`: `Bearer <key>` as it is (Fastly's form)
//   expired-jwt  a JWT whose `exp` passed a minute ago. The library cannot mint one: its Jwt
//                auth always sets `exp` 10 minutes ahead. So it is made here with node:crypto
//                and handed to the library as a `key` without `control_iss`, which the library
//                sends as `Bearer <token>` unchanged.
//
// Prints `published N` on success. When a publish fails, prints `publish failed: status S: BODY`
// to stderr (S is the HTTP status, -1 when there was no answer) and exits 1.

import { createHmac } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Publisher, WebSocketMessageFormat } from '@fanoutio/grip';

function messageFormat(spec) {
    const colon = spec.indexOf(':');
    const [kind, rest] = colon < 0 ? [spec, ''] : [spec.slice(0, colon), spec.slice(colon + 1)];
    switch (kind) {
        case 'text':
            return new WebSocketMessageFormat(rest);
        case 'bin':
            return new WebSocketMessageFormat(new Uint8Array(Buffer.from(rest, 'hex')));
        case 'close':
            return new WebSocketMessageFormat(null, true, Number(rest));
        default:
            throw new Error(`${JSON.stringify(spec)} is not text:…, bin:HEX or close:CODE`);
    }
}

function expiredJwt(iss, key) {
    const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const exp = Math.floor(Date.now() / 1000) - 60;
    const signed = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ iss, exp })}`;
    return `${signed}.${createHmac('sha256', key).update(signed).digest('base64url')}`;
}

function gripConfig(url, auth, key, iss) {
    switch (auth) {
        case 'none':
            return { control_uri: url };
        case 'jwt':
            return { control_uri: url, control_iss: iss, key };
        case 'bearer':
            return { control_uri: url, key };
        case 'expired-jwt':
            return { control_uri: url, key: expiredJwt(iss, key) };
        default:
            throw new Error(`--auth ${auth} is not none, jwt, bearer or expired-jwt`);
    }
}

const { values, positionals } = parseArgs({
    options: {
        auth: { type: 'string', default: 'none' },
        key: { type: 'string' },
        iss: { type: 'string', default: 'backend' },
    },
    allowPositionals: true,
});
const [url, channel, ...specs] = positionals;
if (url == null || channel == null || specs.length === 0) {
    console.error('usage: node publish.mjs URL CHANNEL [--auth MODE] [--key KEY] [--iss ISS] MESSAGE...');
    process.exit(2);
}
if (values.auth !== 'none' && values.key == null) {
    console.error(`--auth ${values.auth} needs --key`);
    process.exit(2);
}

const publisher = new Publisher(gripConfig(url, values.auth, values.key, values.iss));
const formats = specs.map(messageFormat);
for (const [n, format] of formats.entries()) {
    try {
        await publisher.publishFormats(channel, format);
    } catch (e) {
        // A PublishException (not an Error): `message` is the body as JSON, `context` the answer.
        const status = e?.context?.statusCode ?? -1;
        const body = typeof e?.context?.httpBody === 'string' ? e.context.httpBody : e?.message;
        console.error(`publish failed: status ${status}: ${String(body).trim()}`);
        console.log(`published ${n}`);
        process.exit(1);
    }
}
console.log(`published ${formats.length}`);
