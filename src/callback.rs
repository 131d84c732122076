//! The callback API at `{base-url}/{id}`: backends (or anyone holding the URL) POST a body to
//! send it to that client as one message. Owns the mapping from API failures to status codes;
//! it never writes to a client socket itself, only to the connection's bounded queue.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use tokio::sync::mpsc::error::TrySendError;
use tracing::debug;

use crate::payload::Payload;
use crate::registry::{ConnectionId, Outbound};
use crate::server::Shared;

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
    #[error("the client's send queue is full ({capacity} messages waiting); retry later")]
    QueueFull {
        /// Queue capacity in messages.
        capacity: usize,
    },
    /// 408: the body did not arrive within the handshake timeout.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// 400: the body could not be read.
    #[error("the request body could not be read: {0}")]
    BadBody(String),
}

impl ApiError {
    /// The status code this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownConnection => StatusCode::NOT_FOUND,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotUtf8 | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::QueueFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), format!("{self}\n")).into_response();
        if matches!(self, ApiError::QueueFull { .. }) {
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
    let id = ConnectionId::parse(&id).ok_or(ApiError::UnknownConnection)?;
    let sender = shared
        .registry
        .lookup(&id)
        .ok_or(ApiError::UnknownConnection)?;
    let limit = shared.config.max_message_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    let collected = tokio::time::timeout(
        shared.config.handshake_timeout,
        Limited::new(body, limit).collect(),
    )
    .await
    .map_err(|_| ApiError::BodyTimeout)?;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::TooLarge { limit });
        }
        Err(e) => return Err(ApiError::BadBody(e.to_string())),
    };
    let payload = Payload::from_http(headers.get(header::CONTENT_TYPE), bytes)
        .map_err(|_| ApiError::NotUtf8)?;
    match sender.try_send(Outbound::Message(payload)) {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        Err(TrySendError::Full(_)) => {
            debug!(conn.id = %id, "callback refused: send queue full");
            Err(ApiError::QueueFull {
                capacity: sender.max_capacity(),
            })
        }
        Err(TrySendError::Closed(_)) => Err(ApiError::UnknownConnection),
    }
}
