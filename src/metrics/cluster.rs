//! Metrics of cluster mode (`ws_bridge_cluster_*`): callbacks forwarded to other nodes (count
//! by outcome, latency), the Redis link (up or down, transitions), publications relayed, nodes
//! reaped.

use std::fmt::{self, Write as _};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

label_enum! {
    /// How a forwarded callback ended.
    ForwardOutcome {
        /// The owning node answered (whatever its status).
        Answered => "answered",
        /// The owning node is gone (404).
        NodeGone => "node-gone",
        /// No answer in time, or the owner did not get it (503).
        Timeout => "timeout",
        /// Redis is unreachable (503).
        RedisDown => "redis-down",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: ForwardOutcome,
}

/// The cluster metrics of one bridge.
#[derive(Debug)]
pub(crate) struct ClusterMetrics {
    forwards: Family<OutcomeLabel, Counter>,
    /// Time from forwarding a callback to its answer.
    pub(crate) forward_seconds: Histogram,
    /// 1 while the Redis link works.
    pub(crate) redis_up: Gauge,
    /// Changes of the Redis link (up to down and back).
    pub(crate) redis_transitions: Counter,
    /// Publications received from Redis and delivered to local members.
    pub(crate) publications_received: Counter,
    /// Messages from Redis dropped because this node could not keep up.
    pub(crate) dropped: Counter,
    /// Connections of dead nodes whose disconnect POST this node sent.
    pub(crate) reaped_connections: Counter,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        ClusterMetrics {
            forwards: Family::default(),
            forward_seconds: Histogram::new(exponential_buckets(0.0002, 2.0, 14)),
            redis_up: Gauge::default(),
            redis_transitions: Counter::default(),
            publications_received: Counter::default(),
            dropped: Counter::default(),
            reaped_connections: Counter::default(),
        }
    }
}

impl ClusterMetrics {
    /// Counts one forwarded callback.
    pub(crate) fn forward(&self, outcome: ForwardOutcome) {
        self.forwards.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "cluster_forwards",
            "Callbacks forwarded to the node holding the connection, by outcome",
            self.forwards.clone(),
        );
        registry.register(
            "cluster_forward_duration_seconds",
            "Time from forwarding a callback to the owning node's answer",
            self.forward_seconds.clone(),
        );
        registry.register(
            "cluster_redis_up",
            "1 while the link to Redis works, 0 while it does not",
            self.redis_up.clone(),
        );
        registry.register(
            "cluster_redis_transitions",
            "Changes of the Redis link between up and down",
            self.redis_transitions.clone(),
        );
        registry.register(
            "cluster_publications_received",
            "Channel publications received through Redis and delivered to local members",
            self.publications_received.clone(),
        );
        registry.register(
            "cluster_dropped",
            "Messages from Redis dropped because this node could not keep up",
            self.dropped.clone(),
        );
        registry.register(
            "cluster_reaped_connections",
            "Connections of dead nodes whose disconnect POST this node sent (cause node-lost)",
            self.reaped_connections.clone(),
        );
    }
}
