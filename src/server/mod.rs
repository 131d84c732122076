//! The top of the bridge: builds every layer from the [`Config`] (backend client, sessions,
//! callback API, metrics), binds nothing itself (the caller hands over bound listeners), runs
//! the accept loop, and drains on shutdown. Serving one HTTP connection and its routes is in
//! [`http`]; the idle guard for silent HTTP connections in [`idle`]; the publish and metrics
//! listeners in [`internal`]; the open-files budget in [`fdlimit`]. Nothing imports this
//! module.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::backend::BackendClient;
use crate::callback::{CallbackInbox, Callbacks};
use crate::cluster::Cluster;
use crate::config::{BaseUrl, Config};
use crate::metrics::Metrics;
use crate::policy::limits::ConnectionLimits;
use crate::publish::Publisher;
use crate::session::channels::Channels;
use crate::session::registry::{LocalRegistry, Registry};
use crate::session::{SessionParts, Sessions};
use fdlimit::{DescriptorBudget, OpenFiles};
use http::{App, serve_connection};

pub(crate) mod fdlimit;
pub(crate) mod http;
pub(crate) mod idle;
mod internal;

/// Errors that stop [`run`] before it serves anything.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The listener has no local address.
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The metrics listener could not be bound.
    #[error("cannot listen on {0} (--metrics-address): {1}")]
    MetricsBind(SocketAddr, #[source] std::io::Error),
    /// Cluster mode could not start (Redis unreachable).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The publish listener could not be bound.
    #[error("cannot listen on {0} (--publish-address): {1}")]
    PublishBind(SocketAddr, #[source] std::io::Error),
    /// The backend HTTP client could not be built.
    #[error("cannot build the backend HTTP client: {0}")]
    Backend(#[source] reqwest::Error),
}

/// Pending connections the kernel may queue before `accept` (tokio's own default is 128,
/// which a burst of a few hundred handshakes overflows, costing each overflowed client a SYN
/// retransmission, a second or more).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener with a backlog of 4096 (and `SO_REUSEADDR`, so a restart does not
/// wait for old connections in TIME_WAIT).
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
    let metrics = match config.server.metrics_address {
        Some(address) => Some(bind(address).map_err(|e| RunError::MetricsBind(address, e))?),
        None => None,
    };
    let publish = match config.publish.address {
        Some(address) => Some(bind(address).map_err(|e| RunError::PublishBind(address, e))?),
        None => None,
    };
    let listeners = Listeners {
        main: listener,
        metrics,
        publish,
    };
    run_with(listeners, config, shutdown).await
}

/// The bound listeners a bridge serves on.
#[derive(Debug)]
pub struct Listeners {
    /// WebSocket handshakes, callbacks, probes.
    pub main: TcpListener,
    /// Prometheus metrics at `/metrics`, if wanted.
    pub metrics: Option<TcpListener>,
    /// The publish API, if wanted.
    pub publish: Option<TcpListener>,
}

impl Listeners {
    /// Just the main listener.
    pub fn new(main: TcpListener) -> Self {
        Listeners {
            main,
            metrics: None,
            publish: None,
        }
    }
}

/// Like [`run`], with the listeners already bound, for callers that bind `127.0.0.1:0`
/// (the config's addresses are then not used).
pub async fn run_with(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let Listeners {
        main: listener,
        metrics: metrics_listener,
        publish: publish_listener,
    } = listeners;
    let local = listener.local_addr().map_err(RunError::LocalAddr)?;
    let metrics = Arc::new(Metrics::new());
    let shutdown_token = CancellationToken::new();
    let metrics_address = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let internal_limits = internal::Limits::of(&config.server);
    if let Some(metrics_listener) = metrics_listener {
        tokio::spawn(internal::serve(
            metrics_listener,
            crate::metrics::router(Arc::clone(&metrics)),
            internal_limits,
            shutdown_token.clone(),
            "--metrics-address",
        ));
    }
    let grace = config.server.shutdown_grace;
    let publish_config = config.publish.clone();
    let cluster_config = config.cluster.clone();
    let cluster_registry = cluster_config.as_ref().map(crate::cluster::registry);
    let app = Arc::new(assemble(
        config,
        local,
        metrics_address,
        Arc::clone(&metrics),
        shutdown_token.clone(),
        cluster_registry.clone().map(|r| r as Arc<dyn Registry>),
        usize::from(metrics_address.is_some()) + usize::from(publish_listener.is_some()),
    )?);
    let cluster = match (cluster_config, cluster_registry) {
        (Some(config), Some(registry)) => {
            let cluster = Cluster::start(
                config,
                Arc::clone(&app.sessions),
                registry,
                metrics,
                shutdown_token.clone(),
            )
            .await?;
            cluster.set_inbox(Arc::new(CallbackInbox(Arc::clone(&app.callbacks))));
            app.callbacks.set_cluster(Arc::clone(&cluster));
            Some(cluster)
        }
        _ => None,
    };
    if let Some(publish_listener) = publish_listener {
        info!(
            address = %publish_listener.local_addr().map_err(RunError::LocalAddr)?,
            authorization = !publish_config.secrets.is_empty(),
            "publish API listening"
        );
        let publisher = Publisher::new(
            publish_config,
            Arc::clone(&app.sessions.channels),
            cluster.clone(),
        );
        tokio::spawn(internal::serve(
            publish_listener,
            crate::publish::router(Arc::new(publisher)),
            internal_limits,
            shutdown_token,
            "--publish-address",
        ));
    }
    accept_until(&listener, &app, shutdown).await;
    drain(&listener, &app, grace).await;
    if let Some(cluster) = cluster {
        cluster.leave().await;
    }
    Ok(())
}

/// Builds every layer for `config`, the bridge listening at `local`.
fn assemble(
    config: Config,
    local: SocketAddr,
    metrics_address: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    cluster_registry: Option<Arc<dyn Registry>>,
    internal_listeners: usize,
) -> Result<App, RunError> {
    let Config {
        server,
        session,
        callback,
        mut backend,
        limits,
        ..
    } = config;
    let budget = descriptor_budget(&limits, &backend, internal_listeners);
    if let Some(budget) = budget {
        backend.max_connections_per_host = budget.backend_connections;
    }
    let mut connection_limits =
        ConnectionLimits::new(limits.max_connections, limits.max_connections_per_ip);
    if let Some(budget) = budget {
        connection_limits =
            connection_limits.capped_by_open_files(budget.connections, budget.limit.soft);
    }
    let base_url = match server.base_url {
        Some(url) => url,
        None => own_base_url(server.tls.is_some(), local),
    };
    let registry: Arc<dyn Registry> =
        cluster_registry.unwrap_or_else(|| Arc::new(LocalRegistry::default()));
    let channels = Arc::new(Channels::new(
        session.max_channels_per_connection,
        Arc::clone(&metrics),
    ));
    let backend = BackendClient::new(&backend, Arc::clone(&metrics)).map_err(RunError::Backend)?;
    let callback_prefix = format!("{}/", base_url.path());
    let sessions = Arc::new(Sessions::new(SessionParts {
        config: session,
        base_url,
        registry: Arc::clone(&registry),
        channels: Arc::clone(&channels),
        backend,
        limits: Arc::new(connection_limits),
        metrics: Arc::clone(&metrics),
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
    }));
    warn_without_allowlist(&sessions.config);
    info!(
        address = %local,
        base_url = %sessions.base_url.as_str(),
        tls = server.tls.is_some(),
        allowlist_entries = sessions.config.allowlist.len(),
        metrics = metrics_address.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        open_files_limit = budget.map(|b| b.limit.soft),
        max_connections = budget.map_or(limits.max_connections, |b| b.max_connections()),
        "websocket-bridge listening"
    );
    Ok(App {
        callbacks: Arc::new(Callbacks::new(callback, registry, channels, metrics)),
        sessions,
        callback_prefix,
        tls: server.tls.map(tokio_rustls::TlsAcceptor::from),
        handshake_timeout: server.handshake_timeout,
        http_idle_timeout: server.http_idle_timeout,
        shutdown,
    })
}

/// Says at startup what an empty allowlist means: everything refused, or routes only.
fn warn_without_allowlist(config: &crate::config::SessionConfig) {
    if !config.allowlist.is_empty() {
        return;
    }
    if config.routes.is_empty() {
        warn!(
            "no --allowlist or --host-suffix-allowlist given: every connection will be refused with 403"
        );
    } else {
        info!(
            "no --allowlist or --host-suffix-allowlist given: only --route paths are served; /connect refuses every backend URL with 403"
        );
    }
}

/// After a failed `accept` (EMFILE and the like come in bursts): warns once per burst, then
/// sleeps 10 ms doubling to 1.28 s. `errors` counts the burst; the caller resets it.
async fn back_off(errors: &mut u32, error: &std::io::Error, listener: &'static str) {
    if *errors == 0 {
        warn!(listener, %error, "accept failed; backing off");
    }
    *errors = errors.saturating_add(1);
    tokio::time::sleep(Duration::from_millis(10u64 << (*errors).min(7))).await;
}

/// Accepts connections until `shutdown` resolves. Accept errors (EMFILE and friends) are
/// logged once per burst and backed off (10 ms doubling to 1.28 s).
async fn accept_until(
    listener: &TcpListener,
    app: &Arc<App>,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let mut accept_errors = 0u32;
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    accept_errors = 0;
                    app.sessions.tracker.spawn(serve_connection(Arc::clone(app), stream, peer));
                }
                Err(e) => back_off(&mut accept_errors, &e, "--address").await,
            },
        }
    }
}

/// Draining: readiness turns 503 and new WebSocket handshakes are refused with 503, but the
/// listener stays open so probes and callbacks still get an answer; every connection task
/// closes its client (1001) and delivers its disconnect POST, within `grace`.
async fn drain(listener: &TcpListener, app: &Arc<App>, grace: Duration) {
    let sessions = &app.sessions;
    info!(open_connections = sessions.registry.len(), grace = ?grace, "shutting down");
    app.shutdown.cancel();
    sessions.tracker.close();
    let drained = sessions.tracker.wait();
    tokio::pin!(drained);
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut drained => {
                info!("shutdown complete");
                return;
            }
            () = &mut deadline => {
                warn!(
                    still_open = sessions.registry.len(),
                    "shutdown grace period ended with connections still closing"
                );
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    sessions.tracker.spawn(serve_connection(Arc::clone(app), stream, peer));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// What the process's open-files limit holds for this configuration, warning at startup when
/// it holds fewer connections than `--max-connections`. `None` (no cap) where the limit cannot
/// be read.
fn descriptor_budget(
    limits: &crate::config::LimitsConfig,
    backend: &crate::config::BackendConfig,
    internal_listeners: usize,
) -> Option<DescriptorBudget> {
    let limit = match OpenFiles::current() {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "connections are capped by --max-connections alone");
            return None;
        }
    };
    let budget = DescriptorBudget::new(
        limit,
        fdlimit::Demand::new(limits, backend, internal_listeners),
    );
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

/// `http(s)://{bound address}`, for a bridge without `--base-url`.
fn own_base_url(tls: bool, local: SocketAddr) -> BaseUrl {
    let address = if local.ip().is_unspecified() {
        warn!(
            "listening on an unspecified address without --base-url: callback URLs will name 127.0.0.1; set --base-url to the URL backends can reach"
        );
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port())
    } else {
        local
    };
    BaseUrl::of_address(tls, address)
}
