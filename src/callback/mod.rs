//! The callback API at `{base-url}/{id}`: backends (or anyone holding the URL) `POST` a body
//! to send it to that client as one message, `DELETE` to close the socket, `GET` to read its
//! counters and channels, `OPTIONS` for a browser's CORS preflight; `PUT` and `DELETE` on
//! `{base-url}/{id}/channels/{name}` join and leave a channel. One service ([`Callbacks::serve`]) takes
//! every callback request: one origin check, one CORS function, one response counter. It never
//! writes to a client socket itself, only to the connection's bounded queue, found through the
//! registry. Failures are [`ApiError`]s, each with its status code.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tracing::warn;

use crate::cluster::Cluster;
use crate::config::{CallbackConfig, NodeId};
use crate::logging::worth_logging;
use crate::metrics::Metrics;
use crate::protocol::Payload;
use crate::protocol::channel::ChannelName;
use crate::session::channels::Channels;
use crate::session::mailbox::Refused;
use crate::session::registry::{ConnectionHandle, ConnectionId, Outbound, Registry, parse_token};
use body::{BodyLimits, CALLBACK_BODY_WAIT, discard, read_body};
use close::close_params;
pub(crate) use error::ApiError;
pub(crate) use remote::CallbackInbox;

mod body;
pub(crate) mod close;
mod error;
mod remote;
pub(crate) mod whole;

/// How long `DELETE` waits for room in a full queue before answering 503.
pub(crate) const CLOSE_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "86400";

/// What the callback API needs from the bridge.
pub(crate) struct Callbacks {
    config: CallbackConfig,
    registry: Arc<dyn Registry>,
    channels: Arc<Channels>,
    metrics: Arc<Metrics>,
    /// Set in cluster mode: callbacks for other nodes' connections are forwarded.
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// Bytes of callback bodies held while being read (`--callback-body-memory`), one permit
    /// per byte.
    body_memory: Semaphore,
}

impl Callbacks {
    pub(crate) fn new(
        config: CallbackConfig,
        registry: Arc<dyn Registry>,
        channels: Arc<Channels>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Callbacks {
            body_memory: Semaphore::new(config.body_memory),
            config,
            registry,
            channels,
            metrics,
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// Forwards callbacks for other nodes' connections through `cluster`; once.
    pub(crate) fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Serves one request to the callback URL with this token (or to its `channels/{name}`
    /// when `channel` is given): refuses foreign origins, serves the connection here or
    /// forwards to the node that holds it, adds the CORS headers, counts the answer.
    pub(crate) async fn serve(
        &self,
        token: &str,
        channel: Option<&str>,
        request: Request<Body>,
    ) -> Response {
        let (parts, body) = request.into_parts();
        let result = match self.check_origin(&parts.headers) {
            Err(e) => Err(e),
            Ok(()) if parts.method == Method::OPTIONS => Ok(preflight()),
            Ok(()) => match self.route(token) {
                Route::Local(id) => self.serve_local(id, channel, &parts, body).await,
                Route::Remote(cluster, node, id) => {
                    self.serve_remote(&cluster, &node, id, channel, &parts, body)
                        .await
                }
                Route::Unknown => {
                    if parts.method == Method::POST {
                        let config = &self.config;
                        discard(body, config.max_message_size, config.body_timeout).await;
                    }
                    Err(ApiError::UnknownConnection)
                }
            },
        };
        let mut response = result.unwrap_or_else(IntoResponse::into_response);
        self.cors(&parts.headers, response.headers_mut());
        self.metrics.callback_response(response.status().as_u16());
        response
    }

    /// Where the connection named by `token` lives.
    fn route(&self, token: &str) -> Route {
        let Some((node, id)) = parse_token(token) else {
            return Route::Unknown;
        };
        match (node, self.cluster.get()) {
            (None, _) => Route::Local(id),
            (Some(node), Some(cluster)) if node == *cluster.node() => Route::Local(id),
            (Some(node), Some(cluster)) => Route::Remote(Arc::clone(cluster), node, id),
            (Some(_), None) => Route::Unknown,
        }
    }

    /// Serves a request for a connection of this node.
    async fn serve_local(
        &self,
        id: ConnectionId,
        channel: Option<&str>,
        parts: &Parts,
        body: Body,
    ) -> Result<Response, ApiError> {
        if let Some(channel) = channel {
            let join = match parts.method {
                Method::PUT => true,
                Method::DELETE => false,
                _ => return Err(ApiError::ChannelMethod),
            };
            let name = ChannelName::parse(channel)?;
            return self
                .membership(id, name, join)
                .await
                .map(IntoResponse::into_response);
        }
        match parts.method {
            Method::POST => self
                .post(id, &parts.headers, body)
                .await
                .map(IntoResponse::into_response),
            Method::DELETE => {
                let (code, reason) = close_params(parts.uri.query())?;
                self.close(id, code, reason, CLOSE_QUEUE_WAIT)
                    .await
                    .map(IntoResponse::into_response)
            }
            Method::GET | Method::HEAD => self.get(id).map(|info| Json(info).into_response()),
            _ => Err(ApiError::Method),
        }
    }

    /// `POST`: queues the body as one message to the client. 202 once queued.
    async fn post(
        &self,
        id: ConnectionId,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<StatusCode, ApiError> {
        let config = &self.config;
        let Some(handle) = self.registry.lookup(&id) else {
            discard(body, config.max_message_size, config.body_timeout).await;
            return Err(ApiError::UnknownConnection);
        };
        // A full queue is refused without keeping the body: it is read and thrown away as it
        // arrives (bounded by the size limit and the body timeout), so the caller sees the 503
        // rather than a connection reset in the middle of its upload.
        if !handle.mailbox.has_room() {
            discard(body, config.max_message_size, config.body_timeout).await;
            return Err(self.queue_full(&handle, id));
        }
        // At most two bodies per connection are read at once, so one callback URL cannot tie
        // up the bridge.
        let _reading = tokio::time::timeout(CALLBACK_BODY_WAIT, handle.body_reads.acquire())
            .await
            .map_err(|_| ApiError::ConnectionBusy)?
            .map_err(|_| ApiError::UnknownConnection)?;
        let payload = self.read_payload(headers, body).await?;
        self.enqueue(&handle, id, payload)
    }

    /// Reads a callback body as one message: at most `--max-message-size` bytes; bridge-wide,
    /// bodies hold a share of `--callback-body-memory` only for the bytes that have arrived,
    /// so callers that announce much and send little hold little.
    async fn read_payload(&self, headers: &HeaderMap, body: Body) -> Result<Payload, ApiError> {
        let config = &self.config;
        let limit = config.max_message_size;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::TooLarge { limit });
        }
        let limits = BodyLimits {
            size: limit,
            within: config.body_timeout,
            memory: &self.body_memory,
            memory_limit: config.body_memory,
        };
        let bytes = read_body(body, limits).await?;
        Payload::from_http(headers.get(header::CONTENT_TYPE), bytes).map_err(|_| ApiError::NotUtf8)
    }

    /// Puts a message in the connection's queue, within its bounds.
    fn enqueue(
        &self,
        handle: &ConnectionHandle,
        id: ConnectionId,
        payload: Payload,
    ) -> Result<StatusCode, ApiError> {
        match handle.mailbox.try_send(Outbound::Message(payload)) {
            Ok(()) => Ok(StatusCode::ACCEPTED),
            Err(Refused::Full(_)) => Err(self.queue_full(handle, id)),
            Err(Refused::Closed) => Err(ApiError::UnknownConnection),
        }
    }

    /// `DELETE ?code=&reason=`: closes the socket after the messages already accepted,
    /// waiting at most `wait` for room in a full queue. 204 once the close is queued.
    async fn close(
        &self,
        id: ConnectionId,
        code: u16,
        reason: String,
        wait: Duration,
    ) -> Result<StatusCode, ApiError> {
        let handle = self
            .registry
            .lookup(&id)
            .ok_or(ApiError::UnknownConnection)?;
        let close = Outbound::Close { code, reason };
        match handle.mailbox.send_within(close, wait).await {
            Ok(()) => Ok(StatusCode::NO_CONTENT),
            Err(Refused::Full(_)) => Err(ApiError::QueueFull {
                capacity: handle.mailbox.capacity(),
                bytes: handle.mailbox.byte_capacity(),
            }),
            Err(Refused::Closed) => Err(ApiError::UnknownConnection),
        }
    }

    /// `PUT` (join) or `DELETE` (leave) `{callback}/channels/{name}`: 204 once publications
    /// from every node reach the connection; leaving a channel one is not in is a no-op.
    async fn membership(
        &self,
        id: ConnectionId,
        name: ChannelName,
        join: bool,
    ) -> Result<StatusCode, ApiError> {
        let handle = self
            .registry
            .lookup(&id)
            .ok_or(ApiError::UnknownConnection)?;
        if join {
            self.channels.join(id, &handle, &name)?;
            self.channels.settle(std::slice::from_ref(&name)).await;
        } else {
            self.channels.leave(id, &handle, &name);
        }
        Ok(StatusCode::NO_CONTENT)
    }

    /// `GET`: facts about a live connection.
    fn get(&self, id: ConnectionId) -> Result<ConnectionInfo, ApiError> {
        let handle = self
            .registry
            .lookup(&id)
            .ok_or(ApiError::UnknownConnection)?;
        let stats = &handle.stats;
        Ok(ConnectionInfo {
            id: id.full(),
            connected_at: humantime::format_rfc3339_millis(stats.connected_at).to_string(),
            subprotocol: stats.subprotocol.clone(),
            messages_in: stats.messages_in.load(Ordering::Relaxed),
            bytes_in: stats.bytes_in.load(Ordering::Relaxed),
            messages_out: stats.messages_out.load(Ordering::Relaxed),
            bytes_out: stats.bytes_out.load(Ordering::Relaxed),
            last_activity: humantime::format_rfc3339_millis(stats.last_activity()).to_string(),
            channels: self.channels.of(&handle),
        })
    }

    /// With `--callback-cors-origin` set, refuses requests from browser pages of other
    /// origins (403): CORS alone only hides the answer, while a simple POST would still be
    /// delivered.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let (Some(allowed), Some(origin)) =
            (&self.config.cors_origins, headers.get(header::ORIGIN))
        else {
            return Ok(());
        };
        if allowed.iter().any(|o| o == origin) {
            return Ok(());
        }
        Err(ApiError::ForeignOrigin(
            String::from_utf8_lossy(origin.as_bytes())
                .chars()
                .take(100)
                .collect(),
        ))
    }

    /// The CORS headers of an answer to a request from `Origin`: any origin with the default
    /// `*`, otherwise the request's own origin when it is listed.
    fn cors(&self, request: &HeaderMap, response: &mut HeaderMap) {
        let Some(origin) = request.get(header::ORIGIN) else {
            return;
        };
        let allowed = match &self.config.cors_origins {
            None => Some(HeaderValue::from_static("*")),
            Some(list) => list.iter().find(|o| *o == origin).cloned(),
        };
        if let Some(allowed) = allowed {
            response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        }
        if self.config.cors_origins.is_some() {
            response.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }

    /// Counts (metrics, and a log line now and then) a callback refused because the client's
    /// send queue is full, and builds its 503.
    fn queue_full(&self, handle: &ConnectionHandle, id: ConnectionId) -> ApiError {
        // `inc` returns the count before this one.
        let total = self.metrics.queue_full.inc() + 1;
        if worth_logging(total) {
            warn!(conn.id = %id, queue_full_total = total, "callback refused: the client's send queue is full");
        }
        ApiError::QueueFull {
            capacity: handle.mailbox.capacity(),
            bytes: handle.mailbox.byte_capacity(),
        }
    }
}

/// Where a callback's connection lives.
enum Route {
    /// On this node.
    Local(ConnectionId),
    /// On another node of the cluster.
    Remote(Arc<Cluster>, NodeId, ConnectionId),
    /// Nowhere: the token is not one.
    Unknown,
}

/// The answer to a CORS preflight (`OPTIONS`); `Access-Control-Allow-Origin` is added by
/// [`Callbacks::cors`] like on every answer.
fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, PUT, DELETE"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    response
}

/// The body of `GET {base-url}/{id}`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ConnectionInfo {
    /// The connection id.
    id: String,
    /// When the upgrade completed (RFC 3339, UTC).
    connected_at: String,
    /// The selected subprotocol, or null.
    subprotocol: Option<String>,
    /// Messages received from the client.
    messages_in: u64,
    /// Payload bytes received from the client.
    bytes_in: u64,
    /// Messages written to the client.
    messages_out: u64,
    /// Payload bytes written to the client.
    bytes_out: u64,
    /// Last frame from or message to the client (RFC 3339, UTC).
    last_activity: String,
    /// The channels the connection is in, sorted.
    channels: Vec<String>,
}
