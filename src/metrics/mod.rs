//! Prometheus metrics (prometheus-client): every counter, gauge and histogram the bridge
//! exports, with typed labels (enums, never free strings) and handles pre-created for the hot
//! path (an atomic increment per message), and the text exposition served on the separate
//! `--metrics-address` listener. Names are prefixed `ws_bridge_`. Owns no other I/O.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::protocol::Cause;
pub(crate) use channels::ChannelMetrics;
pub(crate) use cluster::{ClusterMetrics, ForwardOutcome};
pub(crate) use deflate::DeflateMetrics;

/// Declares a label enum: its variants, their label values, and the encoding.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// The label value (also used in logs).
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    };
}

// After the macro, which they use.
mod channels;
mod cluster;
mod deflate;

label_enum! {
    /// The kind of a backend request.
    RequestKind {
        /// The connect hook, before the upgrade.
        Connect => "connect",
        /// One client message.
        Frame => "frame",
        /// The disconnect notice.
        Disconnect => "disconnect",
    }
}

label_enum! {
    /// Why a backend request failed for good.
    FailureReason {
        /// A status other than 2xx.
        Status => "status",
        /// No answer within `--backend-timeout`.
        Timeout => "timeout",
        /// The backend could not be reached.
        Unreachable => "unreachable",
        /// The connection dropped before an answer.
        ConnectionLost => "connection-lost",
        /// Any other failure of the exchange.
        Transport => "transport",
        /// A reply over `--max-message-size`.
        ReplyTooLarge => "reply-too-large",
        /// A `text/*` reply that is not UTF-8.
        ReplyNotUtf8 => "reply-not-utf8",
    }
}

label_enum! {
    /// Why a WebSocket handshake was refused.
    RefusalReason {
        /// A backend URL outside the allowlist.
        Allowlist => "allowlist",
        /// A malformed request (URLs, parameters).
        BadRequest => "bad-request",
        /// Not a WebSocket upgrade.
        NotWebSocket => "not-websocket",
        /// An `Origin` outside `--allowed-origin`.
        Origin => "origin",
        /// A header value over the size limit.
        HeaderTooLarge => "header-too-large",
        /// A backend resolving to a private address.
        PrivateNetwork => "private-network",
        /// `--max-connections` reached.
        MaxConnections => "max-connections",
        /// The connection limit the open-files limit holds, reached.
        OpenFiles => "open-files",
        /// `--max-connections-per-ip` reached.
        MaxConnectionsPerIp => "max-connections-per-ip",
        /// Too many backend name lookups at once.
        BusyLookups => "busy-lookups",
        /// The connect hook answered non-2xx.
        HookRefused => "hook-refused",
        /// The connect hook failed or timed out.
        HookFailed => "hook-failed",
        /// The connect hook selected a subprotocol the client did not offer.
        HookSubprotocol => "hook-subprotocol",
        /// The connect hook named a channel that is not a channel name.
        HookChannel => "hook-channel",
        /// The bridge is draining.
        ShuttingDown => "shutting-down",
        /// A fault inside the bridge.
        Internal => "internal",
    }
}

impl EncodeLabelValue for Cause {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabel {
    cause: Cause,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: RequestKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    kind: RequestKind,
    reason: FailureReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabel {
    reason: RefusalReason,
}

type HistogramFamily = Family<KindLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of one bridge.
pub(crate) struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub(crate) open: Gauge,
    /// Connections opened (upgrade completed).
    pub(crate) opened: Counter,
    closed: Family<CauseLabel, Counter>,
    /// Messages from clients.
    pub(crate) messages_in: Counter,
    /// Messages to clients.
    pub(crate) messages_out: Counter,
    /// Payload bytes from clients.
    pub(crate) bytes_in: Counter,
    /// Payload bytes to clients.
    pub(crate) bytes_out: Counter,
    backend_latency: HistogramFamily,
    /// Pre-created per-kind histograms: no label set built on the hot path.
    frame_latency: Histogram,
    connect_latency: Histogram,
    disconnect_latency: Histogram,
    backend_failures: Family<FailureLabels, Counter>,
    retries: Family<KindLabel, Counter>,
    callback_responses: Family<StatusLabel, Counter>,
    refusals: Family<RefusalLabel, Counter>,
    /// Callback POSTs refused because the client's send queue was full.
    pub(crate) queue_full: Counter,
    /// Client messages over `--max-messages-per-second` (paused or closed).
    pub(crate) rate_limited: Counter,
    /// Channels and publications.
    pub(crate) channel: ChannelMetrics,
    /// Cluster mode.
    pub(crate) cluster: ClusterMetrics,
    /// permessage-deflate.
    pub(crate) deflate: Arc<DeflateMetrics>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("ws_bridge");
        let backend_latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let kind = |kind| backend_latency.get_or_create_owned(&KindLabel { kind });
        let m = Metrics {
            registry: Registry::default(),
            open: Gauge::default(),
            opened: Counter::default(),
            closed: Family::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            frame_latency: kind(RequestKind::Frame),
            connect_latency: kind(RequestKind::Connect),
            disconnect_latency: kind(RequestKind::Disconnect),
            backend_latency,
            backend_failures: Family::default(),
            retries: Family::default(),
            callback_responses: Family::default(),
            refusals: Family::default(),
            queue_full: Counter::default(),
            rate_limited: Counter::default(),
            channel: ChannelMetrics::default(),
            cluster: ClusterMetrics::default(),
            deflate: Arc::default(),
        };
        m.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// Registers every metric under its name and help text.
    fn register(&self, registry: &mut Registry) {
        self.deflate.register(registry);
        registry.register(
            "connections_open",
            "Open WebSocket connections",
            self.open.clone(),
        );
        registry.register(
            "connections_opened",
            "WebSocket connections opened",
            self.opened.clone(),
        );
        registry.register(
            "connections_closed",
            "WebSocket connections closed, by cause",
            self.closed.clone(),
        );
        registry.register(
            "messages_in",
            "Messages received from clients",
            self.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Messages written to clients",
            self.messages_out.clone(),
        );
        registry.register(
            "bytes_in",
            "Payload bytes received from clients",
            self.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Payload bytes written to clients",
            self.bytes_out.clone(),
        );
        registry.register(
            "backend_request_duration_seconds",
            "Backend request attempts, by kind (connect, frame, disconnect)",
            self.backend_latency.clone(),
        );
        registry.register(
            "backend_failures",
            "Backend requests that failed for good, by kind and reason",
            self.backend_failures.clone(),
        );
        registry.register(
            "backend_retries",
            "Backend request retries, by kind",
            self.retries.clone(),
        );
        registry.register(
            "callback_responses",
            "Callback API responses, by status",
            self.callback_responses.clone(),
        );
        registry.register(
            "connect_refusals",
            "WebSocket handshakes refused, by reason",
            self.refusals.clone(),
        );
        registry.register(
            "queue_full",
            "Callback POSTs refused because the client's send queue was full",
            self.queue_full.clone(),
        );
        registry.register("rate_limited", "Client messages over --max-messages-per-second (the client was paused, or closed under --rate-limit-action close)", self.rate_limited.clone());
        self.channel.register(registry);
        self.cluster.register(registry);
    }

    /// Counts a closed connection.
    pub(crate) fn closed(&self, cause: Cause) {
        self.closed.get_or_create(&CauseLabel { cause }).inc();
    }

    /// Records one backend attempt's duration.
    pub(crate) fn backend_attempt(&self, kind: RequestKind, seconds: f64) {
        match kind {
            RequestKind::Frame => self.frame_latency.observe(seconds),
            RequestKind::Connect => self.connect_latency.observe(seconds),
            RequestKind::Disconnect => self.disconnect_latency.observe(seconds),
        }
    }

    /// Counts a backend request that failed for good.
    pub(crate) fn backend_failure(&self, kind: RequestKind, reason: FailureReason) {
        self.backend_failures
            .get_or_create(&FailureLabels { kind, reason })
            .inc();
    }

    /// Counts a retry.
    pub(crate) fn retry(&self, kind: RequestKind) {
        self.retries.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts a callback API response.
    pub(crate) fn callback_response(&self, status: u16) {
        self.callback_responses
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    /// Counts a refused handshake; returns how many of this reason there have been, this one
    /// included (for throttled logging).
    pub(crate) fn refusal(&self, reason: RefusalReason) -> u64 {
        self.refusals.get_or_create(&RefusalLabel { reason }).inc() + 1
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The metrics listener's one route, `GET /metrics`; `server` serves it on
/// `--metrics-address`.
pub(crate) fn router(metrics: Arc<Metrics>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new().route(
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
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names_and_label_values() {
        let m = Metrics::new();
        m.opened.inc();
        m.closed(Cause::ClientClose);
        assert_eq!(m.refusal(RefusalReason::Allowlist), 1);
        assert_eq!(m.refusal(RefusalReason::Allowlist), 2);
        m.backend_attempt(RequestKind::Frame, 0.001);
        m.backend_failure(RequestKind::Disconnect, FailureReason::ConnectionLost);
        m.callback_response(202);
        let text = m.render();
        for line in [
            "ws_bridge_connections_opened_total 1",
            "ws_bridge_connections_closed_total{cause=\"client-close\"} 1",
            "ws_bridge_connect_refusals_total{reason=\"allowlist\"} 2",
            "ws_bridge_backend_failures_total{kind=\"disconnect\",reason=\"connection-lost\"} 1",
            "ws_bridge_callback_responses_total{status=\"202\"} 1",
            "ws_bridge_backend_request_duration_seconds_count{kind=\"frame\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }
}
