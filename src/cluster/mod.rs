//! Cluster mode (`--redis-url`): several bridge nodes share one Redis, so a callback URL works
//! on every node and a channel publication reaches members on every node. Nodes never talk to
//! each other directly; everything goes through Redis:
//!
//! - **Callbacks.** A callback token is `{node}.{uuid}`. A node that receives a callback for
//!   another node's connection reads the body as usual, then forwards it ([`wire::Request`])
//!   by `PUBLISH` to the owner's inbox topic (`{wsb}:node:{id}`) and waits for the owner's
//!   answer ([`wire::Answer`]) on its own inbox, at most `--forward-timeout` (then 503).
//! - **Channels.** A publication is `PUBLISH`ed to `{wsb}:chan:{name}`; a node is subscribed to
//!   that topic while it has members in the channel ([`bus`]), and delivers what arrives to
//!   them. Redis orders the publications of a channel, so every member sees one order.
//! - **Node death.** Each node heartbeats `{wsb}:node:{id}` and keeps, for each connection with a
//!   disconnect URL, what another node needs to send its disconnect POST ([`nodes`]). When a
//!   heartbeat expires, one surviving node sends them (cause `node-lost`).
//!
//! One multiplexed Redis link ([`link`]: one server, or a Redis Cluster; RESP3) carries
//! commands and subscriptions; it reconnects and resubscribes by itself after an outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{ClusterConfig, NodeId};
use crate::metrics::Metrics;
use crate::protocol::channel::ChannelName;
use crate::session::Sessions;
use crate::session::registry::{ConnectionId, LocalRegistry, Outbound};
pub(crate) use forward::ForwardError;
use link::{Link, PushQueue};
use wire::{Answer, Op, Publication};

pub(crate) mod bus;
mod forward;
mod link;
pub(crate) mod nodes;
pub(crate) mod wire;

/// Prefix of every Redis key and topic the bridge uses. The braces make `wsb` the hash tag:
/// in a Redis Cluster they all live in one slot, so a pipeline never crosses slots.
pub(crate) const PREFIX: &str = "{wsb}:";

/// Messages from Redis that may wait for the dispatcher; beyond, they are dropped (counted
/// and logged), as Redis itself drops for a subscriber that does not keep up.
const PUSH_QUEUE: usize = 65_536;

/// Time for Redis to answer a command, or for a connection to it to open.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis could not be reached or refused a command.
    #[error("cannot use Redis at --redis-url ({0}); check that it runs and is reachable")]
    Redis(#[source] redis::RedisError),
}

/// Serves the callbacks other nodes forward to this one (the callback API implements it).
pub(crate) trait Inbox: Send + Sync {
    /// Runs `op` on local connection `connection`; the answer's number is filled in by the
    /// caller.
    fn handle(&self, connection: ConnectionId, op: Op) -> BoxFuture<'static, Answer>;
}

/// Redis is down: publications cannot leave this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this node cannot reach Redis, so the publication cannot reach other nodes; retry shortly")]
pub(crate) struct RedisDown;

/// This node's part of the cluster.
pub(crate) struct Cluster {
    config: ClusterConfig,
    redis: Link,
    /// Callers waiting for an answer from another node, by request number.
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_number: AtomicU64,
    /// Whether the last Redis command worked.
    up: AtomicBool,
    inbox: std::sync::OnceLock<Arc<dyn Inbox>>,
    sessions: Arc<Sessions>,
    registry: Arc<nodes::ClusterRegistry>,
    subscriptions: bus::Subscriptions,
    metrics: Arc<Metrics>,
}

/// The registry to build [`Sessions`] with in cluster mode, before [`Cluster::start`].
pub(crate) fn registry(config: &ClusterConfig) -> Arc<nodes::ClusterRegistry> {
    Arc::new(nodes::ClusterRegistry::new(
        LocalRegistry::default(),
        config.node.clone(),
    ))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cluster {
    /// Connects to Redis, joins the cluster (heartbeat, inbox) and starts the background
    /// tasks; they stop when `shutdown` is cancelled.
    pub(crate) async fn start(
        config: ClusterConfig,
        sessions: Arc<Sessions>,
        registry: Arc<nodes::ClusterRegistry>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let (push, pushes) = mpsc::channel(PUSH_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let push = PushQueue {
            queue: push,
            dropped: Arc::clone(&dropped),
        };
        let redis = Link::open(&config.redis, push, REDIS_TIMEOUT)
            .await
            .map_err(ClusterError::Redis)?;
        let cluster = Arc::new(Cluster {
            subscriptions: bus::Subscriptions::new(redis.clone()),
            config,
            redis,
            pending: Mutex::default(),
            next_number: AtomicU64::new(1),
            up: AtomicBool::new(true),
            inbox: std::sync::OnceLock::new(),
            sessions,
            registry,
            metrics,
        });
        let mut redis = cluster.redis.clone();
        redis
            .subscribe(cluster.inbox_topic(&cluster.config.node))
            .await
            .map_err(ClusterError::Redis)?;
        cluster.heartbeat().await.map_err(ClusterError::Redis)?;
        cluster.metrics.cluster.redis_up.set(1);
        cluster
            .sessions
            .channels
            .set_bus(Arc::new(bus::Bus(Arc::clone(&cluster))));
        tokio::spawn(Arc::clone(&cluster).dispatch(pushes, dropped, shutdown.clone()));
        tokio::spawn(Arc::clone(&cluster).keep_alive(shutdown));
        tokio::spawn(Arc::clone(&cluster.registry).write_records(cluster.redis.clone()));
        info!(node = %cluster.config.node, "cluster: joined through Redis");
        Ok(cluster)
    }

    /// Serves the callbacks forwarded to this node with `inbox`; once.
    pub(crate) fn set_inbox(&self, inbox: Arc<dyn Inbox>) {
        let _ = self.inbox.set(inbox);
    }

    /// This node's id.
    pub(crate) fn node(&self) -> &NodeId {
        &self.config.node
    }

    fn inbox_topic(&self, node: &NodeId) -> String {
        format!("{PREFIX}node:{node}")
    }

    fn channel_topic(name: &ChannelName) -> String {
        format!("{PREFIX}chan:{name}")
    }

    /// Whether Redis answered the last command.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Records the outcome of a Redis command: a change of state is logged and counted.
    fn saw_redis(&self, working: bool) {
        if self.up.swap(working, Ordering::AcqRel) != working {
            self.metrics.cluster.redis_transitions.inc();
            self.metrics.cluster.redis_up.set(i64::from(working));
            if working {
                info!("cluster: Redis reachable again; re-registering this node");
            } else {
                warn!(
                    "cluster: Redis unreachable; local connections keep working, cross-node callbacks and publications answer 503 until it returns"
                );
            }
        }
    }

    /// Publishes `items` to their channels on every node, in order; the number of nodes each
    /// reached.
    pub(crate) async fn publish(
        &self,
        items: &[(ChannelName, Publication)],
    ) -> Result<Vec<usize>, RedisDown> {
        if !self.is_up() {
            return Err(RedisDown);
        }
        let mut pipe = redis::pipe();
        for (name, publication) in items {
            pipe.publish(Self::channel_topic(name), publication.encode().as_ref());
        }
        let mut redis = self.redis.clone();
        let result: Result<Vec<usize>, _> = bounded(pipe.query_async(&mut redis)).await;
        self.saw_redis(result.is_ok());
        result.map_err(|e| {
            debug!(error = %e, "cluster: publish failed");
            RedisDown
        })
    }

    /// Takes what Redis pushes (inbox messages, channel publications) until shutdown.
    async fn dispatch(
        self: Arc<Self>,
        mut pushes: mpsc::Receiver<PushInfo>,
        dropped: Arc<AtomicU64>,
        shutdown: CancellationToken,
    ) {
        let inbox = self.inbox_topic(&self.config.node);
        let channel_prefix = format!("{PREFIX}chan:");
        let mut reported_drops = 0;
        loop {
            let push = tokio::select! {
                () = shutdown.cancelled() => return,
                push = pushes.recv() => match push {
                    Some(push) => push,
                    None => return,
                },
            };
            let lost = dropped.load(Ordering::Relaxed);
            if lost > reported_drops {
                self.metrics.cluster.dropped.inc_by(lost - reported_drops);
                warn!(
                    dropped_total = lost,
                    "cluster: messages from Redis dropped: this node does not keep up"
                );
                reported_drops = lost;
            }
            if push.kind != PushKind::Message {
                continue;
            }
            let Some((topic, payload)) = topic_and_payload(push.data) else {
                continue;
            };
            if topic == inbox {
                self.on_inbox(payload);
            } else if let Some(name) = topic.strip_prefix(&channel_prefix) {
                self.on_publication(name, payload);
            }
        }
    }

    fn on_publication(&self, name: &str, payload: Bytes) {
        let (Ok(name), Ok(publication)) = (ChannelName::parse(name), Publication::decode(payload))
        else {
            return;
        };
        self.metrics.cluster.publications_received.inc();
        let item = match publication {
            Publication::Send(payload) => Outbound::Message(payload),
            Publication::Close { code, reason } => Outbound::Close { code, reason },
        };
        self.sessions.channels.publish(&name, &item);
    }

    /// Heartbeats, re-registers after an outage, keeps subscriptions in line with the local
    /// channels, and reaps dead nodes; until shutdown, then leaves the cluster.
    async fn keep_alive(self: Arc<Self>, shutdown: CancellationToken) {
        let every = (self.config.node_timeout / 3).max(Duration::from_millis(300));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let was_up = self.is_up();
            let beat = self.heartbeat().await;
            self.saw_redis(beat.is_ok());
            if beat.is_err() {
                continue;
            }
            if !was_up {
                self.registry.resync();
            }
            self.subscriptions
                .reconcile(&self.sessions.channels.names())
                .await;
            nodes::reap_dead_nodes(&self).await;
        }
    }

    async fn heartbeat(&self) -> Result<(), redis::RedisError> {
        let mut redis = self.redis.clone();
        let node = self.config.node.as_str();
        let ttl = u64::try_from(self.config.node_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.set_options(
            nodes::heartbeat_key(&self.config.node),
            1,
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl)),
        )
        .ignore()
        .sadd(nodes::NODES_KEY, node)
        .ignore();
        bounded(pipe.query_async::<()>(&mut redis)).await
    }

    /// Leaves the cluster after a drain: this node's keys are removed, so no other node
    /// reports its connections.
    pub(crate) async fn leave(&self) {
        let mut redis = self.redis.clone();
        let node = self.config.node.as_str();
        let left: Result<(), _> = redis::pipe()
            .del(nodes::records_key(&self.config.node))
            .ignore()
            .del(nodes::heartbeat_key(&self.config.node))
            .ignore()
            .srem(nodes::NODES_KEY, node)
            .ignore()
            .query_async(&mut redis)
            .await;
        match left {
            Ok(()) => info!(node, "cluster: left"),
            Err(e) => {
                warn!(node, error = %e, "cluster: could not remove this node from Redis; other nodes will report its connections once its heartbeat expires")
            }
        }
    }
}

/// A Redis command within [`REDIS_TIMEOUT`]: while Redis is unreachable the connection
/// manager keeps reconnecting, and a caller must not wait for that.
pub(crate) async fn bounded<T>(
    command: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, command).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        ))),
    }
}

/// The topic and payload of a pushed `message`.
fn topic_and_payload(data: Vec<Value>) -> Option<(String, Bytes)> {
    let mut data = data.into_iter();
    let topic = match data.next()? {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
        _ => return None,
    };
    let payload = match data.next()? {
        Value::BulkString(bytes) => Bytes::from(bytes),
        _ => return None,
    };
    Some((topic, payload))
}
