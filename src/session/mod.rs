//! One WebSocket connection's life: the handshake that admits it ([`handshake`]: `GET
//! /connect`, reading the request in [`request`], refusing through [`refusal`]), the task that
//! serves it ([`connection`]), how it ends ([`close::Ending`]), and the [`registry`] through
//! which the callback API reaches it. [`Sessions`] is all this layer needs from the bridge.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::BackendClient;
use crate::config::{BaseUrl, SessionConfig};
use crate::metrics::Metrics;
use crate::policy::limits::ConnectionLimits;
use channels::Channels;
use registry::Registry;

pub(crate) mod channels;
pub(crate) mod close;
pub(crate) mod connection;
pub(crate) mod events;
pub(crate) mod handshake;
mod hooked;
pub(crate) mod mailbox;
mod obligations;
pub(crate) mod refusal;
pub(crate) mod registry;
pub(crate) mod request;
pub(crate) mod ws;

/// What the handshake and the connection tasks share.
pub(crate) struct Sessions {
    pub(crate) config: SessionConfig,
    /// Base of callback URLs (`{base-url}/{id}`).
    pub(crate) base_url: BaseUrl,
    pub(crate) registry: Arc<dyn Registry>,
    /// Channels and their members.
    pub(crate) channels: Arc<Channels>,
    pub(crate) backend: BackendClient,
    /// Open connections, overall and per client address.
    pub(crate) limits: Arc<ConnectionLimits>,
    pub(crate) metrics: Arc<Metrics>,
    /// Cancelled when shutdown starts; every connection task watches it.
    pub(crate) shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for their disconnect POSTs.
    pub(crate) tracker: TaskTracker,
    /// Backend name lookups that may run at once for `--deny-private-networks`.
    lookups: Semaphore,
}

/// The parts [`Sessions`] is made of, named.
pub(crate) struct SessionParts {
    pub(crate) config: SessionConfig,
    pub(crate) base_url: BaseUrl,
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) channels: Arc<Channels>,
    pub(crate) backend: BackendClient,
    pub(crate) limits: Arc<ConnectionLimits>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

impl Sessions {
    /// The callback token of connection `id`: `{uuid}`, or `{node}.{uuid}` in a cluster.
    pub(crate) fn token(&self, id: registry::ConnectionId) -> String {
        match &self.config.node {
            Some(node) => format!("{node}.{}", id.full()),
            None => id.full(),
        }
    }

    pub(crate) fn new(parts: SessionParts) -> Self {
        Sessions {
            config: parts.config,
            base_url: parts.base_url,
            registry: parts.registry,
            channels: parts.channels,
            backend: parts.backend,
            limits: parts.limits,
            metrics: parts.metrics,
            shutdown: parts.shutdown,
            tracker: parts.tracker,
            lookups: Semaphore::new(handshake::MAX_CONCURRENT_LOOKUPS),
        }
    }
}
