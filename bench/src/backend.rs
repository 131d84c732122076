//! The in-process benchmark backend: a hyper HTTP/1.1 server with keep-alive.
//!
//! Routes (every one counts the request in [`Stats::requests`]):
//!
//! - `POST /sink`: answers 204 at once (upstream and direct scenarios).
//! - `POST /echo`: POSTs the body back to the client through its callback URL
//!   (`x-ws-proxy-send`) with a pooled hyper client, then answers 204 (round-trip scenario:
//!   client -> bridge -> backend -> callback POST -> bridge -> client).
//! - `POST /hello`: answers 200 with the callback URL as a text body, which the bridge
//!   delivers to the client as a message, so each client learns its own callback URL
//!   (downstream scenario).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::BoxError;

/// Counters of the backend, read by the scenarios as before/after snapshots.
#[derive(Default)]
pub(crate) struct Stats {
    /// Every request served, whatever its route.
    pub(crate) requests: AtomicU64,
    /// Callback POSTs answered 202 (`/echo`).
    pub(crate) callbacks_ok: AtomicU64,
    /// Callback POSTs that failed or were answered with anything but 202.
    pub(crate) callbacks_failed: AtomicU64,
}

struct State {
    stats: Arc<Stats>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A running backend.
pub(crate) struct Backend {
    addr: SocketAddr,
    stats: Arc<Stats>,
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
        });
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
        Ok(Self { addr, stats, task })
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
    Unknown,
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = match req.uri().path() {
        "/sink" => Route::Sink,
        "/echo" => Route::Echo,
        "/hello" => Route::Hello,
        _ => Route::Unknown,
    };
    let callback = req.headers().get("x-ws-proxy-send").cloned();
    // Read the whole body so the keep-alive connection stays usable.
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let response = match (route, callback) {
        (Route::Sink, _) => status(StatusCode::NO_CONTENT),
        (Route::Echo, Some(callback)) => {
            let counter = if post_callback(&state.client, &callback, body).await {
                &state.stats.callbacks_ok
            } else {
                &state.stats.callbacks_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            status(StatusCode::NO_CONTENT)
        }
        (Route::Hello, Some(callback)) => {
            let mut response =
                Response::new(Full::new(Bytes::copy_from_slice(callback.as_bytes())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        (Route::Echo | Route::Hello, None) => status(StatusCode::BAD_REQUEST),
        (Route::Unknown, _) => status(StatusCode::NOT_FOUND),
    };
    Ok(response)
}

/// POSTs `body` (binary) to a client's callback URL; true when the bridge answered 202.
async fn post_callback(
    client: &Client<HttpConnector, Full<Bytes>>,
    callback: &HeaderValue,
    body: Bytes,
) -> bool {
    let Ok(uri) = Uri::try_from(callback.as_bytes()) else {
        return false;
    };
    let Ok(request) = Request::post(uri)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(body))
    else {
        return false;
    };
    match client.request(request).await {
        Ok(response) => {
            let accepted = response.status() == StatusCode::ACCEPTED;
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
