//! [`Refusal`]: a refused handshake. Status, one-line message, metric label and log level
//! live in one value, and [`answer`] is the one place that counts, logs (throttled) and
//! answers it, so the handshake's checks only decide.

use std::net::IpAddr;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tracing::{info, warn};

use crate::logging::worth_logging;
use crate::metrics::{Metrics, RefusalReason};
use crate::policy::limits::LimitRefusal;

/// Longest refusal message, in bytes: a client controls parts of it (URLs, header names), and
/// it is logged.
const MAX_REFUSAL_MESSAGE: usize = 300;

/// A refused handshake: status code, a one-line message, and how it is counted and logged.
/// Every refusal goes through [`answer`], the one place that logs (throttled), counts and
/// answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Refusal {
    /// 400, 403, 426, 429, 431, 502, 503 or 504, or the connect hook's own status.
    pub(crate) status: StatusCode,
    /// What was wrong and how to fix it.
    pub(crate) message: String,
    /// The `reason` label of `ws_bridge_connect_refusals`.
    pub(crate) label: RefusalReason,
    /// Whether the operator should hear of it (warn) or only the client (info).
    warn: bool,
    /// Seconds for `Retry-After`, for refusals that pass.
    retry_after: Option<u32>,
    /// A body passed on from the connect hook instead of the message.
    passthrough: Option<Box<(Option<HeaderValue>, Bytes)>>,
}

impl Refusal {
    pub(crate) fn new(
        status: StatusCode,
        label: RefusalReason,
        message: impl Into<String>,
    ) -> Self {
        let mut message = message.into();
        if message.len() > MAX_REFUSAL_MESSAGE {
            let mut end = MAX_REFUSAL_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        Refusal {
            status,
            message,
            label,
            warn: false,
            retry_after: None,
            passthrough: None,
        }
    }

    /// Logged at WARN: the operator may need to act.
    pub(crate) fn warn(mut self) -> Self {
        self.warn = true;
        self
    }

    /// The connect hook's own refusal, passed on: its status, content type and body.
    pub(crate) fn from_hook(
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) -> Self {
        let mut refusal = Refusal::new(
            status,
            RefusalReason::HookRefused,
            "refused by the connect hook",
        );
        refusal.passthrough = Some(Box::new((content_type, body)));
        refusal
    }

    pub(crate) fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = match self.passthrough.map(|b| *b) {
            Some((content_type, body)) => {
                let mut response = (self.status, body).into_response();
                if let Some(ct) = content_type {
                    response.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                response
            }
            None => (self.status, format!("{}\n", self.message)).into_response(),
        };
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UPGRADE_REQUIRED {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

/// Counts a refusal by label, logs it (the first ten of each label, then at powers of two and
/// every thousandth, so a flood cannot flood the logs) and answers it.
pub(crate) fn answer(metrics: &Metrics, client: IpAddr, refusal: Refusal) -> Response {
    let total = metrics.refusal(refusal.label);
    if worth_logging(total) {
        let status = refusal.status.as_u16();
        let (label, reason) = (refusal.label.as_str(), refusal.message.as_str());
        if refusal.warn {
            warn!(client.addr = %client, status, label, reason, refused_total = total, "connection refused");
        } else {
            info!(client.addr = %client, status, label, reason, refused_total = total, "connection refused");
        }
    }
    refusal.into_response()
}

/// The refusal for a handshake over a connection limit.
pub(crate) fn limit_refusal(refusal: LimitRefusal) -> Refusal {
    match refusal {
        LimitRefusal::Full { limit } => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            RefusalReason::MaxConnections,
            format!(
                "this bridge is at its limit of {limit} open connections (--max-connections); retry later"
            ),
        ),
        LimitRefusal::OpenFiles { limit, open_files } => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            RefusalReason::OpenFiles,
            format!(
                "this bridge is at its limit of {limit} open connections, all that its open-files limit ({open_files}) holds; retry later (operator: raise it with ulimit -n or LimitNOFILE=, or lower --max-connections)"
            ),
        ),
        LimitRefusal::PerIp { limit } => Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            RefusalReason::MaxConnectionsPerIp,
            format!(
                "too many open connections from your address (limit {limit}, --max-connections-per-ip); close some first"
            ),
        ),
    }
    .warn()
    .retry_after(1)
}
