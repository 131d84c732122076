//! One accepted TCP connection: the TLS handshake if configured, then HTTP/1.1 or HTTP/2 with
//! upgrades, and the routes: `GET /connect` (the session layer), the callback API,
//! `/healthz`, `/readyz`, and a 404 for anything else. Small callback `POST`s over HTTP/1.1
//! keep-alive take the lean path in [`fast`] until the first request that does not; hyper
//! serves the rest of the connection, from the bytes read (replayed by the idle guard).
//! Routing is a match on the path, not a router: four routes, on the hot path of every
//! callback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::idle::{IdleGuard, Upgraded};
use crate::callback::Callbacks;
use crate::session::Sessions;
use crate::session::registry::ConnectionId;
use fast::Ended;

pub(crate) mod fast;

/// Largest HTTP/1.1 request head (request line plus headers) accepted, in bytes.
pub(crate) const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// What serving HTTP needs: the two layers it routes to and the HTTP timeouts.
pub(crate) struct App {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) callbacks: Arc<Callbacks>,
    /// The path callback URLs start with: the base URL's path plus `/`.
    pub(crate) callback_prefix: String,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// Time for the TLS handshake and a request head.
    pub(crate) handshake_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive connection.
    pub(crate) http_idle_timeout: Duration,
    /// Cancelled when shutdown starts.
    pub(crate) shutdown: CancellationToken,
}

/// Serves one accepted TCP connection: TLS handshake if configured, then HTTP.
pub(crate) async fn serve_connection(app: Arc<App>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    match app.tls.clone() {
        None => serve_http(app, stream, peer).await,
        Some(acceptor) => {
            match tokio::time::timeout(app.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => serve_http(app, tls_stream, peer).await,
                Ok(Err(e)) => debug!(client.addr = %peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(client.addr = %peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<IO>(app: Arc<App>, io: IO, peer: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgraded = Upgraded::default();
    let marker = upgraded.clone();
    let service_app = Arc::clone(&app);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let app = Arc::clone(&service_app);
        let marker = marker.clone();
        async move {
            let response = route(&app, peer, request).await;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                // From now on the WebSocket's own timeouts govern this connection.
                marker.mark();
            }
            Ok::<_, Infallible>(response)
        }
    });
    let mut io = IdleGuard::new(io, app.handshake_timeout, app.http_idle_timeout, upgraded);
    if !app.shutdown.is_cancelled() {
        match fast::serve(&app, &mut io).await {
            Ended::Closed => return,
            Ended::HandOff(read) => io.replay(read),
        }
    }
    let draining = app.shutdown.is_cancelled();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.handshake_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(!draining);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_REQUEST_HEAD as u32);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    if draining {
        // One request, then the connection closes.
        if let Err(e) = connection.await {
            debug!(client.addr = %peer, error = %e, "HTTP connection ended with an error");
        }
        return;
    }
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!(client.addr = %peer, error = %e, "HTTP connection ended with an error");
            }
        }
        () = app.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The routes.
async fn route(app: &App, peer: SocketAddr, request: Request<Incoming>) -> Response {
    let path = request.uri().path();
    if let Some((id, channel)) = callback_path(&app.callback_prefix, path) {
        let (id, channel) = (id.to_owned(), channel.map(str::to_owned));
        return app
            .callbacks
            .serve(&id, channel.as_deref(), request.map(Body::new))
            .await;
    }
    match (request.method(), path) {
        (&Method::GET, "/connect") => {
            crate::session::handshake::connect(&app.sessions, peer, request).await
        }
        (&Method::GET | &Method::HEAD, "/healthz") => "ok\n".into_response(),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            if app.shutdown.is_cancelled() {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
            } else {
                "ready\n".into_response()
            }
        }
        (&Method::GET, _) if app.sessions.config.routes.find(path).is_some() => {
            crate::session::handshake::connect(&app.sessions, peer, request).await
        }
        (_, "/connect" | "/healthz" | "/readyz") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n",
        )
            .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            "not found: this bridge serves GET /connect, GET /healthz, GET /readyz and the callback API\n",
        )
            .into_response(),
    }
}

/// The id part of a callback path (`{prefix}{id}`), if the path has that shape.
fn callback_path<'a>(prefix: &str, path: &'a str) -> Option<(&'a str, Option<&'a str>)> {
    let rest = path.strip_prefix(prefix)?;
    let (id, rest) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    // `{uuid}`, or `{node}.{uuid}` in a cluster (the callback API checks the rest).
    let uuid = id.rsplit('.').next().unwrap_or(id);
    if uuid.len() != ConnectionId::LENGTH || id.len() > ConnectionId::LENGTH + 33 {
        return None;
    }
    match rest {
        "" => Some((id, None)),
        _ => rest
            .strip_prefix("/channels/")
            .filter(|name| !name.contains('/'))
            .map(|name| (id, Some(name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_paths_are_recognised_by_shape() {
        let id = "0d9e4c1e-8a47-4a53-9d3e-3b8f4f0b7d2a";
        assert_eq!(callback_path("/", &format!("/{id}")), Some((id, None)));
        assert_eq!(
            callback_path("/ws/", &format!("/ws/{id}")),
            Some((id, None))
        );
        assert_eq!(callback_path("/", "/connect"), None);
        assert_eq!(callback_path("/ws/", &format!("/{id}")), None);
        assert_eq!(callback_path("/", &format!("/{id}/x")), None);
        assert_eq!(
            callback_path("/", &format!("/{id}/channels/room-1")),
            Some((id, Some("room-1")))
        );
        assert_eq!(callback_path("/", &format!("/{id}/channels/a/b")), None);
        let token = format!("node-1.{id}");
        assert_eq!(
            callback_path("/", &format!("/{token}")),
            Some((token.as_str(), None))
        );
        assert_eq!(
            callback_path("/", &format!("/{token}/channels/x")),
            Some((token.as_str(), Some("x")))
        );
        assert_eq!(
            callback_path("/", &format!("/{}.{id}", "n".repeat(40))),
            None
        );
        assert_eq!(
            callback_path("/", &format!("/{id}/channels/")),
            Some((id, Some(""))),
            "an empty name is refused with 400 by the callback API"
        );
    }
}
