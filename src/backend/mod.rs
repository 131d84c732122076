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
//! built (see [`crate::protocol::signing`]). Owns nothing about sockets to clients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use crate::config::BackendConfig;
use crate::metrics::{Metrics, RequestKind};
use crate::protocol::signing::SignedRequest;
use crate::protocol::{
    BINARY_CONTENT_TYPE, HEADER_CLOSE_CAUSE, HEADER_CLOSE_CODE, HEADER_CLOSE_INITIATOR,
    HEADER_CLOSE_REASON, HEADER_REPLY, HEADER_REQUEST_ID, HEADER_REQUEST_URI, HEADER_SEND,
    HEADER_SEQ, HEADER_SIGNATURE, Payload, TEXT_CONTENT_TYPE, header_safe_reason,
};
use crate::session::close::Ending;
use retry::{BACKOFF_BASE, BACKOFF_CAP, RetryPolicy, retry_after};
use ssrf::GuardedResolver;

mod error;
pub(crate) mod hook;
mod request_id;
pub(crate) mod retry;
pub(crate) mod ssrf;

pub(crate) use error::BackendError;
pub(crate) use hook::ConnectAnswer;
pub(crate) use request_id::RequestIds;

/// What the client runs on: its configuration and where it counts.
#[derive(Debug)]
struct Settings {
    config: BackendConfig,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
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
pub(crate) struct BackendTarget {
    url: Url,
    limit: Arc<Semaphore>,
}

impl BackendTarget {
    /// The URL requests go to.
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }
}

/// The process-wide client for backend requests.
#[derive(Debug, Clone)]
pub(crate) struct BackendClient {
    http: reqwest::Client,
    settings: Arc<Settings>,
    hosts: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    /// Retries made, for the running total in the logs (per-kind counts are in the metrics).
    retries: Arc<AtomicU64>,
}

/// Host limits kept before idle ones are forgotten.
const MAX_TRACKED_HOSTS: usize = 4096;

impl BackendClient {
    /// Builds the pooled client.
    /// Builds the pooled client for `config`, counting into `metrics`.
    pub(crate) fn new(
        config: &BackendConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let settings = Settings {
            config: config.clone(),
            retry: RetryPolicy {
                retries: config.retries,
                budget: config.retry_budget,
                base: BACKOFF_BASE,
                cap: BACKOFF_CAP,
            },
            metrics,
        };
        let config = &settings.config;
        crate::config::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(config.max_connections_per_host)
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .user_agent(concat!("websocket-bridge/", env!("CARGO_PKG_VERSION")));
        if config.deny_private_networks {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        if !config.extra_roots.is_empty() {
            let mut roots = Vec::new();
            for der in &config.extra_roots {
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
    pub(crate) fn target(&self, url: Url) -> BackendTarget {
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
        Arc::clone(hosts.entry(key).or_insert_with(|| {
            Arc::new(Semaphore::new(
                self.settings.config.max_connections_per_host,
            ))
        }))
    }

    /// One attempt: waits for a slot of the host's limit, sends, waits for the answer's head;
    /// all within `--backend-timeout`.
    async fn attempt(
        &self,
        target: &BackendTarget,
        kind: RequestKind,
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
        tokio::time::timeout(self.settings.config.timeout, exchange)
            .await
            .unwrap_or(Err(BackendError::Timeout))
    }

    /// Sends a request, retrying transient failures within the retry policy. Returns the first
    /// 2xx answer, or the last failure.
    async fn send_with_retries(
        &self,
        target: &BackendTarget,
        what: RequestKind,
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
                self.settings.metrics.backend_failure(what, error.reason());
                if error.is_transient() && policy.retries > 0 {
                    warn!(what = what.as_str(), retries = retry - 1, error = %error.detail(), "backend retries exhausted");
                }
                return Err(error);
            }
            let total = self.retries.fetch_add(1, Ordering::Relaxed) + 1;
            self.settings.metrics.retry(what);
            debug!(what = what.as_str(), retry, wait = ?wait, error = %error.detail(), retries_total = total, "retrying backend request");
            tokio::time::sleep(wait).await;
        }
    }

    /// POSTs one client message. A 2xx answer with a non-empty body is a reply to deliver to
    /// the client. Transient failures are retried with the same `x-ws-proxy-seq` and
    /// `x-ws-proxy-request-id`.
    pub(crate) async fn post_frame(
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
            .send_with_retries(target, RequestKind::Frame, || {
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

    /// POSTs the disconnect notice for an ended connection, retrying transient failures: it is
    /// the backend's only cleanup signal.
    pub(crate) async fn post_disconnect(
        &self,
        target: &BackendTarget,
        callback: &HeaderValue,
        ids: &RequestIds,
        ending: &Ending,
    ) -> Result<(), BackendError> {
        let reason = header_safe_reason(&ending.reason);
        let request_id = ids.disconnect();
        let answer = self
            .send_with_retries(target, RequestKind::Disconnect, || {
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
        let Some(signer) = &self.settings.config.signer else {
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
        let limit = self.settings.config.max_reply_size;
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
}
