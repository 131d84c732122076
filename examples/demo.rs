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
//!   - `POST /connect`, the connect hook, answers `x-ws-proxy-subscribe: chat`: every client
//!     is a member of the channel `chat` before its socket opens;
//!   - `POST /frame` receives each client message from the bridge and publishes it, with its
//!     content type, to the channel with one POST to the bridge's publish API
//!     (`POST {publish}/channels/chat`), which delivers it to every member (the sender
//!     included); the frame POST is answered 204 with no body;
//!   - `POST /disconnect` receives the bridge's notice that a client went away (the bridge has
//!     already removed it from the channel); the backend only counts it.
//!
//!   Before channels, a chat backend looped over every client's callback URL, one POST each;
//!   the README's "Writing a backend" shows both ways.
//! * **The bridge**, through [`websocket_bridge::run_with`], on `127.0.0.1:8080` (or
//!   `DEMO_BRIDGE_ADDRESS`, e.g. `127.0.0.1:0` for a free port; if 8080 is taken the demo falls
//!   back to a free port and says so), with its publish API on a free loopback port. Its
//!   `--allowlist` admits exactly the backend's origin, and `--shutdown-grace 5s` keeps Ctrl-C
//!   quick.
//!
//! ```text
//! browser --ws--> bridge --POST /frame--> backend --POST /channels/chat--> bridge --ws--> every browser
//! ```
//!
//! The backend learns about each client from the connect hook (`c=…/connect`) before its socket
//! opens, joins it to `chat` and greets it with a first message (the hook's answer body), and
//! publishes every message to the channel; the chat page also announces itself with a
//! "joined" line. A terminal client sees
//! the greeting and everyone's messages from the moment it connects.
//!
//! The bridge's logs go to stderr (filter with `RUST_LOG`, default `info`); stdout carries only
//! the "running" block, ending with a machine-readable `ready: ws://…` line that CI waits for.
//! Ctrl-C (or SIGTERM) stops both servers: the bridge closes every client (1001) and delivers
//! the disconnect POSTs first, then the backend stops. A second Ctrl-C exits at once.

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
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;
use url::Url;

/// Where the bridge listens unless `DEMO_BRIDGE_ADDRESS` says otherwise.
const DEFAULT_BRIDGE_ADDRESS: &str = "127.0.0.1:8080";
/// The header naming a connection's callback URL (frame and disconnect POSTs).
const HEADER_SEND: &str = "x-ws-proxy-send";
/// The one chat room.
const CHANNEL: &str = "chat";
/// Time allowed for one publish POST to the bridge.
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
  backend publishes to the channel <code>chat</code> &rarr; bridge &rarr; every browser</footer>
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
    // What the browser and the bridge agreed on (permessage-deflate, by default).
    status.dataset.extensions = ws.extensions;
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
    /// Client for the publish POSTs to the bridge.
    http: reqwest::Client,
    /// `http://{publish address}/channels/chat`.
    publish_url: String,
    /// Callback URLs must start with this (`http://{bridge}/`): requests that do not come
    /// through this demo's bridge are refused.
    callback_prefix: String,
    /// Clients connected now (joined through the hook, not yet disconnected).
    clients: Mutex<usize>,
    /// The chat page with the client URL filled in.
    page: String,
}

impl Chat {
    /// Locks the client count. A poisoned lock only means a handler panicked mid-update of a
    /// plain number, which stays usable, so recover it.
    fn clients(&self) -> std::sync::MutexGuard<'_, usize> {
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

/// `POST /frame`: publish the message to the channel (one POST, whatever the number of
/// clients), answer 204.
async fn frame(State(chat): State<Arc<Chat>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(reason) = chat.callback_url(&headers) {
        return bad_request(reason);
    }
    // Keep the message's kind: text stays text (`text/*`), anything else is binary.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    let published = chat
        .http
        .post(&chat.publish_url)
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await;
    match published {
        Ok(response) if response.status().is_success() => {
            debug!(status = %response.status(), "chat: published")
        }
        Ok(response) => warn!(status = %response.status(), "chat: publish refused"),
        Err(e) => warn!(error = %e, "chat: publish failed"),
    }
    // 204 with no body: nothing more goes back to the sender through the reply.
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /connect`, the connect hook: join the new client to the channel before its socket
/// opens, and greet it with a first message (the hook's answer body).
async fn connect(State(chat): State<Arc<Chat>>, headers: HeaderMap) -> Response {
    let url = match chat.callback_url(&headers) {
        Ok(url) => url,
        Err(reason) => return bad_request(reason),
    };
    let others = {
        let mut clients = chat.clients();
        *clients += 1;
        *clients - 1
    };
    info!(callback = %url, others, "chat: client connecting");
    let greeting = match others {
        0 => "* welcome! nobody else is here yet: open a second tab".to_owned(),
        1 => "* welcome! 1 other person is here".to_owned(),
        n => format!("* welcome! {n} other people are here"),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (
                header::HeaderName::from_static("x-ws-proxy-subscribe"),
                CHANNEL,
            ),
        ],
        greeting,
    )
        .into_response()
}

/// `POST /disconnect`: count the client out (the bridge has removed it from the channel).
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
    *clients = clients.saturating_sub(1);
    info!(callback = %url, close_code = %code, clients = *clients, "chat: client left");
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
    let publish_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| format!("cannot listen for the publish API on 127.0.0.1: {e}"))?;
    let publish_addr = publish_listener
        .local_addr()
        .map_err(|e| format!("publish listener: {e}"))?;
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
        publish_url: format!("http://{publish_addr}/channels/{CHANNEL}"),
        callback_prefix: format!("{bridge_base}/"),
        clients: Mutex::new(0),
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
    let mut listeners = websocket_bridge::Listeners::new(bridge_listener);
    listeners.publish = Some(publish_listener);
    let bridge = tokio::spawn(websocket_bridge::run_with(listeners, config, stop));

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
