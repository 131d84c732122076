//! `GET /connect`: admits a client (the checks, cheapest first), asks the connect hook,
//! registers the connection and answers 101; the connection task is spawned on the upgraded
//! socket. Every refusal is a [`Refusal`], answered in one place.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{Instrument, info, info_span, warn};
use url::Url;

use super::Sessions;
use super::close::Ending;
use super::connection::{self, Connection};
use super::refusal::{self, Refusal, limit_refusal};
use super::registry::{ConnectionId, ConnectionStats, Departure, Link, register};
use super::request::{
    BackendUrls, backend_urls, check_header_sizes, check_origin, check_upgrade,
    offered_subprotocols,
};
use super::ws::{WsStream, accept_key};
use crate::backend::hook::forwarded_headers;
use crate::backend::{BackendError, ConnectAnswer, RequestIds};
use crate::logging::redacted;
use crate::metrics::RefusalReason;
use crate::policy::forwarded::ClientOrigin;
use crate::policy::limits::ConnectionSlot;
use crate::protocol::Payload;
use crate::protocol::channel::ChannelName;

/// Backend host names looked up at once for `--deny-private-networks`; beyond it a handshake
/// gets 503, so a flood of handshakes naming slow domains cannot queue unbounded DNS work.
pub(crate) const MAX_CONCURRENT_LOOKUPS: usize = 64;

/// The `GET /connect` handler: upgrades the connection or answers one [`Refusal`]. `peer` is
/// the TCP peer; the client behind trusted proxies is found here.
pub(crate) async fn connect<B>(
    sessions: &Arc<Sessions>,
    peer: SocketAddr,
    request: Request<B>,
) -> Response {
    let config = &sessions.config;
    let client = config
        .trusted_proxies
        .client(peer, config.tls, request.headers());
    let client_ip = client.ip;
    match accept(sessions, client, request).await {
        Ok(response) => response,
        Err(refusal) => refusal::answer(&sessions.metrics, client_ip, refusal),
    }
}

/// What the checks admitted: everything the upgrade needs.
struct Admitted {
    key: HeaderValue,
    urls: BackendUrls,
    on_upgrade: OnUpgrade,
    slot: ConnectionSlot,
}

/// Admits the request, then opens the connection.
async fn accept<B>(
    sessions: &Arc<Sessions>,
    client: ClientOrigin,
    mut request: Request<B>,
) -> Result<Response, Refusal> {
    let admitted = admit(sessions, &client, &mut request).await?;
    open(sessions, client, &request, admitted).await
}

/// The checks, cheapest first: no DNS lookup and no backend request before the request has
/// proved to be a WebSocket handshake and holds a connection slot.
async fn admit<B>(
    sessions: &Sessions,
    client: &ClientOrigin,
    request: &mut Request<B>,
) -> Result<Admitted, Refusal> {
    if sessions.shutdown.is_cancelled() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            RefusalReason::ShuttingDown,
            "this bridge is shutting down; connect again (to another instance)",
        )
        .retry_after(1));
    }
    let config = &sessions.config;
    let headers = request.headers();
    let key = check_upgrade(headers)?;
    check_header_sizes(headers)?;
    check_origin(&config.allowed_origins, headers)?;
    let urls = backend_urls(request.uri().query(), headers, &config.allowlist)?;
    let on_upgrade = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::UPGRADE_REQUIRED,
                RefusalReason::NotWebSocket,
                "this connection cannot be upgraded to WebSocket (use HTTP/1.1)",
            )
        })?;
    let slot = sessions
        .limits
        .try_acquire(client.ip)
        .map_err(limit_refusal)?;
    if config.deny_private_networks {
        check_private_networks(sessions, &urls).await?;
    }
    Ok(Admitted {
        key,
        urls,
        on_upgrade,
        slot,
    })
}

/// Gives the admitted connection its id and callback URL, asks the connect hook, registers
/// the connection, spawns its task and answers 101.
async fn open<B>(
    sessions: &Arc<Sessions>,
    client: ClientOrigin,
    request: &Request<B>,
    admitted: Admitted,
) -> Result<Response, Refusal> {
    let internal = |message: String| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            RefusalReason::Internal,
            message,
        )
        .warn()
    };
    let id = ConnectionId::random();
    let request_ids =
        RequestIds::random().map_err(|e| internal(format!("{e}; try again later")))?;
    let callback = format!("{}/{}", sessions.base_url.as_str(), sessions.token(id));
    let callback = HeaderValue::from_str(&callback)
        .map_err(|_| internal("cannot build the callback URL".to_owned()))?;
    let hooked = match &admitted.urls.connect {
        Some(hook) => {
            let headers = forwarded_headers(request.headers(), &client, request.uri());
            let offered = offered_subprotocols(request.headers());
            run_hook(sessions, hook, &callback, &request_ids, headers, &offered).await?
        }
        None => Hooked::default(),
    };
    let handle = Link::handle(
        sessions.config.send_queue,
        sessions.config.send_queue_bytes,
        ConnectionStats::new(hooked.subprotocol.clone()),
    );
    // Members before the 101 is sent: the first publication after the hook's answer reaches
    // the connection, queued behind the hook's first message.
    sessions.channels.join_all(id, &handle, &hooked.channels);
    sessions.channels.settle(&hooked.channels).await;
    if sessions.config.node.is_some()
        && let Some(disconnect) = &admitted.urls.disconnect
    {
        sessions.registry.record(
            id,
            Departure {
                disconnect: disconnect.to_string(),
                callback: String::from_utf8_lossy(callback.as_bytes()).into_owned(),
                nonce: request_ids.nonce_hex(),
            },
        );
    }
    let backend = &sessions.backend;
    let connection = Connection {
        frame_url: Arc::new(backend.target(admitted.urls.frame)),
        disconnect_url: admitted.urls.disconnect.map(|u| backend.target(u)),
        callback,
        request_ids,
        registration: register(&sessions.registry, id, Arc::clone(&handle))
            .with_channels(Arc::clone(&sessions.channels), Arc::clone(&handle)),
        link: handle,
        first_message: hooked.first_message,
        slot: admitted.slot,
    };
    let span = info_span!("conn", conn.id = %id, client.addr = %client.ip);
    let task = upgrade_and_run(admitted.on_upgrade, connection, Arc::clone(sessions));
    sessions.tracker.spawn(task.instrument(span));
    Ok(switching_protocols(&admitted.key, hooked.subprotocol))
}

/// The 101 answer.
fn switching_protocols(key: &HeaderValue, subprotocol: Option<String>) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = subprotocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// Waits for the upgrade to complete, then runs the connection task.
async fn upgrade_and_run(on_upgrade: OnUpgrade, connection: Connection, sessions: Arc<Sessions>) {
    info!(
        frame = %redacted(connection.frame_url.url()),
        disconnect = connection.disconnect_url.as_ref().map(|t| redacted(t.url())).unwrap_or_default(),
        "connection opened"
    );
    match on_upgrade.await {
        Ok(upgraded) => {
            let ws = WsStream::new(TokioIo::new(upgraded), sessions.config.max_message_size);
            connection::run(ws, connection, sessions).await;
        }
        Err(e) => {
            let ending = Ending::client_gone(&format!("upgrade failed: {e}"));
            drop(connection.registration);
            // Boxed, like the connection task's closing: a large future, rarely needed.
            if let Some(url) = &connection.disconnect_url
                && let Err(e) = Box::pin(sessions.backend.post_disconnect(
                    url,
                    &connection.callback,
                    &connection.request_ids,
                    ending.report(),
                ))
                .await
            {
                warn!(error = %e.detail(), "disconnect POST failed");
            }
            info!(%ending, "connection closed");
        }
    }
}

/// Resolves each distinct backend host once and refuses private addresses (403), with at most
/// [`MAX_CONCURRENT_LOOKUPS`] lookups bridge-wide (503 beyond).
async fn check_private_networks(sessions: &Sessions, urls: &BackendUrls) -> Result<(), Refusal> {
    let Ok(_permit) = sessions.lookups.try_acquire() else {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            RefusalReason::BusyLookups,
            format!(
                "this bridge is resolving {MAX_CONCURRENT_LOOKUPS} backend names already; retry shortly"
            ),
        )
        .warn()
        .retry_after(1));
    };
    let named = [
        ("frame URL", Some(&urls.frame)),
        ("disconnect URL", urls.disconnect.as_ref()),
        ("connect hook URL", urls.connect.as_ref()),
    ];
    let mut checked: Vec<(Option<&str>, Option<u16>)> = Vec::with_capacity(3);
    for (name, url) in named {
        let Some(url) = url else { continue };
        let host = (url.host_str(), url.port_or_known_default());
        if checked.contains(&host) {
            continue;
        }
        checked.push(host);
        if let Err(why) = crate::backend::ssrf::check_url(url).await {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                RefusalReason::PrivateNetwork,
                format!("{name} {} is refused: {why}", redacted(url)),
            ));
        }
    }
    Ok(())
}

/// What the connect hook added to an accepted connection.
#[derive(Debug, Default)]
struct Hooked {
    subprotocol: Option<String>,
    first_message: Option<Payload>,
    /// `x-ws-proxy-subscribe`.
    channels: Vec<ChannelName>,
}

/// The channels of the connect hook's `x-ws-proxy-subscribe`; a name that is not a channel
/// name refuses the handshake with 502, so the backend's mistake shows at once.
fn hook_channels(value: Option<&HeaderValue>) -> Result<Vec<ChannelName>, Refusal> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let refused = |why: String| {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            RefusalReason::HookChannel,
            format!("the connect hook's x-ws-proxy-subscribe is refused: {why}"),
        )
        .warn()
    };
    let value = value
        .to_str()
        .map_err(|_| refused("not ASCII".to_owned()))?;
    ChannelName::parse_list(value).map_err(|e| refused(e.to_string()))
}

/// POSTs the connect hook; its refusal, failure or unusable answer is the handshake's.
async fn run_hook(
    sessions: &Sessions,
    hook: &Url,
    callback: &HeaderValue,
    request_ids: &RequestIds,
    headers: axum::http::HeaderMap,
    offered: &[String],
) -> Result<Hooked, Refusal> {
    let target = sessions.backend.target(hook.clone());
    let answer = sessions
        .backend
        .post_connect(&target, callback, request_ids, headers)
        .await;
    match answer {
        Ok(ConnectAnswer::Accept {
            subprotocol: Some(selected),
            ..
        }) if !offered.contains(&selected) => Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            RefusalReason::HookSubprotocol,
            format!(
                "the connect hook selected subprotocol {selected:?}, which the client did not offer"
            ),
        )
        .warn()),
        Ok(ConnectAnswer::Accept {
            subprotocol,
            first_message,
            subscribe,
        }) => Ok(Hooked {
            subprotocol,
            first_message,
            channels: hook_channels(subscribe.as_ref())?,
        }),
        Ok(ConnectAnswer::Refuse {
            status,
            content_type,
            body,
        }) => Err(Refusal::from_hook(status, content_type, body)),
        Err(e) => {
            let (status, what) = match e {
                BackendError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "did not answer in time"),
                BackendError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "is unreachable"),
                _ => (StatusCode::BAD_GATEWAY, "failed"),
            };
            warn!(error = %e.detail(), "connect hook failed");
            Err(Refusal::new(
                status,
                RefusalReason::HookFailed,
                format!("the connect hook {what}; try again later"),
            )
            .warn())
        }
    }
}
