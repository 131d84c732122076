//! Metrics of permessage-deflate (`ws_bridge_deflate_*`): connections that negotiated it, and
//! the bytes of compressed messages both ways, on the wire and as messages, so that their
//! ratio is what compression saves.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// The permessage-deflate metrics of one bridge.
#[derive(Debug, Default)]
pub(crate) struct DeflateMetrics {
    /// Connections that negotiated permessage-deflate.
    pub(crate) negotiated: Counter,
    /// Compressed client messages: bytes on the wire.
    pub(crate) in_wire: Counter,
    /// The same messages inflated.
    pub(crate) in_message: Counter,
    /// Messages the bridge compressed: bytes on the wire.
    pub(crate) out_wire: Counter,
    /// The same messages before compression.
    pub(crate) out_message: Counter,
}

impl DeflateMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "deflate_connections",
            "Connections that negotiated permessage-deflate",
            self.negotiated.clone(),
        );
        registry.register(
            "deflate_in_wire_bytes",
            "Compressed client messages: bytes as received",
            self.in_wire.clone(),
        );
        registry.register(
            "deflate_in_message_bytes",
            "Compressed client messages: bytes once inflated",
            self.in_message.clone(),
        );
        registry.register(
            "deflate_out_wire_bytes",
            "Messages the bridge compressed: bytes as sent",
            self.out_wire.clone(),
        );
        registry.register(
            "deflate_out_message_bytes",
            "Messages the bridge compressed: bytes before compression",
            self.out_message.clone(),
        );
    }
}
