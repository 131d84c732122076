//! The HTTP client side: frame and disconnect POSTs to backends.
//!
//! One pooled keep-alive client for the whole process; redirects are never followed (a 3xx is a
//! failed request like any other non-2xx); every request is bounded by `--backend-timeout` and
//! every reply body by `--max-message-size`. Owns nothing about sockets to clients.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use url::Url;

use crate::close::{Ending, header_safe_reason};
use crate::payload::{BINARY_CONTENT_TYPE, Payload, TEXT_CONTENT_TYPE};

/// `x-ws-proxy-send`: the callback URL of the connection.
pub const HEADER_SEND: &str = "x-ws-proxy-send";
/// `x-ws-proxy-seq`: the message's position in the connection, from 0.
pub const HEADER_SEQ: &str = "x-ws-proxy-seq";
/// `x-ws-proxy-close-code`: close code of the ending (disconnect POSTs).
pub const HEADER_CLOSE_CODE: &str = "x-ws-proxy-close-code";
/// `x-ws-proxy-close-reason`: close reason, percent-encoded UTF-8 (disconnect POSTs).
pub const HEADER_CLOSE_REASON: &str = "x-ws-proxy-close-reason";
/// `x-ws-proxy-close-initiator`: client, backend or bridge (disconnect POSTs).
pub const HEADER_CLOSE_INITIATOR: &str = "x-ws-proxy-close-initiator";
/// `x-ws-proxy-close-cause`: the cause keyword (disconnect POSTs).
pub const HEADER_CLOSE_CAUSE: &str = "x-ws-proxy-close-cause";

/// Longest body of a connect hook's refusal that is passed on to the client.
pub const MAX_REFUSAL_BODY: usize = 4096;

/// `x-ws-proxy-request-uri`: the client's original path and query (connect hook).
pub const HEADER_REQUEST_URI: &str = "x-ws-proxy-request-uri";

/// What a connect hook decided.
#[derive(Debug)]
pub enum ConnectAnswer {
    /// 2xx: complete the upgrade.
    Accept {
        /// The hook's `Sec-WebSocket-Protocol`, if any.
        subprotocol: Option<String>,
        /// A non-empty answer body: the first message to the client.
        first_message: Option<Payload>,
    },
    /// Non-2xx: refuse the handshake with this status and (at most [`MAX_REFUSAL_BODY`] bytes
    /// of) this body.
    Refuse {
        /// The hook's status.
        status: StatusCode,
        /// The hook's content type.
        content_type: Option<HeaderValue>,
        /// The hook's body, cut to [`MAX_REFUSAL_BODY`] bytes.
        body: Bytes,
    },
}

/// A backend request that failed. Every variant ends the connection with 1011.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend answered with a status other than 2xx (redirects included: they are never
    /// followed).
    #[error("backend answered {0}")]
    Status(StatusCode),
    /// No answer within `--backend-timeout`.
    #[error("backend timed out")]
    Timeout,
    /// The backend could not be reached (DNS, connection refused, TLS).
    #[error("backend unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// The connection broke during the exchange.
    #[error("backend request failed")]
    Transport(#[source] reqwest::Error),
    /// The reply body is larger than `--max-message-size`.
    #[error("backend reply too large")]
    ReplyTooLarge,
    /// A `text/*` reply that is not UTF-8.
    #[error("backend reply is not valid UTF-8")]
    ReplyNotUtf8,
}

impl BackendError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            BackendError::Timeout
        } else if e.is_connect() {
            BackendError::Unreachable(e)
        } else {
            BackendError::Transport(e)
        }
    }

    /// The error with its source chain, for logs.
    pub fn detail(&self) -> String {
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

/// The process-wide client for backend requests.
#[derive(Debug, Clone)]
pub struct BackendClient {
    http: reqwest::Client,
    timeout: Duration,
    max_reply_size: usize,
}

impl BackendClient {
    /// Builds the pooled client.
    pub fn new(timeout: Duration, max_reply_size: usize) -> Result<Self, reqwest::Error> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("websocket-bridge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(BackendClient {
            http,
            timeout,
            max_reply_size,
        })
    }

    /// POSTs one client message. A 2xx answer with a non-empty body is a reply to deliver to
    /// the client.
    pub async fn post_frame(
        &self,
        url: &Url,
        callback: &HeaderValue,
        seq: u64,
        payload: &Payload,
    ) -> Result<Option<Payload>, BackendError> {
        let content_type = match payload {
            Payload::Text(_) => TEXT_CONTENT_TYPE,
            Payload::Binary(_) => BINARY_CONTENT_TYPE,
        };
        let response = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, content_type)
            .header(HEADER_SEND, callback.clone())
            .header(HEADER_SEQ, seq)
            .body(payload.bytes().clone())
            .send()
            .await
            .map_err(BackendError::from_reqwest)?;
        if !response.status().is_success() {
            return Err(BackendError::Status(response.status()));
        }
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let body = self.read_body(response).await?;
        if body.is_empty() {
            return Ok(None);
        }
        Payload::from_http(content_type.as_ref(), body)
            .map(Some)
            .map_err(|_| BackendError::ReplyNotUtf8)
    }

    /// POSTs to the connect hook before the upgrade completes. `headers` are the client's
    /// handshake headers to forward (already filtered by the caller).
    pub async fn post_connect(
        &self,
        url: &Url,
        callback: &HeaderValue,
        headers: reqwest::header::HeaderMap,
    ) -> Result<ConnectAnswer, BackendError> {
        let mut response = self
            .http
            .post(url.clone())
            .headers(headers)
            .header(HEADER_SEND, callback.clone())
            .body(Bytes::new())
            .send()
            .await
            .map_err(BackendError::from_reqwest)?;
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        if !status.is_success() {
            let mut body = BytesMut::new();
            while body.len() < MAX_REFUSAL_BODY {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = MAX_REFUSAL_BODY - body.len();
                        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(BackendError::from_reqwest(e)),
                }
            }
            return Ok(ConnectAnswer::Refuse {
                status,
                content_type,
                body: body.freeze(),
            });
        }
        let subprotocol = response
            .headers()
            .get(reqwest::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let body = self.read_body(response).await?;
        let first_message = if body.is_empty() {
            None
        } else {
            Some(
                Payload::from_http(content_type.as_ref(), body)
                    .map_err(|_| BackendError::ReplyNotUtf8)?,
            )
        };
        Ok(ConnectAnswer::Accept {
            subprotocol,
            first_message,
        })
    }

    /// POSTs the disconnect notice for an ended connection.
    pub async fn post_disconnect(
        &self,
        url: &Url,
        callback: &HeaderValue,
        ending: &Ending,
    ) -> Result<(), BackendError> {
        let mut request = self
            .http
            .post(url.clone())
            .header(HEADER_SEND, callback.clone())
            .header(HEADER_CLOSE_INITIATOR, ending.initiator.as_str())
            .header(HEADER_CLOSE_CAUSE, ending.cause.as_str())
            .header(CONTENT_TYPE, TEXT_CONTENT_TYPE)
            .body(Bytes::new());
        if let Some(code) = ending.code_number() {
            request = request.header(HEADER_CLOSE_CODE, code);
        }
        if ending.code.is_some() {
            request = request.header(HEADER_CLOSE_REASON, header_safe_reason(&ending.reason));
        }
        let response = request.send().await.map_err(BackendError::from_reqwest)?;
        let status = response.status();
        // Drain (bounded) so the pooled connection can be reused.
        let _ = self.read_body(response).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(BackendError::Status(status))
        }
    }

    /// Reads a reply body, refusing more than `max_reply_size` bytes.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Bytes, BackendError> {
        if response
            .content_length()
            .is_some_and(|n| n > self.max_reply_size as u64)
        {
            return Err(BackendError::ReplyTooLarge);
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(BackendError::from_reqwest)? {
            if body.len() + chunk.len() > self.max_reply_size {
                return Err(BackendError::ReplyTooLarge);
            }
            if body.is_empty() && chunk.len() == response.content_length().unwrap_or(0) as usize {
                // The whole body in one chunk: hand it on without copying.
                return Ok(chunk);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}
