//! [`ApiError`]: every way a callback request fails, each with its status code (and
//! `Retry-After` for the 503s) and a one-line message saying what to do.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::close::CloseParamError;
use crate::protocol::channel::BadName;
use crate::session::channels::TooMany;
use crate::session::registry::CALLBACK_BODIES_PER_CONNECTION;

/// Seconds suggested in `Retry-After` when a client's send queue is full.
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

/// A failed callback request. Each variant maps to one status code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
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
    #[error("the request body did not arrive within --handshake-timeout: send it at once")]
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
    #[error(transparent)]
    BadClose(#[from] CloseParamError),
    /// 400: `{callback}/channels/{name}` names no valid channel.
    #[error(transparent)]
    BadChannel(#[from] BadName),
    /// 413: the connection is in `--max-channels-per-connection` channels already.
    #[error("{0}; leave one first")]
    TooManyChannels(#[from] TooMany),
    /// 405: a method `{callback}/channels/{name}` does not serve.
    #[error(
        "method not allowed: {{callback}}/channels/{{name}} takes PUT (join), DELETE (leave) and OPTIONS"
    )]
    ChannelMethod,
    /// 503 (or 404 once the node is gone): the connection is on another node that could not
    /// be reached (cluster mode).
    #[error(transparent)]
    Forward(#[from] crate::cluster::ForwardError),
    /// 405: a method the callback API does not serve.
    #[error(
        "method not allowed: callback URLs take POST (send), DELETE (close), GET (facts) and OPTIONS"
    )]
    Method,
}

impl ApiError {
    /// The status code this error answers with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownConnection => StatusCode::NOT_FOUND,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotUtf8
            | ApiError::BadBody(_)
            | ApiError::BadClose(_)
            | ApiError::BadChannel(_) => StatusCode::BAD_REQUEST,
            ApiError::TooManyChannels(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::QueueFull { .. }
            | ApiError::Busy { .. }
            | ApiError::ConnectionBusy
            | ApiError::Forward(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ForeignOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::Method | ApiError::ChannelMethod => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The header this error's answer carries besides the content type: `Retry-After` on a
    /// 503, `Allow` on a 405.
    pub(crate) fn extra_header(&self) -> Option<(HeaderName, HeaderValue)> {
        match self.status() {
            StatusCode::SERVICE_UNAVAILABLE => {
                Some((header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS)))
            }
            _ if matches!(self, ApiError::ChannelMethod) => Some((
                header::ALLOW,
                HeaderValue::from_static("PUT, DELETE, OPTIONS"),
            )),
            StatusCode::METHOD_NOT_ALLOWED => Some((
                header::ALLOW,
                HeaderValue::from_static("POST, GET, DELETE, OPTIONS"),
            )),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let extra = self.extra_header();
        let mut response = (self.status(), format!("{self}\n")).into_response();
        if let Some((name, value)) = extra {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
