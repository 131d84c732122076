//! The connection registry: connection id -> that connection's handle (the sending half of its
//! bounded outbound queue, and its live counters).
//!
//! A narrow interface (register, look up, remove) so that a later version can spread it over
//! several bridge nodes. Entries are removed by a [`Registration`] guard when the connection
//! task drops it, whatever ended the connection. The map's lock is never held across `.await`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::channels::Channels;
use super::mailbox::Mailbox;
use crate::protocol::payload::Payload;

/// A connection's identifier: a random (v4) UUID from the operating system's CSPRNG. It is the
/// capability in the callback URL, so its `Display` shows only a short prefix; use
/// [`ConnectionId::full`] where the whole id is needed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnectionId(Uuid);

impl ConnectionId {
    /// Length of an id in a callback URL (a hyphenated UUID).
    pub(crate) const LENGTH: usize = uuid::fmt::Hyphenated::LENGTH;

    /// A fresh random id (122 random bits).
    pub(crate) fn random() -> Self {
        ConnectionId(Uuid::new_v4())
    }

    /// Parses an id as it appears in a callback URL (hyphenated lower-case UUID).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        // Only the canonical form is accepted, so one connection has exactly one URL.
        let uuid = Uuid::try_parse(s).ok()?;
        let mut canonical = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let encoded = uuid.hyphenated().encode_lower(&mut canonical);
        (encoded == s).then_some(ConnectionId(uuid))
    }

    /// Which registry shard holds this id (the id is random, so shards fill evenly).
    fn shard(&self, shards: usize) -> usize {
        (self.0.as_u128() as usize) % shards
    }

    /// The whole id, for building the callback URL. Never log this.
    pub(crate) fn full(&self) -> String {
        self.0.hyphenated().to_string()
    }

    /// The first 8 hex digits: enough to correlate log lines, useless as a capability.
    pub(crate) fn short(&self) -> String {
        let mut s = self.full();
        s.truncate(8);
        s
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({}…)", self.short())
    }
}

/// What the callback API asks a connection task to do.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    /// Send one message.
    Message(Payload),
    /// Close the socket with this code and reason after the messages queued before it.
    Close { code: u16, reason: String },
    /// End the connection at once: a publisher found its queue full (`slow-consumer`).
    Evict { code: u16, reason: &'static str },
}

/// Callback bodies read at once for one connection. Bodies of ordinary callers arrive whole in
/// a packet or two, so two at a time cost them nothing; a caller that announces bodies and
/// trickles them can then hold at most two reads of the one connection whose URL it holds,
/// never the bridge's capacity for other connections.
pub(crate) const CALLBACK_BODIES_PER_CONNECTION: usize = 2;

/// What the registry keeps for one connection, shared by its task and the callback API, in
/// one allocation: its outbound queue, its live counters, its callback body reads.
pub(crate) type ConnectionHandle = Arc<Link>;

/// The parts of a [`ConnectionHandle`].
#[derive(Debug)]
pub(crate) struct Link {
    /// Where the callback API queues messages and close requests.
    pub(crate) mailbox: Mailbox,
    /// Counters the connection task updates and `GET {callback}` reads.
    pub(crate) stats: ConnectionStats,
    /// Callback bodies being read for this connection ([`CALLBACK_BODIES_PER_CONNECTION`]).
    pub(crate) body_reads: tokio::sync::Semaphore,
    /// The channels this connection is in ([`super::channels::Channels`] keeps the members).
    pub(crate) channels: std::sync::Mutex<Vec<super::channels::ChannelName>>,
}

impl Link {
    /// The handle of a new connection with a queue of `capacity` messages and `bytes` payload
    /// bytes.
    pub(crate) fn handle(
        capacity: usize,
        bytes: usize,
        stats: ConnectionStats,
    ) -> ConnectionHandle {
        Arc::new(Link {
            mailbox: Mailbox::new(capacity, bytes),
            stats,
            body_reads: tokio::sync::Semaphore::new(CALLBACK_BODIES_PER_CONNECTION),
            channels: std::sync::Mutex::default(),
        })
    }
}

/// Live facts about one connection, updated by its task without locks.
#[derive(Debug)]
pub(crate) struct ConnectionStats {
    /// When the upgrade completed.
    pub(crate) connected_at: SystemTime,
    /// The subprotocol selected at the handshake, if any.
    pub(crate) subprotocol: Option<String>,
    /// Messages received from the client.
    pub(crate) messages_in: AtomicU64,
    /// Payload bytes received from the client.
    pub(crate) bytes_in: AtomicU64,
    /// Messages written to the client.
    pub(crate) messages_out: AtomicU64,
    /// Payload bytes written to the client.
    pub(crate) bytes_out: AtomicU64,
    /// Milliseconds since the Unix epoch of the last frame read from or message written to
    /// the client.
    last_activity_ms: AtomicU64,
}

impl ConnectionStats {
    /// Fresh counters for a connection opening now.
    pub(crate) fn new(subprotocol: Option<String>) -> Self {
        let now = SystemTime::now();
        ConnectionStats {
            connected_at: now,
            subprotocol,
            messages_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(unix_ms(now)),
        }
    }

    /// Counts one message from the client.
    pub(crate) fn record_in(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        self.touch();
    }

    /// Counts one message to the client.
    pub(crate) fn record_out(&self, bytes: usize) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        self.touch();
    }

    /// Notes client activity that carries no message (ping, pong).
    pub(crate) fn touch(&self) {
        self.last_activity_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// When the client was last active.
    pub(crate) fn last_activity(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Shards of the registry: enough that callbacks and handshakes on different connections
/// rarely wait for the same lock.
const SHARDS: usize = 64;

type Shard = Mutex<HashMap<ConnectionId, ConnectionHandle>>;

/// Where connections are found by id: [`LocalRegistry`], or in a cluster one that wraps it and
/// keeps in Redis what another node needs should this one die, without the session code
/// changing. Entries are added by [`register`] and removed when its guard drops.
pub(crate) trait Registry: Send + Sync + 'static {
    /// Adds a connection.
    fn insert(&self, id: ConnectionId, handle: ConnectionHandle);
    /// The handle of a live connection.
    fn lookup(&self, id: &ConnectionId) -> Option<ConnectionHandle>;
    /// Removes a connection; later lookups find nothing.
    fn remove(&self, id: &ConnectionId);
    /// Number of registered connections.
    fn len(&self) -> usize;
    /// Keeps what another node needs to send this connection's disconnect POST should this
    /// node die (cluster mode); forgotten with [`Registry::remove`].
    fn record(&self, _id: ConnectionId, _departure: Departure) {}
}

/// What another node needs to send a connection's disconnect POST (or, for a
/// websocket-over-http connection, its `DISCONNECT` event) if the node holding it dies.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Departure {
    /// The disconnect URL; for websocket-over-http, the events URL.
    #[serde(rename = "d")]
    pub(crate) disconnect: String,
    /// The callback URL (`x-ws-proxy-send`).
    #[serde(rename = "s")]
    pub(crate) callback: String,
    /// The request-id nonce, so the POST carries the id the owner would have used (and, for
    /// websocket-over-http, the `Connection-Id`).
    #[serde(rename = "n")]
    pub(crate) nonce: String,
    /// websocket-over-http only: the `Meta-*` headers (lower-case name, value) the last
    /// request carried. `None` for a seed connection.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub(crate) events_meta: Option<Vec<(String, String)>>,
}

impl Departure {
    /// A websocket-over-http connection's departure: its events URL and `Meta-*` headers.
    pub(crate) fn events(
        events_url: &url::Url,
        callback: &axum::http::HeaderValue,
        nonce: String,
        meta: &axum::http::HeaderMap,
    ) -> Self {
        Departure {
            disconnect: events_url.to_string(),
            callback: String::from_utf8_lossy(callback.as_bytes()).into_owned(),
            nonce,
            events_meta: Some(
                meta.iter()
                    .filter_map(|(name, value)| {
                        Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                    })
                    .collect(),
            ),
        }
    }
}

/// The parts of a callback token: `{uuid}` on a single node, `{node}.{uuid}` in a cluster.
pub(crate) fn parse_token(token: &str) -> Option<(Option<crate::config::NodeId>, ConnectionId)> {
    match token.split_once('.') {
        None => Some((None, ConnectionId::parse(token)?)),
        Some((node, id)) => Some((
            Some(crate::config::NodeId::parse(node)?),
            ConnectionId::parse(id)?,
        )),
    }
}

/// Adds a connection to `registry`; the entry lives until the returned guard is dropped.
pub(crate) fn register(
    registry: &Arc<dyn Registry>,
    id: ConnectionId,
    handle: ConnectionHandle,
) -> Registration {
    registry.insert(id, handle);
    Registration {
        registry: Arc::clone(registry),
        id,
        channels: None,
    }
}

/// id -> handle for every open connection on this node, in [`SHARDS`] independently locked
/// shards. The locks are never held across `.await`.
pub(crate) struct LocalRegistry {
    shards: Box<[Shard]>,
}

impl Default for LocalRegistry {
    fn default() -> Self {
        LocalRegistry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl fmt::Debug for LocalRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRegistry")
            .field("len", &self.len())
            .finish()
    }
}

impl LocalRegistry {
    fn lock(
        &self,
        id: &ConnectionId,
    ) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, ConnectionHandle>> {
        // A map holds no invariant a panicking holder could break halfway.
        self.shards[id.shard(self.shards.len())]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Registry for LocalRegistry {
    fn insert(&self, id: ConnectionId, handle: ConnectionHandle) {
        self.lock(&id).insert(id, handle);
    }

    fn lookup(&self, id: &ConnectionId) -> Option<ConnectionHandle> {
        self.lock(id).get(id).cloned()
    }

    fn remove(&self, id: &ConnectionId) {
        self.lock(id).remove(id);
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// Removes its connection from the registry when dropped.
pub(crate) struct Registration {
    registry: Arc<dyn Registry>,
    id: ConnectionId,
    /// The channels the connection may have joined, and its handle, to leave them all.
    channels: Option<(Arc<Channels>, ConnectionHandle)>,
}

impl Registration {
    /// Also leaves every channel of the connection when dropped.
    pub(crate) fn with_channels(mut self, channels: Arc<Channels>, link: ConnectionHandle) -> Self {
        self.channels = Some((channels, link));
        self
    }

    /// The registered connection's id.
    pub(crate) fn id(&self) -> ConnectionId {
        self.id
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Registration").field(&self.id).finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(&self.id);
        if let Some((channels, link)) = self.channels.take() {
            channels.leave_all(self.id, &link);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_canonical_and_short_in_display() {
        let id = ConnectionId::random();
        assert_eq!(ConnectionId::parse(&id.full()), Some(id));
        assert_eq!(ConnectionId::parse(&id.full().to_uppercase()), None);
        assert_eq!(ConnectionId::parse("connect"), None);
        assert_eq!(id.to_string().len(), 8);
        assert!(!format!("{id:?}").contains(&id.full()));
    }

    #[test]
    fn guard_removes_the_entry() {
        let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::default());
        let id = ConnectionId::random();
        let guard = register(
            &registry,
            id,
            Link::handle(1, 1024, ConnectionStats::new(None)),
        );
        assert!(registry.lookup(&id).is_some());
        drop(guard);
        assert!(registry.lookup(&id).is_none());
        assert_eq!(registry.len(), 0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn connection_ids_parse_only_in_canonical_form(raw in "[0-9a-fA-F-]{0,40}") {
            if let Some(id) = ConnectionId::parse(&raw) {
                prop_assert_eq!(id.full(), raw);
            }
        }
    }
}
