//! Channel subscriptions in Redis: a node is subscribed to `{wsb}:chan:{name}` while it has
//! members in the channel. A join waits for its subscription (so no publication after the
//! join is answered is missed); a channel left empty is unsubscribed, unless it gained a
//! member meanwhile; and every heartbeat [`Subscriptions::reconcile`]s the subscribed set
//! with the channels that have local members, which repairs whatever an outage left behind.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tracing::{debug, warn};

use super::link::Link;
use super::{Cluster, bounded};
use crate::protocol::channel::ChannelName;
use crate::session::channels::{ChannelBus, Channels};

/// The channel topics this node is subscribed to.
pub(crate) struct Subscriptions {
    redis: Link,
    /// Held across each Redis command, so subscribes and unsubscribes happen one at a time,
    /// in order.
    subscribed: tokio::sync::Mutex<HashSet<ChannelName>>,
}

impl Subscriptions {
    pub(crate) fn new(redis: Link) -> Self {
        Subscriptions {
            redis,
            subscribed: tokio::sync::Mutex::default(),
        }
    }

    /// Subscribes to `name` unless it is already.
    pub(crate) async fn subscribe(&self, name: &ChannelName) {
        let mut subscribed = self.subscribed.lock().await;
        if subscribed.contains(name) {
            return;
        }
        let mut redis = self.redis.clone();
        match bounded(redis.subscribe(Cluster::channel_topic(name))).await {
            Ok(()) => {
                subscribed.insert(name.clone());
            }
            Err(e) => {
                warn!(channel = %name, error = %e, "cluster: cannot subscribe to a channel yet; retrying at the next heartbeat")
            }
        }
    }

    /// Unsubscribes from `name` if this node still has no member in it.
    pub(crate) async fn unsubscribe(&self, name: &ChannelName, channels: &Channels) {
        let mut subscribed = self.subscribed.lock().await;
        if channels.has(name) || !subscribed.contains(name) {
            return;
        }
        let mut redis = self.redis.clone();
        if bounded(redis.unsubscribe(Cluster::channel_topic(name)))
            .await
            .is_ok()
        {
            subscribed.remove(name);
        }
    }

    /// Subscribes to every channel in `wanted` and from every other one.
    pub(crate) async fn reconcile(&self, wanted: &[ChannelName]) {
        let wanted: HashSet<&ChannelName> = wanted.iter().collect();
        let mut subscribed = self.subscribed.lock().await;
        let mut redis = self.redis.clone();
        let missing: Vec<ChannelName> = wanted
            .iter()
            .filter(|n| !subscribed.contains(**n))
            .map(|n| (*n).clone())
            .collect();
        for name in missing {
            if bounded(redis.subscribe(Cluster::channel_topic(&name)))
                .await
                .is_ok()
            {
                debug!(channel = %name, "cluster: subscribed on reconciliation");
                subscribed.insert(name);
            }
        }
        let extra: Vec<ChannelName> = subscribed
            .iter()
            .filter(|n| !wanted.contains(n))
            .cloned()
            .collect();
        for name in extra {
            if bounded(redis.unsubscribe(Cluster::channel_topic(&name)))
                .await
                .is_ok()
            {
                subscribed.remove(&name);
            }
        }
    }
}

/// [`ChannelBus`] of the session layer, through this node's [`Cluster`].
pub(crate) struct Bus(pub(crate) Arc<Cluster>);

impl ChannelBus for Bus {
    fn subscribe(&self, name: &ChannelName) -> BoxFuture<'static, ()> {
        let cluster = Arc::clone(&self.0);
        let name = name.clone();
        Box::pin(async move {
            let wait = cluster.config.forward_timeout;
            if tokio::time::timeout(wait, cluster.subscriptions.subscribe(&name))
                .await
                .is_err()
            {
                warn!(channel = %name, "cluster: subscribing took too long; publications from other nodes reach this member once it is done");
            }
        })
    }

    fn unsubscribe(&self, name: &ChannelName) {
        let cluster = Arc::clone(&self.0);
        let name = name.clone();
        tokio::spawn(async move {
            cluster
                .subscriptions
                .unsubscribe(&name, &cluster.sessions.channels)
                .await;
        });
    }
}
