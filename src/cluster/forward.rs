//! Callbacks forwarded between nodes: the asking side ([`Cluster::forward`]: `PUBLISH` to the
//! owner's inbox, wait for the answer with the same number on its own inbox) and the owning
//! side ([`Cluster::on_inbox`]: run the op through the [`super::Inbox`], `PUBLISH` the answer
//! back). A request published to a node nobody listens for is told apart: a node whose
//! heartbeat has expired is gone (404), a live one is just not answering (503).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use redis::AsyncCommands;
use tokio::sync::oneshot;
use tracing::debug;

use super::wire::{Answer, Message, Op, Request};
use super::{Cluster, bounded, lock, nodes};
use crate::config::NodeId;
use crate::metrics::ForwardOutcome;
use crate::session::registry::ConnectionId;

/// Why a forwarded callback got no answer from the owning node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The owning node is gone: its connections are closed.
    #[error("the node holding this connection is gone")]
    NodeGone,
    /// The owner did not answer in time (or did not get the request).
    #[error("the node holding this connection did not answer in time; retry shortly")]
    Timeout,
    /// Redis is unreachable.
    #[error(
        "this node cannot reach Redis, so it cannot reach the node holding this connection; retry shortly"
    )]
    RedisDown,
}

impl Cluster {
    /// Forwards a callback for `connection` to node `to` and waits for its answer.
    pub(crate) async fn forward(
        &self,
        to: &NodeId,
        connection: ConnectionId,
        op: Op,
    ) -> Result<Answer, ForwardError> {
        let started = tokio::time::Instant::now();
        let result = self.forward_inner(to, connection, op).await;
        let outcome = match &result {
            Ok(_) => ForwardOutcome::Answered,
            Err(ForwardError::NodeGone) => ForwardOutcome::NodeGone,
            Err(ForwardError::Timeout) => ForwardOutcome::Timeout,
            Err(ForwardError::RedisDown) => ForwardOutcome::RedisDown,
        };
        self.metrics.cluster.forward(outcome);
        self.metrics
            .cluster
            .forward_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn forward_inner(
        &self,
        to: &NodeId,
        connection: ConnectionId,
        op: Op,
    ) -> Result<Answer, ForwardError> {
        if !self.is_up() {
            return Err(ForwardError::RedisDown);
        }
        let number = self.next_number.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            number,
            from: self.config.node.to_string(),
            connection: connection.full(),
            op,
        };
        let (answer, answered) = oneshot::channel();
        lock(&self.pending).insert(number, answer);
        let forgotten = Forget(self, number);
        let mut redis = self.redis.clone();
        let encoded = request.encode();
        let published = bounded(redis.publish(self.inbox_topic(to), encoded.as_ref()));
        let receivers: usize = match published.await {
            Ok(n) => {
                self.saw_redis(true);
                n
            }
            Err(e) => {
                debug!(error = %e, "cluster: forward failed");
                self.saw_redis(false);
                return Err(ForwardError::RedisDown);
            }
        };
        if receivers == 0 {
            let alive: bool = bounded(redis.exists(nodes::heartbeat_key(to)))
                .await
                .map_err(|_| ForwardError::RedisDown)?;
            return Err(if alive {
                ForwardError::Timeout
            } else {
                ForwardError::NodeGone
            });
        }
        let answer = tokio::time::timeout(self.config.forward_timeout, answered).await;
        drop(forgotten);
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            _ => Err(ForwardError::Timeout),
        }
    }

    pub(super) fn on_inbox(self: &Arc<Self>, payload: Bytes) {
        match Message::decode(payload) {
            Ok(Message::Answer(answer)) => {
                if let Some(waiting) = lock(&self.pending).remove(&answer.number) {
                    let _ = waiting.send(answer);
                }
            }
            Ok(Message::Request(request)) => {
                let cluster = Arc::clone(self);
                tokio::spawn(async move { cluster.serve_request(request).await });
            }
            Err(e) => debug!(error = %e, "cluster: inbox message dropped"),
        }
    }

    async fn serve_request(&self, request: Request) {
        let Some(inbox) = self.inbox.get() else {
            return;
        };
        let Some(from) = NodeId::parse(&request.from) else {
            return;
        };
        let mut answer = match ConnectionId::parse(&request.connection) {
            Some(id) => inbox.handle(id, request.op).await,
            None => Answer {
                number: 0,
                status: 404,
                retry_after: false,
                json: false,
                body: Bytes::from_static(b"no open connection has this id\n"),
            },
        };
        answer.number = request.number;
        let mut redis = self.redis.clone();
        let sent: Result<usize, _> =
            bounded(redis.publish(self.inbox_topic(&from), answer.encode().as_ref())).await;
        self.saw_redis(sent.is_ok());
    }
}

/// Removes a waiting caller's entry however the wait ends.
struct Forget<'a>(&'a Cluster, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.0.pending).remove(&self.1);
    }
}
