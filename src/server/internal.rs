//! The internal listeners: the publish API (`--publish-address`) and the metrics endpoint
//! (`--metrics-address`). Each serves an axum router over HTTP/1.1 with the same guards as
//! the main listener: a request head must arrive within `--handshake-timeout`, a keep-alive
//! connection may idle for `--http-idle-timeout`, and a whole request (its body included)
//! must be answered within twice `--handshake-timeout` (time for the head, then as much for
//! the body and the answer), else 408. At most
//! [`INTERNAL_CONNECTIONS`] connections are served at once; further ones wait in the kernel's
//! accept queue. So a client that opens sockets and sends nothing, or trickles a body, holds
//! no memory or descriptor for long.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::fdlimit::INTERNAL_CONNECTIONS;
use super::http::MAX_REQUEST_HEAD;
use super::idle::{IdleGuard, Upgraded};

/// The timeouts of an internal listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Time for the first request head (`--handshake-timeout`).
    pub(crate) head: Duration,
    /// Idle time between keep-alive requests (`--http-idle-timeout`).
    pub(crate) idle: Duration,
    /// Time for a whole request, body and answer included.
    pub(crate) request: Duration,
}

impl Limits {
    /// The main listener's timeouts; a whole request gets twice `--handshake-timeout`.
    pub(crate) fn of(server: &crate::config::ServerConfig) -> Self {
        Limits {
            head: server.handshake_timeout,
            idle: server.http_idle_timeout,
            request: server.handshake_timeout.saturating_mul(2),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets open connections
/// finish their current request. `name` is the listener's flag, for logs.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
    name: &'static str,
) {
    let slots = Arc::new(Semaphore::new(INTERNAL_CONNECTIONS));
    let connections = TaskTracker::new();
    let mut accept_errors = 0u32;
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = shutdown.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                accept_errors = 0;
                let router = router.clone();
                let shutdown = shutdown.clone();
                connections.spawn(connection(stream, peer, router, limits, shutdown, slot));
            }
            Err(e) => super::back_off(&mut accept_errors, &e, name).await,
        }
    }
    connections.close();
    connections.wait().await;
}

/// One connection: HTTP/1.1 with the timeouts of `limits`; the slot is given back when it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let inner = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let answer = hyper::service::Service::call(&inner, request);
        async move {
            let response: Response = match tokio::time::timeout(limits.request, answer).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => too_slow(limits.request),
            };
            Ok::<_, Infallible>(response)
        }
    });
    let io = IdleGuard::new(stream, limits.head, limits.idle, Upgraded::default());
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!(client.addr = %peer, error = %e, "internal HTTP connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.request, connection).await;
        }
    }
}

/// The answer to a request not finished in time (a body sent too slowly, usually).
fn too_slow(limit: Duration) -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request was not complete within {}: send the body at once (the limit is twice --handshake-timeout)\n",
            humantime::format_duration(limit)
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_request_gets_408_naming_the_limit() {
        let response = too_slow(Duration::from_secs(15));
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    }
}
