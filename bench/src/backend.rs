//! The in-process benchmark backend: a hyper HTTP/1.1 server with keep-alive.
//!
//! Routes (every one counts the request in [`Stats::requests`]):
//!
//! - `POST /sink`: answers 204 at once (upstream, growth, large and direct scenarios); counts
//!   the messages and their bytes.
//! - `POST /echo`: POSTs the body back to the client through its callback URL with a pooled
//!   hyper client, then answers 204 (round-trip scenario: client -> bridge -> backend ->
//!   callback POST -> bridge -> client).
//! - `POST /hello`: POSTs the callback URL itself, as text, through that callback URL, then
//!   answers 204, so each client learns its own callback URL (downstream scenarios). This works
//!   with bridges that do not relay the frame POST's answer (the original does not).
//! - `POST /subscribe?channel=NAME`: a connect hook; answers 200 with
//!   `x-ws-proxy-subscribe: NAME`, so the bridge joins the connection to that channel before
//!   it answers the handshake (fanout scenario).
//! - `POST /register`: notes the callback URL of the frame POST and answers 204, so the bench
//!   can later POST to every client in turn (fanout-by-callbacks scenario).
//! - `POST /disconnect`: answers 204 (the disconnect URL every client names).
//! - `POST /woh/{sink,echo,subscribe}`: websocket-over-http (Pushpin's protocol), reached
//!   through the bridge's `--route /woh/=…,protocol=websocket-over-http`. The body's events
//!   are decoded ([`crate::events`]); TEXT and BINARY are counted in [`Stats::woh_messages`].
//!   OPEN is answered `OPEN` with `Sec-WebSocket-Extensions: grip`, as a `gripcontrol`
//!   backend answers, so every message to the client carries the `m:` prefix (which the
//!   bridge strips) and `c:` messages are control messages. `sink` answers no events
//!   (woh-upstream); `echo` answers each message with the same message, `m:`-prefixed
//!   (woh-roundtrip: the reply rides in the answer body, no callback); `subscribe?channel=NAME`
//!   adds `c:{"type":"subscribe","channel":"NAME"}` to the OPEN answer (woh-downstream).
//!
//! The header holding the callback URL depends on the bridge ([`Backend::set_callback_header`]);
//! any 2xx answer to a callback POST counts as delivered (ours answers 202, the original 200).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::BoxError;
use crate::events::{self, Kind};

/// Counters of the backend, read by the scenarios as before/after snapshots.
#[derive(Default)]
pub(crate) struct Stats {
    /// Every request served, whatever its route.
    pub(crate) requests: AtomicU64,
    /// Messages received on `/sink`.
    pub(crate) sink_messages: AtomicU64,
    /// Body bytes received on `/sink`.
    pub(crate) sink_bytes: AtomicU64,
    /// Callback POSTs answered with a 2xx (`/echo`).
    pub(crate) callbacks_ok: AtomicU64,
    /// Callback POSTs that failed or were answered with anything but a 2xx.
    pub(crate) callbacks_failed: AtomicU64,
    /// Connect hook calls answered on `/subscribe`.
    pub(crate) subscribed: AtomicU64,
    /// Events requests on `/woh/*`.
    pub(crate) woh_requests: AtomicU64,
    /// TEXT and BINARY events received on `/woh/*`.
    pub(crate) woh_messages: AtomicU64,
    /// Content bytes of those messages.
    pub(crate) woh_bytes: AtomicU64,
    /// OPEN events received on `/woh/*`.
    pub(crate) woh_opens: AtomicU64,
    /// `/woh/*` requests whose body was not well-formed events (answered 400).
    pub(crate) woh_bad_bodies: AtomicU64,
}

struct State {
    stats: Arc<Stats>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// The frame POST header that names the callback URL, per the bridge being measured.
    callback_header: RwLock<HeaderName>,
    /// Callback URLs noted by `/register`, taken by [`Backend::take_registered`].
    registered: Mutex<Vec<HeaderValue>>,
}

impl State {
    fn callback_header(&self) -> HeaderName {
        self.callback_header
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A running backend.
pub(crate) struct Backend {
    addr: SocketAddr,
    stats: Arc<Stats>,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub(crate) async fn start() -> Result<Self, BoxError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(4096)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let state = Arc::new(State {
            stats: Arc::clone(&stats),
            client,
            callback_header: RwLock::new(HeaderName::from_static("x-ws-proxy-send")),
            registered: Mutex::default(),
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // EMFILE and friends: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, Arc::clone(&state)));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            stats,
            state: shared,
            task,
        })
    }

    /// Reads callback URLs from `header` (lower case) from now on.
    pub(crate) fn set_callback_header(&self, header: &'static str) {
        *self
            .state
            .callback_header
            .write()
            .unwrap_or_else(PoisonError::into_inner) = HeaderName::from_static(header);
    }

    /// The callback URLs `/register` noted since the last call, as origin-form paths, in the
    /// order they arrived; the list is emptied. URLs that are not `http://HOST/PATH` are
    /// dropped (and so missing from the count).
    pub(crate) fn take_registered(&self) -> Vec<Uri> {
        let taken = std::mem::take(
            &mut *self
                .state
                .registered
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        taken
            .iter()
            .filter_map(|url| {
                let url = url.to_str().ok()?.strip_prefix("http://")?;
                url[url.find('/')?..].parse().ok()
            })
            .collect()
    }

    /// How many callback URLs `/register` holds now.
    pub(crate) fn registered(&self) -> usize {
        self.state
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Where the backend listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backend's counters.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The allowlist pattern that admits exactly this backend's URLs.
    pub(crate) fn allowlist(&self) -> String {
        format!("http://127\\.0\\.0\\.1:{}/.*", self.addr.port())
    }

    /// The URL of one of the routes, e.g. `url("/sink")`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy)]
enum Route {
    Sink,
    Echo,
    Hello,
    Subscribe,
    Register,
    Disconnect,
    Woh(WohMode),
    Unknown,
}

/// What a `/woh/*` route does with the messages it gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WohMode {
    /// Counts them; answers no events.
    Sink,
    /// Answers each with the same message.
    Echo,
    /// Counts them; the OPEN answer subscribes the connection to `?channel=NAME`.
    Subscribe,
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = match req.uri().path() {
        "/sink" => Route::Sink,
        "/echo" => Route::Echo,
        "/hello" => Route::Hello,
        "/subscribe" => Route::Subscribe,
        "/register" => Route::Register,
        "/disconnect" => Route::Disconnect,
        "/woh/sink" => Route::Woh(WohMode::Sink),
        "/woh/echo" => Route::Woh(WohMode::Echo),
        "/woh/subscribe" => Route::Woh(WohMode::Subscribe),
        _ => Route::Unknown,
    };
    let callback = req.headers().get(state.callback_header()).cloned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    // Read the whole body so the keep-alive connection stays usable.
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let response = match (route, callback) {
        (Route::Sink, _) => {
            state.stats.sink_messages.fetch_add(1, Ordering::Relaxed);
            state
                .stats
                .sink_bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            status(StatusCode::NO_CONTENT)
        }
        (Route::Disconnect, _) => status(StatusCode::NO_CONTENT),
        (Route::Woh(mode), _) => websocket_over_http(&state.stats, mode, &query, &body),
        (Route::Echo, Some(callback)) => {
            let delivered = post_callback(&state.client, &callback, BINARY, body).await;
            let counter = if delivered {
                &state.stats.callbacks_ok
            } else {
                &state.stats.callbacks_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            status(StatusCode::NO_CONTENT)
        }
        (Route::Hello, Some(callback)) => {
            let own_url = Bytes::copy_from_slice(callback.as_bytes());
            if post_callback(&state.client, &callback, TEXT, own_url).await {
                status(StatusCode::NO_CONTENT)
            } else {
                status(StatusCode::BAD_GATEWAY)
            }
        }
        (Route::Subscribe, _) => {
            let channel = query
                .strip_prefix("channel=")
                .and_then(|name| HeaderValue::from_str(name).ok());
            match channel {
                Some(channel) => {
                    state.stats.subscribed.fetch_add(1, Ordering::Relaxed);
                    let mut response = status(StatusCode::OK);
                    response.headers_mut().insert(SUBSCRIBE, channel);
                    response
                }
                None => status(StatusCode::BAD_REQUEST),
            }
        }
        (Route::Register, Some(callback)) => {
            state
                .registered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(callback);
            status(StatusCode::NO_CONTENT)
        }
        (Route::Echo | Route::Hello | Route::Register, None) => status(StatusCode::BAD_REQUEST),
        (Route::Unknown, _) => status(StatusCode::NOT_FOUND),
    };
    Ok(response)
}

/// Answers one websocket-over-http request (see the module doc for each mode).
fn websocket_over_http(
    stats: &Stats,
    mode: WohMode,
    query: &str,
    body: &[u8],
) -> Response<Full<Bytes>> {
    stats.woh_requests.fetch_add(1, Ordering::Relaxed);
    let Ok(events) = events::decode(body) else {
        stats.woh_bad_bodies.fetch_add(1, Ordering::Relaxed);
        return status(StatusCode::BAD_REQUEST);
    };
    let mut answer = Vec::new();
    let mut grip = false;
    let (mut messages, mut bytes) = (0, 0);
    for event in &events {
        match event.kind {
            Kind::Open => {
                stats.woh_opens.fetch_add(1, Ordering::Relaxed);
                grip = true;
                events::encode(&mut answer, Kind::Open, b"", b"");
                if mode == WohMode::Subscribe {
                    let Some(channel) = query.strip_prefix("channel=") else {
                        return status(StatusCode::BAD_REQUEST);
                    };
                    let control = serde_json::json!({"type": "subscribe", "channel": channel});
                    events::encode(
                        &mut answer,
                        Kind::Text,
                        b"c:",
                        control.to_string().as_bytes(),
                    );
                }
            }
            kind if kind.is_message() => {
                messages += 1;
                bytes += event.content.len() as u64;
                if mode == WohMode::Echo {
                    events::encode(&mut answer, kind, GRIP_PREFIX, event.content);
                }
            }
            // Pings are answered by the bridge; the end needs no answer.
            _ => {}
        }
    }
    stats.woh_messages.fetch_add(messages, Ordering::Relaxed);
    stats.woh_bytes.fetch_add(bytes, Ordering::Relaxed);
    let mut response = Response::new(Full::new(Bytes::from(answer)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(events::CONTENT_TYPE));
    if grip {
        headers.insert(GRIP_EXTENSION.0, HeaderValue::from_static(GRIP_EXTENSION.1));
    }
    response
}

/// The OPEN answer header that turns GRIP on for the connection.
const GRIP_EXTENSION: (HeaderName, &str) =
    (HeaderName::from_static("sec-websocket-extensions"), "grip");
/// GRIP's default prefix of messages for the client.
const GRIP_PREFIX: &[u8] = b"m:";

/// The connect hook answer header that joins the connection to channels.
const SUBSCRIBE: HeaderName = HeaderName::from_static("x-ws-proxy-subscribe");

/// Content type of binary callback bodies.
const BINARY: &str = "application/octet-stream";
/// Content type of text callback bodies, spelled as the original bridge requires for text.
const TEXT: &str = "text/plain;charset=UTF-8";

/// POSTs `body` to a client's callback URL; true when the bridge answered with a 2xx.
async fn post_callback(
    client: &Client<HttpConnector, Full<Bytes>>,
    callback: &HeaderValue,
    content_type: &'static str,
    body: Bytes,
) -> bool {
    let Ok(uri) = Uri::try_from(callback.as_bytes()) else {
        return false;
    };
    let Ok(request) = Request::post(uri)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(body))
    else {
        return false;
    };
    match client.request(request).await {
        Ok(response) => {
            let accepted = response.status().is_success();
            // Drain the answer so the pooled connection can be reused.
            accepted && response.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
