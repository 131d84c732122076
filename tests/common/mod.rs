//! Test harness: a recording HTTP backend, a bridge on 127.0.0.1:0, WebSocket clients.
//! Everything runs over real loopback sockets.

#![allow(dead_code, unreachable_pub)]

pub mod real;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upper bound for any single test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a test body with an upper time bound.
pub async fn bounded<F: Future<Output = T>, T>(f: F) -> T {
    match tokio::time::timeout(TEST_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// One request the backend received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// The bridge-side address of the TCP connection the request came on.
    pub peer: SocketAddr,
    pub version: axum::http::Version,
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

/// What a test's backend answers to one request: `None` falls back to the default answers
/// below. The second argument counts the attempts seen for this (path, seq), from 1.
pub type Answer = Arc<dyn Fn(&Recorded, u32) -> Option<Response> + Send + Sync>;

/// A real HTTP backend on 127.0.0.1:0 that records every request in arrival order.
///
/// Paths: `/frame` and `/disconnect` answer 204; `/fail` 500; `/hang` never answers;
/// `/redirect` 307 to `/frame`; `/echo` 200 with the request's body and content type;
/// `/slow` answers 204 after 50 ms; `/connect-reject` 401 with a body; `/connect-welcome` 200
/// with a first message and subprotocol `chat.v2`; `/connect-badproto` selects a subprotocol
/// nobody offered; `/callback-then-reply` sends `A<body>` through the callback URL, then
/// answers `B<body>`; `/flaky` answers 503 to the first attempt of each seq, then 204;
/// `/ratelimited` answers 429 with `Retry-After: 1` to the first attempt of each seq;
/// `/always503` always 503.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    changed: Arc<Notify>,
    /// Attempts seen per (path, seq), for the flaky paths.
    attempts: Arc<Mutex<std::collections::HashMap<(String, u64), u32>>>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Most requests in progress at once.
    pub max_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    answer: Option<Answer>,
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        Self::serve(listener).await
    }

    /// A recording backend whose answers the test gives: `answer(request, attempt)` decides,
    /// `None` meaning the default answer for the path.
    pub async fn answering(
        answer: impl Fn(&Recorded, u32) -> Option<Response> + Send + Sync + 'static,
    ) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        Self::serve_with(listener, Some(Arc::new(answer))).await
    }

    /// Serves the recording backend on a given listener (to restart on the same port).
    pub async fn serve(listener: TcpListener) -> Backend {
        Self::serve_with(listener, None).await
    }

    async fn serve_with(listener: TcpListener, answer: Option<Answer>) -> Backend {
        let addr = listener.local_addr().expect("backend addr");
        let backend = Backend {
            addr,
            log: Arc::default(),
            changed: Arc::default(),
            attempts: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            answer,
        };
        let app = Router::new().fallback(record).with_state(backend.clone());
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        backend
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The allowlist regex admitting exactly this backend.
    pub fn allowlist(&self) -> String {
        format!(r"http://127\.0\.0\.1:{}/.*", self.addr.port())
    }

    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn count(&self, path: &str) -> usize {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Waits until at least `n` requests to `path` arrived; returns them.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Recorded> {
        loop {
            let notified = self.changed.notified();
            if self.count(path) >= n {
                return self.requests(path);
            }
            if tokio::time::timeout(Duration::from_secs(20), notified)
                .await
                .is_err()
            {
                panic!(
                    "backend saw {} request(s) to {path}, expected {n}",
                    self.requests(path).len()
                );
            }
        }
    }

    /// The callback URL (`x-ws-proxy-send`) of the first request to `path`, once it arrived.
    pub async fn callback_url(&self, path: &str) -> String {
        self.wait_for(path, 1).await[0]
            .header("x-ws-proxy-send")
            .expect("x-ws-proxy-send on a bridge request")
            .to_owned()
    }

    /// Asserts that, after a short settle time, exactly `n` requests reached `path`.
    pub async fn assert_exactly(&self, path: &str, n: usize) -> Vec<Recorded> {
        let seen = self.wait_for(path, n).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later = self.requests(path);
        assert_eq!(
            later.len(),
            n,
            "expected exactly {n} request(s) to {path}, got {later:#?}"
        );
        seen
    }
}

async fn record(
    State(backend): State<Backend>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    use std::sync::atomic::Ordering;
    let now = backend.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    backend.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let response = respond(&backend, peer, request).await;
    backend.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn respond(backend: &Backend, peer: SocketAddr, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let version = request.version();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let recorded = Recorded {
        path: path.clone(),
        peer,
        version,
        headers: headers.clone(),
        body: body.clone(),
    };
    let seq = recorded.seq().unwrap_or(u64::MAX);
    let attempt = {
        let mut attempts = backend.attempts.lock().expect("attempts");
        let n = attempts.entry((path.clone(), seq)).or_insert(0);
        *n += 1;
        *n
    };
    let custom = backend.answer.as_ref().and_then(|a| a(&recorded, attempt));
    backend.log.lock().expect("log").push(recorded);
    backend.changed.notify_waiters();
    if let Some(response) = custom {
        return response;
    }
    match path.as_str() {
        "/flaky" if attempt == 1 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "/flaky" => StatusCode::NO_CONTENT.into_response(),
        "/ratelimited" if attempt == 1 => {
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response()
        }
        "/ratelimited" => StatusCode::NO_CONTENT.into_response(),
        "/always503" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "nope").into_response(),
        "/hang" => {
            std::future::pending::<()>().await;
            StatusCode::NO_CONTENT.into_response()
        }
        "/redirect" => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, "/frame")],
        )
            .into_response(),
        "/echo" => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, ct),
                    (
                        header::HeaderName::from_static("x-ws-proxy-reply"),
                        HeaderValue::from_static("true"),
                    ),
                ],
                body,
            )
                .into_response()
        }
        "/connect-reject" => (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain")],
            "bad token: log in first",
        )
            .into_response(),
        "/connect-welcome" => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::SEC_WEBSOCKET_PROTOCOL, "chat.v2"),
            ],
            "welcome",
        )
            .into_response(),
        "/connect-badproto" => (
            StatusCode::OK,
            [(header::SEC_WEBSOCKET_PROTOCOL, "not-offered")],
        )
            .into_response(),
        "/callback-then-reply" => {
            // Sends "A" through the callback URL, then answers "B" in the body.
            if let Some(callback) = headers.get("x-ws-proxy-send").and_then(|v| v.to_str().ok()) {
                let sent = http_client()
                    .post(callback)
                    .header(header::CONTENT_TYPE, "text/plain")
                    .body(format!("A{}", String::from_utf8_lossy(&body)))
                    .send()
                    .await;
                assert_eq!(sent.map(|r| r.status().as_u16()).ok(), Some(202));
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                format!("B{}", String::from_utf8_lossy(&body)),
            )
                .into_response()
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

/// A bridge running in-process on 127.0.0.1:0.
pub struct Bridge {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Bridge {
    /// Starts a bridge with the given flags (`--address` is added).
    pub async fn start(args: &[&str]) -> Bridge {
        let mut all = vec!["--address", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let config = websocket_bridge::Config::from_args(all).expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind bridge");
        Self::start_with(listener, config).await
    }

    /// Starts a bridge with a metrics listener on 127.0.0.1:0; returns it and the metrics
    /// address.
    pub async fn start_with_metrics(args: &[&str]) -> (Bridge, SocketAddr) {
        let mut all = vec!["--address", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let config = websocket_bridge::Config::from_args(all).expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind bridge");
        let metrics = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let metrics_addr = metrics.local_addr().expect("metrics addr");
        let bridge = Self::spawn(listener, Some(metrics), config);
        (bridge, metrics_addr)
    }

    pub async fn start_with(listener: TcpListener, config: websocket_bridge::Config) -> Bridge {
        Self::spawn(listener, None, config)
    }

    fn spawn(
        listener: TcpListener,
        metrics: Option<TcpListener>,
        config: websocket_bridge::Config,
    ) -> Bridge {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "websocket_bridge=debug".into()),
            )
            .try_init();
        let addr = listener.local_addr().expect("bridge addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            websocket_bridge::run_with(listener, metrics, config, async {
                let _ = stopped.await;
            })
            .await
            .expect("bridge run");
        });
        Bridge {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A bridge admitting exactly `backend`.
    pub async fn for_backend(backend: &Backend, extra: &[&str]) -> Bridge {
        let allow = backend.allowlist();
        let mut args = vec!["--allowlist", allow.as_str()];
        args.extend_from_slice(extra);
        Bridge::start(&args).await
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `ws://…/connect?f=…&d=…` with both URLs query-encoded.
    pub fn connect_url(&self, frame: &str, disconnect: Option<&str>) -> String {
        let mut url = format!("ws://{}/connect?f={}", self.addr, encode(frame));
        if let Some(d) = disconnect {
            url.push_str("&d=");
            url.push_str(&encode(d));
        }
        url
    }

    /// Connects a WebSocket client to `frame` (and `disconnect`) on `backend`.
    pub async fn client(&self, backend: &Backend, frame: &str, disconnect: Option<&str>) -> Client {
        let d = disconnect.map(|d| backend.url(d));
        connect(&self.connect_url(&backend.url(frame), d.as_deref())).await
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("bridge task");
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub async fn connect(url: &str) -> Client {
    let (client, response) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    client
}

/// Connects and expects the handshake to be refused; returns status and body.
pub async fn refused(url: &str) -> (StatusCode, String) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("handshake to {url} unexpectedly succeeded"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (status, body)
        }
        Err(e) => panic!("handshake to {url} failed without an HTTP answer: {e}"),
    }
}

/// The next data message (text or binary), skipping pings/pongs; panics on close.
pub async fn next_message<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
) -> Message {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), client.next())
            .await
            .expect("no message within 20 s")
            .expect("stream ended")
            .expect("read error");
        match message {
            Message::Text(_) | Message::Binary(_) => return message,
            Message::Close(frame) => panic!("closed by the bridge: {frame:?}"),
            _ => {}
        }
    }
}

/// Reads until the bridge's Close frame arrives; returns it. Data messages before it are
/// skipped.
pub async fn expect_close<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
) -> CloseFrame {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), client.next())
            .await
            .expect("no close within 20 s");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                // Like a browser: answer the Close at once (tungstenite queued the reply).
                let _ = client.flush().await;
                return frame;
            }
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("read error before close: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// Sends a text message.
pub async fn send_text<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
    text: &str,
) {
    client.send(Message::text(text)).await.expect("send text");
}

/// Sends "hello" on `client` and returns the callback URL of the frame POST it causes.
pub async fn callback_of(backend: &Backend, client: &mut Client) -> String {
    send_text(client, "hello").await;
    backend.callback_url("/frame").await
}

/// Opens a WebSocket connection with extra handshake headers; the refusal's status if refused.
pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Client, StatusCode> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("client request");
    for (name, value) in headers {
        request.headers_mut().append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((client, _)) => Ok(client),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status()),
        Err(e) => panic!("handshake to {url} failed without an HTTP answer: {e}"),
    }
}

/// An HTTP client for the callback API.
pub fn http_client() -> reqwest::Client {
    websocket_bridge::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

/// The value of the sample whose line starts with `series` (name plus labels), or 0.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let r = http_client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// Scrapes until `series` has `value` (within 10 s); panics with the last scrape otherwise.
pub async fn wait_for_sample(addr: std::net::SocketAddr, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(addr).await;
        if sample(&text, series) == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is not {value}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
