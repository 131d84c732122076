//! `GET /connect` and routed paths (`--route`): admits a client (the checks, cheapest first),
//! asks the backend ([`super::hooked`]: connect hook or OPEN), registers the connection and
//! answers 101; the connection task is spawned on the upgraded
//! socket. Every refusal is a [`Refusal`], answered in one place.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{Instrument, info, info_span, warn};

use super::Sessions;
use super::close::Ending;
use super::connection::{self, Connection};
use super::events;
use super::hooked;
use super::refusal::{self, Refusal, limit_refusal};
use super::registry::{ConnectionId, ConnectionStats, Departure, Link, register};
use super::request::{BackendUrls, backend_urls, check_header_sizes, check_origin, check_upgrade};
use super::ws::deflate::{self, Agreed, Deflate};
use super::ws::{WsStream, accept_key};
use crate::backend::RequestIds;
use crate::config::route::{Route, RouteProtocol};
use crate::logging::redacted;
use crate::metrics::RefusalReason;
use crate::policy::forwarded::ClientOrigin;
use crate::policy::limits::ConnectionSlot;

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
    let urls = match config.routes.find(request.uri().path()) {
        Some(route) => routed_urls(route, request.uri()),
        None => backend_urls(request.uri().query(), headers, &config.allowlist)?,
    };
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
    let hooked = hooked::ask(
        sessions,
        request,
        &client,
        &admitted.urls,
        &callback,
        &request_ids,
    )
    .await?;
    let handle = Link::handle(
        sessions.config.send_queue,
        sessions.config.send_queue_bytes,
        ConnectionStats::new(hooked.subprotocol.clone()),
    );
    // Members before the 101 is sent: the first publication after the hook's answer reaches
    // the connection, queued behind the hook's first message.
    sessions.channels.join_all(id, &handle, &hooked.channels);
    sessions.channels.settle(&hooked.channels).await;
    let meta = hooked.events.as_ref().map(|events| &events.0.meta);
    record_departure(sessions, id, &admitted.urls, &callback, &request_ids, meta);
    let backend = &sessions.backend;
    let request_uri = admitted.urls.request_uri;
    let deflate = sessions
        .config
        .deflate
        .and_then(|takeover| offered_deflate(request.headers(), takeover));
    let deflate_answer = deflate.map(|(agreed, bits)| agreed.response(bits));
    let connection = Connection {
        frame_url: Arc::new(
            backend
                .target(admitted.urls.frame)
                .with_request_uri(request_uri.clone()),
        ),
        disconnect_url: admitted
            .urls
            .disconnect
            .map(|u| backend.target(u).with_request_uri(request_uri)),
        callback,
        request_ids,
        registration: register(&sessions.registry, id, Arc::clone(&handle))
            .with_channels(Arc::clone(&sessions.channels), Arc::clone(&handle)),
        link: handle,
        first_message: hooked.first_message,
        slot: admitted.slot,
        events: hooked.events,
        deflate: deflate.map(|(agreed, _)| agreed),
    };
    let span = info_span!("conn", conn.id = %id, client.addr = %client.ip);
    let task = upgrade_and_run(admitted.on_upgrade, connection, Arc::clone(sessions));
    sessions.tracker.spawn(task.instrument(span));
    Ok(switching_protocols(
        &admitted.key,
        hooked.subprotocol,
        deflate_answer,
    ))
}

/// In a cluster, what another node needs to send this connection's disconnect POST (or its
/// websocket-over-http `DISCONNECT`, with the `Meta-*` headers of `meta`) should this node die.
fn record_departure(
    sessions: &Sessions,
    id: ConnectionId,
    urls: &BackendUrls,
    callback: &HeaderValue,
    request_ids: &RequestIds,
    meta: Option<&axum::http::HeaderMap>,
) {
    if sessions.config.node.is_none() {
        return;
    }
    let departure = match (&urls.disconnect, meta) {
        (_, Some(meta)) if urls.events => {
            Departure::events(&urls.frame, callback, request_ids.nonce_hex(), meta)
        }
        (Some(disconnect), _) => Departure {
            disconnect: disconnect.to_string(),
            callback: String::from_utf8_lossy(callback.as_bytes()).into_owned(),
            nonce: request_ids.nonce_hex(),
            events_meta: None,
        },
        _ => return,
    };
    sessions.registry.record(id, departure);
}

/// The permessage-deflate offer the bridge accepts, from every `Sec-WebSocket-Extensions`.
fn offered_deflate(headers: &axum::http::HeaderMap, takeover: bool) -> Option<(Agreed, bool)> {
    let offers: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if offers.is_empty() {
        return None;
    }
    deflate::negotiate(&offers.join(","), takeover)
}

/// The 101 answer.
fn switching_protocols(
    key: &HeaderValue,
    subprotocol: Option<String>,
    extensions: Option<String>,
) -> Response {
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
    if let Some(extensions) = extensions.and_then(|e| HeaderValue::from_str(&e).ok()) {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
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
            let deflate = connection
                .deflate
                .map(|agreed| Deflate::new(agreed, Arc::clone(&sessions.metrics.deflate)));
            let ws = WsStream::new(TokioIo::new(upgraded), sessions.config.max_message_size)
                .with_deflate(deflate);
            connection::run(ws, connection, sessions).await;
        }
        Err(e) => {
            let ending = Ending::client_gone(&format!("upgrade failed: {e}"));
            drop(connection.registration);
            if let Some(events) = connection.events {
                let (mut link, _) = *events;
                let last = vec![events::last_event(ending.code, &ending.reason, false)];
                let sent = Box::pin(events::send_last(
                    &sessions.backend,
                    &connection.frame_url,
                    &mut link,
                    last,
                ))
                .await;
                if let Err(e) = sent {
                    warn!(error = %e.detail(), "websocket-over-http DISCONNECT failed");
                }
            }
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

/// The backend URLs of a connection opened through a `--route` (the operator's: no allowlist):
/// a seed route's own URLs, with the client's path and query in `x-ws-proxy-request-uri`.
/// A websocket-over-http route's events URL is the target followed by the client's path and
/// query, as Pushpin passes the request URI on.
fn routed_urls(route: &Route, uri: &axum::http::Uri) -> BackendUrls {
    match route.protocol {
        RouteProtocol::Seed => BackendUrls {
            frame: route.target.clone(),
            disconnect: route.disconnect.clone(),
            connect: route.connect.clone(),
            request_uri: uri
                .path_and_query()
                .and_then(|pq| HeaderValue::from_str(pq.as_str()).ok()),
            events: false,
        },
        RouteProtocol::WebSocketOverHttp => BackendUrls {
            frame: route.backend_url(uri.path(), uri.query()),
            disconnect: None,
            connect: None,
            request_uri: None,
            events: true,
        },
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
