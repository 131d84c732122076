//! The command line: [`Cli`] (clap: flags, each also read from a `WS_BRIDGE_*` environment
//! variable), layered over a `--config` TOML file ([`Cli::parse_layered`]), and rendered back
//! as `key = value` lines for `--check-config` ([`Cli::describe`]). Values are parsed here;
//! they are checked against each other in [`crate::config`].
//!
//!
//! Longer than 400 lines on purpose: one documented field per flag, whose help text is the
//! `--help` output.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::ConfigError;
use super::parse::{first_line, parse_duration, parse_size};

/// Largest accepted `--max-message-size`: whole messages are held in memory, so this is a cap
/// on what one connection may cost.
pub(crate) const MAX_MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

/// Command-line flags. Every flag can also be set through the environment variable named in
/// its help; a flag on the command line wins over the environment.
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
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
    #[serde(skip)]
    pub(crate) config: Option<PathBuf>,

    /// Validate the configuration, print the effective values (secrets redacted) and exit: 0
    /// when valid, 64 when not.
    #[arg(long)]
    #[serde(skip)]
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
    pub(crate) address: String,

    /// Public base URL of this bridge; callback URLs are `{base-url}/{id}` and the callback API
    /// is served under the base URL's path. [default: http(s)://{bound address}]
    #[arg(long, env = "WS_BRIDGE_BASE_URL", value_name = "URL")]
    pub(crate) base_url: Option<String>,

    /// A path bound to a backend, `PATH=URL[,protocol=seed|websocket-over-http]` (seed routes
    /// may add `,disconnect=URL` and `,connect=URL`); repeatable (newline-separated in the
    /// environment). Clients open the path; route targets bypass the allowlist. A path ending
    /// in / matches its subtree. [default: none]
    #[arg(
        long,
        env = "WS_BRIDGE_ROUTE",
        value_name = "PATH=URL[,OPTIONS]",
        value_delimiter = '\n'
    )]
    pub(crate) route: Vec<String>,

    /// Key that signs `Grip-Sig` (an HS256 JWT, as Pushpin sends it) on every request to a
    /// websocket-over-http route's backend, so `validate_sig` in GRIP libraries accepts it.
    /// [default: none, no Grip-Sig]
    #[arg(
        long,
        env = "WS_BRIDGE_GRIP_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    #[serde(serialize_with = "show::optional_secret")]
    pub(crate) grip_key: Option<String>,

    /// Regular expression a backend URL must match as a whole (anchored); repeatable. In the
    /// environment variable, separate several with newlines. Without any allowlist entry every
    /// connection is refused. [default: none]
    #[arg(
        long,
        env = "WS_BRIDGE_ALLOWLIST",
        value_name = "REGEX",
        value_delimiter = '\n'
    )]
    pub(crate) allowlist: Vec<String>,

    /// Host suffix (e.g. `.example.com`) that admits https backend URLs whose parsed host is
    /// that domain or a subdomain of it; repeatable (newline-separated in the environment).
    /// [default: none]
    #[arg(
        long,
        env = "WS_BRIDGE_HOST_SUFFIX_ALLOWLIST",
        value_name = "SUFFIX",
        value_delimiter = '\n'
    )]
    pub(crate) host_suffix_allowlist: Vec<String>,

    /// Admit backend URLs whose path holds an encoded `/`, `\\` or `.` (`%2F`, `%5C`, `%2E`) or
    /// a `;` path parameter. Off, such URLs get 400: many servers decode them after routing,
    /// so `/ws/..%2fadmin` could reach a path outside an allowed prefix. [default: off]
    #[arg(long, env = "WS_BRIDGE_ALLOW_ENCODED_PATHS")]
    pub(crate) allow_encoded_paths: bool,

    /// PEM certificate chain for TLS (leaf first); requires --key. [default: none, plain TCP]
    #[arg(long, env = "WS_BRIDGE_CERT", value_name = "PATH")]
    pub(crate) cert: Option<PathBuf>,

    /// PEM private key for TLS (PKCS#8, PKCS#1 or SEC1); requires --cert. [default: none]
    #[arg(long, env = "WS_BRIDGE_KEY", value_name = "PATH")]
    pub(crate) key: Option<PathBuf>,

    /// Largest message, in bytes, in either direction (client messages, callback bodies,
    /// backend replies); suffixes KiB, MiB are accepted. [default: 1MiB]
    #[arg(long, env = "WS_BRIDGE_MAX_MESSAGE_SIZE", default_value = "1MiB", value_name = "BYTES", value_parser = parse_size)]
    pub(crate) max_message_size: usize,

    /// Time allowed for one backend request, from connecting to reading the whole answer,
    /// e.g. `10s`, `500ms`. [default: 10s]
    #[arg(long, env = "WS_BRIDGE_BACKEND_TIMEOUT", default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "show::duration")]
    pub(crate) backend_timeout: Duration,

    /// Messages that may wait to be written to one client; a callback POST beyond it gets 503
    /// with Retry-After. [default: 64]
    #[arg(
        long,
        env = "WS_BRIDGE_SEND_QUEUE",
        default_value_t = 64,
        value_name = "MESSAGES"
    )]
    pub(crate) send_queue: usize,

    /// Bytes that may wait to be written to one client (a single message larger than this is
    /// still accepted when the queue is empty). [default: 4MiB]
    #[arg(long, env = "WS_BRIDGE_SEND_QUEUE_BYTES", default_value = "4MiB", value_name = "BYTES", value_parser = parse_size)]
    pub(crate) send_queue_bytes: usize,

    /// Bytes of callback request bodies held while being read, bridge-wide; a body takes its
    /// share as its bytes arrive. When it is full a callback waits up to 1 s for room, then
    /// gets 503. (Besides, at most 2 bodies per connection are read at once.) [default: 256MiB]
    #[arg(long, env = "WS_BRIDGE_CALLBACK_BODY_MEMORY", default_value = "256MiB", value_name = "BYTES", value_parser = parse_size)]
    pub(crate) callback_body_memory: usize,

    /// Client messages read ahead while a frame POST is in flight; then the bridge stops
    /// reading the socket (TCP backpressure). [default: 16]
    #[arg(
        long,
        env = "WS_BRIDGE_READ_AHEAD_MESSAGES",
        default_value_t = 16,
        value_name = "MESSAGES"
    )]
    pub(crate) read_ahead_messages: usize,

    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it: `true` or `false`.
    /// [default: true]
    #[arg(
        long,
        env = "WS_BRIDGE_DEFLATE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub(crate) deflate: bool,

    /// Let permessage-deflate keep its window across messages (better compression of similar
    /// messages, at a memory cost per connection; see docs/PERFORMANCE.md). Off: every message
    /// is compressed on its own and a connection holds no compression state. [default: off]
    #[arg(long, env = "WS_BRIDGE_DEFLATE_CONTEXT_TAKEOVER")]
    pub(crate) deflate_context_takeover: bool,

    /// Bytes of client messages read ahead while a frame POST is in flight. [default: 1MiB]
    #[arg(long, env = "WS_BRIDGE_READ_AHEAD_BYTES", default_value = "1MiB", value_name = "BYTES", value_parser = parse_size)]
    pub(crate) read_ahead_bytes: usize,

    /// Retries of a frame or disconnect POST after a transient failure (connection refused or
    /// lost before an answer, 429, 502, 503, 504). [default: 8]
    #[arg(
        long,
        env = "WS_BRIDGE_BACKEND_RETRIES",
        default_value_t = 8,
        value_name = "COUNT"
    )]
    pub(crate) backend_retries: u32,

    /// Longest time spent retrying one request (backoff waits included); a retry that would
    /// start later is not made. [default: 15s]
    #[arg(long, env = "WS_BRIDGE_BACKEND_RETRY_BUDGET", default_value = "15s", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "show::duration")]
    pub(crate) backend_retry_budget: Duration,

    /// Concurrent requests (and so connections, over HTTP/1.1) to one backend host:port;
    /// further requests wait for a free one within --backend-timeout. [default: 256]
    #[arg(
        long,
        env = "WS_BRIDGE_BACKEND_MAX_CONNECTIONS",
        default_value_t = 256,
        value_name = "COUNT"
    )]
    pub(crate) backend_max_connections: usize,

    /// Extra PEM CA certificates trusted for https backends, besides the system's. [default:
    /// none]
    #[arg(long, env = "WS_BRIDGE_BACKEND_CA", value_name = "PATH")]
    pub(crate) backend_ca: Option<PathBuf>,

    /// Open WebSocket connections at most; handshakes beyond it get 503. [default: 10000]
    #[arg(
        long,
        env = "WS_BRIDGE_MAX_CONNECTIONS",
        default_value_t = 10_000,
        value_name = "COUNT"
    )]
    pub(crate) max_connections: usize,

    /// Open WebSocket connections from one client address at most (IPv6 clients are counted per
    /// /64); handshakes beyond it get 429. Behind a load balancer, set --trusted-proxy so the
    /// client's own address is counted. 0 turns the limit off. [default: 1000]
    #[arg(
        long,
        env = "WS_BRIDGE_MAX_CONNECTIONS_PER_IP",
        default_value_t = 1000,
        value_name = "COUNT"
    )]
    pub(crate) max_connections_per_ip: usize,

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
    pub(crate) trusted_proxy: Vec<String>,

    /// Messages per second one client may send on average (token bucket holding one second's
    /// worth); what happens beyond it is --rate-limit-action. 0 turns the limit off.
    /// [default: 1000]
    #[arg(
        long,
        env = "WS_BRIDGE_MAX_MESSAGES_PER_SECOND",
        default_value_t = 1000,
        value_name = "RATE"
    )]
    pub(crate) max_messages_per_second: u32,

    /// What a client over --max-messages-per-second gets: `slow` stops reading its socket
    /// until its rate allows (TCP pushes back; every message is still forwarded), `close`
    /// closes it with 1008. [default: slow]
    #[arg(
        long,
        env = "WS_BRIDGE_RATE_LIMIT_ACTION",
        value_enum,
        default_value_t = RateLimitAction::Slow
    )]
    pub(crate) rate_limit_action: RateLimitAction,

    /// Time a client may take to accept one message written to it before it is closed as too
    /// slow. [default: 30s]
    #[arg(long, env = "WS_BRIDGE_CLIENT_WRITE_TIMEOUT", default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "show::duration")]
    pub(crate) client_write_timeout: Duration,

    /// Secret for signing every backend request (x-ws-proxy-signature); repeatable for key
    /// rotation, newline-separated in the environment. At least 16 bytes. [default: none]
    #[arg(
        long,
        env = "WS_BRIDGE_SIGNING_SECRET",
        value_name = "SECRET",
        value_delimiter = '\n',
        hide_env_values = true
    )]
    #[serde(serialize_with = "show::secrets")]
    pub(crate) signing_secret: Vec<String>,

    /// File holding a signing secret (one trailing newline is ignored); repeatable. [default:
    /// none]
    #[arg(
        long,
        env = "WS_BRIDGE_SIGNING_SECRET_FILE",
        value_name = "PATH",
        value_delimiter = '\n'
    )]
    pub(crate) signing_secret_file: Vec<PathBuf>,

    /// Migration aid: besides the v2= signatures, also send the old v1= ones (over timestamp,
    /// x-ws-proxy-send and body only), so verifiers not yet upgraded keep working. Turn it off
    /// once every backend verifies v2. Needs a signing secret. [default: off]
    #[arg(long, env = "WS_BRIDGE_SIGNING_V1")]
    pub(crate) signing_v1: bool,

    /// Refuse backend URLs whose host resolves to a loopback, private, link-local, CGNAT,
    /// unique-local or other special address, at the handshake (403) and at every request.
    /// [default: off]
    #[arg(long, env = "WS_BRIDGE_DENY_PRIVATE_NETWORKS")]
    pub(crate) deny_private_networks: bool,

    /// Origin allowed to open WebSocket connections: exact (https://app.example.com) or a
    /// pattern (*.example.com, https://*.example.com); repeatable. When set, a handshake whose
    /// Origin is missing or not allowed gets 403. [default: none, any origin]
    #[arg(
        long,
        env = "WS_BRIDGE_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = '\n'
    )]
    pub(crate) allowed_origin: Vec<String>,

    /// Origin allowed to use callback URLs from a browser (CORS); repeatable; `*` for any.
    /// [default: *]
    #[arg(
        long,
        env = "WS_BRIDGE_CALLBACK_CORS_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = '\n',
        default_value = "*"
    )]
    pub(crate) callback_cors_origin: Vec<String>,

    /// Time a client may take for the TLS handshake and the HTTP request head. [default: 10s]
    #[arg(long, env = "WS_BRIDGE_HANDSHAKE_TIMEOUT", default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "show::duration")]
    pub(crate) handshake_timeout: Duration,

    /// Interval between the bridge's pings to each client. [default: 30s]
    #[arg(long, env = "WS_BRIDGE_PING_INTERVAL", default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "show::duration")]
    pub(crate) ping_interval: Duration,

    /// A client silent this long (no message, no pong) is closed with 1001; checked at each
    /// ping, so the close comes at most one --ping-interval later. [default: 90s]
    #[arg(long, env = "WS_BRIDGE_IDLE_TIMEOUT", default_value = "90s", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "show::duration")]
    pub(crate) idle_timeout: Duration,

    /// Connections older than this are closed with 1001. [default: none]
    #[arg(long, env = "WS_BRIDGE_MAX_CONNECTION_LIFETIME", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "show::optional_duration")]
    pub(crate) max_connection_lifetime: Option<Duration>,

    /// Channels one connection may be in at once; joins beyond it get 413 (callback API) or
    /// are logged and skipped (answer headers). [default: 64]
    #[arg(
        long,
        env = "WS_BRIDGE_MAX_CHANNELS_PER_CONNECTION",
        default_value_t = 64,
        value_name = "N"
    )]
    pub(crate) max_channels_per_connection: usize,

    /// Address of a separate listener for the publish API (`POST /publish/` in GRIP's JSON,
    /// `POST /channels/{name}`), HOST:PORT. A non-loopback address needs --publish-secret.
    /// [default: none, off]
    #[arg(long, env = "WS_BRIDGE_PUBLISH_ADDRESS", value_name = "HOST:PORT")]
    pub(crate) publish_address: Option<String>,

    /// Secret publishers must present, as `Authorization: Bearer <secret>` or as the key of
    /// an HS256 JWT (`Bearer <jwt>`, GRIP's control_iss/key); at least 16 bytes; repeatable
    /// (any one is accepted, for rotation). [default: none]
    #[arg(
        long,
        env = "WS_BRIDGE_PUBLISH_SECRET",
        value_name = "SECRET",
        value_delimiter = '\n',
        hide_env_values = true
    )]
    #[serde(serialize_with = "show::secrets")]
    pub(crate) publish_secret: Vec<String>,

    /// File holding a publish secret (one trailing newline is ignored); repeatable.
    /// [default: none]
    #[arg(
        long,
        env = "WS_BRIDGE_PUBLISH_SECRET_FILE",
        value_name = "PATH",
        value_delimiter = '\n'
    )]
    pub(crate) publish_secret_file: Vec<PathBuf>,

    /// Largest publish request body, in bytes (each message in it is also bound by
    /// --max-message-size). [default: 8MiB]
    #[arg(long, env = "WS_BRIDGE_MAX_PUBLISH_SIZE", default_value = "8MiB", value_name = "BYTES", value_parser = parse_size)]
    pub(crate) max_publish_size: usize,

    /// Cluster mode: the Redis server the nodes share, `redis://[:PASSWORD@]HOST:PORT/[DB]` or
    /// `rediss://` (TLS); or a Redis Cluster, through `redis+cluster://HOST:PORT/` (or
    /// `rediss+cluster://`) or several URLs (repeatable; newline-separated in the environment),
    /// each a seed node. Callback URLs and channels then work across every node.
    /// [default: none, a single node]
    #[arg(
        long,
        env = "WS_BRIDGE_REDIS_URL",
        value_name = "URL",
        hide_env_values = true,
        value_delimiter = '\n'
    )]
    #[serde(serialize_with = "show::secret_urls")]
    pub(crate) redis_url: Vec<String>,

    /// This node's id in a cluster (1-32 of a-z, 0-9, -); it begins every callback token the
    /// node hands out. [default: 12 random hex digits]
    #[arg(long, env = "WS_BRIDGE_NODE_ID", value_name = "ID")]
    pub(crate) node_id: Option<String>,

    /// A node whose heartbeat in Redis is older than this is dead: another node sends the
    /// disconnect POSTs of its connections (cause node-lost). [default: 10s]
    #[arg(long, env = "WS_BRIDGE_NODE_TIMEOUT", default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "show::duration")]
    pub(crate) node_timeout: Duration,

    /// Time a callback forwarded to the node holding the connection may take to be answered;
    /// beyond it the caller gets 503 with Retry-After. [default: 2s]
    #[arg(long, env = "WS_BRIDGE_FORWARD_TIMEOUT", default_value = "2s", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "show::duration")]
    pub(crate) forward_timeout: Duration,

    /// Address of a separate listener serving Prometheus metrics at /metrics, HOST:PORT.
    /// [default: none, off]
    #[arg(long, env = "WS_BRIDGE_METRICS_ADDRESS", value_name = "HOST:PORT")]
    pub(crate) metrics_address: Option<String>,

    /// Time a keep-alive HTTP connection (callbacks, probes) may sit idle between requests.
    /// Must be longer than --backend-timeout. [default: 60s]
    #[arg(long, env = "WS_BRIDGE_HTTP_IDLE_TIMEOUT", default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "show::duration")]
    pub(crate) http_idle_timeout: Duration,

    /// On SIGTERM/SIGINT, time given to close every client and deliver every disconnect POST
    /// before the process exits. [default: 30s]
    #[arg(long, env = "WS_BRIDGE_SHUTDOWN_GRACE", default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "show::duration")]
    pub(crate) shutdown_grace: Duration,
}

/// What happens to a client over `--max-messages-per-second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RateLimitAction {
    /// Stop reading the client's socket until its rate allows: TCP pushes back, nothing is
    /// lost.
    Slow,
    /// Close the connection with 1008 (policy violation).
    Close,
}

impl RateLimitAction {
    /// The flag value, for logs and `--check-config`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RateLimitAction::Slow => "slow",
            RateLimitAction::Close => "close",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why the command line could not be turned into a [`Cli`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// clap's own outcome (help, version, or a usage error); shown as its first line.
    #[error("{}", first_line(&.0.to_string()).trim_start_matches("error: "))]
    Clap(clap::Error),
    /// The `--config` file is unusable.
    #[error(transparent)]
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
            let values = toml_values(&long, value).map_err(&file_err)?;
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

/// The flag values of one key of the configuration file: each item of an array (a
/// `[[route]]` table as a `--route` value), or the one value.
fn toml_values(long: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    match value {
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::Table(table) if long == "route" => super::route::from_table(table),
                other => Ok(toml_scalar(other)),
            })
            .collect(),
        other => Ok(vec![toml_scalar(other)]),
    }
}

fn toml_scalar(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Cli {
    /// The flags as `key = value` lines, in the order `--help` lists them, as the bridge will
    /// run with them: secrets redacted, durations and lists as they are written, `none` for
    /// what is unset. Derived from the flags themselves, so a new flag needs no line here.
    pub fn describe(&self) -> String {
        use clap::CommandFactory;
        let Ok(serde_json::Value::Object(values)) = serde_json::to_value(self) else {
            return String::new();
        };
        let mut out = String::new();
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let Some(value) = values.get(long) else {
                continue;
            };
            let shown = match value {
                serde_json::Value::Null => "none".to_owned(),
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(items) => {
                    let items: Vec<String> = items.iter().map(plain).collect();
                    format!("{items:?}")
                }
                other => other.to_string(),
            };
            out.push_str(&format!("{long} = {shown}\n"));
        }
        out
    }
}

/// A JSON scalar as text, strings without quotes.
fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// How flag values are shown by `--check-config`.
mod show {
    use std::time::Duration;

    use serde::Serializer;

    pub(super) fn duration<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub(super) fn optional_duration<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => duration(d, s),
            None => s.serialize_none(),
        }
    }

    /// Secrets are never shown: only how many there are.
    pub(super) fn optional_secret<S: Serializer>(
        value: &Option<String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_none(),
            Some(_) => s.serialize_str("(redacted)"),
        }
    }

    pub(super) fn secrets<S: Serializer>(value: &[String], s: S) -> Result<S::Ok, S::Error> {
        let n = value.iter().filter(|v| !v.is_empty()).count();
        if n == 0 {
            s.serialize_none()
        } else {
            s.serialize_str(&format!("{n} secret(s), redacted"))
        }
    }

    /// A URL that may hold a password: shown without it.
    /// URLs with any password replaced by `redacted`.
    pub(super) fn secret_urls<S: Serializer>(value: &[String], s: S) -> Result<S::Ok, S::Error> {
        let redacted = value.iter().map(|url| match url::Url::parse(url) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("redacted"));
                }
                url.to_string()
            }
            Err(_) => "(not a URL)".to_owned(),
        });
        s.collect_seq(redacted)
    }
}
