//! Command line and validated configuration.
//!
//! Two steps: [`Cli`] is what clap parses (flags, each also read from a `WS_BRIDGE_*`
//! environment variable); [`Config`] is what the rest of the bridge runs on, built by
//! `Config::try_from(cli)`, which checks every flag and loads the TLS files. Nothing is bound
//! before a `Config` exists. This module owns no sockets and starts no tasks.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use url::Url;

use crate::allowlist::{Allowlist, AllowlistError};
use crate::forwarded::{TrustedProxies, TrustedProxyError};
use crate::origin::{OriginError, OriginPolicy};
use crate::signing::{MIN_SECRET_BYTES, Signer};
use crate::tls::{self, TlsError};

/// Default for `--max-message-size`: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;
/// Largest accepted `--max-message-size`: whole messages are held in memory, so this is a cap
/// on what one connection may cost.
pub const MAX_MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

/// Largest accepted `--callback-body-memory` (tokio's semaphores count at most 2^61 permits;
/// 64 GiB is far beyond any machine this runs on).
pub const MAX_CALLBACK_BODY_MEMORY: usize = 64 << 30;

/// Command-line flags. Every flag can also be set through the environment variable named in
/// its help; a flag on the command line wins over the environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "websocket-bridge",
    version,
    about = "A WebSocket-to-HTTP gateway: each client message becomes an HTTP POST to a backend, \
             and backends answer through a per-connection callback URL."
)]
pub struct Cli {
    /// TOML file holding any of these flags by their long name (`max-message-size = "2MiB"`,
    /// `allowlist = ["…", "…"]`, `deny-private-networks = true`). Precedence: flag >
    /// environment > file > default. [default: none]
    #[arg(long, env = "WS_BRIDGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the configuration, print the effective values (secrets redacted) and exit: 0
    /// when valid, 64 when not.
    #[arg(long)]
    pub check_config: bool,

    /// Log format on stderr: text (human) or json (one object per line). [default: text]
    #[arg(long, env = "WS_BRIDGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Address to listen on, HOST:PORT. [default: 127.0.0.1:8080]
    #[arg(
        long,
        env = "WS_BRIDGE_ADDRESS",
        default_value = "127.0.0.1:8080",
        value_name = "HOST:PORT"
    )]
    pub address: String,

    /// Public base URL of this bridge; callback URLs are `{base-url}/{id}` and the callback API
    /// is served under the base URL's path. [default: http(s)://{bound address}]
    #[arg(long, env = "WS_BRIDGE_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,

    /// Regular expression a backend URL must match as a whole (anchored); repeatable. In the
    /// environment variable, separate several with newlines. Without any allowlist entry every
    /// connection is refused. [default: none]
    #[arg(
        long,
        env = "WS_BRIDGE_ALLOWLIST",
        value_name = "REGEX",
        value_delimiter = '\n'
    )]
    pub allowlist: Vec<String>,

    /// Host suffix (e.g. `.example.com`) that admits https backend URLs whose parsed host is
    /// that domain or a subdomain of it; repeatable (newline-separated in the environment).
    /// [default: none]
    #[arg(
        long,
        env = "WS_BRIDGE_HOST_SUFFIX_ALLOWLIST",
        value_name = "SUFFIX",
        value_delimiter = '\n'
    )]
    pub host_suffix_allowlist: Vec<String>,

    /// Admit backend URLs whose path holds an encoded `/`, `\\` or `.` (`%2F`, `%5C`, `%2E`) or
    /// a `;` path parameter. Off, such URLs get 400: many servers decode them after routing,
    /// so `/ws/..%2fadmin` could reach a path outside an allowed prefix. [default: off]
    #[arg(long, env = "WS_BRIDGE_ALLOW_ENCODED_PATHS")]
    pub allow_encoded_paths: bool,

    /// PEM certificate chain for TLS (leaf first); requires --key. [default: none, plain TCP]
    #[arg(long, env = "WS_BRIDGE_CERT", value_name = "PATH")]
    pub cert: Option<PathBuf>,

    /// PEM private key for TLS (PKCS#8, PKCS#1 or SEC1); requires --cert. [default: none]
    #[arg(long, env = "WS_BRIDGE_KEY", value_name = "PATH")]
    pub key: Option<PathBuf>,

    /// Largest message, in bytes, in either direction (client messages, callback bodies,
    /// backend replies); suffixes KiB, MiB are accepted. [default: 1MiB]
    #[arg(long, env = "WS_BRIDGE_MAX_MESSAGE_SIZE", default_value = "1MiB", value_name = "BYTES", value_parser = parse_size)]
    pub max_message_size: usize,

    /// Time allowed for one backend request, from connecting to reading the whole answer,
    /// e.g. `10s`, `500ms`. [default: 10s]
    #[arg(long, env = "WS_BRIDGE_BACKEND_TIMEOUT", default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub backend_timeout: Duration,

    /// Messages that may wait to be written to one client; a callback POST beyond it gets 503
    /// with Retry-After. [default: 64]
    #[arg(
        long,
        env = "WS_BRIDGE_SEND_QUEUE",
        default_value_t = 64,
        value_name = "MESSAGES"
    )]
    pub send_queue: usize,

    /// Bytes that may wait to be written to one client (a single message larger than this is
    /// still accepted when the queue is empty). [default: 4MiB]
    #[arg(long, env = "WS_BRIDGE_SEND_QUEUE_BYTES", default_value = "4MiB", value_name = "BYTES", value_parser = parse_size)]
    pub send_queue_bytes: usize,

    /// Bytes of callback request bodies held while being read, bridge-wide; a body takes its
    /// share as its bytes arrive. When it is full a callback waits up to 1 s for room, then
    /// gets 503. (Besides, at most 2 bodies per connection are read at once.) [default: 256MiB]
    #[arg(long, env = "WS_BRIDGE_CALLBACK_BODY_MEMORY", default_value = "256MiB", value_name = "BYTES", value_parser = parse_size)]
    pub callback_body_memory: usize,

    /// Client messages read ahead while a frame POST is in flight; then the bridge stops
    /// reading the socket (TCP backpressure). [default: 16]
    #[arg(
        long,
        env = "WS_BRIDGE_READ_AHEAD_MESSAGES",
        default_value_t = 16,
        value_name = "MESSAGES"
    )]
    pub read_ahead_messages: usize,

    /// Bytes of client messages read ahead while a frame POST is in flight. [default: 1MiB]
    #[arg(long, env = "WS_BRIDGE_READ_AHEAD_BYTES", default_value = "1MiB", value_name = "BYTES", value_parser = parse_size)]
    pub read_ahead_bytes: usize,

    /// Retries of a frame or disconnect POST after a transient failure (connection refused or
    /// lost before an answer, 429, 502, 503, 504). [default: 8]
    #[arg(
        long,
        env = "WS_BRIDGE_BACKEND_RETRIES",
        default_value_t = 8,
        value_name = "COUNT"
    )]
    pub backend_retries: u32,

    /// Longest time spent retrying one request (backoff waits included); a retry that would
    /// start later is not made. [default: 15s]
    #[arg(long, env = "WS_BRIDGE_BACKEND_RETRY_BUDGET", default_value = "15s", value_name = "DURATION", value_parser = parse_duration)]
    pub backend_retry_budget: Duration,

    /// Concurrent requests (and so connections, over HTTP/1.1) to one backend host:port;
    /// further requests wait for a free one within --backend-timeout. [default: 256]
    #[arg(
        long,
        env = "WS_BRIDGE_BACKEND_MAX_CONNECTIONS",
        default_value_t = 256,
        value_name = "COUNT"
    )]
    pub backend_max_connections: usize,

    /// Extra PEM CA certificates trusted for https backends, besides the system's. [default:
    /// none]
    #[arg(long, env = "WS_BRIDGE_BACKEND_CA", value_name = "PATH")]
    pub backend_ca: Option<PathBuf>,

    /// Open WebSocket connections at most; handshakes beyond it get 503. [default: 10000]
    #[arg(
        long,
        env = "WS_BRIDGE_MAX_CONNECTIONS",
        default_value_t = 10_000,
        value_name = "COUNT"
    )]
    pub max_connections: usize,

    /// Open WebSocket connections from one client address at most (IPv6 clients are counted per
    /// /64); handshakes beyond it get 429. Behind a load balancer, set --trusted-proxy so the
    /// client's own address is counted. 0 turns the limit off. [default: 1000]
    #[arg(
        long,
        env = "WS_BRIDGE_MAX_CONNECTIONS_PER_IP",
        default_value_t = 1000,
        value_name = "COUNT"
    )]
    pub max_connections_per_ip: usize,

    /// Address or CIDR block of a proxy or load balancer in front of the bridge (e.g.
    /// 10.0.0.0/8); repeatable, newline-separated in the environment. When the peer is one,
    /// the client's address is the right-most untrusted entry of its X-Forwarded-For (or
    /// Forwarded: for=), and its X-Forwarded-Proto and -Host are believed. [default: none]
    #[arg(
        long,
        env = "WS_BRIDGE_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = '\n'
    )]
    pub trusted_proxy: Vec<String>,

    /// Messages per second one client may send on average (token bucket holding one second's
    /// worth); what happens beyond it is --rate-limit-action. 0 turns the limit off.
    /// [default: 1000]
    #[arg(
        long,
        env = "WS_BRIDGE_MAX_MESSAGES_PER_SECOND",
        default_value_t = 1000,
        value_name = "RATE"
    )]
    pub max_messages_per_second: u32,

    /// What a client over --max-messages-per-second gets: `slow` stops reading its socket
    /// until its rate allows (TCP pushes back; every message is still forwarded), `close`
    /// closes it with 1008. [default: slow]
    #[arg(
        long,
        env = "WS_BRIDGE_RATE_LIMIT_ACTION",
        value_enum,
        default_value_t = RateLimitAction::Slow
    )]
    pub rate_limit_action: RateLimitAction,

    /// Time a client may take to accept one message written to it before it is closed as too
    /// slow. [default: 30s]
    #[arg(long, env = "WS_BRIDGE_CLIENT_WRITE_TIMEOUT", default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub client_write_timeout: Duration,

    /// Secret for signing every backend request (x-ws-proxy-signature); repeatable for key
    /// rotation, newline-separated in the environment. At least 16 bytes. [default: none]
    #[arg(
        long,
        env = "WS_BRIDGE_SIGNING_SECRET",
        value_name = "SECRET",
        value_delimiter = '\n',
        hide_env_values = true
    )]
    pub signing_secret: Vec<String>,

    /// File holding a signing secret (one trailing newline is ignored); repeatable. [default:
    /// none]
    #[arg(
        long,
        env = "WS_BRIDGE_SIGNING_SECRET_FILE",
        value_name = "PATH",
        value_delimiter = '\n'
    )]
    pub signing_secret_file: Vec<PathBuf>,

    /// Migration aid: besides the v2= signatures, also send the old v1= ones (over timestamp,
    /// x-ws-proxy-send and body only), so verifiers not yet upgraded keep working. Turn it off
    /// once every backend verifies v2. Needs a signing secret. [default: off]
    #[arg(long, env = "WS_BRIDGE_SIGNING_V1")]
    pub signing_v1: bool,

    /// Refuse backend URLs whose host resolves to a loopback, private, link-local, CGNAT,
    /// unique-local or other special address, at the handshake (403) and at every request.
    /// [default: off]
    #[arg(long, env = "WS_BRIDGE_DENY_PRIVATE_NETWORKS")]
    pub deny_private_networks: bool,

    /// Origin allowed to open WebSocket connections: exact (https://app.example.com) or a
    /// pattern (*.example.com, https://*.example.com); repeatable. When set, a handshake whose
    /// Origin is missing or not allowed gets 403. [default: none, any origin]
    #[arg(
        long,
        env = "WS_BRIDGE_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = '\n'
    )]
    pub allowed_origin: Vec<String>,

    /// Origin allowed to use callback URLs from a browser (CORS); repeatable; `*` for any.
    /// [default: *]
    #[arg(
        long,
        env = "WS_BRIDGE_CALLBACK_CORS_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = '\n',
        default_value = "*"
    )]
    pub callback_cors_origin: Vec<String>,

    /// Time a client may take for the TLS handshake and the HTTP request head. [default: 10s]
    #[arg(long, env = "WS_BRIDGE_HANDSHAKE_TIMEOUT", default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Interval between the bridge's pings to each client. [default: 30s]
    #[arg(long, env = "WS_BRIDGE_PING_INTERVAL", default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// A client silent this long (no message, no pong) is closed with 1001; checked at each
    /// ping, so the close comes at most one --ping-interval later. [default: 90s]
    #[arg(long, env = "WS_BRIDGE_IDLE_TIMEOUT", default_value = "90s", value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Connections older than this are closed with 1001. [default: none]
    #[arg(long, env = "WS_BRIDGE_MAX_CONNECTION_LIFETIME", value_name = "DURATION", value_parser = parse_duration)]
    pub max_connection_lifetime: Option<Duration>,

    /// Address of a separate listener serving Prometheus metrics at /metrics, HOST:PORT.
    /// [default: none, off]
    #[arg(long, env = "WS_BRIDGE_METRICS_ADDRESS", value_name = "HOST:PORT")]
    pub metrics_address: Option<String>,

    /// Time a keep-alive HTTP connection (callbacks, probes) may sit idle between requests.
    /// Must be longer than --backend-timeout. [default: 60s]
    #[arg(long, env = "WS_BRIDGE_HTTP_IDLE_TIMEOUT", default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,

    /// On SIGTERM/SIGINT, time given to close every client and deliver every disconnect POST
    /// before the process exits. [default: 30s]
    #[arg(long, env = "WS_BRIDGE_SHUTDOWN_GRACE", default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// What happens to a client over `--max-messages-per-second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RateLimitAction {
    /// Stop reading the client's socket until its rate allows: TCP pushes back, nothing is
    /// lost.
    Slow,
    /// Close the connection with 1008 (policy violation).
    Close,
}

impl RateLimitAction {
    /// The flag value, for logs and `--check-config`.
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitAction::Slow => "slow",
            RateLimitAction::Close => "close",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration error; the message names the flag and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--address` is not HOST:PORT or does not resolve.
    #[error("--address {value:?}: {reason}")]
    Address { value: String, reason: String },
    /// `--base-url` is not an absolute http(s) URL without query, fragment or user info.
    #[error("--base-url {value:?}: {reason}")]
    BaseUrl { value: String, reason: String },
    /// An allowlist entry is invalid.
    #[error(transparent)]
    Allowlist(#[from] AllowlistError),
    /// `--cert` given without `--key` or the other way round.
    #[error(
        "{given} was given without {missing}: TLS needs both a certificate chain and its private key"
    )]
    TlsPair {
        given: &'static str,
        missing: &'static str,
    },
    /// The certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// An `--allowed-origin` entry is invalid.
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// A signing secret is unusable.
    #[error("{flag}: {reason}")]
    Secret { flag: &'static str, reason: String },
    /// The `--config` file cannot be read or parsed, or holds an unknown key.
    #[error("--config {path:?}: {reason}")]
    File { path: PathBuf, reason: String },
    /// A `--trusted-proxy` entry is not an address or CIDR block.
    #[error(transparent)]
    TrustedProxy(#[from] TrustedProxyError),
    /// A `--callback-cors-origin` entry is not a valid header value.
    #[error("--callback-cors-origin {0:?}: not a valid origin")]
    CorsOrigin(String),
    /// A numeric flag is out of range.
    #[error("{flag} {value}: {reason}")]
    OutOfRange {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

/// The validated configuration the bridge runs on.
#[derive(Clone)]
pub struct Config {
    /// Where to listen (resolved from `--address`).
    pub address: SocketAddr,
    /// Public base URL without a trailing slash; `None` means "derive from the bound address".
    pub base_url: Option<String>,
    /// Which backend URLs clients may name.
    pub allowlist: Arc<Allowlist>,
    /// TLS server configuration when `--cert`/`--key` are set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest message in either direction, in bytes.
    pub max_message_size: usize,
    /// Time allowed for one backend request.
    pub backend_timeout: Duration,
    /// Capacity of each connection's outbound queue, in messages.
    pub send_queue: usize,
    /// Capacity of each connection's outbound queue, in bytes.
    pub send_queue_bytes: usize,
    /// Bytes of callback bodies held while being read, bridge-wide.
    pub callback_body_memory: usize,
    /// Client messages read ahead while a POST is in flight.
    pub read_ahead_messages: usize,
    /// Client bytes read ahead while a POST is in flight.
    pub read_ahead_bytes: usize,
    /// Retries after transient backend failures.
    pub backend_retries: u32,
    /// Time budget for the retries of one request.
    pub backend_retry_budget: Duration,
    /// Concurrent requests per backend host.
    pub backend_max_connections: usize,
    /// Extra trusted CA certificates for https backends (DER).
    pub backend_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections per client IP at most (0: no limit).
    pub max_connections_per_ip: usize,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Messages per second per client (0: no limit).
    pub max_messages_per_second: u32,
    /// What a client over its rate gets.
    pub rate_limit_action: RateLimitAction,
    /// Time allowed for one write to a client.
    pub client_write_timeout: Duration,
    /// Signs backend requests, when secrets are configured (with `v1=` values too under
    /// `--signing-v1`).
    pub signer: Option<Signer>,
    /// Whether backend URLs resolving to private addresses are refused.
    pub deny_private_networks: bool,
    /// Origins allowed to open WebSocket connections.
    pub allowed_origins: OriginPolicy,
    /// Origins allowed to use callback URLs cross-origin; `None` means any (`*`).
    pub callback_cors_origins: Option<Vec<axum::http::HeaderValue>>,
    /// Time allowed for TLS handshake plus request head.
    pub handshake_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive HTTP connection.
    pub http_idle_timeout: Duration,
    /// Where to serve metrics, if anywhere.
    pub metrics_address: Option<SocketAddr>,
    /// Time allowed for a graceful shutdown.
    pub shutdown_grace: Duration,
    /// Interval between pings to each client.
    pub ping_interval: Duration,
    /// Silence after which a client is closed.
    pub idle_timeout: Duration,
    /// Age after which a connection is closed, if set.
    pub max_connection_lifetime: Option<Duration>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("address", &self.address)
            .field("base_url", &self.base_url)
            .field("allowlist", &self.allowlist)
            .field("tls", &self.tls.is_some())
            .field("max_message_size", &self.max_message_size)
            .field("backend_timeout", &self.backend_timeout)
            .field("send_queue", &self.send_queue)
            .field("send_queue_bytes", &self.send_queue_bytes)
            .field("callback_body_memory", &self.callback_body_memory)
            .field("read_ahead_messages", &self.read_ahead_messages)
            .field("read_ahead_bytes", &self.read_ahead_bytes)
            .field("backend_retries", &self.backend_retries)
            .field("backend_retry_budget", &self.backend_retry_budget)
            .field("backend_max_connections", &self.backend_max_connections)
            .field("backend_ca", &self.backend_ca.len())
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("max_messages_per_second", &self.max_messages_per_second)
            .field("rate_limit_action", &self.rate_limit_action)
            .field("client_write_timeout", &self.client_write_timeout)
            .field("signer", &self.signer)
            .field("deny_private_networks", &self.deny_private_networks)
            .field("allowed_origins", &self.allowed_origins)
            .field("callback_cors_origins", &self.callback_cors_origins)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("http_idle_timeout", &self.http_idle_timeout)
            .field("metrics_address", &self.metrics_address)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("ping_interval", &self.ping_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connection_lifetime", &self.max_connection_lifetime)
            .finish()
    }
}

impl TryFrom<Cli> for Config {
    type Error = ConfigError;

    fn try_from(cli: Cli) -> Result<Self, ConfigError> {
        let address = resolve_address(&cli.address)?;
        let base_url = cli.base_url.as_deref().map(parse_base_url).transpose()?;
        let allowlist = Allowlist::new(&cli.allowlist, &cli.host_suffix_allowlist)?
            .with_encoded_paths(cli.allow_encoded_paths);
        let tls = match (cli.cert, cli.key) {
            (Some(cert), Some(key)) => Some(tls::server_config(&cert, &key)?),
            (Some(_), None) => {
                return Err(ConfigError::TlsPair {
                    given: "--cert",
                    missing: "--key",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::TlsPair {
                    given: "--key",
                    missing: "--cert",
                });
            }
            (None, None) => None,
        };
        if cli.max_message_size == 0 || cli.max_message_size > MAX_MAX_MESSAGE_SIZE {
            return Err(ConfigError::OutOfRange {
                flag: "--max-message-size",
                value: cli.max_message_size.to_string(),
                reason: format!("must be between 1 and {MAX_MAX_MESSAGE_SIZE} bytes"),
            });
        }
        if cli.send_queue == 0 || cli.send_queue > 1_000_000 {
            return Err(ConfigError::OutOfRange {
                flag: "--send-queue",
                value: cli.send_queue.to_string(),
                reason: "must be between 1 and 1000000 messages".into(),
            });
        }
        for (flag, value, min, max) in [
            (
                "--send-queue-bytes",
                cli.send_queue_bytes,
                1,
                MAX_MAX_MESSAGE_SIZE,
            ),
            ("--read-ahead-messages", cli.read_ahead_messages, 1, 100_000),
            (
                "--callback-body-memory",
                cli.callback_body_memory,
                1,
                MAX_CALLBACK_BODY_MEMORY,
            ),
            (
                "--read-ahead-bytes",
                cli.read_ahead_bytes,
                1,
                MAX_MAX_MESSAGE_SIZE,
            ),
            (
                "--backend-max-connections",
                cli.backend_max_connections,
                1,
                100_000,
            ),
            ("--max-connections", cli.max_connections, 1, 10_000_000),
        ] {
            if value < min || value > max {
                return Err(ConfigError::OutOfRange {
                    flag,
                    value: value.to_string(),
                    reason: format!("must be between {min} and {max}"),
                });
            }
        }
        let signer = signer(&cli.signing_secret, &cli.signing_secret_file)?;
        let signer = match (signer, cli.signing_v1) {
            (Some(signer), v1) => Some(signer.with_v1(v1)),
            (None, false) => None,
            (None, true) => {
                return Err(ConfigError::Secret {
                    flag: "--signing-v1",
                    reason: "there is no secret to sign with: give --signing-secret or --signing-secret-file too".into(),
                });
            }
        };
        let allowed_origins = OriginPolicy::new(&cli.allowed_origin)?;
        let callback_cors_origins = if cli.callback_cors_origin.iter().any(|o| o.trim() == "*") {
            None
        } else {
            Some(
                cli.callback_cors_origin
                    .iter()
                    .map(|o| {
                        axum::http::HeaderValue::from_str(o.trim())
                            .map_err(|_| ConfigError::CorsOrigin(o.clone()))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };
        let backend_ca = match &cli.backend_ca {
            Some(path) => tls::ca_certificates(path)?,
            None => Vec::new(),
        };
        for (flag, value) in [
            ("--backend-timeout", cli.backend_timeout),
            ("--client-write-timeout", cli.client_write_timeout),
            ("--handshake-timeout", cli.handshake_timeout),
            ("--ping-interval", cli.ping_interval),
            ("--idle-timeout", cli.idle_timeout),
            (
                "--max-connection-lifetime",
                cli.max_connection_lifetime.unwrap_or(Duration::MAX),
            ),
        ] {
            if value.is_zero() {
                return Err(ConfigError::OutOfRange {
                    flag,
                    value: "0s".into(),
                    reason: "must be longer than zero".into(),
                });
            }
        }
        if cli.http_idle_timeout <= cli.backend_timeout {
            return Err(ConfigError::OutOfRange {
                flag: "--http-idle-timeout",
                value: humantime::format_duration(cli.http_idle_timeout).to_string(),
                reason: format!(
                    "must be longer than --backend-timeout ({}), or a connect hook could outlast it",
                    humantime::format_duration(cli.backend_timeout)
                ),
            });
        }
        if cli.idle_timeout <= cli.ping_interval {
            return Err(ConfigError::OutOfRange {
                flag: "--idle-timeout",
                value: humantime::format_duration(cli.idle_timeout).to_string(),
                reason: format!(
                    "must be longer than --ping-interval ({}), or every client would be closed between two pings",
                    humantime::format_duration(cli.ping_interval)
                ),
            });
        }
        Ok(Config {
            address,
            base_url,
            allowlist: Arc::new(allowlist),
            tls,
            max_message_size: cli.max_message_size,
            backend_timeout: cli.backend_timeout,
            send_queue: cli.send_queue,
            send_queue_bytes: cli.send_queue_bytes,
            callback_body_memory: cli.callback_body_memory,
            read_ahead_messages: cli.read_ahead_messages,
            read_ahead_bytes: cli.read_ahead_bytes,
            backend_retries: cli.backend_retries,
            backend_retry_budget: cli.backend_retry_budget,
            backend_max_connections: cli.backend_max_connections,
            backend_ca,
            max_connections: cli.max_connections,
            max_connections_per_ip: cli.max_connections_per_ip,
            trusted_proxies: TrustedProxies::new(&cli.trusted_proxy)?,
            max_messages_per_second: cli.max_messages_per_second,
            rate_limit_action: cli.rate_limit_action,
            client_write_timeout: cli.client_write_timeout,
            signer,
            deny_private_networks: cli.deny_private_networks,
            allowed_origins,
            callback_cors_origins,
            handshake_timeout: cli.handshake_timeout,
            http_idle_timeout: cli.http_idle_timeout,
            metrics_address: cli
                .metrics_address
                .as_deref()
                .map(|a| resolve_address(a).map_err(|e| rename_address(e, "--metrics-address")))
                .transpose()?,
            shutdown_grace: cli.shutdown_grace,
            ping_interval: cli.ping_interval,
            idle_timeout: cli.idle_timeout,
            max_connection_lifetime: cli.max_connection_lifetime,
        })
    }
}

impl Config {
    /// Builds a configuration from command-line style arguments (without the program name),
    /// ignoring the environment's defaults only in the sense that clap still reads
    /// `WS_BRIDGE_*` variables. Handy for tests and examples.
    pub fn from_args<I, S>(args: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        let argv = std::iter::once(std::ffi::OsString::from("websocket-bridge"))
            .chain(args.into_iter().map(Into::into));
        let cli = Cli::try_parse_from(argv).map_err(|e| first_line(&e.to_string()))?;
        Config::try_from(cli).map_err(|e| e.to_string())
    }
}

/// Why the command line could not be turned into a [`Cli`].
#[derive(Debug)]
pub enum CliError {
    /// clap's own outcome (help, version, or a usage error).
    Clap(clap::Error),
    /// The `--config` file is unusable.
    Config(ConfigError),
}

impl Cli {
    /// Parses the command line and the environment, then fills what neither set from the
    /// `--config` file: precedence flag > environment > file > default.
    pub fn parse_layered<I, T>(args: I) -> Result<Cli, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::CommandFactory;
        use clap::parser::ValueSource;
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let command = Cli::command();
        let matches = command
            .clone()
            .try_get_matches_from(&args)
            .map_err(CliError::Clap)?;
        let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
            return Cli::try_parse_from(&args).map_err(CliError::Clap);
        };
        let file_err = |reason: String| {
            CliError::Config(ConfigError::File {
                path: path.clone(),
                reason,
            })
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| file_err(format!("cannot read it ({e})")))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_err(first_line(&e.to_string())))?;
        let mut from_file: Vec<std::ffi::OsString> = Vec::new();
        for (key, value) in &table {
            let long = key.replace('_', "-");
            let Some(arg) = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .filter(|_| {
                    !matches!(
                        long.as_str(),
                        "config" | "check-config" | "help" | "version"
                    )
                })
            else {
                return Err(file_err(format!(
                    "unknown key `{key}`: keys are the long flag names, e.g. max-message-size"
                )));
            };
            let source = matches.value_source(arg.get_id().as_str());
            if matches!(
                source,
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            let takes_value = arg.get_action().takes_values();
            let values: Vec<String> = match value {
                toml::Value::Array(items) => items.iter().map(toml_scalar).collect(),
                other => vec![toml_scalar(other)],
            };
            if takes_value {
                for v in values {
                    from_file.push(format!("--{long}={v}").into());
                }
            } else {
                match value {
                    toml::Value::Boolean(true) => from_file.push(format!("--{long}").into()),
                    toml::Value::Boolean(false) => {}
                    _ => return Err(file_err(format!("`{key}` is a switch: use true or false"))),
                }
            }
        }
        let mut layered = Vec::with_capacity(args.len() + from_file.len());
        layered.extend(args.first().cloned());
        layered.extend(from_file);
        layered.extend(args.iter().skip(1).cloned());
        Cli::try_parse_from(layered).map_err(CliError::Clap)
    }
}

fn toml_scalar(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Config {
    /// The effective configuration as `flag = value` lines, secrets redacted, for
    /// `--check-config`.
    pub fn describe(&self) -> String {
        let d = |v: Duration| humantime::format_duration(v).to_string();
        let list = |v: &[String]| format!("{v:?}");
        let lines: Vec<(&str, String)> = vec![
            ("address", self.address.to_string()),
            (
                "base-url",
                self.base_url
                    .clone()
                    .unwrap_or_else(|| "(from the bound address)".into()),
            ),
            ("allowlist", list(&self.allowlist.patterns())),
            (
                "host-suffix-allowlist",
                list(&self.allowlist.host_suffixes()),
            ),
            (
                "allow-encoded-paths",
                self.allowlist.admits_encoded_paths().to_string(),
            ),
            (
                "tls",
                if self.tls.is_some() {
                    "on".into()
                } else {
                    "off".into()
                },
            ),
            ("max-message-size", self.max_message_size.to_string()),
            ("backend-timeout", d(self.backend_timeout)),
            ("backend-retries", self.backend_retries.to_string()),
            ("backend-retry-budget", d(self.backend_retry_budget)),
            (
                "backend-max-connections",
                self.backend_max_connections.to_string(),
            ),
            (
                "backend-ca",
                format!("{} certificate(s)", self.backend_ca.len()),
            ),
            ("send-queue", self.send_queue.to_string()),
            ("send-queue-bytes", self.send_queue_bytes.to_string()),
            (
                "callback-body-memory",
                self.callback_body_memory.to_string(),
            ),
            ("read-ahead-messages", self.read_ahead_messages.to_string()),
            ("read-ahead-bytes", self.read_ahead_bytes.to_string()),
            ("max-connections", self.max_connections.to_string()),
            (
                "max-connections-per-ip",
                self.max_connections_per_ip.to_string(),
            ),
            ("trusted-proxy", list(&self.trusted_proxies.entries())),
            (
                "max-messages-per-second",
                self.max_messages_per_second.to_string(),
            ),
            ("rate-limit-action", self.rate_limit_action.as_str().into()),
            ("client-write-timeout", d(self.client_write_timeout)),
            (
                "signing-secret",
                match &self.signer {
                    Some(s) => format!("{} secret(s), redacted", s.len()),
                    None => "none".into(),
                },
            ),
            (
                "signing-v1",
                self.signer
                    .as_ref()
                    .is_some_and(Signer::sends_v1)
                    .to_string(),
            ),
            (
                "deny-private-networks",
                self.deny_private_networks.to_string(),
            ),
            ("allowed-origin", list(&self.allowed_origins.entries())),
            (
                "callback-cors-origin",
                match &self.callback_cors_origins {
                    None => "*".into(),
                    Some(list) => format!("{list:?}"),
                },
            ),
            ("handshake-timeout", d(self.handshake_timeout)),
            ("http-idle-timeout", d(self.http_idle_timeout)),
            (
                "metrics-address",
                self.metrics_address
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "off".into()),
            ),
            ("ping-interval", d(self.ping_interval)),
            ("idle-timeout", d(self.idle_timeout)),
            (
                "max-connection-lifetime",
                self.max_connection_lifetime
                    .map(d)
                    .unwrap_or_else(|| "none".into()),
            ),
            ("shutdown-grace", d(self.shutdown_grace)),
        ];
        lines
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    }
}

/// Builds the signer from `--signing-secret` values and `--signing-secret-file` contents.
fn signer(secrets: &[String], files: &[PathBuf]) -> Result<Option<Signer>, ConfigError> {
    let mut all: Vec<Vec<u8>> = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        all.push(secret.as_bytes().to_vec());
    }
    for path in files {
        let mut bytes = std::fs::read(path).map_err(|e| ConfigError::Secret {
            flag: "--signing-secret-file",
            reason: format!("cannot read {path:?} ({e})"),
        })?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        all.push(bytes);
    }
    if let Some(short) = all.iter().find(|s| s.len() < MIN_SECRET_BYTES) {
        return Err(ConfigError::Secret {
            flag: "--signing-secret",
            reason: format!(
                "a secret of {} bytes is too short: use at least {MIN_SECRET_BYTES} random bytes (e.g. openssl rand -hex 32)",
                short.len()
            ),
        });
    }
    Ok((!all.is_empty()).then(|| Signer::new(&all)))
}

/// The first non-empty line of a (possibly multi-line) message.
pub fn first_line(message: &str) -> String {
    message
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message)
        .trim()
        .to_owned()
}

fn rename_address(e: ConfigError, flag: &'static str) -> ConfigError {
    match e {
        ConfigError::Address { value, reason } => ConfigError::OutOfRange {
            flag,
            value,
            reason,
        },
        other => other,
    }
}

fn resolve_address(value: &str) -> Result<SocketAddr, ConfigError> {
    let err = |reason: String| ConfigError::Address {
        value: value.to_owned(),
        reason,
    };
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut addrs = value
        .to_socket_addrs()
        .map_err(|e| err(format!("expected HOST:PORT, e.g. 127.0.0.1:8080 ({e})")))?;
    addrs
        .next()
        .ok_or_else(|| err("the host resolves to no address".into()))
}

/// Checks a `--base-url` and normalises it to have no trailing slash.
fn parse_base_url(value: &str) -> Result<String, ConfigError> {
    let err = |reason: &str| ConfigError::BaseUrl {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url =
        Url::parse(value.trim()).map_err(|e| err(&format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err("the scheme must be http or https"));
    }
    if url.host_str().is_none() {
        return Err(err("a host is required"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err("user info is not allowed"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("a query or fragment is not allowed"));
    }
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Parses a byte count with an optional binary (`KiB`, `MiB`, `GiB`) or decimal (`KB`, `MB`,
/// `GB`) suffix.
pub fn parse_size(value: &str) -> Result<usize, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{value:?} is not a byte count (e.g. 1048576 or 1MiB)"))?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("{value:?} is too large"))
}

/// Longest number in a duration: 999,999,999 years is far beyond any setting, and the bound
/// keeps every sum far from `u64::MAX` seconds, where humantime 2.4 panics instead of
/// reporting an overflow (found by `fuzz/fuzz_targets/small_values.rs`:
/// `18446744073709551615s 500ms 500ms`).
const MAX_DURATION_DIGITS: usize = 9;
/// Longest duration text; with [`MAX_DURATION_DIGITS`] it bounds the sum of all terms.
const MAX_DURATION_LEN: usize = 256;

/// Parses a duration such as `10s`, `250ms` or `1m 30s`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let longest_number = value
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest_number > MAX_DURATION_DIGITS || value.len() > MAX_DURATION_LEN {
        return Err(format!(
            "{value:?} is too large a duration (at most {MAX_DURATION_DIGITS} digits per number, {MAX_DURATION_LEN} characters)"
        ));
    }
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("{value:?} is not a duration such as 10s or 500ms ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("512 KiB"), Ok(524_288));
        assert_eq!(parse_size("2KB"), Ok(2_000));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1 parsec").is_err());
    }

    #[test]
    fn huge_durations_are_refused_not_a_panic() {
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("999999999s"),
            Ok(Duration::from_secs(999_999_999))
        );
        assert!(parse_duration("18446744073709551615s 500ms 500ms").is_err());
        assert!(parse_duration("1000000000s").is_err());
        assert!(parse_duration(&"1s ".repeat(100)).is_err());
    }

    #[test]
    fn base_url_loses_its_trailing_slash() {
        let url = parse_base_url("https://bridge.example/ws/");
        assert_eq!(url.ok().as_deref(), Some("https://bridge.example/ws"));
        let url = parse_base_url("https://bridge.example/");
        assert_eq!(url.ok().as_deref(), Some("https://bridge.example"));
        let url = parse_base_url("https://bridge.example:8443");
        assert_eq!(url.ok().as_deref(), Some("https://bridge.example:8443"));
        assert!(parse_base_url("ftp://bridge.example").is_err());
        assert!(parse_base_url("https://u:p@bridge.example").is_err());
        assert!(parse_base_url("https://bridge.example/?q=1").is_err());
    }

    #[test]
    fn cert_without_key_is_refused() {
        let err = Config::from_args(["--allowlist", ".*", "--cert", "/nonexistent.pem"]);
        let msg = err.err().unwrap_or_default();
        assert!(msg.contains("--cert") && msg.contains("--key"), "{msg}");
    }

    #[test]
    fn bad_flags_name_themselves() {
        let msg = Config::from_args(["--max-message-size", "lots"])
            .err()
            .unwrap_or_default();
        assert!(msg.contains("--max-message-size"), "{msg}");
        let msg = Config::from_args(["--allowlist", "("])
            .err()
            .unwrap_or_default();
        assert!(msg.contains("--allowlist"), "{msg}");
        let msg = Config::from_args(["--address", "nowhere"])
            .err()
            .unwrap_or_default();
        assert!(msg.contains("--address"), "{msg}");
        let msg = Config::from_args(["--send-queue", "0"])
            .err()
            .unwrap_or_default();
        assert!(msg.contains("--send-queue"), "{msg}");
    }

    #[test]
    fn signing_v1_needs_a_secret_and_reaches_the_signer() {
        let msg = Config::from_args(["--signing-v1"])
            .err()
            .unwrap_or_default();
        assert!(
            msg.contains("--signing-v1") && msg.contains("--signing-secret"),
            "{msg}"
        );
        let secret = "a-secret-of-enough-bytes";
        let plain = Config::from_args(["--signing-secret", secret]);
        let plain = plain.ok().and_then(|c| c.signer);
        assert!(plain.is_some_and(|s| !s.sends_v1()));
        let both = Config::from_args(["--signing-secret", secret, "--signing-v1"]);
        let both = both.ok().and_then(|c| c.signer);
        assert!(both.is_some_and(|s| s.sends_v1()));
    }
}
