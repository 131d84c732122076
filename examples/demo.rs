//! A complete websocket-bridge setup in one process: the bridge plus a tiny chat backend.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! then open the printed browser URL in two tabs and chat, or connect from a terminal with the
//! printed `websocat` / `python3 -m websockets` command.
//!
//! # What runs
//!
//! * **The chat backend** (axum, on `127.0.0.1` with a port picked by the OS). It is an
//!   ordinary HTTP server that knows nothing about WebSockets:
//!   - `GET /` serves the chat page (one self-contained HTML file, inline JS and CSS);
//!   - `POST /frame` receives each client message from the bridge. The header
//!     `x-ws-proxy-send` carries the sender's callback URL, which the backend remembers; the body
//!     is then POSTed, with its content type, to the callback URL of *every* known client
//!     (the sender included), all at once, and the frame POST is answered 204 with no body;
//!   - `POST /disconnect` receives the bridge's notice that a client went away; the backend
//!     forgets that callback URL.
//!
//!   The backend only ever POSTs to callback URLs under its own bridge's base URL, whatever an
//!   `x-ws-proxy-send` header claims: anyone who can reach `/frame` could forge that header.
//! * **The bridge**, through [`websocket_bridge::run`], on `127.0.0.1:8080` (or
//!   `DEMO_BRIDGE_ADDRESS`, e.g. `127.0.0.1:0` for a free port; if 8080 is taken the demo falls
//!   back to a free port and says so). Its `--allowlist` admits exactly the backend's origin,
//!   and `--shutdown-grace 5s` keeps Ctrl-C quick.
//!
//! ```text
//! browser --ws--> bridge --POST /frame--> backend --POST {callback URL}--> bridge --ws--> every browser
//! ```
//!
//! The backend learns about each client from the connect hook (`c=…/connect`) before its socket
//! opens, greets it with a first message (the hook's answer body), and relays every message to
//! everyone; the chat page also announces itself with a "joined" line. A terminal client sees
//! the greeting and everyone's messages from the moment it connects.
//!
//! The bridge's logs go to stderr (filter with `RUST_LOG`, default `info`); stdout carries only
//! the "running" block, ending with a machine-readable `ready: ws://…` line that CI waits for.
//! Ctrl-C (or SIGTERM) stops both servers: the bridge closes every client (1001) and delivers
//! the disconnect POSTs first, then the backend stops. A second Ctrl-C exits at once.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;
use url::Url;

/// Where the bridge listens unless `DEMO_BRIDGE_ADDRESS` says otherwise.
const DEFAULT_BRIDGE_ADDRESS: &str = "127.0.0.1:8080";
/// The header naming a connection's callback URL (frame and disconnect POSTs).
const HEADER_SEND: &str = "x-ws-proxy-send";
/// Time allowed for one relay POST to the bridge's callback API.
const RELAY_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the backend is given to finish its own requests once the bridge has stopped.
const BACKEND_STOP_GRACE: Duration = Duration::from_secs(3);

/// The chat page; `__WS_URL__` is replaced by the full client URL (bridge `/connect` with the
/// backend's frame and disconnect URLs in the query).
const CHAT_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>websocket-bridge chat demo</title>
<style>
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.4 system-ui, sans-serif; background: #f3f4f6; color: #111827;
         display: flex; flex-direction: column; height: 100vh; }
  header { padding: 10px 16px; background: #1f2937; color: #f9fafb; display: flex;
           align-items: baseline; gap: 12px; }
  header h1 { font-size: 17px; margin: 0; }
  #status { font-size: 13px; color: #d1d5db; }
  #status.open { color: #86efac; }
  #status.closed { color: #fca5a5; }
  #log { flex: 1; overflow-y: auto; margin: 0; padding: 12px 16px; list-style: none; }
  #log li { margin: 4px 0; padding: 6px 10px; background: #fff; border-radius: 6px;
            box-shadow: 0 1px 2px rgba(0,0,0,.06); white-space: pre-wrap; word-break: break-word; }
  #log li.mine { background: #dbeafe; }
  #log li.note { background: none; box-shadow: none; color: #6b7280; font-style: italic; }
  form { display: flex; gap: 8px; padding: 10px 16px; background: #e5e7eb; }
  #text { flex: 1; padding: 8px 10px; font: inherit; border: 1px solid #9ca3af; border-radius: 6px; }
  button { padding: 8px 18px; font: inherit; border: 0; border-radius: 6px; background: #2563eb;
           color: #fff; cursor: pointer; }
  button:disabled { background: #9ca3af; cursor: default; }
  footer { padding: 4px 16px 8px; font-size: 12px; color: #6b7280; background: #e5e7eb; }
</style>
</head>
<body>
<header><h1>websocket-bridge chat</h1><span id="status">connecting…</span></header>
<ul id="log"></ul>
<form id="send">
  <input id="text" autocomplete="off" placeholder="Type a message" disabled>
  <button id="button" disabled>Send</button>
</form>
<footer>browser &rarr; bridge (WebSocket) &rarr; backend <code>POST /frame</code> &rarr;
  backend POSTs to every client's callback URL &rarr; bridge &rarr; every browser</footer>
<script>
  "use strict";
  const WS_URL = "__WS_URL__";
  const name = "guest-" + Math.floor(1000 + Math.random() * 9000);
  const log = document.getElementById("log");
  const status = document.getElementById("status");
  const text = document.getElementById("text");
  const button = document.getElementById("button");

  function show(line, kind) {
    const item = document.createElement("li");
    item.textContent = line;  // textContent, never innerHTML: messages are untrusted
    if (kind) item.className = kind;
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
  }

  const ws = new WebSocket(WS_URL);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    status.textContent = "connected as " + name;
    status.className = "open";
    text.disabled = button.disabled = false;
    text.focus();
    // The connect hook already told the backend about this client; say hello to the others.
    ws.send("* " + name + " joined");
  };
  ws.onmessage = (event) => {
    if (typeof event.data === "string") {
      show(event.data, event.data.startsWith(name + ": ") ? "mine" : "");
    } else {
      show("[binary message, " + event.data.byteLength + " bytes]", "note");
    }
  };
  ws.onclose = (event) => {
    status.textContent = "disconnected (" + event.code + (event.reason ? " " + event.reason : "") + ")";
    status.className = "closed";
    text.disabled = button.disabled = true;
    show("connection closed, code " + event.code + (event.reason ? ": " + event.reason : ""), "note");
  };
  document.getElementById("send").onsubmit = (event) => {
    event.preventDefault();
    if (text.value.trim() !== "" && ws.readyState === WebSocket.OPEN) {
      ws.send(name + ": " + text.value);
      text.value = "";
    }
    text.focus();
  };
</script>
</body>
</html>
"#;

/// The chat backend's state.
struct Chat {
    /// Client for the relay POSTs to the bridge's callback API.
    http: reqwest::Client,
    /// Callback URLs must start with this (`http://{bridge}/`): the backend only ever POSTs to
    /// its own bridge, whatever a request's `x-ws-proxy-send` header claims.
    callback_prefix: String,
    /// Callback URLs of the clients that have sent at least one message and not disconnected.
    clients: Mutex<HashSet<String>>,
    /// The chat page with the client URL filled in.
    page: String,
}

impl Chat {
    /// Locks the client set. A poisoned lock only means a handler panicked mid-update of a
    /// plain set, which stays usable, so recover it.
    fn clients(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection's callback URL from `x-ws-proxy-send`, if it names this demo's bridge;
    /// otherwise what is wrong, for a 400 answer.
    fn callback_url(&self, headers: &HeaderMap) -> Result<String, &'static str> {
        let url = headers
            .get(HEADER_SEND)
            .ok_or("missing x-ws-proxy-send header (send through the bridge)")?
            .to_str()
            .map_err(|_| "x-ws-proxy-send is not visible ASCII")?;
        if !url.starts_with(&self.callback_prefix) {
            return Err("x-ws-proxy-send does not name this demo's bridge");
        }
        Ok(url.to_owned())
    }
}

/// A 400 answer with a one-line reason.
fn bad_request(reason: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
}

/// `GET /`: the chat page.
async fn page(State(chat): State<Arc<Chat>>) -> Html<String> {
    Html(chat.page.clone())
}

/// `POST /frame`: remember the sender, relay the message to every client, answer 204.
async fn frame(State(chat): State<Arc<Chat>>, headers: HeaderMap, body: Bytes) -> Response {
    let sender = match chat.callback_url(&headers) {
        Ok(url) => url,
        Err(reason) => return bad_request(reason),
    };
    // Keep the message's kind: text stays text (`text/*`), anything else is binary.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));

    // Snapshot the recipients; the lock is never held across an await.
    let recipients: Vec<String> = {
        let mut clients = chat.clients();
        if clients.insert(sender.clone()) {
            info!(callback = %sender, clients = clients.len(), "chat: client joined");
        }
        clients.iter().cloned().collect()
    };

    // One POST per recipient, all at the same time.
    let mut relays = JoinSet::new();
    for url in recipients {
        let request = chat
            .http
            .post(&url)
            .header(header::CONTENT_TYPE, content_type.clone())
            .body(body.clone());
        relays.spawn(async move { (url, request.send().await) });
    }
    while let Some(joined) = relays.join_next().await {
        let Ok((url, result)) = joined else { continue };
        match result {
            // 202: queued for that client.
            Ok(response) if response.status().is_success() => {}
            // 404: that client has closed (its disconnect POST, which removes it, is on its
            // way), or its handshake is still completing.
            Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                debug!(callback = %url, "chat: client not (or no longer) connected")
            }
            // 503 (queue full) and the like: that client misses this message.
            Ok(response) => {
                warn!(callback = %url, status = %response.status(), "chat: relay refused")
            }
            Err(e) => warn!(callback = %url, error = %e, "chat: relay failed"),
        }
    }
    // 204 with no body: nothing more goes back to the sender through the reply.
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /connect`, the connect hook: remember the new client before its socket opens, and
/// greet it with a first message (the hook's answer body).
async fn connect(State(chat): State<Arc<Chat>>, headers: HeaderMap) -> Response {
    let url = match chat.callback_url(&headers) {
        Ok(url) => url,
        Err(reason) => return bad_request(reason),
    };
    let others = {
        let mut clients = chat.clients();
        clients.insert(url.clone());
        clients.len() - 1
    };
    info!(callback = %url, others, "chat: client connecting");
    let greeting = match others {
        0 => "* welcome! nobody else is here yet: open a second tab".to_owned(),
        1 => "* welcome! 1 other person is here".to_owned(),
        n => format!("* welcome! {n} other people are here"),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        greeting,
    )
        .into_response()
}

/// `POST /disconnect`: forget the client.
async fn disconnect(State(chat): State<Arc<Chat>>, headers: HeaderMap) -> Response {
    let url = match chat.callback_url(&headers) {
        Ok(url) => url,
        Err(reason) => return bad_request(reason),
    };
    let code = headers
        .get("x-ws-proxy-close-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let mut clients = chat.clients();
    if clients.remove(&url) {
        info!(callback = %url, close_code = %code, clients = clients.len(), "chat: client left");
    } else {
        debug!(callback = %url, close_code = %code, "chat: unknown client left");
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Binds the bridge's listener: `DEMO_BRIDGE_ADDRESS` exactly if set, else 127.0.0.1:8080,
/// falling back to a free port when 8080 is taken.
async fn bind_bridge() -> Result<TcpListener, String> {
    if let Ok(address) = std::env::var("DEMO_BRIDGE_ADDRESS") {
        return TcpListener::bind(address.as_str())
            .await
            .map_err(|e| format!("cannot listen on DEMO_BRIDGE_ADDRESS={address}: {e}"));
    }
    match TcpListener::bind(DEFAULT_BRIDGE_ADDRESS).await {
        Ok(listener) => Ok(listener),
        Err(e) => {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
            let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
            eprintln!(
                "demo: {DEFAULT_BRIDGE_ADDRESS} is not available ({e}); the bridge uses port {port} instead (set DEMO_BRIDGE_ADDRESS to choose)"
            );
            Ok(listener)
        }
    }
}

/// The address clients and backends should use: the bound one, or loopback when the bridge
/// listens on every interface.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

/// Resolves on SIGINT/SIGTERM; from then on a second Ctrl-C exits at once.
async fn shutdown() {
    websocket_bridge::shutdown_signal().await;
    eprintln!("demo: stopping (closing clients; press Ctrl-C again to exit at once)");
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("demo: exiting now");
            std::process::exit(130);
        }
    });
}

async fn demo() -> Result<(), String> {
    websocket_bridge::install_crypto_provider();

    // Bind both listeners first: each side's URL goes into the other's configuration.
    let backend_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| format!("cannot listen for the backend on 127.0.0.1: {e}"))?;
    let backend_addr = backend_listener
        .local_addr()
        .map_err(|e| format!("backend listener: {e}"))?;
    let bridge_listener = bind_bridge().await?;
    let bridge_addr = reachable(
        bridge_listener
            .local_addr()
            .map_err(|e| format!("bridge listener: {e}"))?,
    );

    let backend_origin = format!("http://{backend_addr}");
    let bridge_base = format!("http://{bridge_addr}");
    let connect_url = format!("ws://{bridge_addr}/connect");
    let client_url = Url::parse_with_params(
        &connect_url,
        &[
            ("f", format!("{backend_origin}/frame")),
            ("d", format!("{backend_origin}/disconnect")),
            ("c", format!("{backend_origin}/connect")),
        ],
    )
    .map_err(|e| format!("cannot build the client URL: {e}"))?;

    // The bridge: exactly the backend's origin is allowed; callback URLs name the reachable
    // address. Flags given here win over any WS_BRIDGE_* environment variable.
    let allowlist = format!("{}/.*", regex::escape(&backend_origin));
    let config = websocket_bridge::Config::from_args([
        "--allowlist",
        allowlist.as_str(),
        "--base-url",
        bridge_base.as_str(),
        "--shutdown-grace",
        "5s",
    ])
    .map_err(|e| format!("bridge configuration: {e}"))?;

    // The backend.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(RELAY_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the backend's HTTP client: {e}"))?;
    let chat = Arc::new(Chat {
        http,
        callback_prefix: format!("{bridge_base}/"),
        clients: Mutex::new(HashSet::new()),
        page: CHAT_PAGE.replace("__WS_URL__", client_url.as_str()),
    });
    let app = Router::new()
        .route("/", get(page))
        .route("/connect", post(connect))
        .route("/frame", post(frame))
        .route("/disconnect", post(disconnect))
        .with_state(chat);
    let (stop_backend, backend_stopped) = tokio::sync::oneshot::channel::<()>();
    let backend = tokio::spawn(async move {
        axum::serve(backend_listener, app)
            .with_graceful_shutdown(async {
                let _ = backend_stopped.await;
            })
            .await
    });
    // Poll the shutdown future once here, which installs the SIGINT/SIGTERM handlers, so that a
    // Ctrl-C arriving any time after the banner below is never missed.
    let mut stop = Box::pin(shutdown());
    if std::future::poll_fn(|cx| Poll::Ready(stop.as_mut().poll(cx)))
        .await
        .is_ready()
    {
        return Ok(());
    }
    let bridge = tokio::spawn(websocket_bridge::run(bridge_listener, config, stop));

    // Both listeners are bound, so connections made from now on are served.
    let banner = format!(
        "websocket-bridge demo is running\n\
         \x20 bridge:   {connect_url}\n\
         \x20 browser:  {backend_origin}/            (open in two tabs and chat)\n\
         \x20 terminal: websocat '{client_url}'\n\
         \x20       or: python3 -m websockets '{client_url}'\n\
         ready: {client_url}\n"
    );
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush())
    {
        warn!(error = %e, "cannot write to stdout");
    }
    drop(stdout);

    // The bridge returns once shut down (disconnect POSTs delivered); then stop the backend.
    let bridge_result = bridge.await;
    let _ = stop_backend.send(());
    match tokio::time::timeout(BACKEND_STOP_GRACE, backend).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "backend stopped with an error"),
        Ok(Err(e)) => warn!(error = %e, "backend task failed"),
        Err(_) => warn!("backend did not stop in time"),
    }
    match bridge_result {
        Ok(Ok(())) => {
            info!("demo stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(format!("bridge: {e}")),
        Err(e) => Err(format!("bridge task failed: {e}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs on stderr, so stdout carries only the banner.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match demo().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}
