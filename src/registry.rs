//! The connection registry: connection id -> that connection's handle (the sending half of its
//! bounded outbound queue, and its live counters).
//!
//! A narrow interface (register, look up, remove) so that a later version can spread it over
//! several bridge nodes. Entries are removed by a [`Registration`] guard when the connection
//! task drops it, whatever ended the connection. The map's lock is never held across `.await`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use uuid::Uuid;

use crate::payload::Payload;

/// A connection's identifier: a random (v4) UUID from the operating system's CSPRNG. It is the
/// capability in the callback URL, so its `Display` shows only a short prefix; use
/// [`ConnectionId::full`] where the whole id is needed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(Uuid);

impl ConnectionId {
    /// A fresh random id (122 random bits).
    pub fn random() -> Self {
        ConnectionId(Uuid::new_v4())
    }

    /// Parses an id as it appears in a callback URL (hyphenated lower-case UUID).
    pub fn parse(s: &str) -> Option<Self> {
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
    pub fn full(&self) -> String {
        self.0.hyphenated().to_string()
    }

    /// The first 8 hex digits: enough to correlate log lines, useless as a capability.
    pub fn short(&self) -> String {
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
#[derive(Debug)]
pub enum Outbound {
    /// Send one message.
    Message(Payload),
    /// Close the socket with this code and reason after the messages queued before it.
    Close { code: CloseCode, reason: String },
}

/// The sending half of a connection's outbound queue.
pub type OutboundSender = mpsc::Sender<Outbound>;

/// What the registry keeps for one connection: its queue and its live counters.
#[derive(Debug, Clone)]
pub struct ConnectionHandle {
    /// Where the callback API queues messages and close requests.
    pub sender: OutboundSender,
    /// Counters the connection task updates and `GET {callback}` reads.
    pub stats: Arc<ConnectionStats>,
    /// Callback bodies being read for this connection (`CALLBACK_BODIES_PER_CONNECTION`).
    pub body_reads: Arc<tokio::sync::Semaphore>,
}

/// Live facts about one connection, updated by its task without locks.
#[derive(Debug)]
pub struct ConnectionStats {
    /// When the upgrade completed.
    pub connected_at: SystemTime,
    /// The subprotocol selected at the handshake, if any.
    pub subprotocol: Option<String>,
    /// Messages received from the client.
    pub messages_in: AtomicU64,
    /// Payload bytes received from the client.
    pub bytes_in: AtomicU64,
    /// Messages written to the client.
    pub messages_out: AtomicU64,
    /// Payload bytes written to the client.
    pub bytes_out: AtomicU64,
    /// Payload bytes accepted by the callback API and not yet written to the client.
    pub queued_bytes: AtomicUsize,
    /// Milliseconds since the Unix epoch of the last frame read from or message written to
    /// the client.
    last_activity_ms: AtomicU64,
}

impl ConnectionStats {
    /// Fresh counters for a connection opening now.
    pub fn new(subprotocol: Option<String>) -> Self {
        let now = SystemTime::now();
        ConnectionStats {
            connected_at: now,
            subprotocol,
            messages_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            last_activity_ms: AtomicU64::new(unix_ms(now)),
        }
    }

    /// Counts one message from the client.
    pub fn record_in(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        self.touch();
    }

    /// Counts one message to the client.
    pub fn record_out(&self, bytes: usize) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        self.touch();
    }

    /// Notes client activity that carries no message (ping, pong).
    pub fn touch(&self) {
        self.last_activity_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// When the client was last active.
    pub fn last_activity(&self) -> SystemTime {
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

/// id -> handle for every open connection on this node, in [`SHARDS`] independently locked
/// shards.
pub struct Registry {
    shards: Box<[Shard]>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("len", &self.len())
            .finish()
    }
}

impl Registry {
    /// Adds a connection; the entry lives until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, id: ConnectionId, handle: ConnectionHandle) -> Registration {
        self.lock(&id).insert(id, handle);
        Registration {
            registry: Arc::clone(self),
            id,
        }
    }

    /// The handle of a live connection.
    pub fn lookup(&self, id: &ConnectionId) -> Option<ConnectionHandle> {
        self.lock(id).get(id).cloned()
    }

    /// Removes a connection; later lookups find nothing.
    pub fn remove(&self, id: &ConnectionId) {
        self.lock(id).remove(id);
    }

    /// Number of registered connections.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// True when no connection is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

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

/// Removes its connection from the registry when dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    id: ConnectionId,
}

impl Registration {
    /// The registered id.
    pub fn id(&self) -> ConnectionId {
        self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(&self.id);
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
        let registry = Arc::new(Registry::default());
        let id = ConnectionId::random();
        let (sender, _rx) = mpsc::channel(1);
        let stats = Arc::new(ConnectionStats::new(None));
        let body_reads = Arc::new(tokio::sync::Semaphore::new(1));
        let guard = registry.register(
            id,
            ConnectionHandle {
                sender,
                stats,
                body_reads,
            },
        );
        assert!(registry.lookup(&id).is_some());
        drop(guard);
        assert!(registry.lookup(&id).is_none());
        assert!(registry.is_empty());
    }
}
