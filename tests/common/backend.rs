//! The recording backend: a real HTTP server on 127.0.0.1:0 that records every request it
//! gets, in arrival order, and answers as the test says.
//!
//! ```ignore
//! let backend = Backend::builder()
//!     .on("/hang", Reply::never())
//!     .on("/flaky", Reply::fail_first(503))
//!     .on("/hook", Reply::with(|_, _| (StatusCode::UNAUTHORIZED, "log in first")))
//!     .start()
//!     .await;
//! ```
//!
//! A path without a route answers 204, which is what the bridge expects of a frame or
//! disconnect URL, so `Backend::start()` is a backend that accepts everything. Routes match the
//! path alone, without the query.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::bind_ephemeral;

/// How long [`Backend::wait_for`] and [`Backend::wait_until_disconnected`] wait.
const WAIT: Duration = Duration::from_secs(20);

/// One request the backend received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// The bridge-side address of the TCP connection the request came on.
    pub peer: SocketAddr,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn seq(&self) -> Option<u64> {
        self.header("x-ws-proxy-seq").and_then(|s| s.parse().ok())
    }
}

/// What the backend answers on one route. The request is recorded before the answer starts,
/// so a request that is never answered is recorded too.
#[derive(Clone)]
pub struct Reply(Arc<dyn Fn(Recorded, u32) -> BoxFuture<'static, Response> + Send + Sync>);

impl Reply {
    /// `code`, with an empty body.
    pub fn status(code: u16) -> Reply {
        let status = StatusCode::from_u16(code).expect("an HTTP status code");
        Reply::with(move |_, _| status)
    }

    /// No answer at all: the request stays open until the bridge gives up on it.
    pub fn never() -> Reply {
        Reply::with_async(|_, _| std::future::pending::<StatusCode>())
    }

    /// `code` to the first attempt of each seq (each disconnect), 204 to its retries: a
    /// transient failure that one retry fixes.
    pub fn fail_first(code: u16) -> Reply {
        let status = StatusCode::from_u16(code).expect("an HTTP status code");
        Reply::with(move |_, attempt| {
            if attempt == 1 {
                status
            } else {
                StatusCode::NO_CONTENT
            }
        })
    }

    /// 200 with the request's body and content type, marked `x-ws-proxy-reply: true` so that
    /// even an empty body is a reply to the client.
    pub fn echo() -> Reply {
        Reply::with(|request, _| {
            let content_type = request
                .headers
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, content_type),
                    (
                        HeaderName::from_static("x-ws-proxy-reply"),
                        HeaderValue::from_static("true"),
                    ),
                ],
                request.body.clone(),
            )
        })
    }

    /// `then`, after `delay` (virtual under paused time).
    pub fn after(delay: Duration, then: Reply) -> Reply {
        Reply::with_async(move |request, attempt| {
            let then = then.clone();
            async move {
                tokio::time::sleep(delay).await;
                then.answer(request, attempt).await
            }
        })
    }

    /// Whatever `answer(request, attempt)` returns; `attempt` counts the requests with this
    /// path and seq (or this path, for requests without a seq), from 1.
    pub fn with<R: IntoResponse>(
        answer: impl Fn(&Recorded, u32) -> R + Send + Sync + 'static,
    ) -> Reply {
        Reply(Arc::new(move |request, attempt| {
            let response = answer(&request, attempt).into_response();
            Box::pin(std::future::ready(response))
        }))
    }

    /// Like [`Reply::with`], for an answer that awaits something first (a callback POST, say).
    pub fn with_async<F, R>(answer: impl Fn(Recorded, u32) -> F + Send + Sync + 'static) -> Reply
    where
        F: Future<Output = R> + Send + 'static,
        R: IntoResponse,
    {
        Reply(Arc::new(move |request, attempt| {
            let answered = answer(request, attempt);
            Box::pin(async move { answered.await.into_response() })
        }))
    }

    fn answer(&self, request: Recorded, attempt: u32) -> BoxFuture<'static, Response> {
        (self.0)(request, attempt)
    }
}

/// Routes for a [`Backend`]; see the module docs.
#[derive(Default)]
pub struct BackendBuilder {
    routes: HashMap<String, Reply>,
}

impl BackendBuilder {
    /// Answers requests to `path` with `reply`.
    pub fn on(mut self, path: &str, reply: Reply) -> Self {
        let earlier = self.routes.insert(path.to_owned(), reply);
        assert!(earlier.is_none(), "two replies for {path}");
        self
    }

    /// Starts serving on 127.0.0.1:0.
    pub async fn start(self) -> Backend {
        let listener = bind_ephemeral().await;
        let backend = Backend {
            addr: listener.local_addr().expect("backend address"),
            shared: Arc::new(Shared {
                routes: self.routes,
                log: Mutex::default(),
                attempts: Mutex::default(),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                connections: AtomicUsize::new(0),
                changed: Notify::new(),
            }),
        };
        tokio::spawn(backend.clone().accept(listener));
        backend
    }
}

/// A running recording backend; cheap to clone.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    routes: HashMap<String, Reply>,
    /// Every request, in arrival order.
    log: Mutex<Vec<Recorded>>,
    /// Requests seen per (path, seq), for [`Reply::fail_first`] and the like.
    attempts: Mutex<HashMap<(String, Option<u64>), u32>>,
    /// Requests being answered now, and the most at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// TCP connections open now.
    connections: AtomicUsize,
    /// Woken when a request is recorded or a connection closes.
    changed: Notify,
}

impl Backend {
    /// A backend with routes; see the module docs.
    pub fn builder() -> BackendBuilder {
        BackendBuilder::default()
    }

    /// A backend that records everything and answers 204.
    pub async fn start() -> Backend {
        Backend::builder().start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The allowlist regex admitting exactly this backend.
    pub fn allowlist(&self) -> String {
        format!(r"http://127\.0\.0\.1:{}/.*", self.addr.port())
    }

    /// The requests to `path` so far, in arrival order.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.log()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn count(&self, path: &str) -> usize {
        self.log().iter().filter(|r| r.path == path).count()
    }

    /// Asserts that exactly `n` requests reached `path`, and returns them. It does not wait:
    /// call it once nothing more can arrive (see the harness docs).
    pub fn assert_exactly(&self, path: &str, n: usize) -> Vec<Recorded> {
        let seen = self.requests(path);
        assert_eq!(
            seen.len(),
            n,
            "expected exactly {n} request(s) to {path}, got {seen:#?}"
        );
        seen
    }

    /// Waits until at least `n` requests to `path` arrived; returns them all.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Recorded> {
        self.wait_until(
            || self.count(path) >= n,
            || {
                format!(
                    "backend saw {} request(s) to {path}, expected {n}",
                    self.count(path)
                )
            },
        )
        .await;
        self.requests(path)
    }

    /// The callback URL (`x-ws-proxy-send`) of the first request to `path`, once it arrived.
    pub async fn callback_url(&self, path: &str) -> String {
        self.wait_for(path, 1).await[0]
            .header("x-ws-proxy-send")
            .expect("x-ws-proxy-send on a bridge request")
            .to_owned()
    }

    /// Waits until no TCP connection to the backend is open. Once the bridge process that
    /// made them has exited, every request it sent has then been read and recorded.
    pub async fn wait_until_disconnected(&self) {
        let open = || self.shared.connections.load(Ordering::SeqCst);
        self.wait_until(
            || open() == 0,
            || format!("{} connection(s) still open", open()),
        )
        .await;
    }

    /// The most requests that were being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Vec<Recorded>> {
        self.shared.log.lock().expect("request log")
    }

    async fn wait_until(&self, done: impl Fn() -> bool, failure: impl Fn() -> String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let changed = self.shared.changed.notified();
            if done() {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("{} within {WAIT:?}", failure());
            }
        }
    }

    async fn accept(self, listener: TcpListener) {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of descriptors, say: try again shortly rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // Nagle off, as on every socket of the harness (see `client`).
            let _ = tcp.set_nodelay(true);
            self.shared.connections.fetch_add(1, Ordering::SeqCst);
            let backend = self.clone();
            tokio::spawn(async move {
                let handler = backend.clone();
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler.handle(peer, request).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
                backend.shared.connections.fetch_sub(1, Ordering::SeqCst);
                backend.shared.changed.notify_waiters();
            });
        }
    }

    /// Records one request, then answers it as its route says.
    async fn handle(&self, peer: SocketAddr, request: hyper::Request<Incoming>) -> Response {
        let _in_flight = InFlight::enter(&self.shared);
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let recorded = Recorded {
            path: parts.uri.path().to_owned(),
            peer,
            version: parts.version,
            headers: parts.headers,
            body,
        };
        let attempt = {
            let mut attempts = self.shared.attempts.lock().expect("attempts");
            let n = attempts
                .entry((recorded.path.clone(), recorded.seq()))
                .or_insert(0);
            *n += 1;
            *n
        };
        let reply = self.shared.routes.get(&recorded.path).cloned();
        self.log().push(recorded.clone());
        self.shared.changed.notify_waiters();
        match reply {
            Some(reply) => reply.answer(recorded, attempt).await,
            None => StatusCode::NO_CONTENT.into_response(),
        }
    }
}

/// Counts a request as being answered for as long as it lives (a request the bridge gives up
/// on is dropped unanswered).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
