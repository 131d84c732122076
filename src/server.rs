//! Listeners and routes: the accept loop (plain TCP or TLS), HTTP serving with upgrades, the
//! router (`/connect`, `/healthz`, `/readyz`, the callback API) and graceful shutdown. Owns the
//! state shared by every connection ([`Shared`]); knows nothing about message handling.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::{debug, info, warn};
use url::Url;

use crate::backend::{BackendClient, BackendSettings, RetryPolicy};
use crate::config::Config;
use crate::fdlimit::{DescriptorBudget, OpenFiles};
use crate::idle::{IdleGuard, Upgraded};
use crate::limits::ConnectionLimits;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// tungstenite's read buffer per connection. tungstenite zero-fills its whole capacity on the
/// first read, so this is resident memory for every open connection: kept small (large frames
/// still get a buffer of their own size).
pub const READ_BUFFER_SIZE: usize = 4 * 1024;

/// Largest HTTP/1.1 request head (request line plus headers) accepted, in bytes.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// The client's address, put into each request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// State shared by every connection and handler.
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// Base of callback URLs, without a trailing slash.
    pub(crate) base_url: String,
    /// The path callback URLs start with: the base URL's path plus `/`.
    pub(crate) callback_prefix: String,
    pub(crate) registry: Arc<Registry>,
    pub(crate) backend: BackendClient,
    /// Cancelled when shutdown starts; every connection task watches it.
    pub(crate) shutdown: CancellationToken,
    /// Every HTTP connection and WebSocket connection task, so shutdown can wait for their
    /// disconnect POSTs.
    pub(crate) tracker: TaskTracker,
    pub(crate) ws_config: WebSocketConfig,
    /// Connection counts and refusal counters.
    pub(crate) limits: Arc<ConnectionLimits>,
    /// Prometheus metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Bytes of callback bodies that may be held while being read (`--callback-body-memory`),
    /// one permit per byte.
    pub(crate) callback_body_memory: tokio::sync::Semaphore,
    /// Who the client is behind `--trusted-proxy`.
    pub(crate) trusted_proxies: crate::forwarded::TrustedProxies,
    /// Backend name lookups that may run at once for `--deny-private-networks`.
    pub(crate) lookups: tokio::sync::Semaphore,
}

/// Errors that stop [`run`] before it serves anything.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The listener has no local address.
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The metrics listener could not be bound.
    #[error("cannot listen on {0} (--metrics-address): {1}")]
    MetricsBind(SocketAddr, #[source] std::io::Error),
    /// The backend HTTP client could not be built.
    #[error("cannot build the backend HTTP client: {0}")]
    Backend(#[source] reqwest::Error),
}

/// Pending connections the kernel may queue before `accept` (tokio's own default is 128,
/// which a burst of a few hundred handshakes overflows, costing each overflowed client a SYN
/// retransmission, a second or more).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, so a restart does not wait
/// for old connections in TIME_WAIT).
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves the bridge on an already-bound listener until `shutdown` resolves, then closes every
/// connection (Close 1001, disconnect POSTs) within `--shutdown-grace`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let metrics_listener = match config.metrics_address {
        Some(address) => Some(bind(address).map_err(|e| RunError::MetricsBind(address, e))?),
        None => None,
    };
    run_with(listener, metrics_listener, config, shutdown).await
}

/// Like [`run`], with the metrics listener already bound (or none), for callers that bind
/// `127.0.0.1:0`.
pub async fn run_with(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let local = listener.local_addr().map_err(RunError::LocalAddr)?;
    let budget = descriptor_budget(&config);
    let metrics = Arc::new(Metrics::new());
    let metrics_local = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let base_url = effective_base_url(&config, local);
    let backend = BackendClient::new(BackendSettings {
        timeout: config.backend_timeout,
        max_reply_size: config.max_message_size,
        max_connections_per_host: budget
            .map_or(config.backend_max_connections, |b| b.backend_connections),
        retry: RetryPolicy {
            retries: config.backend_retries,
            budget: config.backend_retry_budget,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        },
        extra_roots: config.backend_ca.clone(),
        signer: config.signer.clone(),
        deny_private_networks: config.deny_private_networks,
        metrics: Arc::clone(&metrics),
    })
    .map_err(RunError::Backend)?;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size))
        .read_buffer_size(READ_BUFFER_SIZE);
    let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);

    if config.allowlist.is_empty() {
        warn!(
            "no --allowlist or --host-suffix-allowlist given: every connection will be refused with 403"
        );
    }
    info!(
        address = %local,
        base_url = %base_url,
        tls = tls.is_some(),
        allowlist_entries = config.allowlist.len(),
        metrics = metrics_local.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        open_files_limit = budget.map(|b| b.limit.soft),
        max_connections = budget.map_or(config.max_connections, |b| b.max_connections()),
        "websocket-bridge listening"
    );

    let callback_prefix = format!("{}/", callback_base_path(&base_url));
    let callback_body_memory = tokio::sync::Semaphore::new(config.callback_body_memory);
    let mut limits = ConnectionLimits::new(config.max_connections, config.max_connections_per_ip);
    if let Some(budget) = budget {
        limits = limits.capped_by_open_files(budget.connections, budget.limit.soft);
    }
    let limits = Arc::new(limits);
    let shared = Arc::new(Shared {
        trusted_proxies: config.trusted_proxies.clone(),
        lookups: tokio::sync::Semaphore::new(crate::handshake::MAX_CONCURRENT_LOOKUPS),
        config,
        base_url,
        callback_prefix,
        registry: Arc::new(Registry::default()),
        backend,
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        ws_config,
        limits,
        metrics,
        callback_body_memory,
    });
    if let Some(metrics_listener) = metrics_listener {
        tokio::spawn(crate::metrics::serve(
            metrics_listener,
            Arc::clone(&shared.metrics),
            shared.shutdown.clone(),
        ));
    }
    let router = router(Arc::clone(&shared));

    tokio::pin!(shutdown);
    let mut accept_errors = 0u32;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    accept_errors = 0;
                    let conn = serve_connection(stream, addr, router.clone(), tls.clone(), Arc::clone(&shared));
                    shared.tracker.spawn(conn);
                }
                Err(e) => {
                    // EMFILE and friends: say so once per burst, back off, keep serving.
                    if accept_errors == 0 {
                        warn!(error = %e, "accept failed; backing off");
                    }
                    accept_errors = accept_errors.saturating_add(1);
                    let backoff = Duration::from_millis(10u64 << accept_errors.min(7));
                    tokio::time::sleep(backoff).await;
                }
            },
        }
    }

    // Draining: readiness turns 503 and new WebSocket handshakes are refused with 503, but the
    // listener stays open so probes and callbacks still get an answer. Every connection task
    // closes its client (1001) and delivers its disconnect POST.
    let open = shared.registry.len();
    info!(open_connections = open, grace = ?shared.config.shutdown_grace, "shutting down");
    shared.shutdown.cancel();
    shared.tracker.close();
    let drained = shared.tracker.wait();
    tokio::pin!(drained);
    let deadline = tokio::time::sleep(shared.config.shutdown_grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut drained => {
                info!("shutdown complete");
                break;
            }
            () = &mut deadline => {
                warn!(
                    still_open = shared.registry.len(),
                    "shutdown grace period ended with connections still closing"
                );
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let conn = serve_connection(stream, addr, router.clone(), tls.clone(), Arc::clone(&shared));
                    shared.tracker.spawn(conn);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}

/// What the process's open-files limit holds for this configuration, warning at startup when
/// it holds fewer connections than `--max-connections`. `None` (no cap) where the limit cannot
/// be read.
fn descriptor_budget(config: &Config) -> Option<DescriptorBudget> {
    let limit = match OpenFiles::current() {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "connections are capped by --max-connections alone");
            return None;
        }
    };
    let budget = DescriptorBudget::new(limit, config.into());
    if budget.is_short() {
        warn!(
            open_files_limit = budget.limit.soft,
            hard_limit = budget.limit.hard,
            needed = budget.needed(),
            max_connections = budget.max_connections(),
            "{budget}"
        );
    }
    Some(budget)
}

/// The base of callback URLs: `--base-url`, or `http(s)://{bound address}`.
fn effective_base_url(config: &Config, local: SocketAddr) -> String {
    match &config.base_url {
        Some(url) => url.clone(),
        None => {
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let host = if local.ip().is_unspecified() {
                warn!(
                    "listening on an unspecified address without --base-url: callback URLs will name 127.0.0.1; set --base-url to the URL backends can reach"
                );
                SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port())
            } else {
                local
            };
            format!("{scheme}://{host}")
        }
    }
}

/// The path callback URLs live under (the base URL's path, without a trailing slash).
fn callback_base_path(base_url: &str) -> String {
    Url::parse(base_url)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// The id part of a callback path (`{prefix}{id}`), if the path has that shape.
fn callback_id<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    path.strip_prefix(prefix)
        .filter(|id| id.len() == 36 && !id.contains('/'))
}

/// Builds the router for one bridge.
fn router(shared: Arc<Shared>) -> Router {
    let origins = match &shared.config.callback_cors_origins {
        None => AllowOrigin::any(),
        Some(list) => AllowOrigin::list(list.clone()),
    };
    let cors = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::POST, Method::GET, Method::DELETE])
        .allow_headers([header::CONTENT_TYPE])
        .max_age(Duration::from_secs(86_400));
    let callback_path = format!("{}/{{id}}", callback_base_path(&shared.base_url));
    Router::new()
        .route("/connect", get(crate::handshake::connect))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            &callback_path,
            post(crate::callback::post_message)
                .delete(crate::callback::delete_connection)
                .get(crate::callback::get_connection)
                .layer::<_, std::convert::Infallible>(axum::middleware::from_fn_with_state(
                    Arc::clone(&shared),
                    crate::callback::count_responses,
                ))
                .layer(cors),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: this bridge serves GET /connect, GET /healthz, GET /readyz and the callback API\n") })
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// Serves one accepted TCP connection: TLS handshake if configured, then HTTP/1.1 or HTTP/2
/// with upgrades.
async fn serve_connection(
    stream: TcpStream,
    addr: SocketAddr,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let _ = stream.set_nodelay(true);
    let timeout = shared.config.handshake_timeout;
    match tls {
        None => serve_http(stream, addr, router, shared).await,
        Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => serve_http(tls_stream, addr, router, shared).await,
            Ok(Err(e)) => debug!(client.addr = %addr, error = %e, "TLS handshake failed"),
            Err(_) => debug!(client.addr = %addr, "TLS handshake timed out"),
        },
    }
}

async fn serve_http<IO>(io: IO, addr: SocketAddr, router: Router, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgraded = Upgraded::default();
    let marker = upgraded.clone();
    let fast = Arc::clone(&shared);
    let service = tower::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ClientAddr(addr));
        request.extensions_mut().insert(marker.clone());
        let router = router.clone();
        let shared = Arc::clone(&fast);
        async move {
            // The hot path of the callback API skips routing and middleware.
            if request.method() == Method::POST
                && let Some(id) = callback_id(&shared.callback_prefix, request.uri().path())
            {
                let id = id.to_owned();
                return Ok(crate::callback::fast_post(shared, &id, request).await);
            }
            router.oneshot(request).await
        }
    });
    let io = IdleGuard::new(
        io,
        shared.config.handshake_timeout,
        shared.config.http_idle_timeout,
        upgraded,
    );
    let draining = shared.shutdown.is_cancelled();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.handshake_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(!draining);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_REQUEST_HEAD as u32);
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    let mut connection = std::pin::pin!(connection);
    if draining {
        // One request, then the connection closes.
        if let Err(e) = connection.await {
            debug!(client.addr = %addr, error = %e, "HTTP connection ended with an error");
        }
        return;
    }
    let shutdown = shared.shutdown.clone();
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!(client.addr = %addr, error = %e, "HTTP connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
