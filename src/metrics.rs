//! Prometheus metrics (prometheus-client): every counter, gauge and histogram the bridge
//! exports, with handles pre-created for the hot path (an atomic increment per message), and
//! the text exposition served on the separate `--metrics-address` listener. Names are
//! prefixed `ws_bridge_`. Owns no other I/O.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::close::Cause;

/// Label set: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of one bridge.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub open: Gauge,
    /// Connections opened (upgrade completed).
    pub opened: Counter,
    closed: Family<Labels, Counter>,
    /// Messages from clients.
    pub messages_in: Counter,
    /// Messages to clients.
    pub messages_out: Counter,
    /// Payload bytes from clients.
    pub bytes_in: Counter,
    /// Payload bytes to clients.
    pub bytes_out: Counter,
    backend_latency: HistogramFamily,
    /// Pre-created per-kind histograms: no label allocation on the hot path.
    frame_latency: Histogram,
    connect_latency: Histogram,
    disconnect_latency: Histogram,
    backend_failures: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    callback_responses: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    /// Callback POSTs refused because the client's send queue was full.
    pub queue_full: Counter,
    /// Client messages over `--max-messages-per-second` (paused or closed).
    pub rate_limited: Counter,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ws_bridge");
        let m = Metrics {
            registry: Registry::default(),
            open: Gauge::default(),
            opened: Counter::default(),
            closed: Family::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            backend_latency: Family::new_with_constructor(latency_histogram),
            frame_latency: latency_histogram(),
            connect_latency: latency_histogram(),
            disconnect_latency: latency_histogram(),
            backend_failures: Family::default(),
            retries: Family::default(),
            callback_responses: Family::default(),
            refusals: Family::default(),
            queue_full: Counter::default(),
            rate_limited: Counter::default(),
        };
        registry.register(
            "connections_open",
            "Open WebSocket connections",
            m.open.clone(),
        );
        registry.register(
            "connections_opened",
            "WebSocket connections opened",
            m.opened.clone(),
        );
        registry.register(
            "connections_closed",
            "WebSocket connections closed, by cause",
            m.closed.clone(),
        );
        registry.register(
            "messages_in",
            "Messages received from clients",
            m.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Messages written to clients",
            m.messages_out.clone(),
        );
        registry.register(
            "bytes_in",
            "Payload bytes received from clients",
            m.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Payload bytes written to clients",
            m.bytes_out.clone(),
        );
        registry.register(
            "backend_request_duration_seconds",
            "Backend request attempts, by kind (connect, frame, disconnect)",
            m.backend_latency.clone(),
        );
        registry.register(
            "backend_failures",
            "Backend requests that failed for good, by kind and reason",
            m.backend_failures.clone(),
        );
        registry.register(
            "backend_retries",
            "Backend request retries, by kind",
            m.retries.clone(),
        );
        registry.register(
            "callback_responses",
            "Callback API responses, by status",
            m.callback_responses.clone(),
        );
        registry.register(
            "connect_refusals",
            "WebSocket handshakes refused, by reason",
            m.refusals.clone(),
        );
        registry.register(
            "queue_full",
            "Callback POSTs refused because the client's send queue was full",
            m.queue_full.clone(),
        );
        registry.register(
            "rate_limited",
            "Client messages over --max-messages-per-second (the client was paused, or closed under --rate-limit-action close)",
            m.rate_limited.clone(),
        );
        let kind = |k: &str| vec![("kind", k.to_owned())];
        let frame_latency = m.backend_latency.get_or_create_owned(&kind("frame"));
        let connect_latency = m.backend_latency.get_or_create_owned(&kind("connect"));
        let disconnect_latency = m.backend_latency.get_or_create_owned(&kind("disconnect"));
        Metrics {
            registry,
            frame_latency,
            connect_latency,
            disconnect_latency,
            ..m
        }
    }

    /// Counts a closed connection.
    pub fn closed(&self, cause: Cause) {
        self.closed
            .get_or_create(&vec![("cause", cause.as_str().to_owned())])
            .inc();
    }

    /// Records one backend attempt's duration.
    pub fn backend_attempt(&self, kind: &'static str, seconds: f64) {
        match kind {
            "frame" => self.frame_latency.observe(seconds),
            "connect" => self.connect_latency.observe(seconds),
            "disconnect" => self.disconnect_latency.observe(seconds),
            other => self
                .backend_latency
                .get_or_create(&vec![("kind", other.to_owned())])
                .observe(seconds),
        }
    }

    /// Counts a backend request that failed for good.
    pub fn backend_failure(&self, kind: &'static str, reason: &'static str) {
        self.backend_failures
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    /// Counts a retry.
    pub fn retry(&self, kind: &'static str) {
        self.retries
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
    }

    /// Counts a callback API response.
    pub fn callback_response(&self, status: u16) {
        self.callback_responses
            .get_or_create(&vec![("status", status.to_string())])
            .inc();
    }

    /// Counts a refused handshake; returns how many of this reason there have been, this one
    /// included (for throttled logging).
    pub fn refusal(&self, reason: &'static str) -> u64 {
        self.refusals
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc()
            + 1
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on the metrics listener until `shutdown` is cancelled.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names() {
        let m = Metrics::new();
        m.opened.inc();
        m.closed(Cause::ClientClose);
        m.refusal("allowlist");
        m.backend_attempt("frame", 0.001);
        let text = m.render();
        assert!(
            text.contains("ws_bridge_connections_opened_total 1"),
            "{text}"
        );
        assert!(
            text.contains("ws_bridge_connections_closed_total{cause=\"client-close\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ws_bridge_connect_refusals_total{reason=\"allowlist\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ws_bridge_backend_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
