//! A node's link to Redis: one server through redis-rs' `ConnectionManager`, or a Redis
//! Cluster through its `ClusterConnection`. Both speak RESP3, hand pushed pub/sub messages to
//! one bounded [`PushQueue`], reconnect and resubscribe by themselves, and carry every command
//! of the bridge; the rest of the cluster module sees one [`Link`].
//!
//! In a Redis Cluster every key and topic of the bridge carries the hash tag `{wsb}` (see
//! [`super::PREFIX`]), so they live in one slot: pipelines never cross slots, and classic
//! `PUBLISH` reaches subscribers on every shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, ProtocolVersion, PushInfo, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;

use crate::config::RedisTarget;

/// Where pushed messages go: a bounded queue; beyond it they are dropped and counted.
pub(crate) struct PushQueue {
    pub(crate) queue: mpsc::Sender<PushInfo>,
    pub(crate) dropped: Arc<AtomicU64>,
}

impl redis::aio::AsyncPushSender for PushQueue {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        if self.queue.try_send(info).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A cloneable, multiplexed connection to Redis (one server or a Redis Cluster).
#[derive(Clone)]
pub(crate) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    /// Connects to `target`, with `timeout` for connecting and for each answer, and pushes
    /// delivered to `pushes`.
    pub(crate) async fn open(
        target: &RedisTarget,
        pushes: PushQueue,
        timeout: Duration,
    ) -> RedisResult<Link> {
        match target {
            RedisTarget::Server(url) => {
                let client = redis::Client::open(resp3_url(url))?;
                let config = ConnectionManagerConfig::new()
                    .set_push_sender(pushes)
                    .set_automatic_resubscription()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_max_delay(Duration::from_secs(2));
                Ok(Link::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            RedisTarget::Cluster(seeds) => {
                let client = ClusterClientBuilder::new(seeds.iter().map(|url| resp3_url(url)))
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(pushes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()?;
                Ok(Link::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Subscribes to `topic`; resubscribed by itself after a reconnect.
    pub(crate) async fn subscribe(&mut self, topic: String) -> RedisResult<()> {
        match self {
            Link::Single(redis) => redis.subscribe(topic).await,
            Link::Cluster(redis) => redis.subscribe(topic).await,
        }
    }

    /// Unsubscribes from `topic`.
    pub(crate) async fn unsubscribe(&mut self, topic: String) -> RedisResult<()> {
        match self {
            Link::Single(redis) => redis.unsubscribe(topic).await,
            Link::Cluster(redis) => redis.unsubscribe(topic).await,
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(redis) => redis.req_packed_command(cmd),
            Link::Cluster(redis) => redis.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(redis) => redis.req_packed_commands(pipeline, offset, count),
            Link::Cluster(redis) => redis.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(redis) => redis.get_db(),
            Link::Cluster(redis) => redis.get_db(),
        }
    }
}

/// `redis://…` with RESP3 asked for (pushes on the command connection need it).
fn resp3_url(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}
