//! The publish API, on its own listener (`--publish-address`): `POST /publish/` takes GRIP's
//! JSON ([`grip`]), `POST /channels/{name}` a raw body; both need the publish secret when one
//! is set ([`auth`]). A request is checked whole before anything is delivered, then each item
//! goes to every member of its channel through [`Channels::publish`], which never waits for a
//! slow member. At most [`MAX_CONCURRENT_REQUESTS`] request bodies are read at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::cluster::{Cluster, RedisDown, wire};
use crate::config::PublishConfig;
use crate::logging::worth_logging;
use crate::protocol::Payload;
use crate::protocol::channel::{BadName, ChannelName};
use crate::session::channels::{Channels, Delivery};
use crate::session::registry::Outbound;
use auth::{Authorizer, Unauthorized};
use grip::{Action, BadRequest, Publication};

mod auth;
mod grip;

/// Publish request bodies read at once; beyond, 503 with `Retry-After`.
pub(crate) const MAX_CONCURRENT_REQUESTS: usize = 16;

/// What the publish listener serves with.
pub(crate) struct Publisher {
    channels: Arc<Channels>,
    /// In cluster mode publications go through Redis to every node (this one included).
    cluster: Option<Arc<Cluster>>,
    auth: Authorizer,
    config: PublishConfig,
    requests: Semaphore,
    refused: AtomicU64,
}

/// Why a publish request was refused; each maps to one status.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error(transparent)]
    Unauthorized(#[from] Unauthorized),
    #[error(transparent)]
    BadRequest(#[from] BadRequest),
    #[error(transparent)]
    BadName(#[from] BadName),
    #[error(
        "the content type is text/* but the body is not UTF-8; send UTF-8 or application/octet-stream"
    )]
    NotUtf8,
    #[error("the body is larger than {limit} bytes ({flag})")]
    TooLarge { limit: usize, flag: &'static str },
    #[error("the body did not arrive within --handshake-timeout: send it at once")]
    BodyTimeout,
    #[error("the body could not be read: {0}")]
    BadBody(String),
    #[error("{MAX_CONCURRENT_REQUESTS} publish requests are being read already; retry shortly")]
    Busy,
    #[error(transparent)]
    RedisDown(#[from] RedisDown),
}

impl PublishError {
    fn status(&self) -> StatusCode {
        match self {
            PublishError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            PublishError::BadRequest(_)
            | PublishError::BadName(_)
            | PublishError::NotUtf8
            | PublishError::BadBody(_) => StatusCode::BAD_REQUEST,
            PublishError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PublishError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            PublishError::Busy | PublishError::RedisDown(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for PublishError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, format!("{self}\n")).into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u32));
            }
            _ => {}
        }
        response
    }
}

impl Publisher {
    pub(crate) fn new(
        config: PublishConfig,
        channels: Arc<Channels>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Publisher {
            auth: Authorizer::new(&config.secrets),
            channels,
            cluster,
            config,
            requests: Semaphore::new(MAX_CONCURRENT_REQUESTS),
            refused: AtomicU64::new(0),
        }
    }

    /// Authorizes the request and reads its body within the limits.
    async fn admit(
        &self,
        headers: &HeaderMap,
        body: Body,
        (limit, flag): (usize, &'static str),
    ) -> Result<Bytes, PublishError> {
        if let Err(e) = self.auth.check(headers) {
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n) {
                warn!(refused_total = n, "publish request refused: {e}");
            }
            return Err(e.into());
        }
        let _permit = self
            .requests
            .try_acquire()
            .map_err(|_| PublishError::Busy)?;
        let read = Limited::new(body, limit).collect();
        match tokio::time::timeout(self.config.body_timeout, read).await {
            Err(_) => Err(PublishError::BodyTimeout),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<LengthLimitError>() => Err(PublishError::TooLarge { limit, flag }),
            Ok(Err(e)) => Err(PublishError::BadBody(e.to_string())),
        }
    }

    /// Delivers checked publications in order: to this node's members, or in cluster mode
    /// through Redis to every node's.
    async fn deliver(&self, publications: &[Publication]) -> Result<Outcome, PublishError> {
        let Some(cluster) = &self.cluster else {
            return Ok(Outcome::Local(self.deliver_here(publications)));
        };
        let items: Vec<(ChannelName, wire::Publication)> = publications
            .iter()
            .filter_map(|p| {
                let item = match &p.action {
                    Action::Send(payload) => wire::Publication::Send(payload.clone()),
                    Action::Close { code, reason } => wire::Publication::Close {
                        code: *code,
                        reason: reason.clone(),
                    },
                    Action::Nothing => return None,
                };
                Some((p.channel.clone(), item))
            })
            .collect();
        let nodes = cluster.publish(&items).await?;
        Ok(Outcome::Cluster {
            nodes: nodes.into_iter().sum(),
        })
    }

    /// Delivers checked publications to this node's members, in order.
    fn deliver_here(&self, publications: &[Publication]) -> Delivery {
        let mut total = Delivery::default();
        for publication in publications {
            let item = match &publication.action {
                Action::Send(payload) => Outbound::Message(payload.clone()),
                Action::Close { code, reason } => Outbound::Close {
                    code: *code,
                    reason: reason.clone(),
                },
                Action::Nothing => continue,
            };
            let delivery = self.channels.publish(&publication.channel, &item);
            total.recipients += delivery.recipients;
            total.evicted += delivery.evicted;
        }
        debug!(
            items = publications.len(),
            recipients = total.recipients,
            evicted = total.evicted,
            "published"
        );
        total
    }
}

/// `POST /publish/`: GRIP JSON.
async fn publish_grip(
    State(publisher): State<Arc<Publisher>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PublishError> {
    let limit = (publisher.config.max_body, "--max-publish-size");
    let body = publisher.admit(&headers, body, limit).await?;
    let publications = grip::parse(&body, publisher.config.max_message_size)?;
    let outcome = publisher.deliver(&publications).await?;
    Ok(answer(&headers, publications.len(), outcome))
}

/// `POST /channels/{name}`: the body is one message (text for `text/*`, binary otherwise).
async fn publish_raw(
    State(publisher): State<Arc<Publisher>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PublishError> {
    let channel = ChannelName::parse(&name)?;
    let limit = (publisher.config.max_message_size, "--max-message-size");
    let body = publisher.admit(&headers, body, limit).await?;
    let payload = Payload::from_http(headers.get(header::CONTENT_TYPE), body)
        .map_err(|_| PublishError::NotUtf8)?;
    let publication = Publication {
        channel,
        action: Action::Send(payload),
    };
    let outcome = publisher
        .deliver(std::slice::from_ref(&publication))
        .await?;
    Ok(answer(&headers, 1, outcome))
}

/// 200: JSON counts when the request accepts JSON, a line of text otherwise.
fn answer(headers: &HeaderMap, items: usize, outcome: Outcome) -> Response {
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    match (outcome, wants_json) {
        (Outcome::Local(delivery), true) => axum::Json(serde_json::json!({
            "items": items,
            "recipients": delivery.recipients,
            "evicted": delivery.evicted,
        }))
        .into_response(),
        (Outcome::Local(delivery), false) => format!(
            "Published {items} item(s) to {} recipient(s)\n",
            delivery.recipients
        )
        .into_response(),
        (Outcome::Cluster { nodes }, true) => {
            axum::Json(serde_json::json!({ "items": items, "nodes": nodes })).into_response()
        }
        (Outcome::Cluster { nodes }, false) => {
            format!("Published {items} item(s) to {nodes} node(s) with members\n").into_response()
        }
    }
}

/// What a publish request did.
enum Outcome {
    /// Delivered to this node's members.
    Local(Delivery),
    /// Handed to Redis: the publications reached this many subscribed nodes (summed over
    /// the items).
    Cluster { nodes: usize },
}

/// Anything else on the publish listener.
async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "the publish API serves POST /publish/ (GRIP JSON) and POST /channels/{name}\n",
    )
}

/// The publish API's routes; `server` serves them on `--publish-address`.
pub(crate) fn router(publisher: Arc<Publisher>) -> Router {
    Router::new()
        .route("/publish", post(publish_grip))
        .route("/publish/", post(publish_grip))
        .route("/channels/{name}", post(publish_raw))
        .fallback(not_found)
        .with_state(publisher)
}
