//! The callback API at `{base-url}/{id}`: backends (or anyone holding the URL) POST a body to
//! send it to that client as one message, DELETE to close the socket, GET to read its counters. Owns the mapping from API failures to status codes;
//! it never writes to a client socket itself, only to the connection's bounded queue.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::warn;

use crate::close::MAX_REASON_BYTES;
use crate::limits::worth_logging;
use crate::payload::Payload;
use crate::registry::{ConnectionHandle, ConnectionId, Outbound};
use crate::server::Shared;

/// Longest wait for a body-reading slot of the connection, or for room in
/// `--callback-body-memory`, before answering 503.
pub const CALLBACK_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Callback bodies read at once for one connection. Bodies of ordinary callers arrive whole in
/// a packet or two, so two at a time cost them nothing; a caller that announces bodies and
/// trickles them can then hold at most two reads of the one connection whose URL it holds,
/// never the bridge's capacity for other connections.
pub const CALLBACK_BODIES_PER_CONNECTION: usize = 2;

/// Seconds suggested in `Retry-After` when a client's send queue is full.
pub const RETRY_AFTER_SECS: u64 = 1;

/// A failed callback request. Each variant maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: no open connection has this id (never existed, or already closed).
    #[error("no open connection has this id (it never existed or has closed)")]
    UnknownConnection,
    /// 413: the body is larger than `--max-message-size`.
    #[error("message body is larger than this bridge's --max-message-size ({limit} bytes)")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 400: `text/*` content type with a body that is not UTF-8.
    #[error(
        "content type is text/* but the body is not valid UTF-8; send valid UTF-8 or use application/octet-stream"
    )]
    NotUtf8,
    /// 503: the client's send queue is full; retry after `Retry-After` seconds.
    #[error(
        "the client's send queue is full (at most {capacity} messages or {bytes} bytes wait); retry later"
    )]
    QueueFull {
        /// Queue capacity in messages.
        capacity: usize,
        /// Queue capacity in bytes.
        bytes: usize,
    },
    /// 408: the body did not arrive within the handshake timeout.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// 400: the body could not be read.
    #[error("the request body could not be read: {0}")]
    BadBody(String),
    /// 503: this connection already has [`CALLBACK_BODIES_PER_CONNECTION`] bodies being read.
    #[error(
        "{CALLBACK_BODIES_PER_CONNECTION} callback bodies for this connection are being read already; send one at a time, or retry later"
    )]
    ConnectionBusy,
    /// 503: callback bodies being read fill `--callback-body-memory`.
    #[error(
        "callback bodies being read fill this bridge's --callback-body-memory ({limit} bytes); retry later"
    )]
    Busy {
        /// The limit in bytes.
        limit: usize,
    },
    /// 403: a browser page from an origin outside `--callback-cors-origin` sent this request.
    #[error("origin {0:?} may not use callback URLs here (--callback-cors-origin)")]
    ForeignOrigin(String),
    /// 400: invalid `code` or `reason` on `DELETE`.
    #[error("{0}")]
    BadClose(String),
}

impl ApiError {
    /// The status code this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownConnection => StatusCode::NOT_FOUND,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotUtf8 | ApiError::BadBody(_) | ApiError::BadClose(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::QueueFull { .. } | ApiError::Busy { .. } | ApiError::ConnectionBusy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::ForeignOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), format!("{self}\n")).into_response();
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

/// `POST {base-url}/{id}`: queue the body as one message to the client. 202 once queued.
pub(crate) async fn post_message(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    queue_message(&shared, &id, &headers, body).await
}

/// The same as `post_message`, called straight from the connection's service without the
/// router: it also does the CORS and metrics work the router's layers would do.
pub(crate) async fn fast_post(
    shared: Arc<Shared>,
    id: &str,
    request: axum::http::Request<hyper::body::Incoming>,
) -> Response {
    let (parts, body) = request.into_parts();
    let result = match check_origin(&shared, &parts.headers) {
        Ok(()) => queue_message(&shared, id, &parts.headers, Body::new(body)).await,
        Err(e) => Err(e),
    };
    let mut response = match result {
        Ok(status) => status.into_response(),
        Err(e) => e.into_response(),
    };
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let allowed = match &shared.config.callback_cors_origins {
            None => Some(HeaderValue::from_static("*")),
            Some(list) => list.iter().find(|o| *o == origin).cloned(),
        };
        if let Some(allowed) = allowed {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
            if shared.config.callback_cors_origins.is_some() {
                headers.append(header::VARY, HeaderValue::from_static("origin"));
            }
        }
    }
    shared.metrics.callback_response(response.status().as_u16());
    response
}

/// Queues a callback body as one message to connection `id`.
async fn queue_message(
    shared: &Shared,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let Some((id, handle)) =
        ConnectionId::parse(id).and_then(|id| shared.registry.lookup(&id).map(|h| (id, h)))
    else {
        discard(
            body,
            shared.config.max_message_size,
            shared.config.handshake_timeout,
        )
        .await;
        return Err(ApiError::UnknownConnection);
    };
    // A full queue is refused without keeping the body: it is read and thrown away as it
    // arrives (bounded by the size limit and the handshake timeout), so the client sees the
    // 503 rather than a connection reset in the middle of its upload.
    let queued_now = handle.stats.queued_bytes.load(Ordering::Acquire);
    if handle.sender.capacity() == 0
        || (queued_now > 0 && queued_now >= shared.config.send_queue_bytes)
    {
        discard(
            body,
            shared.config.max_message_size,
            shared.config.handshake_timeout,
        )
        .await;
        return Err(queue_full(shared, &handle, id));
    }
    let limit = shared.config.max_message_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    // At most two bodies per connection are read at once, so one callback URL cannot tie up
    // the bridge; bridge-wide, bodies hold a share of --callback-body-memory only for the
    // bytes that have arrived, so callers that announce much and send little hold little.
    let _reading = tokio::time::timeout(CALLBACK_BODY_WAIT, handle.body_reads.acquire())
        .await
        .map_err(|_| ApiError::ConnectionBusy)?
        .map_err(|_| ApiError::UnknownConnection)?;
    let bytes = read_body(shared, body, limit).await?;
    let payload = Payload::from_http(headers.get(header::CONTENT_TYPE), bytes)
        .map_err(|_| ApiError::NotUtf8)?;
    // Reserve the bytes first; a message larger than the byte budget still fits an empty queue.
    let len = payload.len();
    let queued = &handle.stats.queued_bytes;
    let before = queued.fetch_add(len, Ordering::AcqRel);
    let full = before > 0 && before + len > shared.config.send_queue_bytes;
    let result = if full {
        Err(TrySendError::Full(Outbound::Message(payload)))
    } else {
        handle.sender.try_send(Outbound::Message(payload))
    };
    match result {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        Err(e) => {
            queued.fetch_sub(len, Ordering::AcqRel);
            match e {
                TrySendError::Full(_) => Err(queue_full(shared, &handle, id)),
                TrySendError::Closed(_) => Err(ApiError::UnknownConnection),
            }
        }
    }
}

/// Reads a callback body of at most `limit` bytes within the handshake timeout, taking room
/// in `--callback-body-memory` for each chunk as it arrives (waiting at most
/// [`CALLBACK_BODY_WAIT`] for it). A body that arrives in one chunk is not copied.
async fn read_body(shared: &Shared, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let deadline = tokio::time::Instant::now() + shared.config.handshake_timeout;
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received = 0usize;
    let mut held: Option<tokio::sync::SemaphorePermit<'_>> = None;
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| ApiError::BodyTimeout)?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| ApiError::BadBody(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if data.is_empty() {
            continue;
        }
        received += data.len();
        if received > limit {
            return Err(ApiError::TooLarge { limit });
        }
        let room = u32::try_from(data.len()).map_err(|_| ApiError::TooLarge { limit })?;
        let permit = tokio::time::timeout(
            CALLBACK_BODY_WAIT,
            shared.callback_body_memory.acquire_many(room),
        )
        .await;
        let Ok(Ok(permit)) = permit else {
            return Err(ApiError::Busy {
                limit: shared.config.callback_body_memory,
            });
        };
        match held.as_mut() {
            Some(all) => all.merge(permit),
            None => held = Some(permit),
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut whole = bytes::BytesMut::with_capacity(received);
            for chunk in &chunks {
                whole.extend_from_slice(chunk);
            }
            whole.freeze()
        }
    })
}

/// With `--callback-cors-origin` set, refuses requests from browser pages of other origins
/// (403): CORS alone only hides the answer, while a simple POST would still be delivered.
fn check_origin(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let (Some(allowed), Some(origin)) = (
        &shared.config.callback_cors_origins,
        headers.get(header::ORIGIN),
    ) else {
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

/// Counts (metrics, and a log line now and then) a callback refused because the client's send
/// queue is full, and builds its 503.
fn queue_full(shared: &Shared, handle: &ConnectionHandle, id: ConnectionId) -> ApiError {
    // `inc` returns the count before this one.
    let total = shared.metrics.queue_full.inc() + 1;
    if worth_logging(total) {
        warn!(conn.id = %id, queue_full_total = total, "callback refused: the client's send queue is full");
    }
    ApiError::QueueFull {
        capacity: handle.sender.max_capacity(),
        bytes: shared.config.send_queue_bytes,
    }
}

/// Reads and drops a request body, at most `limit` bytes and `within` time.
async fn discard(body: Body, limit: usize, within: std::time::Duration) {
    let drain = async {
        let mut body = body;
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(within, drain).await;
}

/// How long `DELETE` waits for room in a full queue before answering 503.
pub const CLOSE_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `DELETE {base-url}/{id}?code=&reason=`: close the socket after the messages already
/// accepted. 204 once the close is queued.
pub(crate) async fn delete_connection(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    let id = ConnectionId::parse(&id).ok_or(ApiError::UnknownConnection)?;
    let (code, reason) = close_params(query.as_deref()).map_err(ApiError::BadClose)?;
    let handle = shared
        .registry
        .lookup(&id)
        .ok_or(ApiError::UnknownConnection)?;
    let close = Outbound::Close {
        code: CloseCode::from(code),
        reason,
    };
    match handle.sender.send_timeout(close, CLOSE_QUEUE_WAIT).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(SendTimeoutError::Timeout(_)) => Err(ApiError::QueueFull {
            capacity: handle.sender.max_capacity(),
            bytes: shared.config.send_queue_bytes,
        }),
        Err(SendTimeoutError::Closed(_)) => Err(ApiError::UnknownConnection),
    }
}

/// Parses `code` (1000 or 3000-4999; default 1000) and `reason` (at most 123 bytes of UTF-8)
/// from a raw query string.
pub fn close_params(query: Option<&str>) -> Result<(u16, String), String> {
    let mut code = 1000u16;
    let mut reason = String::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)
            .ok_or_else(|| format!("query parameter {key} is not valid percent-encoded UTF-8"))?;
        match key {
            "code" => {
                code = value
                    .parse::<u16>()
                    .ok()
                    .filter(|c| *c == 1000 || (3000..=4999).contains(c))
                    .ok_or_else(|| {
                        format!("close code {value:?} is not allowed: use 1000 or 3000-4999")
                    })?;
            }
            "reason" => {
                if value.len() > MAX_REASON_BYTES {
                    return Err(format!(
                        "close reason is {} bytes long; at most {MAX_REASON_BYTES} bytes of UTF-8 fit in a Close frame",
                        value.len()
                    ));
                }
                reason = value;
            }
            _ => {}
        }
    }
    Ok((code, reason))
}

/// Decodes `%XX` escapes and `+` (as space); `None` if the result is not UTF-8 or an escape is
/// malformed.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The body of `GET {base-url}/{id}`.
#[derive(Debug, serde::Serialize)]
pub struct ConnectionInfo {
    /// The connection id.
    pub id: String,
    /// When the upgrade completed (RFC 3339, UTC).
    pub connected_at: String,
    /// The selected subprotocol, or null.
    pub subprotocol: Option<String>,
    /// Messages received from the client.
    pub messages_in: u64,
    /// Payload bytes received from the client.
    pub bytes_in: u64,
    /// Messages written to the client.
    pub messages_out: u64,
    /// Payload bytes written to the client.
    pub bytes_out: u64,
    /// Last frame from or message to the client (RFC 3339, UTC).
    pub last_activity: String,
}

/// `GET {base-url}/{id}`: facts about a live connection as JSON.
pub(crate) async fn get_connection(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<ConnectionInfo>, ApiError> {
    let id = ConnectionId::parse(&id).ok_or(ApiError::UnknownConnection)?;
    let handle = shared
        .registry
        .lookup(&id)
        .ok_or(ApiError::UnknownConnection)?;
    let stats = &handle.stats;
    Ok(Json(ConnectionInfo {
        id: id.full(),
        connected_at: humantime::format_rfc3339_millis(stats.connected_at).to_string(),
        subprotocol: stats.subprotocol.clone(),
        messages_in: stats.messages_in.load(Ordering::Relaxed),
        bytes_in: stats.bytes_in.load(Ordering::Relaxed),
        messages_out: stats.messages_out.load(Ordering::Relaxed),
        bytes_out: stats.bytes_out.load(Ordering::Relaxed),
        last_activity: humantime::format_rfc3339_millis(stats.last_activity()).to_string(),
    }))
}

/// Middleware in front of the routed callback API: refuses foreign origins, counts responses
/// by status.
pub(crate) async fn count_responses(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = match check_origin(&shared, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    };
    shared.metrics.callback_response(response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_params_are_checked() {
        assert_eq!(close_params(None), Ok((1000, String::new())));
        assert_eq!(
            close_params(Some("code=4000&reason=bye%20now")),
            Ok((4000, "bye now".to_owned()))
        );
        assert_eq!(
            close_params(Some("reason=%C3%A9t%C3%A9")),
            Ok((1000, "été".to_owned()))
        );
        for bad in [
            "code=1001",
            "code=2999",
            "code=5000",
            "code=x",
            "reason=%FF",
            "reason=%4",
        ] {
            assert!(close_params(Some(bad)).is_err(), "{bad}");
        }
        let long = "a".repeat(124);
        assert!(close_params(Some(&format!("reason={long}"))).is_err());
        assert!(close_params(Some(&format!("reason={}", &long[..123]))).is_ok());
    }
}
