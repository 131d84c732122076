//! [`BackendError`]: how a backend request failed, whether a retry may help, and its metric
//! label. Errors never carry the request's URL (its query may hold a secret).

use std::error::Error as _;

use reqwest::StatusCode;

use crate::metrics::FailureReason;

/// A backend request that failed. Every variant ends the connection with 1011.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    /// The backend answered with a status other than 2xx (redirects included: they are never
    /// followed).
    #[error("backend answered {0}")]
    Status(StatusCode),
    /// No answer within `--backend-timeout` (waiting for a free backend connection included).
    #[error("backend timed out")]
    Timeout,
    /// The backend could not be reached (DNS, connection refused, TLS).
    #[error("backend unreachable")]
    Unreachable(#[source] Cause),
    /// The connection was lost before an answer arrived (reset, closed mid-exchange).
    #[error("backend connection lost")]
    ConnectionLost(#[source] Cause),
    /// Any other failure of the exchange (a malformed answer, say).
    #[error("backend request failed")]
    Transport(#[source] Cause),
    /// The reply body is larger than `--max-message-size`.
    #[error("backend reply too large")]
    ReplyTooLarge,
    /// A `text/*` reply that is not UTF-8.
    #[error("backend reply is not valid UTF-8")]
    ReplyNotUtf8,
    /// A WebSocket-over-HTTP answer whose body is not well-formed events.
    #[error("backend answer is not valid websocket-events: {0}")]
    BadEvents(String),
}

/// What lies under a transport failure, for the logs.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync>;

impl BackendError {
    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        // reqwest's message names the whole URL, query included, which may carry a secret:
        // logs name the backend through `logging::redacted` instead.
        let e = e.without_url();
        if e.is_timeout() {
            BackendError::Timeout
        } else if e.is_connect() {
            BackendError::Unreachable(Box::new(e))
        } else if connection_lost(&e) {
            BackendError::ConnectionLost(Box::new(e))
        } else {
            BackendError::Transport(Box::new(e))
        }
    }

    pub(crate) fn from_h1(e: super::h1::H1Error) -> Self {
        use super::h1::H1Error;
        match e {
            H1Error::Connect(_) => BackendError::Unreachable(Box::new(e)),
            H1Error::Lost(_) => BackendError::ConnectionLost(Box::new(e)),
            H1Error::Malformed(_) => BackendError::Transport(Box::new(e)),
            H1Error::TooLarge => BackendError::ReplyTooLarge,
        }
    }

    /// Whether a retry may help: the backend was unreachable or the connection dropped before
    /// an answer. Timeouts are not retried (the backend may still be working on it).
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            BackendError::Unreachable(_) | BackendError::ConnectionLost(_)
        ) || matches!(self, BackendError::Status(s) if super::retry::is_transient_status(*s))
    }

    /// The metric label of this failure.
    pub(crate) fn reason(&self) -> FailureReason {
        match self {
            BackendError::Status(_) => FailureReason::Status,
            BackendError::Timeout => FailureReason::Timeout,
            BackendError::Unreachable(_) => FailureReason::Unreachable,
            BackendError::ConnectionLost(_) => FailureReason::ConnectionLost,
            BackendError::Transport(_) => FailureReason::Transport,
            BackendError::ReplyTooLarge => FailureReason::ReplyTooLarge,
            BackendError::ReplyNotUtf8 => FailureReason::ReplyNotUtf8,
            BackendError::BadEvents(_) => FailureReason::Transport,
        }
    }

    /// The error with its source chain, for logs.
    pub(crate) fn detail(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }
}

/// Whether a request error means the connection closed or reset before an answer.
fn connection_lost(e: &reqwest::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        source = s.source();
    }
    false
}
