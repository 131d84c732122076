//! The bridge under test, in-process: `websocket_bridge::run_with` on a listener bound to
//! 127.0.0.1:0, stopped by the test; and its Prometheus endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::backend::Backend;
use super::bind_ephemeral;
use super::client::{Client, connect, connect_url, http_client};

/// A bridge running in-process on 127.0.0.1:0; aborted if dropped without
/// [`Bridge::shutdown`].
pub struct Bridge {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Bridge {
    /// Starts a bridge with the given flags (`--address` is added).
    pub async fn start(args: &[&str]) -> Bridge {
        Self::start_with(bind_ephemeral().await, config(args)).await
    }

    /// A bridge admitting exactly `backend`, with `extra` flags.
    pub async fn for_backend(backend: &Backend, extra: &[&str]) -> Bridge {
        let allow = backend.allowlist();
        let mut args = vec!["--allowlist", allow.as_str()];
        args.extend_from_slice(extra);
        Bridge::start(&args).await
    }

    /// Starts a bridge with a metrics listener on 127.0.0.1:0; returns it and the metrics
    /// address.
    pub async fn start_with_metrics(args: &[&str]) -> (Bridge, SocketAddr) {
        let metrics = bind_ephemeral().await;
        let metrics_addr = metrics.local_addr().expect("metrics address");
        let bridge = Self::spawn(bind_ephemeral().await, Some(metrics), None, config(args));
        (bridge, metrics_addr)
    }

    /// Starts a bridge with a publish listener on 127.0.0.1:0; returns it and the publish
    /// API's base URL (`http://127.0.0.1:port`).
    pub async fn start_with_publish(args: &[&str]) -> (Bridge, String) {
        let publish = bind_ephemeral().await;
        let publish_url = format!("http://{}", publish.local_addr().expect("publish address"));
        let bridge = Self::start_with_publish_listener(publish, args).await;
        (bridge, publish_url)
    }

    /// Starts a bridge whose publish API is on `publish`, a listener the test bound: for a
    /// backend that must know the publish URL before the bridge's flags can name the backend.
    pub async fn start_with_publish_listener(publish: TcpListener, args: &[&str]) -> Bridge {
        Self::spawn(bind_ephemeral().await, None, Some(publish), config(args))
    }

    /// Starts a bridge on a listener the test bound (to know its address before the config).
    pub async fn start_with(listener: TcpListener, config: websocket_bridge::Config) -> Bridge {
        Self::spawn(listener, None, None, config)
    }

    fn spawn(
        listener: TcpListener,
        metrics: Option<TcpListener>,
        publish: Option<TcpListener>,
        config: websocket_bridge::Config,
    ) -> Bridge {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "websocket_bridge=debug".into()),
            )
            .try_init();
        let addr = listener.local_addr().expect("bridge address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut listeners = websocket_bridge::Listeners::new(listener);
            listeners.metrics = metrics;
            listeners.publish = publish;
            websocket_bridge::run_with(listeners, config, async {
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

    /// `http://{addr}{path}`.
    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `ws://…/connect?f=…&d=…` with both URLs query-encoded.
    pub fn connect_url(&self, frame: &str, disconnect: Option<&str>) -> String {
        connect_url(self.addr, frame, disconnect)
    }

    /// Connects a WebSocket client to `frame` (and `disconnect`), paths on `backend`.
    pub async fn client(&self, backend: &Backend, frame: &str, disconnect: Option<&str>) -> Client {
        let d = disconnect.map(|d| backend.url(d));
        connect(&self.connect_url(&backend.url(frame), d.as_deref())).await
    }

    /// Shuts the bridge down and waits for `run_with` to return: every connection task has
    /// then finished (clients closed, pending frames posted, disconnect POSTs delivered),
    /// unless `--shutdown-grace` ran out first. A client that was sent a Close and does not
    /// answer it holds its task for up to 3 s (virtual under paused time).
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

/// A valid config from flags (`--address` is added; the listener is bound separately).
fn config(args: &[&str]) -> websocket_bridge::Config {
    let mut all = vec!["--address", "127.0.0.1:0"];
    all.extend_from_slice(args);
    websocket_bridge::Config::from_args(all).expect("valid config")
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

/// The text of `GET /metrics` at `addr`.
pub async fn scrape(addr: SocketAddr) -> String {
    let r = http_client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), 200);
    r.text().await.expect("metrics text")
}

/// Scrapes until `series` has `value` (within 10 s); panics with the last scrape otherwise.
pub async fn wait_for_sample(addr: SocketAddr, series: &str, value: f64) {
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
