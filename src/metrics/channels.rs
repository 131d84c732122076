//! Metrics of channels (`ws_bridge_channel_*`): how many channels and memberships this node
//! holds, and what publications did (published, delivered, members evicted as too slow).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The channel metrics of one bridge.
#[derive(Debug, Default)]
pub(crate) struct ChannelMetrics {
    /// Channels with at least one member on this node.
    pub(crate) channels: Gauge,
    /// Connection-channel memberships on this node.
    pub(crate) memberships: Gauge,
    /// Publications accepted (one per channel per item).
    pub(crate) publications: Counter,
    /// Messages queued to members by publications.
    pub(crate) deliveries: Counter,
    /// Members closed with 1013 because a publication found their queue full.
    pub(crate) slow_consumers: Counter,
}

impl ChannelMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "channels",
            "Channels with at least one member on this node",
            self.channels.clone(),
        );
        registry.register(
            "channel_memberships",
            "Connection-channel memberships on this node",
            self.memberships.clone(),
        );
        registry.register(
            "channel_publications",
            "Publications to a channel (one per channel per item)",
            self.publications.clone(),
        );
        registry.register(
            "channel_deliveries",
            "Messages queued to channel members by publications",
            self.deliveries.clone(),
        );
        registry.register(
            "slow_consumers",
            "Channel members closed with 1013 because a publication found their send queue full",
            self.slow_consumers.clone(),
        );
    }
}
