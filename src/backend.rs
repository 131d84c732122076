//! The HTTP client side: connect, frame and disconnect POSTs to backends.
//!
//! One pooled keep-alive client for the whole process (HTTP/2 where a TLS backend offers it by
//! ALPN); at most `--backend-max-connections` concurrent requests per backend host:port;
//! redirects are never followed (a 3xx is a failed request like any other non-2xx); every
//! attempt is bounded by `--backend-timeout` and every reply body by `--max-message-size`.
//! Transient failures of frame and disconnect POSTs are retried with exponential backoff and
//! jitter within `--backend-retries` and `--backend-retry-budget`. Every request carries an
//! `x-ws-proxy-request-id` ([`RequestIds`]), the same on each attempt, and, with
//! `--signing-secret`, an `x-ws-proxy-signature` computed at each attempt from the request as
//! built (see [`crate::signing`]). Owns nothing about sockets to clients.

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use crate::close::{Ending, header_safe_reason};
use crate::metrics::Metrics;
use crate::payload::{BINARY_CONTENT_TYPE, Payload, TEXT_CONTENT_TYPE};
use crate::signing::{HEADER_SIGNATURE, SignedRequest, Signer};
use crate::ssrf::GuardedResolver;

/// `x-ws-proxy-send`: the callback URL of the connection.
pub const HEADER_SEND: &str = "x-ws-proxy-send";
/// `x-ws-proxy-seq`: the message's position in the connection, from 0.
pub const HEADER_SEQ: &str = "x-ws-proxy-seq";
/// `x-ws-proxy-request-id`: unique per request, the same on each of its attempts.
pub const HEADER_REQUEST_ID: &str = "x-ws-proxy-request-id";
/// `x-ws-proxy-close-code`: close code of the ending (disconnect POSTs).
pub const HEADER_CLOSE_CODE: &str = "x-ws-proxy-close-code";
/// `x-ws-proxy-close-reason`: close reason, percent-encoded UTF-8 (disconnect POSTs).
pub const HEADER_CLOSE_REASON: &str = "x-ws-proxy-close-reason";
/// `x-ws-proxy-close-initiator`: client, backend or bridge (disconnect POSTs).
pub const HEADER_CLOSE_INITIATOR: &str = "x-ws-proxy-close-initiator";
/// `x-ws-proxy-close-cause`: the cause keyword (disconnect POSTs).
pub const HEADER_CLOSE_CAUSE: &str = "x-ws-proxy-close-cause";

/// `x-ws-proxy-reply: true` on a frame POST's answer: the body is a reply even when empty (an
/// empty message to the client).
pub const HEADER_REPLY: &str = "x-ws-proxy-reply";

/// Longest body of a connect hook's refusal that is passed on to the client.
pub const MAX_REFUSAL_BODY: usize = 4096;

/// `x-ws-proxy-request-uri`: the client's original path and query (connect hook).
pub const HEADER_REQUEST_URI: &str = "x-ws-proxy-request-uri";

/// The `x-ws-proxy-request-id` values of one connection's requests: a random 64-bit nonce in
/// hex, drawn once per connection, then `-` and the request's place in the connection: `c` for
/// the connect hook, the frame's seq, `d` for the disconnect POST (`9f2c41d07ab3e655-17`).
///
/// The nonce is drawn independently of the connection id, so a request id never reveals the
/// callback URL; unique across connections with overwhelming probability (64 random bits), and
/// one `format!` per request on the hot path (no syscall).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestIds {
    nonce: u64,
}

/// The operating system's random number generator failed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomUnavailable;

impl RequestIds {
    /// A fresh nonce from the operating system's CSPRNG.
    pub fn random() -> Result<Self, RandomUnavailable> {
        let bytes: [u8; 8] = ring::rand::generate(&ring::rand::SystemRandom::new())
            .map_err(|_| RandomUnavailable)?
            .expose();
        Ok(RequestIds {
            nonce: u64::from_le_bytes(bytes),
        })
    }

    /// The id of the connect hook POST.
    pub fn connect(&self) -> HeaderValue {
        self.value(format_args!("c"))
    }

    /// The id of the frame POST of message `seq`.
    pub fn frame(&self, seq: u64) -> HeaderValue {
        self.value(format_args!("{seq}"))
    }

    /// The id of the disconnect POST.
    pub fn disconnect(&self) -> HeaderValue {
        self.value(format_args!("d"))
    }

    fn value(&self, place: fmt::Arguments<'_>) -> HeaderValue {
        let text = format!("{:016x}-{place}", self.nonce);
        // Hex digits, '-' and a number or a letter: always a valid header value.
        HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

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
    /// No answer within `--backend-timeout` (waiting for a free backend connection included).
    #[error("backend timed out")]
    Timeout,
    /// The backend could not be reached (DNS, connection refused, TLS).
    #[error("backend unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// The connection was lost before an answer arrived (reset, closed mid-exchange).
    #[error("backend connection lost")]
    ConnectionLost(#[source] reqwest::Error),
    /// Any other failure of the exchange.
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
        // reqwest's message names the whole URL, query included, which may carry a secret:
        // logs name the backend through `handshake::redacted` instead.
        let e = e.without_url();
        if e.is_timeout() {
            BackendError::Timeout
        } else if e.is_connect() {
            BackendError::Unreachable(e)
        } else if connection_lost(&e) {
            BackendError::ConnectionLost(e)
        } else {
            BackendError::Transport(e)
        }
    }

    /// Whether a retry may help: the backend was unreachable or the connection dropped before
    /// an answer. Timeouts are not retried (the backend may still be working on it).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BackendError::Unreachable(_) | BackendError::ConnectionLost(_)
        ) || matches!(self, BackendError::Status(s) if is_transient_status(*s))
    }

    /// A short keyword for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Status(_) => "status",
            BackendError::Timeout => "timeout",
            BackendError::Unreachable(_) => "unreachable",
            BackendError::ConnectionLost(_) => "connection-lost",
            BackendError::Transport(_) => "transport",
            BackendError::ReplyTooLarge => "reply-too-large",
            BackendError::ReplyNotUtf8 => "reply-not-utf8",
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

/// Statuses worth retrying: 429, 502, 503, 504.
pub fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
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

/// How transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Longest time from the first attempt to the start of the last retry.
    pub budget: Duration,
    /// First backoff; doubles with each retry.
    pub base: Duration,
    /// Longest backoff.
    pub cap: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): exponential, capped, with jitter over
    /// its upper half so that many connections failing at once do not retry in lockstep.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.cap);
        let half = exp / 2;
        let jitter = random_u64() % (half.as_micros() as u64 + 1);
        half + Duration::from_micros(jitter)
    }
}

/// A random number from the standard library's per-process random hash keys: plenty for
/// jitter, which needs no cryptographic strength.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    hasher.finish()
}

/// Parses `Retry-After` (delay in seconds or an HTTP date).
pub fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let value = value?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Settings of the backend client.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// Time for one attempt.
    pub timeout: Duration,
    /// Largest reply body.
    pub max_reply_size: usize,
    /// Concurrent requests per host:port.
    pub max_connections_per_host: usize,
    /// Retry policy for frame and disconnect POSTs.
    pub retry: RetryPolicy,
    /// Extra trusted CAs for https backends.
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Signs every request, when configured.
    pub signer: Option<Signer>,
    /// Resolve names through [`GuardedResolver`] (`--deny-private-networks`).
    pub deny_private_networks: bool,
    /// Where latencies, retries and failures are counted.
    pub metrics: Arc<Metrics>,
}

/// A response together with the permit that holds its slot of the host's connection limit
/// until the body has been read.
struct Answer {
    response: reqwest::Response,
    _permit: OwnedSemaphorePermit,
}

/// A backend URL with its host's concurrency limit looked up once (per connection), so the
/// hot path takes no lock and builds no key.
#[derive(Debug)]
pub struct BackendTarget {
    url: Url,
    limit: Arc<Semaphore>,
}

impl BackendTarget {
    /// The URL requests go to.
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// The process-wide client for backend requests.
#[derive(Debug, Clone)]
pub struct BackendClient {
    http: reqwest::Client,
    settings: Arc<BackendSettings>,
    hosts: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    /// Retries made, for the running total in the logs (per-kind counts are in the metrics).
    retries: Arc<AtomicU64>,
}

/// Host limits kept before idle ones are forgotten.
const MAX_TRACKED_HOSTS: usize = 4096;

impl BackendClient {
    /// Builds the pooled client.
    pub fn new(settings: BackendSettings) -> Result<Self, reqwest::Error> {
        crate::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(settings.max_connections_per_host)
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .user_agent(concat!("websocket-bridge/", env!("CARGO_PKG_VERSION")));
        if settings.deny_private_networks {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        if !settings.extra_roots.is_empty() {
            let mut roots = Vec::new();
            for der in &settings.extra_roots {
                roots.push(reqwest::Certificate::from_der(der)?);
            }
            builder = builder.tls_certs_merge(roots);
        }
        Ok(BackendClient {
            http: builder.build()?,
            settings: Arc::new(settings),
            hosts: Arc::default(),
            retries: Arc::default(),
        })
    }

    /// A target for requests to `url`.
    pub fn target(&self, url: Url) -> BackendTarget {
        let limit = self.host_limit(&url);
        BackendTarget { url, limit }
    }

    /// The semaphore limiting concurrent requests to `url`'s host:port.
    fn host_limit(&self, url: &Url) -> Arc<Semaphore> {
        let key = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if hosts.len() >= MAX_TRACKED_HOSTS && !hosts.contains_key(&key) {
            hosts.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Arc::clone(
            hosts.entry(key).or_insert_with(|| {
                Arc::new(Semaphore::new(self.settings.max_connections_per_host))
            }),
        )
    }

    /// One attempt: waits for a slot of the host's limit, sends, waits for the answer's head;
    /// all within `--backend-timeout`.
    async fn attempt(
        &self,
        target: &BackendTarget,
        kind: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, BackendError> {
        let started = Instant::now();
        let result = self.attempt_unmeasured(target, request).await;
        self.settings
            .metrics
            .backend_attempt(kind, started.elapsed().as_secs_f64());
        result
    }

    async fn attempt_unmeasured(
        &self,
        target: &BackendTarget,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, BackendError> {
        let limit = Arc::clone(&target.limit);
        let exchange = async {
            let permit = limit
                .acquire_owned()
                .await
                .map_err(|_| BackendError::Timeout)?;
            let mut request = request.build().map_err(BackendError::from_reqwest)?;
            self.sign(&mut request);
            let response = self
                .http
                .execute(request)
                .await
                .map_err(BackendError::from_reqwest)?;
            Ok(Answer {
                response,
                _permit: permit,
            })
        };
        tokio::time::timeout(self.settings.timeout, exchange)
            .await
            .unwrap_or(Err(BackendError::Timeout))
    }

    /// Sends a request, retrying transient failures within the retry policy. Returns the first
    /// 2xx answer, or the last failure.
    async fn send_with_retries(
        &self,
        target: &BackendTarget,
        what: &'static str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Answer, BackendError> {
        let policy = self.settings.retry;
        let started = Instant::now();
        let mut retry = 0u32;
        loop {
            let (error, wait) = match self.attempt(target, what, build()).await {
                Ok(answer) if answer.response.status().is_success() => return Ok(answer),
                Ok(answer) => {
                    let status = answer.response.status();
                    let hint = retry_after(answer.response.headers().get(RETRY_AFTER));
                    (BackendError::Status(status), hint)
                }
                Err(e) => (e, None),
            };
            retry += 1;
            // A backend's Retry-After may name any delay (even u64::MAX seconds): a wait that
            // would end beyond the retry budget means giving up now, computed without overflow.
            let wait = wait.unwrap_or_else(|| policy.backoff(retry));
            if !error.is_transient()
                || retry > policy.retries
                || started.elapsed().saturating_add(wait) > policy.budget
            {
                self.settings.metrics.backend_failure(what, error.kind());
                if error.is_transient() && policy.retries > 0 {
                    warn!(what, retries = retry - 1, error = %error.detail(), "backend retries exhausted");
                }
                return Err(error);
            }
            let total = self.retries.fetch_add(1, Ordering::Relaxed) + 1;
            self.settings.metrics.retry(what);
            debug!(what, retry, wait = ?wait, error = %error.detail(), retries_total = total, "retrying backend request");
            tokio::time::sleep(wait).await;
        }
    }

    /// POSTs one client message. A 2xx answer with a non-empty body is a reply to deliver to
    /// the client. Transient failures are retried with the same `x-ws-proxy-seq` and
    /// `x-ws-proxy-request-id`.
    pub async fn post_frame(
        &self,
        target: &BackendTarget,
        callback: &HeaderValue,
        ids: &RequestIds,
        seq: u64,
        payload: &Payload,
    ) -> Result<Option<Payload>, BackendError> {
        let content_type = match payload {
            Payload::Text(_) => TEXT_CONTENT_TYPE,
            Payload::Binary(_) => BINARY_CONTENT_TYPE,
        };
        let request_id = ids.frame(seq);
        let answer = self
            .send_with_retries(target, "frame", || {
                self.http
                    .post(target.url.clone())
                    .header(CONTENT_TYPE, content_type)
                    .header(HEADER_SEND, callback.clone())
                    .header(HEADER_SEQ, seq)
                    .header(HEADER_REQUEST_ID, request_id.clone())
                    .body(payload.bytes().clone())
            })
            .await?;
        let headers = answer.response.headers();
        let content_type = headers.get(CONTENT_TYPE).cloned();
        let explicit = headers
            .get(HEADER_REPLY)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let body = self.read_body(answer).await?;
        if body.is_empty() && !explicit {
            return Ok(None);
        }
        Payload::from_http(content_type.as_ref(), body)
            .map(Some)
            .map_err(|_| BackendError::ReplyNotUtf8)
    }

    /// POSTs to the connect hook before the upgrade completes. `headers` are the client's
    /// handshake headers to forward (already filtered by the caller). Not retried: the client
    /// is waiting, and may retry itself.
    pub async fn post_connect(
        &self,
        target: &BackendTarget,
        callback: &HeaderValue,
        ids: &RequestIds,
        headers: reqwest::header::HeaderMap,
    ) -> Result<ConnectAnswer, BackendError> {
        let request = self
            .http
            .post(target.url.clone())
            .headers(headers)
            .header(HEADER_SEND, callback.clone())
            .header(HEADER_REQUEST_ID, ids.connect())
            .body(Bytes::new());
        let mut answer = match self.attempt(target, "connect", request).await {
            Ok(answer) => answer,
            Err(e) => {
                self.settings.metrics.backend_failure("connect", e.kind());
                return Err(e);
            }
        };
        let status = answer.response.status();
        let content_type = answer.response.headers().get(CONTENT_TYPE).cloned();
        if !status.is_success() {
            let mut body = BytesMut::new();
            while body.len() < MAX_REFUSAL_BODY {
                match answer.response.chunk().await {
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
        let subprotocol = answer
            .response
            .headers()
            .get(reqwest::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let body = self.read_body(answer).await?;
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

    /// POSTs the disconnect notice for an ended connection, retrying transient failures: it is
    /// the backend's only cleanup signal.
    pub async fn post_disconnect(
        &self,
        target: &BackendTarget,
        callback: &HeaderValue,
        ids: &RequestIds,
        ending: &Ending,
    ) -> Result<(), BackendError> {
        let reason = header_safe_reason(&ending.reason);
        let request_id = ids.disconnect();
        let answer = self
            .send_with_retries(target, "disconnect", || {
                let mut request = self
                    .http
                    .post(target.url.clone())
                    .header(HEADER_SEND, callback.clone())
                    .header(HEADER_REQUEST_ID, request_id.clone())
                    .header(HEADER_CLOSE_INITIATOR, ending.initiator.as_str())
                    .header(HEADER_CLOSE_CAUSE, ending.cause.as_str())
                    .header(CONTENT_TYPE, TEXT_CONTENT_TYPE)
                    .body(Bytes::new());
                if let Some(code) = ending.code_number() {
                    request = request
                        .header(HEADER_CLOSE_CODE, code)
                        .header(HEADER_CLOSE_REASON, reason.as_str());
                }
                request
            })
            .await?;
        // Drain (bounded) so the pooled connection can be reused.
        let _ = self.read_body(answer).await;
        Ok(())
    }

    /// Adds `x-ws-proxy-signature` when signing is configured. Called for every attempt, so a
    /// retry carries a fresh timestamp. Reads what it signs from the request as built, so what
    /// is signed is what is sent.
    fn sign(&self, request: &mut reqwest::Request) {
        let Some(signer) = &self.settings.signer else {
            return;
        };
        let value = {
            let headers = request.headers();
            let header = |name: &str| headers.get(name).map_or(&[][..], HeaderValue::as_bytes);
            signer.header(&SignedRequest {
                method: request.method().as_str(),
                // The fragment, if any, is never sent.
                url: &request.url()[..url::Position::AfterQuery],
                request_id: header(HEADER_REQUEST_ID),
                seq: header(HEADER_SEQ),
                content_type: header(CONTENT_TYPE.as_str()),
                send: header(HEADER_SEND),
                request_uri: header(HEADER_REQUEST_URI),
                close_code: header(HEADER_CLOSE_CODE),
                close_reason: header(HEADER_CLOSE_REASON),
                close_initiator: header(HEADER_CLOSE_INITIATOR),
                close_cause: header(HEADER_CLOSE_CAUSE),
                // Every body here is `Bytes` (never a stream), so `as_bytes` sees all of it.
                body: request
                    .body()
                    .and_then(reqwest::Body::as_bytes)
                    .unwrap_or_default(),
            })
        };
        request.headers_mut().insert(HEADER_SIGNATURE, value);
    }

    /// Reads a reply body, refusing more than `max_reply_size` bytes.
    async fn read_body(&self, answer: Answer) -> Result<Bytes, BackendError> {
        let Answer {
            mut response,
            _permit,
        } = answer;
        let limit = self.settings.max_reply_size;
        let declared = response.content_length();
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(BackendError::ReplyTooLarge);
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(BackendError::from_reqwest)? {
            if body.len() + chunk.len() > limit {
                return Err(BackendError::ReplyTooLarge);
            }
            if body.is_empty() && Some(chunk.len() as u64) == declared {
                // The whole body in one chunk: hand it on without copying.
                return Ok(chunk);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let policy = RetryPolicy {
            retries: 10,
            budget: Duration::from_secs(60),
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        for retry in 1..=10 {
            let exp = (Duration::from_millis(100) * (1 << (retry - 1))).min(Duration::from_secs(2));
            let wait = policy.backoff(retry);
            assert!(
                wait >= exp / 2 && wait <= exp,
                "retry {retry}: {wait:?} vs {exp:?}"
            );
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(retry_after(Some(&v("3"))), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after(Some(&v("Wed, 21 Oct 2015 07:28:00 GMT"))),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(Some(&v("soon"))), None);
        assert_eq!(
            retry_after(Some(&v("18446744073709551615"))),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn request_ids_name_their_place_after_a_per_connection_nonce() {
        let ids = RequestIds::random().unwrap_or(RequestIds { nonce: 7 });
        let connect = ids.connect();
        let connect = connect.to_str().unwrap_or_default();
        let (nonce, place) = connect.split_once('-').unwrap_or_default();
        assert_eq!(nonce.len(), 16);
        assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()), "{nonce}");
        assert_eq!(place, "c");
        assert_eq!(ids.frame(17), format!("{nonce}-17").as_str());
        assert_eq!(ids.disconnect(), format!("{nonce}-d").as_str());
        assert_eq!(ids.frame(3), ids.frame(3), "stable for retries");
        let other = RequestIds::random().unwrap_or(RequestIds { nonce: 8 });
        assert_ne!(ids, other, "a fresh nonce per connection");
        assert_eq!(
            RequestIds { nonce: 0xab }.frame(0),
            "00000000000000ab-0",
            "zero-padded"
        );
    }

    #[test]
    fn transient_statuses() {
        for s in [429, 502, 503, 504] {
            assert!(is_transient_status(
                StatusCode::from_u16(s).unwrap_or_default()
            ));
        }
        for s in [400, 404, 500, 301] {
            assert!(!is_transient_status(
                StatusCode::from_u16(s).unwrap_or_default()
            ));
        }
    }
}
