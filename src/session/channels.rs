//! Channels: named groups of connections that one publication reaches whole. A connection
//! joins through its connect hook's answer, a frame POST's answer, or the callback API, and
//! leaves the same ways or by ending. A publication goes into each member's bounded outbound
//! queue, in publish order per channel; a member whose queue is full is evicted (closed with
//! 1013, cause `slow-consumer`) and neither the publisher nor the other members wait for it.
//!
//! Locks: the map of channels is sharded; each channel has its own lock, held while a
//! publication is queued to every member (so two publications to one channel reach every
//! member in one order) and never across `.await`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use futures_util::future::BoxFuture;

use tracing::warn;

use super::connection::SLOW_CONSUMER;
use super::mailbox::Refused;
use super::registry::{ConnectionHandle, ConnectionId, Outbound};
use crate::backend::ChannelHeaders;
use crate::metrics::Metrics;
pub(crate) use crate::protocol::channel::ChannelName;
use crate::protocol::{HEADER_SUBSCRIBE, HEADER_UNSUBSCRIBE, close_code};

/// Why a connection could not join a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a connection may be in at most {limit} channels (--max-channels-per-connection)")]
pub(crate) struct TooMany {
    pub(crate) limit: usize,
}

/// The members of one channel.
#[derive(Default)]
struct Channel {
    members: HashMap<ConnectionId, ConnectionHandle>,
}

/// One shard of the channel map.
type Shard = HashMap<ChannelName, Arc<Mutex<Channel>>>;

/// Shards of the channel map.
const SHARDS: usize = 64;

/// How publications made on other nodes reach this one (cluster mode): a channel is
/// subscribed while this node has members in it.
pub(crate) trait ChannelBus: Send + Sync {
    /// Makes publications to `name` reach this node; resolves once they do (or once the bus
    /// has given up waiting; it keeps trying in the background).
    fn subscribe(&self, name: &ChannelName) -> BoxFuture<'static, ()>;
    /// This node has no member of `name` left.
    fn unsubscribe(&self, name: &ChannelName);
}

/// Every channel of this node.
pub(crate) struct Channels {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    max_per_connection: usize,
    metrics: Arc<Metrics>,
    /// Set in cluster mode.
    bus: OnceLock<Arc<dyn ChannelBus>>,
}

/// What one publication did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Members it was queued for.
    pub(crate) recipients: usize,
    /// Members evicted because their queue was full.
    pub(crate) evicted: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Maps and member lists hold no invariant a panicking holder could break halfway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Channels {
    pub(crate) fn new(max_per_connection: usize, metrics: Arc<Metrics>) -> Self {
        Channels {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            max_per_connection,
            metrics,
            bus: OnceLock::new(),
        }
    }

    /// Connects the channels to the other nodes (cluster mode); once.
    pub(crate) fn set_bus(&self, bus: Arc<dyn ChannelBus>) {
        let _ = self.bus.set(bus);
    }

    /// Resolves once publications to each of `names` made on any node reach this one: at
    /// once on a single node. Called after joining, before telling anyone it is done.
    pub(crate) async fn settle(&self, names: &[ChannelName]) {
        if let Some(bus) = self.bus.get() {
            for name in names {
                bus.subscribe(name).await;
            }
        }
    }

    fn shard(&self, name: &ChannelName) -> &Mutex<Shard> {
        let hash = self.hasher.hash_one(name);
        &self.shards[(hash as usize) % self.shards.len()]
    }

    /// Adds connection `id` to `name`; `Ok(false)` when it was a member already.
    pub(crate) fn join(
        &self,
        id: ConnectionId,
        link: &ConnectionHandle,
        name: &ChannelName,
    ) -> Result<bool, TooMany> {
        let mut joined = lock(&link.channels);
        if joined.contains(name) {
            return Ok(false);
        }
        if joined.len() >= self.max_per_connection {
            return Err(TooMany {
                limit: self.max_per_connection,
            });
        }
        let mut shard = lock(self.shard(name));
        let channel = shard.entry(name.clone()).or_insert_with(|| {
            self.metrics.channel.channels.inc();
            Arc::default()
        });
        lock(channel).members.insert(id, Arc::clone(link));
        drop(shard);
        joined.push(name.clone());
        self.metrics.channel.memberships.inc();
        Ok(true)
    }

    /// Removes connection `id` from `name`; `false` when it was not a member.
    pub(crate) fn leave(
        &self,
        id: ConnectionId,
        link: &ConnectionHandle,
        name: &ChannelName,
    ) -> bool {
        let mut joined = lock(&link.channels);
        let Some(at) = joined.iter().position(|n| n == name) else {
            return false;
        };
        joined.swap_remove(at);
        drop(joined);
        self.remove_member(id, name);
        true
    }

    /// Removes connection `id` from every channel it is in (when it ends).
    pub(crate) fn leave_all(&self, id: ConnectionId, link: &ConnectionHandle) {
        let joined = std::mem::take(&mut *lock(&link.channels));
        for name in &joined {
            self.remove_member(id, name);
        }
    }

    fn remove_member(&self, id: ConnectionId, name: &ChannelName) {
        let mut shard = lock(self.shard(name));
        let Some(channel) = shard.get(name) else {
            return;
        };
        let mut members = lock(channel);
        if members.members.remove(&id).is_some() {
            self.metrics.channel.memberships.dec();
        }
        if members.members.is_empty() {
            drop(members);
            shard.remove(name);
            self.metrics.channel.channels.dec();
            if let Some(bus) = self.bus.get() {
                bus.unsubscribe(name);
            }
        }
    }

    /// Applies a frame POST answer's `x-ws-proxy-unsubscribe`, then its
    /// `x-ws-proxy-subscribe`. Names that are not channel names, and joins beyond
    /// `--max-channels-per-connection`, are logged and skipped: the connection goes on.
    /// Returns the channels asked to join (to [`Channels::settle`]).
    pub(crate) fn apply(
        &self,
        id: ConnectionId,
        link: &ConnectionHandle,
        headers: &ChannelHeaders,
    ) -> Vec<ChannelName> {
        for name in named(headers.unsubscribe.as_ref(), HEADER_UNSUBSCRIBE) {
            self.leave(id, link, &name);
        }
        let joined = named(headers.subscribe.as_ref(), HEADER_SUBSCRIBE);
        self.join_all(id, link, &joined);
        joined
    }

    /// Joins each of `names`; joins beyond the limit are logged and skipped.
    pub(crate) fn join_all(
        &self,
        id: ConnectionId,
        link: &ConnectionHandle,
        names: &[ChannelName],
    ) {
        for name in names {
            if let Err(e) = self.join(id, link, name) {
                warn!(channel = %name, "backend asked to join a channel: {e}; not joined");
            }
        }
    }

    /// Whether `name` has a member on this node.
    pub(crate) fn has(&self, name: &ChannelName) -> bool {
        lock(self.shard(name)).contains_key(name)
    }

    /// Every channel with a member on this node (for the cluster's reconciliation).
    pub(crate) fn names(&self) -> Vec<ChannelName> {
        self.shards
            .iter()
            .flat_map(|shard| lock(shard).keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// The channels connection `link` is in, sorted.
    pub(crate) fn of(&self, link: &ConnectionHandle) -> Vec<String> {
        let mut names: Vec<String> = lock(&link.channels).iter().map(|n| n.to_string()).collect();
        names.sort();
        names
    }

    /// Queues `item` for every member of `name`, in one order for all of them; members whose
    /// queue is full are evicted.
    pub(crate) fn publish(&self, name: &ChannelName, item: &Outbound) -> Delivery {
        self.metrics.channel.publications.inc();
        let Some(channel) = lock(self.shard(name)).get(name).map(Arc::clone) else {
            return Delivery::default();
        };
        let members = lock(&channel);
        let mut delivery = Delivery::default();
        for handle in members.members.values() {
            match handle.mailbox.try_send(item.clone()) {
                Ok(()) => delivery.recipients += 1,
                Err(Refused::Full(_)) => {
                    if handle.mailbox.evict(close_code::TRY_AGAIN, SLOW_CONSUMER) {
                        delivery.evicted += 1;
                        self.metrics.channel.slow_consumers.inc();
                    }
                }
                Err(Refused::Closed) => {}
            }
        }
        self.metrics
            .channel
            .deliveries
            .inc_by(delivery.recipients as u64);
        delivery
    }
}

/// The channel names of an answer header; a value that does not parse is logged and ignored.
fn named(value: Option<&reqwest::header::HeaderValue>, header: &str) -> Vec<ChannelName> {
    let Some(value) = value else {
        return Vec::new();
    };
    let parsed = value
        .to_str()
        .map_err(|_| "not ASCII".to_owned())
        .and_then(|v| ChannelName::parse_list(v).map_err(|e| e.to_string()));
    parsed.unwrap_or_else(|why| {
        warn!(header, "backend answer header ignored: {why}");
        Vec::new()
    })
}

/// Memberships of this node, for tests.
#[cfg(test)]
impl Channels {
    fn count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn members(&self, name: &ChannelName) -> usize {
        lock(self.shard(name))
            .get(name)
            .map_or(0, |c| lock(c).members.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Payload;
    use crate::session::registry::{ConnectionStats, Link};

    fn connection(queue: usize) -> (ConnectionId, ConnectionHandle) {
        (
            ConnectionId::random(),
            Link::handle(queue, 1 << 20, ConnectionStats::new(None)),
        )
    }

    fn text(s: &'static str) -> Outbound {
        Outbound::Message(Payload::Text(bytes::Bytes::from_static(s.as_bytes())))
    }

    fn name(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_publication_reaches_every_member_once() {
        let channels = Channels::new(64, Arc::new(Metrics::new()));
        let room = name("room");
        let members: Vec<_> = (0..3).map(|_| connection(8)).collect();
        for (id, link) in &members {
            assert_eq!(channels.join(*id, link, &room), Ok(true));
            assert_eq!(channels.join(*id, link, &room), Ok(false));
        }
        let (outsider_id, outsider) = connection(8);
        assert_eq!(
            channels.join(outsider_id, &outsider, &name("other")),
            Ok(true)
        );
        let delivery = channels.publish(&room, &text("hi"));
        assert_eq!(
            delivery,
            Delivery {
                recipients: 3,
                evicted: 0
            }
        );
        for (_, link) in &members {
            assert!(matches!(
                link.mailbox.try_recv(),
                Some(Outbound::Message(_))
            ));
        }
        assert!(outsider.mailbox.try_recv().is_none());
        assert_eq!(channels.publish(&name("nobody"), &text("x")).recipients, 0);
    }

    #[test]
    fn leaving_and_ending_remove_memberships_and_empty_channels() {
        let channels = Channels::new(2, Arc::new(Metrics::new()));
        let (id, link) = connection(8);
        assert!(channels.join(id, &link, &name("a")).is_ok());
        assert!(channels.join(id, &link, &name("b")).is_ok());
        assert_eq!(
            channels.join(id, &link, &name("c")),
            Err(TooMany { limit: 2 })
        );
        assert_eq!(channels.of(&link), vec!["a", "b"]);
        assert!(channels.leave(id, &link, &name("a")));
        assert!(
            !channels.leave(id, &link, &name("a")),
            "leaving twice is a no-op"
        );
        assert_eq!(channels.count(), 1);
        channels.leave_all(id, &link);
        assert_eq!(channels.count(), 0);
        assert_eq!(channels.members(&name("b")), 0);
    }

    #[test]
    fn a_full_member_is_evicted_and_the_others_still_get_it() {
        let channels = Channels::new(8, Arc::new(Metrics::new()));
        let room = name("room");
        let (slow_id, slow) = connection(1);
        let (fast_id, fast) = connection(8);
        assert!(channels.join(slow_id, &slow, &room).is_ok());
        assert!(channels.join(fast_id, &fast, &room).is_ok());
        assert_eq!(channels.publish(&room, &text("1")).recipients, 2);
        let second = channels.publish(&room, &text("2"));
        assert_eq!(
            second,
            Delivery {
                recipients: 1,
                evicted: 1
            }
        );
        assert!(matches!(
            slow.mailbox.try_recv(),
            Some(Outbound::Evict { code: 1013, .. })
        ));
        assert!(matches!(
            fast.mailbox.try_recv(),
            Some(Outbound::Message(_))
        ));
        assert!(matches!(
            fast.mailbox.try_recv(),
            Some(Outbound::Message(_))
        ));
    }
}
