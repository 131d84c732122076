//! websocket-bridge: lets HTTP-only backends serve WebSocket clients.
//!
//! ```text
//! [client] <--WebSocket--> [websocket-bridge] <--HTTP POST--> [backend]
//! ```
//!
//! # Layout
//!
//! The data path, client to backend: client socket -> [`server`] (accept loop, TLS, routes) ->
//! [`handshake`] (`GET /connect`: URLs checked by [`allowlist`], id registered in
//! [`registry`]) -> [`connection`] (one task per socket) -> [`backend`] (frame and disconnect
//! POSTs) -> backend.
//!
//! Backend to client: backend -> [`callback`] (`POST {base-url}/{id}`) -> [`registry`] (id ->
//! bounded queue) -> [`connection`] task -> client socket.
//!
//! Around them: [`config`] (flags, validation), [`idle`] (silent HTTP connections), [`tls`] (certificates), [`payload`] (text vs
//! binary across HTTP), [`close`] (close codes, causes, initiators), [`limits`] (connection
//! counts, message rates), [`fdlimit`] (the open-files limit: raised at startup, and how many
//! connections it holds), [`metrics`] (Prometheus exposition), [`origin`] (Origin checks), [`forwarded`] (the client's address behind trusted proxies, forwarding headers), [`signing`]
//! (HMAC signatures on backend requests), [`ssrf`] (private-network refusal and the guarded
//! resolver), [`shutdown`] (signals). With the `fuzzing` feature, a hidden `fuzzing` module
//! re-exports every parser of client and backend bytes for the fuzz targets in `fuzz/`.

pub mod allowlist;
pub mod backend;
pub mod callback;
pub mod close;
pub mod config;
pub mod connection;
pub mod fdlimit;
pub mod forwarded;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod idle;
pub mod limits;
pub mod metrics;
pub mod origin;
pub mod payload;
pub mod registry;
pub mod server;
pub mod shutdown;
pub mod signing;
pub mod ssrf;
pub mod tls;

pub use config::{Cli, Config, ConfigError};
pub use server::{RunError, run, run_with};
pub use shutdown::shutdown_signal;
pub use tls::install_crypto_provider;
