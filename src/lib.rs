//! websocket-bridge: lets HTTP-only backends serve WebSocket clients.
//!
//! ```text
//! [client] <--WebSocket--> [websocket-bridge] <--HTTP POST--> [backend]
//! ```
//!
//! # Layout
//!
//! Client to backend: client socket -> `server` (accept loop, TLS, idle guard, routes) ->
//! `session::handshake` (`GET /connect`: checks by `policy`, the connection registered in
//! `session::registry`) -> `session::connection` (one task per socket) -> `backend` (frame
//! and disconnect POSTs, retries, signing) -> backend.
//!
//! Backend to client: backend -> `callback` (`POST {base-url}/{id}`) -> `session::registry`
//! (id -> bounded queue) -> `session::connection` task -> client socket.
//!
//! Around them: `config` (flags, environment and TOML file -> one validated [`Config`] made
//! of one sub-config per consumer), `protocol` (every wire name, content types, close causes,
//! the signature scheme), `policy` (allowlist, origins, limits, trusted proxies: pure
//! admission checks), `metrics` (Prometheus, labels as enums), `shutdown` (signals).
//!
//! Dependencies point one way: `protocol`, `policy`, `metrics` <- `config` <- `backend` <-
//! `session` <- `callback` <- `server`. Nothing imports `server`; `session` never sees the
//! callback API, `backend` never sees a client socket.
//!
//! With the `fuzzing` feature, a hidden `fuzzing` module exposes the parsers of client and
//! backend bytes to the fuzz targets in `fuzz/`.

mod backend;
mod callback;
mod cluster;
mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod logging;
mod metrics;
mod policy;
mod protocol;
mod publish;
mod server;
mod session;
mod shutdown;

pub use config::parse::ValueError;
pub use config::tls::TlsError;
pub use config::{Cli, CliError, Config, ConfigError, LogFormat, install_crypto_provider};
pub use policy::allowlist::AllowlistError;
pub use policy::forwarded::TrustedProxyError;
pub use policy::origin::OriginError;
pub use server::fdlimit::{FdLimitError, OpenFiles, Raised, raise_soft_limit};
pub use server::{Listeners, RunError, bind, run, run_with};
pub use shutdown::shutdown_signal;
