//! The validated configuration: [`Config`], built from the command line ([`Cli`], in
//! [`cli`]) by `Config::try_from(cli)`, which checks every flag against the others and loads
//! the TLS files and secrets. Nothing is bound before a `Config` exists.
//!
//! A `Config` is one typed sub-config per consumer ([`ServerConfig`], [`SessionConfig`],
//! [`CallbackConfig`], [`BackendConfig`], [`LimitsConfig`], [`PublishConfig`]): each part of the bridge is handed
//! its own and sees nothing else. This module owns no sockets and starts no tasks.
//!
//!
//! Longer than 400 lines on purpose: every sub-config field carries the doc of what it bounds,
//! and every cross-flag check lives here, next to the others.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use clap::Parser;
use rustls::pki_types::CertificateDer;

use crate::policy::allowlist::{Allowlist, AllowlistError};
use crate::policy::forwarded::{TrustedProxies, TrustedProxyError};
use crate::policy::origin::{OriginError, OriginPolicy};
use crate::protocol::signing::{MIN_SECRET_BYTES, Signer};
use cli::MAX_MAX_MESSAGE_SIZE;
use parse::{ValueError, resolve_address};
use tls::TlsError;

pub(crate) use cluster::{ClusterConfig, NodeId, RedisTarget};
pub(crate) use publish::PublishConfig;
pub(crate) mod cli;
mod cluster;
pub(crate) mod parse;
mod publish;
pub(crate) mod route;
pub(crate) mod tls;

pub(crate) use cli::RateLimitAction;
pub use cli::{Cli, CliError, LogFormat};
pub(crate) use parse::BaseUrl;
pub use tls::install_crypto_provider;

/// Largest accepted `--callback-body-memory` (tokio's semaphores count at most 2^61 permits;
/// 64 GiB is far beyond any machine this runs on).
const MAX_CALLBACK_BODY_MEMORY: usize = 64 << 30;

/// A configuration error; the message names the flag and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag's value does not parse (an address, the base URL).
    #[error("{flag} {value:?}: {reason}")]
    Value {
        flag: &'static str,
        value: String,
        reason: ValueError,
    },
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
    /// `--publish-address` is not loopback and no `--publish-secret` was given.
    #[error(
        "--publish-address {0} is reachable from other machines but no --publish-secret was given: set one (e.g. openssl rand -hex 32), or listen on 127.0.0.1"
    )]
    PublishWithoutSecret(SocketAddr),
    /// A cluster flag is wrong.
    #[error("{0}")]
    Cluster(String),
    /// A `--route` is wrong.
    #[error("--route {spec:?}: {reason}")]
    Route { spec: String, reason: String },
    /// A numeric flag is out of range.
    #[error("{flag} {value}: {reason}")]
    OutOfRange {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

/// The validated configuration the bridge runs on, one part per consumer.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) session: SessionConfig,
    pub(crate) callback: CallbackConfig,
    pub(crate) backend: BackendConfig,
    pub(crate) limits: LimitsConfig,
    pub(crate) publish: PublishConfig,
    /// Cluster mode, when `--redis-url` is given.
    pub(crate) cluster: Option<ClusterConfig>,
    /// The flags as `--check-config` prints them.
    description: String,
}

/// What the listeners, the HTTP layer and the drain need.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    /// Where to listen (`--address`, resolved).
    pub(crate) address: SocketAddr,
    /// `--base-url`; `None`: derived from the bound address.
    pub(crate) base_url: Option<BaseUrl>,
    /// TLS on the listener (`--cert`/`--key`).
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Time for the TLS handshake and a request head.
    pub(crate) handshake_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive HTTP connection.
    pub(crate) http_idle_timeout: Duration,
    /// Where to serve metrics, if anywhere.
    pub(crate) metrics_address: Option<SocketAddr>,
    /// Time allowed for a graceful shutdown.
    pub(crate) shutdown_grace: Duration,
}

/// What the handshake and the connection tasks need.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    /// Which backend URLs clients may name.
    pub(crate) allowlist: Arc<Allowlist>,
    /// Paths the operator bound to backends (`--route`).
    pub(crate) routes: Arc<route::Routes>,
    /// `--grip-key`: signs `Grip-Sig` to websocket-over-http backends.
    pub(crate) grip_key: Option<Arc<[u8]>>,
    /// Origins allowed to open WebSocket connections.
    pub(crate) allowed_origins: OriginPolicy,
    /// Proxies whose forwarding headers are believed.
    pub(crate) trusted_proxies: TrustedProxies,
    /// Whether backend URLs resolving to private addresses are refused.
    pub(crate) deny_private_networks: bool,
    /// Whether clients reach the bridge over TLS (for `x-forwarded-proto`).
    pub(crate) tls: bool,
    /// Largest message from a client, in bytes.
    pub(crate) max_message_size: usize,
    /// Capacity of each connection's outbound queue, in messages.
    pub(crate) send_queue: usize,
    /// Capacity of each connection's outbound queue, in payload bytes.
    pub(crate) send_queue_bytes: usize,
    /// Channels one connection may be in.
    pub(crate) max_channels_per_connection: usize,
    /// This node's id in a cluster: callback tokens are then `{node}.{uuid}`.
    pub(crate) node: Option<NodeId>,
    /// Client messages read ahead while a POST is in flight.
    pub(crate) read_ahead_messages: usize,
    /// Client bytes read ahead while a POST is in flight.
    pub(crate) read_ahead_bytes: usize,
    /// permessage-deflate: whether to negotiate it, and whether with context takeover.
    pub(crate) deflate: Option<bool>,
    /// Messages per second per client, and what happens beyond; `None`: no limit.
    pub(crate) rate_limit: Option<(u32, RateLimitAction)>,
    /// Time allowed for one write to a client.
    pub(crate) client_write_timeout: Duration,
    /// Interval between pings to each client.
    pub(crate) ping_interval: Duration,
    /// Silence after which a client is closed.
    pub(crate) idle_timeout: Duration,
    /// Age after which a connection is closed, if set.
    pub(crate) max_connection_lifetime: Option<Duration>,
}

/// What the callback API needs.
#[derive(Debug, Clone)]
pub(crate) struct CallbackConfig {
    /// Largest callback body, in bytes.
    pub(crate) max_message_size: usize,
    /// Origins allowed to use callback URLs from a browser; `None` means any (`*`).
    pub(crate) cors_origins: Option<Vec<HeaderValue>>,
    /// Time for a whole callback body to arrive.
    pub(crate) body_timeout: Duration,
    /// Bytes of callback bodies held while being read, bridge-wide.
    pub(crate) body_memory: usize,
}

/// What the backend client needs.
#[derive(Debug, Clone)]
pub(crate) struct BackendConfig {
    /// Time for one attempt.
    pub(crate) timeout: Duration,
    /// Largest reply body.
    pub(crate) max_reply_size: usize,
    /// Concurrent requests per backend host:port.
    pub(crate) max_connections_per_host: usize,
    /// Retries after transient failures.
    pub(crate) retries: u32,
    /// Time budget for the retries of one request.
    pub(crate) retry_budget: Duration,
    /// Extra trusted CA certificates for https backends (DER).
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
    /// Signs every request, when secrets are configured.
    pub(crate) signer: Option<Signer>,
    /// Resolve names through the guarded resolver (`--deny-private-networks`).
    pub(crate) deny_private_networks: bool,
}

/// The connection limits, before the open-files limit is taken into account.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitsConfig {
    /// `--max-connections`.
    pub(crate) max_connections: usize,
    /// `--max-connections-per-ip` (0: no limit).
    pub(crate) max_connections_per_ip: usize,
}

impl TryFrom<Cli> for Config {
    type Error = ConfigError;

    fn try_from(cli: Cli) -> Result<Self, ConfigError> {
        check_ranges(&cli)?;
        check_timeouts(&cli)?;
        let server = server_config(&cli)?;
        let cluster = cluster::cluster_config(&cli)?;
        let mut session = session_config(&cli, server.tls.is_some())?;
        session.node = cluster.as_ref().map(|c| c.node.clone());
        Ok(Config {
            session,
            callback: callback_config(&cli)?,
            backend: backend_config(&cli)?,
            limits: LimitsConfig {
                max_connections: cli.max_connections,
                max_connections_per_ip: cli.max_connections_per_ip,
            },
            publish: publish::publish_config(&cli)?,
            cluster,
            server,
            description: cli.describe(),
        })
    }
}

/// A parse error of `flag`'s `value`, as a [`ConfigError`].
fn value_error(flag: &'static str, value: &str) -> impl FnOnce(ValueError) -> ConfigError {
    let value = value.to_owned();
    move |reason| ConfigError::Value {
        flag,
        value,
        reason,
    }
}

fn server_config(cli: &Cli) -> Result<ServerConfig, ConfigError> {
    let address = resolve_address(&cli.address).map_err(value_error("--address", &cli.address))?;
    let base_url = match cli.base_url.as_deref() {
        Some(raw) => Some(BaseUrl::parse(raw).map_err(value_error("--base-url", raw))?),
        None => None,
    };
    let metrics_address = match cli.metrics_address.as_deref() {
        Some(raw) => Some(resolve_address(raw).map_err(value_error("--metrics-address", raw))?),
        None => None,
    };
    let tls = match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
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
    Ok(ServerConfig {
        address,
        base_url,
        tls,
        handshake_timeout: cli.handshake_timeout,
        http_idle_timeout: cli.http_idle_timeout,
        metrics_address,
        shutdown_grace: cli.shutdown_grace,
    })
}

fn session_config(cli: &Cli, tls: bool) -> Result<SessionConfig, ConfigError> {
    let allowlist = Allowlist::new(&cli.allowlist, &cli.host_suffix_allowlist)?
        .with_encoded_paths(cli.allow_encoded_paths);
    Ok(SessionConfig {
        allowlist: Arc::new(allowlist),
        routes: Arc::new(route::Routes::new(&cli.route)?),
        grip_key: cli.grip_key.as_ref().map(|k| Arc::from(k.as_bytes())),
        allowed_origins: OriginPolicy::new(&cli.allowed_origin)?,
        trusted_proxies: TrustedProxies::new(&cli.trusted_proxy)?,
        deny_private_networks: cli.deny_private_networks,
        tls,
        max_message_size: cli.max_message_size,
        send_queue: cli.send_queue,
        send_queue_bytes: cli.send_queue_bytes,
        max_channels_per_connection: cli.max_channels_per_connection,
        node: None,
        read_ahead_messages: cli.read_ahead_messages,
        read_ahead_bytes: cli.read_ahead_bytes,
        deflate: cli.deflate.then_some(cli.deflate_context_takeover),
        rate_limit: (cli.max_messages_per_second > 0)
            .then_some((cli.max_messages_per_second, cli.rate_limit_action)),
        client_write_timeout: cli.client_write_timeout,
        ping_interval: cli.ping_interval,
        idle_timeout: cli.idle_timeout,
        max_connection_lifetime: cli.max_connection_lifetime,
    })
}

fn callback_config(cli: &Cli) -> Result<CallbackConfig, ConfigError> {
    let cors_origins = if cli.callback_cors_origin.iter().any(|o| o.trim() == "*") {
        None
    } else {
        let parse = |o: &String| {
            HeaderValue::from_str(o.trim()).map_err(|_| ConfigError::CorsOrigin(o.clone()))
        };
        Some(
            cli.callback_cors_origin
                .iter()
                .map(parse)
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    Ok(CallbackConfig {
        max_message_size: cli.max_message_size,
        cors_origins,
        body_timeout: cli.handshake_timeout,
        body_memory: cli.callback_body_memory,
    })
}

fn backend_config(cli: &Cli) -> Result<BackendConfig, ConfigError> {
    let signer = match (
        signer(&cli.signing_secret, &cli.signing_secret_file)?,
        cli.signing_v1,
    ) {
        (Some(signer), v1) => Some(signer.with_v1(v1)),
        (None, false) => None,
        (None, true) => {
            return Err(ConfigError::Secret {
                flag: "--signing-v1",
                reason: "there is no secret to sign with: give --signing-secret or --signing-secret-file too".into(),
            });
        }
    };
    let extra_roots = match &cli.backend_ca {
        Some(path) => tls::ca_certificates(path)?,
        None => Vec::new(),
    };
    Ok(BackendConfig {
        timeout: cli.backend_timeout,
        max_reply_size: cli.max_message_size,
        max_connections_per_host: cli.backend_max_connections,
        retries: cli.backend_retries,
        retry_budget: cli.backend_retry_budget,
        extra_roots,
        signer,
        deny_private_networks: cli.deny_private_networks,
    })
}

/// Numeric flags within their bounds.
fn check_ranges(cli: &Cli) -> Result<(), ConfigError> {
    for (flag, value, min, max) in [
        (
            "--max-message-size",
            cli.max_message_size,
            1,
            MAX_MAX_MESSAGE_SIZE,
        ),
        ("--send-queue", cli.send_queue, 1, 1_000_000),
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
        (
            "--max-channels-per-connection",
            cli.max_channels_per_connection,
            1,
            100_000,
        ),
        (
            "--max-publish-size",
            cli.max_publish_size,
            1,
            MAX_MAX_MESSAGE_SIZE,
        ),
    ] {
        if value < min || value > max {
            return Err(ConfigError::OutOfRange {
                flag,
                value: value.to_string(),
                reason: format!("must be between {min} and {max}"),
            });
        }
    }
    Ok(())
}

/// Durations above zero, and the ones that must outlast others.
fn check_timeouts(cli: &Cli) -> Result<(), ConfigError> {
    let show = |d: Duration| humantime::format_duration(d).to_string();
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
            value: show(cli.http_idle_timeout),
            reason: format!(
                "must be longer than --backend-timeout ({}), or a connect hook could outlast it",
                show(cli.backend_timeout)
            ),
        });
    }
    if cli.idle_timeout <= cli.ping_interval {
        return Err(ConfigError::OutOfRange {
            flag: "--idle-timeout",
            value: show(cli.idle_timeout),
            reason: format!(
                "must be longer than --ping-interval ({}), or every client would be closed between two pings",
                show(cli.ping_interval)
            ),
        });
    }
    Ok(())
}

impl Config {
    /// Where to listen (`--address`, resolved).
    pub fn address(&self) -> SocketAddr {
        self.server.address
    }

    /// The effective configuration as `flag = value` lines, secrets redacted, for
    /// `--check-config`.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Builds a configuration from command-line style arguments (without the program name);
    /// clap still reads `WS_BRIDGE_*` variables. Handy for tests and examples.
    pub fn from_args<I, S>(args: I) -> Result<Self, CliError>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        let argv = std::iter::once(std::ffi::OsString::from("websocket-bridge"))
            .chain(args.into_iter().map(Into::into));
        let cli = Cli::try_parse_from(argv).map_err(CliError::Clap)?;
        Config::try_from(cli).map_err(CliError::Config)
    }
}

/// Builds the signer from `--signing-secret` values and `--signing-secret-file` contents.
fn signer(secrets: &[String], files: &[PathBuf]) -> Result<Option<Signer>, ConfigError> {
    let all = read_secrets(
        ("--signing-secret", "--signing-secret-file"),
        secrets,
        files,
    )?;
    Ok((!all.is_empty()).then(|| Signer::new(&all)))
}

/// The secrets given inline and in files, each at least [`MIN_SECRET_BYTES`] long.
pub(crate) fn read_secrets(
    (flag, file_flag): (&'static str, &'static str),
    secrets: &[String],
    files: &[PathBuf],
) -> Result<Vec<Vec<u8>>, ConfigError> {
    let mut all: Vec<Vec<u8>> = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        all.push(secret.as_bytes().to_vec());
    }
    for path in files {
        let mut bytes = std::fs::read(path).map_err(|e| ConfigError::Secret {
            flag: file_flag,
            reason: format!("cannot read {path:?} ({e})"),
        })?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        all.push(bytes);
    }
    if let Some(short) = all.iter().find(|s| s.len() < MIN_SECRET_BYTES) {
        return Err(ConfigError::Secret {
            flag,
            reason: format!(
                "a secret of {} bytes is too short: use at least {MIN_SECRET_BYTES} random bytes (e.g. openssl rand -hex 32)",
                short.len()
            ),
        });
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(args: &[&str]) -> String {
        Config::from_args(args)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn cert_without_key_is_refused() {
        let msg = refusal(&["--allowlist", ".*", "--cert", "/nonexistent.pem"]);
        assert!(msg.contains("--cert") && msg.contains("--key"), "{msg}");
    }

    #[test]
    fn bad_flags_name_themselves() {
        for (args, flag) in [
            (&["--max-message-size", "lots"][..], "--max-message-size"),
            (&["--allowlist", "("], "--allowlist"),
            (&["--address", "nowhere"], "--address"),
            (&["--send-queue", "0"], "--send-queue"),
            (&["--base-url", "ftp://x"], "--base-url"),
            (&["--metrics-address", "nowhere"], "--metrics-address"),
        ] {
            let msg = refusal(args);
            assert!(msg.contains(flag), "{args:?}: {msg}");
            assert_eq!(msg.lines().count(), 1, "{msg}");
        }
    }

    #[test]
    fn signing_v1_needs_a_secret() {
        let msg = refusal(&["--signing-v1"]);
        assert!(msg.contains("--signing-v1"), "{msg}");
        let config =
            Config::from_args(["--signing-secret", "0123456789abcdef0123", "--signing-v1"]);
        assert!(config.is_ok_and(|c| c.describe().contains("signing-v1 = true")));
    }

    #[test]
    fn the_description_lists_every_flag_and_no_secret() {
        let config = Config::from_args([
            "--signing-secret",
            "s3cret-s3cret-s3cret",
            "--allowlist",
            "a",
            "--allowlist",
            "b",
        ]);
        let text = config.map(|c| c.describe().to_owned()).unwrap_or_default();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("signing-secret = 1 secret(s), redacted"),
            "{text}"
        );
        assert!(text.contains("allowlist = [\"a\", \"b\"]"), "{text}");
        assert!(text.contains("max-connection-lifetime = none"), "{text}");
        assert!(text.contains("backend-timeout = 10s"), "{text}");
        assert!(!text.contains("check-config"), "{text}");
    }
}
