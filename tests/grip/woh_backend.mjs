// A WebSocket-over-HTTP backend written with Node's `@fanoutio/grip` the way one is written for
// Pushpin, served by node:http. Run by tests/grip_routes.rs; needs `npm ci` in tests/grip.
//
//   GRIP_URL=http://127.0.0.1:5561 node tests/grip/woh_backend.mjs
//
// It listens on 127.0.0.1 at a port the system picks and prints that port as its first line.
// GRIP_URL configures the library's Publisher (its publish endpoint); with `?verify-key=KEY`
// every request must carry a `Grip-Sig` that the Publisher's `validateGripSig` accepts, and gets
// 403 otherwise (what a backend behind Pushpin with a `sig_key` does).
//
// Per connection:
//
// - OPEN: accept, subscribe to the channel named by the request path's last segment (`room`
//   when empty), and remember the channel in the connection's meta (`Set-Meta-channel`);
// - TEXT `bye`: close with code 4001;
// - TEXT `publish:TEXT`: publish TEXT to the connection's channel with the Publisher;
// - any other TEXT: answer `echo TEXT`; BINARY: the same bytes back;
// - CLOSE from the client: close back; DISCONNECT: nothing more to say.

import { createServer } from 'node:http';
import {
    Publisher,
    WebSocketMessageFormat,
    encodeWebSocketEvents,
    getWebSocketContextFromNodeReq,
    isNodeReqWsOverHttp,
    parseGripUri,
} from '@fanoutio/grip';

const gripUrl = process.env.GRIP_URL;
if (gripUrl == null) {
    console.error('GRIP_URL is not set');
    process.exit(2);
}
const publisher = new Publisher(gripUrl);
const mustBeSigned = parseGripUri(gripUrl).verify_key != null;

async function handle(ws, path) {
    if (ws.isOpening()) {
        ws.accept();
        const channel = path.replace(/\/+$/, '').split('/').pop() || 'room';
        ws.meta.channel = channel;
        ws.subscribe(channel);
    }
    while (ws.canRecv()) {
        let message;
        try {
            message = ws.recvRaw();
        } catch {
            // DISCONNECT (or nothing left): the client is gone.
            return;
        }
        if (message == null) {
            ws.close();
            return;
        }
        if (message instanceof Uint8Array) {
            ws.sendBinary(message);
        } else if (message === 'bye') {
            ws.close(4001);
            return;
        } else if (message.startsWith('publish:')) {
            const text = message.slice('publish:'.length);
            await publisher.publishFormats(ws.meta.channel, new WebSocketMessageFormat(text));
        } else {
            ws.send(`echo ${message}`);
        }
    }
}

function refuse(res, status, text) {
    res.writeHead(status, { 'Content-Type': 'text/plain' });
    res.end(`${text}\n`);
}

const server = createServer(async (req, res) => {
    try {
        if (mustBeSigned) {
            const { isSigned } = await publisher.validateGripSig(req.headers['grip-sig']);
            if (!isSigned) {
                refuse(res, 403, 'invalid or missing Grip-Sig');
                return;
            }
        }
        if (!isNodeReqWsOverHttp(req)) {
            refuse(res, 400, 'not websocket-over-http');
            return;
        }
        const ws = await getWebSocketContextFromNodeReq(req);
        await handle(ws, new URL(req.url, 'http://backend').pathname);
        res.writeHead(200, ws.toHeaders());
        res.end(encodeWebSocketEvents(ws.getOutgoingEvents()));
    } catch (e) {
        console.error(e);
        refuse(res, 500, String(e));
    }
});

server.listen(0, '127.0.0.1', () => {
    console.log(String(server.address().port));
});
