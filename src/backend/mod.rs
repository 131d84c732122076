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
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::HeaderValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

use crate::config::BackendConfig;
use crate::metrics::{Metrics, RequestKind};
use crate::protocol::HEADER_SIGNATURE;
use h1::HostPool;
use retry::{BACKOFF_BASE, BACKOFF_CAP, RetryPolicy};
use ssrf::GuardedResolver;

mod error;
pub(crate) mod events;
mod h1;
pub(crate) mod hook;
mod post;
mod request_id;
pub(crate) mod retry;
pub(crate) mod ssrf;

pub(crate) use error::BackendError;
pub(crate) use hook::ConnectAnswer;
pub(crate) use post::FrameAnswer;
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

/// The channel headers of a backend's answer, as sent (parsed by the session layer).
#[derive(Debug, Default, Clone)]
pub(crate) struct ChannelHeaders {
    /// `x-ws-proxy-subscribe`: channels to join.
    pub(crate) subscribe: Option<HeaderValue>,
    /// `x-ws-proxy-unsubscribe`: channels to leave.
    pub(crate) unsubscribe: Option<HeaderValue>,
}

impl ChannelHeaders {
    /// Whether the answer named no channel at all (the usual case).
    pub(crate) fn is_empty(&self) -> bool {
        self.subscribe.is_none() && self.unsubscribe.is_none()
    }

    fn of(headers: &reqwest::header::HeaderMap) -> Self {
        ChannelHeaders {
            subscribe: headers.get(crate::protocol::HEADER_SUBSCRIBE).cloned(),
            unsubscribe: headers.get(crate::protocol::HEADER_UNSUBSCRIBE).cloned(),
        }
    }
}

/// A backend URL with its host's concurrency limit (and, for `http://`, its connection pool)
/// looked up once per connection, so the hot path takes no lock and builds no key.
#[derive(Debug)]
pub(crate) struct BackendTarget {
    url: Url,
    limit: Arc<Semaphore>,
    /// For `http://` URLs: the lean HTTP/1.1 client's pool for this host.
    h1: Option<Arc<HostPool>>,
    /// `x-ws-proxy-request-uri` on every request (connections opened through a `--route`).
    request_uri: Option<HeaderValue>,
}

/// One backend `scheme://host:port`: its concurrency limit and, for `http://`, its pool.
#[derive(Debug)]
struct Host {
    limit: Arc<Semaphore>,
    h1: Option<Arc<HostPool>>,
}

impl BackendTarget {
    /// The URL requests go to.
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// The same target, with `x-ws-proxy-request-uri: {uri}` on every request.
    pub(crate) fn with_request_uri(mut self, uri: Option<HeaderValue>) -> Self {
        self.request_uri = uri;
        self
    }
}

/// The process-wide client for backend requests.
#[derive(Debug, Clone)]
pub(crate) struct BackendClient {
    http: reqwest::Client,
    settings: Arc<Settings>,
    hosts: Arc<Mutex<HashMap<String, Host>>>,
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
        let key = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        let config = &self.settings.config;
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if hosts.len() >= MAX_TRACKED_HOSTS && !hosts.contains_key(&key) {
            hosts.retain(|_, h| Arc::strong_count(&h.limit) > 1);
        }
        let host = hosts.entry(key).or_insert_with(|| Host {
            limit: Arc::new(Semaphore::new(config.max_connections_per_host)),
            h1: (url.scheme() == "http").then(|| {
                Arc::new(HostPool::new(
                    url[url::Position::BeforeHost..url::Position::AfterPort].to_owned(),
                    url.host_str()
                        .unwrap_or("")
                        .trim_matches(['[', ']'])
                        .to_owned(),
                    url.port_or_known_default().unwrap_or(80),
                    config.deny_private_networks,
                ))
            }),
        });
        BackendTarget {
            limit: Arc::clone(&host.limit),
            h1: host.h1.clone(),
            url,
            request_uri: None,
        }
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
            let signature = {
                let headers = request.headers();
                // Every body here is `Bytes` (never a stream), so `as_bytes` sees all of it.
                let body = request
                    .body()
                    .and_then(reqwest::Body::as_bytes)
                    .unwrap_or_default();
                self.signature_by(target, body, |name| {
                    headers.get(name).map_or(&[][..], HeaderValue::as_bytes)
                })
            };
            if let Some(signature) = signature {
                request.headers_mut().insert(HEADER_SIGNATURE, signature);
            }
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
}
