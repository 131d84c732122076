//! The integration-test harness. Everything runs over real loopback sockets; nothing is mocked.
//!
//! Layout:
//! - [`backend`]: the recording backend. A test says what it answers with a builder,
//!   `Backend::builder().on("/hang", Reply::never()).start()`, and reads back every request it
//!   got (path, headers, body, peer, arrival order).
//! - [`bridge`]: the bridge in-process on `127.0.0.1:0` (`run_with` with a shutdown the test
//!   triggers), URLs to reach it, and its metrics endpoint.
//! - [`client`]: WebSocket clients and the HTTP client for the callback API.
//! - [`pki`]: certificates made inside a test.
//! - [`real`]: the real binary as a child process, where a process matters.
//! - [`redis`]: a real `redis-server` process for the cluster tests.
//! - here: time bounds, ports, scratch directories, URL encoding.
//!
//! Two rules the tests follow:
//! - **Absence** ("nothing more arrived") is asserted once nothing more *can* arrive: after
//!   [`Bridge::shutdown`] returned (the bridge's `run_with` returns once every connection task
//!   has finished, its disconnect POST delivered), after an event that orders it (a
//!   connection's disconnect POST comes after all of its frame POSTs), or, for a bridge process,
//!   after it exited and [`Backend::wait_until_disconnected`]. Never after a sleep.
//! - **Timers** of an in-process bridge (timeouts, pings, retries, backoff, rate limits) run
//!   under paused time (`#[tokio::test(start_paused = true)]`): the clock jumps to the next
//!   timer only when every task of the test, bridge and backend included, waits. Tests with a
//!   child process stay in real time: the clock would jump while the child works.

#![allow(dead_code, unreachable_pub)]

pub mod backend;
pub mod bridge;
pub mod client;
pub mod pki;
pub mod real;
pub mod redis;

// What most tests use, at `common::*`; each test file uses some of it.
#[allow(unused_imports)]
pub use backend::{Backend, Recorded, Reply};
#[allow(unused_imports)]
pub use bridge::{Bridge, sample, scrape, wait_for_sample};
#[allow(unused_imports)]
pub use client::{
    Client, callback_of, connect, connect_url, connect_with, expect_close, expect_close_reply,
    http_client, next_message, path_of, refused, send_text, tcp_connect, try_connect, with_hook,
};

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;

/// Upper bound for any single test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a test body within [`TEST_TIMEOUT`].
pub async fn bounded<F: Future<Output = T>, T>(f: F) -> T {
    bounded_for(TEST_TIMEOUT, f).await
}

/// Runs a test body within `limit` (for the few tests that need longer than [`TEST_TIMEOUT`]).
pub async fn bounded_for<F: Future<Output = T>, T>(limit: Duration, f: F) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

/// A listener on 127.0.0.1 at a port the system picks.
pub async fn bind_ephemeral() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// A port nobody listened on a moment ago: for a child process that binds it itself, or for a
/// URL where nobody must answer (connection refused).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A fresh, empty directory for one test's files (certificates, logs, config files).
pub fn scratch_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "ws-bridge-test-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Query-encodes `s` (`application/x-www-form-urlencoded`).
pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
