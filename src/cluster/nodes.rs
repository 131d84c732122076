//! Nodes in Redis: each node's heartbeat (`{wsb}:node:{id}`, expiring after `--node-timeout`),
//! the set of nodes (`{wsb}:nodes`), and for each connection with a disconnect URL what another
//! node needs to send its disconnect POST (`{wsb}:conns:{id}`, a hash by connection id). When a
//! heartbeat has expired, one surviving node (the one that takes `{wsb}:reap:{id}`) sends those
//! POSTs (code 1006, cause `node-lost`, the request id the owner would have used), then
//! removes the dead node's keys. A crash during that leaves the keys, and the lock expires:
//! the POSTs are sent at least once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use reqwest::header::HeaderValue;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::link::Link;
use super::{Cluster, PREFIX, bounded};
use crate::backend::RequestIds;
use crate::backend::events::EventsOutcome;
use crate::config::NodeId;
use crate::protocol::events::Event;
use crate::protocol::{Cause, CloseReport, Initiator, close_code};
use crate::session::events::EventsLink;
use crate::session::registry::{
    ConnectionHandle, ConnectionId, Departure, LocalRegistry, Registry,
};

/// The set of node ids.
pub(crate) const NODES_KEY: &str = "{wsb}:nodes";

/// Record writes that may wait for Redis; beyond, the records are rewritten whole later.
const WRITE_QUEUE: usize = 65_536;

/// Disconnect POSTs of a dead node sent at once.
const REAP_CONCURRENCY: usize = 64;

/// How long a node may take to reap a dead one before another may try.
const REAP_LOCK: Duration = Duration::from_secs(120);

pub(crate) fn heartbeat_key(node: &NodeId) -> String {
    format!("{PREFIX}node:{node}:alive")
}

pub(crate) fn records_key(node: &NodeId) -> String {
    format!("{PREFIX}conns:{node}")
}

fn reap_key(node: &str) -> String {
    format!("{PREFIX}reap:{node}")
}

/// A change to this node's records in Redis.
enum Write {
    Put(ConnectionId, String),
    Remove(ConnectionId),
}

/// The local registry, plus this node's departure records mirrored to Redis.
pub(crate) struct ClusterRegistry {
    local: LocalRegistry,
    node: NodeId,
    /// Every record, so they can be rewritten whole after an outage.
    records: Mutex<HashMap<ConnectionId, String>>,
    writes: mpsc::Sender<Write>,
    queued: Mutex<Option<mpsc::Receiver<Write>>>,
    /// The records in Redis may be stale: rewrite them whole.
    stale: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClusterRegistry {
    pub(crate) fn new(local: LocalRegistry, node: NodeId) -> Self {
        let (writes, queued) = mpsc::channel(WRITE_QUEUE);
        ClusterRegistry {
            local,
            node,
            records: Mutex::default(),
            writes,
            queued: Mutex::new(Some(queued)),
            stale: AtomicBool::new(false),
        }
    }

    /// Asks for the records to be rewritten whole (after an outage).
    pub(crate) fn resync(&self) {
        self.stale.store(true, Ordering::Release);
    }

    fn queue(&self, write: Write) {
        if self.writes.try_send(write).is_err() {
            self.resync();
        }
    }

    /// Writes record changes to Redis, batched, until the registry is dropped.
    pub(crate) async fn write_records(self: Arc<Self>, mut redis: Link) {
        let Some(mut queued) = lock(&self.queued).take() else {
            return;
        };
        let key = records_key(&self.node);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let first = tokio::select! {
                write = queued.recv() => match write {
                    Some(write) => Some(write),
                    None => return,
                },
                _ = tick.tick() => None,
            };
            if self.stale.swap(false, Ordering::AcqRel) {
                while queued.try_recv().is_ok() {}
                if self.rewrite(&mut redis, &key).await.is_err() {
                    self.resync();
                }
                continue;
            }
            let Some(first) = first else { continue };
            let mut pipe = redis::pipe();
            let mut batch = Some(first);
            let mut n = 0;
            while let Some(write) = batch.take() {
                match write {
                    Write::Put(id, record) => pipe.hset(&key, id.full(), record).ignore(),
                    Write::Remove(id) => pipe.hdel(&key, id.full()).ignore(),
                };
                n += 1;
                if n < 512 {
                    batch = queued.try_recv().ok();
                }
            }
            if bounded(pipe.query_async::<()>(&mut redis)).await.is_err() {
                self.resync();
            }
        }
    }

    /// Replaces this node's records in Redis with the local ones.
    async fn rewrite(&self, redis: &mut Link, key: &str) -> redis::RedisResult<()> {
        let all: Vec<(String, String)> = lock(&self.records)
            .iter()
            .map(|(id, record)| (id.full(), record.clone()))
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic().del(key).ignore();
        for chunk in all.chunks(1000) {
            pipe.hset_multiple(key, chunk).ignore();
        }
        bounded(pipe.query_async::<()>(redis)).await
    }
}

impl Registry for ClusterRegistry {
    fn insert(&self, id: ConnectionId, handle: ConnectionHandle) {
        self.local.insert(id, handle);
    }

    fn lookup(&self, id: &ConnectionId) -> Option<ConnectionHandle> {
        self.local.lookup(id)
    }

    fn remove(&self, id: &ConnectionId) {
        self.local.remove(id);
        if lock(&self.records).remove(id).is_some() {
            self.queue(Write::Remove(*id));
        }
    }

    fn len(&self) -> usize {
        self.local.len()
    }

    fn record(&self, id: ConnectionId, departure: Departure) {
        let Ok(record) = serde_json::to_string(&departure) else {
            return;
        };
        lock(&self.records).insert(id, record.clone());
        self.queue(Write::Put(id, record));
    }
}

/// Reaps every node whose heartbeat has expired (one survivor per dead node does it).
pub(crate) async fn reap_dead_nodes(cluster: &Arc<Cluster>) {
    let mut redis = cluster.redis.clone();
    let Ok(nodes): Result<Vec<String>, _> = bounded(redis.smembers(NODES_KEY)).await else {
        return;
    };
    for node in nodes {
        let Some(node) = NodeId::parse(&node) else {
            continue;
        };
        if node == cluster.config.node {
            continue;
        }
        let alive: Result<bool, _> = bounded(redis.exists(heartbeat_key(&node))).await;
        if alive == Ok(false) {
            let cluster = Arc::clone(cluster);
            tokio::spawn(async move { reap(&cluster, &node).await });
        }
    }
}

/// Sends the disconnect POSTs of dead node `node`, if this node takes the reaping lock.
async fn reap(cluster: &Cluster, node: &NodeId) {
    let mut redis = cluster.redis.clone();
    let lock_ms = u64::try_from(REAP_LOCK.as_millis()).unwrap_or(u64::MAX);
    let options = redis::SetOptions::default()
        .conditional_set(redis::ExistenceCheck::NX)
        .with_expiration(redis::SetExpiry::PX(lock_ms));
    let taken: Result<Option<String>, _> = bounded(redis.set_options(
        reap_key(node.as_str()),
        cluster.config.node.as_str(),
        options,
    ))
    .await;
    if !matches!(taken, Ok(Some(_))) {
        return;
    }
    let records: HashMap<String, String> = match bounded(redis.hgetall(records_key(node))).await {
        Ok(records) => records,
        Err(e) => {
            warn!(dead = %node, error = %e, "cluster: cannot read a dead node's connections");
            return;
        }
    };
    warn!(dead = %node, connections = records.len(), "cluster: node lost; sending the disconnect POSTs of its connections");
    let sent = futures_util::stream::iter(records.into_values())
        .map(|record| disconnect(cluster, record))
        .buffer_unordered(REAP_CONCURRENCY)
        .filter(|sent| std::future::ready(*sent))
        .count()
        .await;
    let done: Result<(), _> = redis::pipe()
        .del(records_key(node))
        .ignore()
        .srem(NODES_KEY, node.as_str())
        .ignore()
        .del(reap_key(node.as_str()))
        .ignore()
        .query_async(&mut redis)
        .await;
    if let Err(e) = done {
        warn!(dead = %node, error = %e, "cluster: cannot remove a dead node's keys; its disconnect POSTs may be sent again");
    }
    info!(dead = %node, disconnect_posts = sent, "cluster: dead node reaped");
}

/// Sends one dead connection's disconnect POST; whether it was delivered.
async fn disconnect(cluster: &Cluster, record: String) -> bool {
    let Ok(departure) = serde_json::from_str::<Departure>(&record) else {
        return false;
    };
    let sessions = &cluster.sessions;
    let (Ok(url), Some(ids), Ok(callback)) = (
        url::Url::parse(&departure.disconnect),
        RequestIds::from_nonce_hex(&departure.nonce),
        HeaderValue::from_str(&departure.callback),
    ) else {
        return false;
    };
    if let Some(meta) = departure.events_meta {
        return disconnect_events(cluster, url, &departure.nonce, meta).await;
    }
    if !sessions.config.allowlist.allows(&url) {
        warn!(url = %crate::logging::redacted(&url), "cluster: a dead node's disconnect URL is not allowed here; not sent");
        return false;
    }
    let report = CloseReport {
        initiator: Initiator::Bridge,
        cause: Cause::NodeLost,
        code: Some(close_code::ABNORMAL),
        reason: "node lost",
    };
    let target = sessions.backend.target(url);
    cluster.metrics.cluster.reaped_connections.inc();
    match sessions
        .backend
        .post_disconnect(&target, &callback, &ids, report)
        .await
    {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e.detail(), "cluster: disconnect POST of a dead node's connection failed");
            false
        }
    }
}

/// Sends a dead websocket-over-http connection's `DISCONNECT` event to its events URL, with
/// its `Connection-Id` and `Meta-*` headers (and `Grip-Sig` with `--grip-key`), as its own
/// node would have; whether the backend took it.
async fn disconnect_events(
    cluster: &Cluster,
    url: url::Url,
    nonce: &str,
    meta: Vec<(String, String)>,
) -> bool {
    let sessions = &cluster.sessions;
    if !sessions.config.routes.serves_events_url(&url) {
        warn!(url = %crate::logging::redacted(&url), "cluster: a dead node's events URL belongs to no websocket-over-http route here; DISCONNECT not sent");
        return false;
    }
    let Ok(connection_id) = HeaderValue::from_str(nonce) else {
        return false;
    };
    let mut link = EventsLink::new(connection_id, sessions.config.grip_key.clone());
    for (name, value) in meta {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            link.meta.insert(name, value);
        }
    }
    let target = sessions.backend.target(url);
    cluster.metrics.cluster.reaped_connections.inc();
    let events = [Event::Disconnect];
    match sessions
        .backend
        .post_events(&target, link.request(&events, 0))
        .await
    {
        Ok(EventsOutcome::Answer(_)) => true,
        Ok(EventsOutcome::Refused { status, .. }) => {
            warn!(%status, "cluster: DISCONNECT of a dead node's websocket-over-http connection refused");
            false
        }
        Err(e) => {
            warn!(error = %e.detail(), "cluster: DISCONNECT of a dead node's websocket-over-http connection failed");
            false
        }
    }
}
