//! `GET /connect`: validates the client's backend URLs against the allowlist, checks the
//! WebSocket upgrade request, registers the connection and answers 101; the connection task is
//! spawned on the upgraded socket. Owns the refusal messages a client sees at connect time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{Instrument, info, info_span, warn};
use url::Url;

use crate::backend::{BackendError, ConnectAnswer, RequestIds};
use crate::close::Ending;
use crate::connection::{self, Connection};
use crate::forwarded::{ClientOrigin, is_forwarding_header};
use crate::limits::{LimitRefusal, worth_logging};
use crate::origin::OriginPolicy;
use crate::payload::Payload;
use crate::registry::{ConnectionHandle, ConnectionId, ConnectionStats};
use crate::server::{ClientAddr, Shared};

/// Header naming the frame URL (alternative to query `f`).
pub const HEADER_ON_FRAME: &str = "x-ws-proxy-on-frame";
/// Header naming the disconnect URL (alternative to query `d`).
pub const HEADER_ON_DISCONNECT: &str = "x-ws-proxy-on-disconnect";
/// Header naming the connect hook URL (alternative to query `c`).
pub const HEADER_ON_CONNECT: &str = "x-ws-proxy-on-connect";

/// Longest refusal message, in bytes: a client controls parts of it (URLs, header names), and
/// it is logged.
const MAX_REFUSAL_MESSAGE: usize = 300;

/// A refused handshake: status code, a one-line message, and how it is counted and logged.
/// Every refusal goes through [`refuse`], the one place that logs (throttled), counts and
/// answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// 400, 403, 426, 429, 431, 502, 503 or 504, or the connect hook's own status.
    pub status: StatusCode,
    /// What was wrong and how to fix it.
    pub message: String,
    /// The `reason` label of `ws_bridge_connect_refusals`.
    pub label: &'static str,
    /// Whether the operator should hear of it (warn) or only the client (info).
    warn: bool,
    /// Seconds for `Retry-After`, for refusals that pass.
    retry_after: Option<u32>,
    /// A body passed on from the connect hook instead of the message.
    passthrough: Option<Box<(Option<HeaderValue>, Bytes)>>,
}

impl Refusal {
    fn new(status: StatusCode, label: &'static str, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_REFUSAL_MESSAGE {
            let mut end = MAX_REFUSAL_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        Refusal {
            status,
            message,
            label,
            warn: false,
            retry_after: None,
            passthrough: None,
        }
    }

    /// Logged at WARN: the operator may need to act.
    fn warn(mut self) -> Self {
        self.warn = true;
        self
    }

    fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = match self.passthrough.map(|b| *b) {
            Some((content_type, body)) => {
                let mut response = (self.status, body).into_response();
                if let Some(ct) = content_type {
                    response.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                response
            }
            None => (self.status, format!("{}\n", self.message)).into_response(),
        };
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UPGRADE_REQUIRED {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

/// Counts a refusal by label, logs it (the first ten of each label, then at powers of two and
/// every thousandth, so a flood cannot flood the logs) and answers it.
fn refuse(shared: &Shared, client: IpAddr, refusal: Refusal) -> Response {
    let total = shared.metrics.refusal(refusal.label);
    if worth_logging(total) {
        let status = refusal.status.as_u16();
        let (label, reason) = (refusal.label, refusal.message.as_str());
        if refusal.warn {
            warn!(client.addr = %client, status, label, reason, refused_total = total, "connection refused");
        } else {
            info!(client.addr = %client, status, label, reason, refused_total = total, "connection refused");
        }
    }
    refusal.into_response()
}

/// One backend URL role: where it may be given and how it is named in messages.
struct UrlRole {
    query: &'static str,
    header: &'static str,
    name: &'static str,
}

const FRAME: UrlRole = UrlRole {
    query: "f",
    header: HEADER_ON_FRAME,
    name: "frame URL",
};
const CONNECT: UrlRole = UrlRole {
    query: "c",
    header: HEADER_ON_CONNECT,
    name: "connect hook URL",
};
const DISCONNECT: UrlRole = UrlRole {
    query: "d",
    header: HEADER_ON_DISCONNECT,
    name: "disconnect URL",
};

/// The backend URLs of an accepted handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrls {
    /// Where each client message is POSTed.
    pub frame: Url,
    /// Where the disconnect notice is POSTed, if anywhere.
    pub disconnect: Option<Url>,
    /// Where the connect hook is POSTed before the upgrade, if anywhere.
    pub connect: Option<Url>,
}

/// Extracts and checks the backend URLs from the query string and headers.
pub fn backend_urls(
    query: Option<&str>,
    headers: &HeaderMap,
    allowlist: &crate::allowlist::Allowlist,
) -> Result<BackendUrls, Refusal> {
    let frame = role_url(&FRAME, query, headers, allowlist)?.ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "missing frame URL: pass it as query parameter f (URL-encoded) or header x-ws-proxy-on-frame",
        )
    })?;
    let disconnect = role_url(&DISCONNECT, query, headers, allowlist)?;
    let connect = role_url(&CONNECT, query, headers, allowlist)?;
    Ok(BackendUrls {
        frame,
        disconnect,
        connect,
    })
}

fn role_url(
    role: &UrlRole,
    query: Option<&str>,
    headers: &HeaderMap,
    allowlist: &crate::allowlist::Allowlist,
) -> Result<Option<Url>, Refusal> {
    let bad = |message: String| Refusal::new(StatusCode::BAD_REQUEST, "bad-request", message);
    let mut from_query = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key == role.query {
            if from_query.is_some() {
                return Err(bad(format!(
                    "query parameter {} is given more than once; give the {} once",
                    role.query, role.name
                )));
            }
            from_query = Some(value.into_owned());
        }
    }
    let mut header_values = headers.get_all(role.header).iter();
    let from_header = match (header_values.next(), header_values.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(bad(format!(
                "header {} is given more than once; give the {} once",
                role.header, role.name
            )));
        }
        (Some(v), None) => Some(v.to_str().map(str::to_owned).map_err(|_| {
            bad(format!(
                "header {} is not visible ASCII; percent-encode the URL",
                role.header
            ))
        })?),
    };
    let parse = |raw: &str, source: String| {
        allowlist
            .parse(raw)
            .map_err(|e| bad(format!("{} ({source}) {e}", role.name)))
    };
    let query_source = format!("query parameter {}", role.query);
    let header_source = format!("header {}", role.header);
    let (url, source) = match (from_query, from_header) {
        (None, None) => return Ok(None),
        (Some(q), None) => (parse(&q, query_source.clone())?, query_source),
        (None, Some(h)) => (parse(&h, header_source.clone())?, header_source),
        (Some(q), Some(h)) => {
            let q = parse(&q, query_source)?;
            let h = parse(&h, header_source)?;
            if q != h {
                return Err(bad(format!(
                    "the {} is given twice with different values (query parameter {} and header {}); give it once",
                    role.name, role.query, role.header
                )));
            }
            (q, format!("query parameter {}", role.query))
        }
    };
    if !allowlist.allows(&url) {
        let hint = if allowlist.is_empty() {
            "this bridge has no allowlist, so it refuses every backend (operator: set --allowlist)"
        } else {
            "ask the operator to allow it with --allowlist or --host-suffix-allowlist"
        };
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "allowlist",
            format!(
                "{} ({source}) {} is not allowed: {hint}",
                role.name,
                redacted(&url)
            ),
        ));
    }
    Ok(Some(url))
}

/// Checks that the request is a WebSocket upgrade and returns its `Sec-WebSocket-Key`.
pub fn check_upgrade(headers: &HeaderMap) -> Result<HeaderValue, Refusal> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            "not-websocket",
            "this endpoint only accepts WebSocket connections: send Upgrade: websocket and Connection: Upgrade (use a WebSocket client)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            "not-websocket",
            "unsupported WebSocket version: send Sec-WebSocket-Version: 13",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24)
        .cloned()
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "not-websocket",
                "missing or malformed Sec-WebSocket-Key (expected 16 bytes, base64-encoded)",
            )
        })?;
    Ok(key)
}

/// Backend host names looked up at once for `--deny-private-networks`; beyond it a handshake
/// gets 503, so a flood of handshakes naming slow domains cannot queue unbounded DNS work.
pub const MAX_CONCURRENT_LOOKUPS: usize = 64;

/// The `GET /connect` handler: accepts the connection or answers one [`Refusal`].
pub(crate) async fn connect(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ClientAddr>()
        .map(|a| a.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let client =
        shared
            .trusted_proxies
            .client(peer, shared.config.tls.is_some(), request.headers());
    let client_ip = client.ip;
    match accept(&shared, client, request).await {
        Ok(response) => response,
        Err(refusal) => refuse(&shared, client_ip, refusal),
    }
}

/// The checks, cheapest first (no DNS, no backend request before the connection holds a
/// slot), then the connect hook, the registration and the 101.
async fn accept(
    shared: &Arc<Shared>,
    client: ClientOrigin,
    mut request: Request,
) -> Result<Response, Refusal> {
    if shared.shutdown.is_cancelled() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "this bridge is shutting down; connect again (to another instance)",
        )
        .retry_after(1));
    }
    let key = check_upgrade(request.headers())?;
    check_header_sizes(request.headers())?;
    check_origin(&shared.config.allowed_origins, request.headers())?;
    let urls = backend_urls(
        request.uri().query(),
        request.headers(),
        &shared.config.allowlist,
    )?;
    let on_upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::UPGRADE_REQUIRED,
                "not-websocket",
                "this connection cannot be upgraded to WebSocket (use HTTP/1.1)",
            )
        })?;
    let slot = shared
        .limits
        .try_acquire(client.ip)
        .map_err(limit_refusal)?;
    if shared.config.deny_private_networks {
        check_private_networks(shared, &urls).await?;
    }
    let id = ConnectionId::random();
    let request_ids = RequestIds::random().map_err(|e| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{e}; try again later"),
        )
        .warn()
    })?;
    let callback_url = format!("{}/{}", shared.base_url, id.full());
    let callback = HeaderValue::from_str(&callback_url).map_err(|_| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot build the callback URL",
        )
        .warn()
    })?;
    let offered = offered_subprotocols(request.headers());
    let hooked = match &urls.connect {
        Some(hook) => {
            let headers = forwarded_headers(request.headers(), &client, request.uri());
            run_hook(shared, hook, &callback, &request_ids, headers, &offered).await?
        }
        None => Hooked::default(),
    };

    let (sender, receiver) = mpsc::channel(shared.config.send_queue);
    let stats = Arc::new(ConnectionStats::new(hooked.subprotocol.clone()));
    let handle = ConnectionHandle {
        sender,
        stats: Arc::clone(&stats),
        body_reads: Arc::new(tokio::sync::Semaphore::new(
            crate::callback::CALLBACK_BODIES_PER_CONNECTION,
        )),
    };
    let registration = shared.registry.register(id, handle);
    let connection = Connection {
        frame_url: Arc::new(shared.backend.target(urls.frame)),
        disconnect_url: urls.disconnect.map(|u| shared.backend.target(u)),
        callback,
        request_ids,
        registration,
        outbound: receiver,
        stats,
        first_message: hooked.first_message,
        slot,
    };
    let span = info_span!("conn", conn.id = %id, client.addr = %client.ip);
    shared
        .tracker
        .spawn(upgrade_and_run(on_upgrade, connection, Arc::clone(shared)).instrument(span));

    if let Some(upgraded) = request.extensions().get::<crate::idle::Upgraded>() {
        upgraded.mark();
    }
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = hooked
        .subprotocol
        .and_then(|p| HeaderValue::from_str(&p).ok())
    {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    Ok(response)
}

/// Waits for the upgrade to complete, then runs the connection task.
async fn upgrade_and_run(
    on_upgrade: hyper::upgrade::OnUpgrade,
    connection: Connection,
    shared: Arc<Shared>,
) {
    info!(
        frame = %redacted(connection.frame_url.url()),
        disconnect = connection.disconnect_url.as_ref().map(|t| redacted(t.url())).unwrap_or_default(),
        "connection opened"
    );
    match on_upgrade.await {
        Ok(upgraded) => {
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(shared.ws_config),
            )
            .await;
            connection::run(ws, connection, shared).await;
        }
        Err(e) => {
            let ending = Ending::client_gone(&format!("upgrade failed: {e}"));
            drop(connection.registration);
            if let Some(url) = &connection.disconnect_url
                && let Err(e) = shared
                    .backend
                    .post_disconnect(url, &connection.callback, &connection.request_ids, &ending)
                    .await
            {
                warn!(error = %e.detail(), "disconnect POST failed");
            }
            info!(%ending, "connection closed");
        }
    }
}

/// Refuses an `Origin` outside `--allowed-origin` (403).
fn check_origin(policy: &OriginPolicy, headers: &HeaderMap) -> Result<(), Refusal> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if policy.allows(origin) {
        return Ok(());
    }
    Err(Refusal::new(
        StatusCode::FORBIDDEN,
        "origin",
        match origin {
            Some(o) => format!("origin {o:?} may not open connections here (--allowed-origin)"),
            None => "an Origin header is required here (--allowed-origin is set)".to_owned(),
        },
    ))
}

/// Resolves each distinct backend host once and refuses private addresses (403), with at most
/// [`MAX_CONCURRENT_LOOKUPS`] lookups bridge-wide (503 beyond).
async fn check_private_networks(shared: &Shared, urls: &BackendUrls) -> Result<(), Refusal> {
    let Ok(_permit) = shared.lookups.try_acquire() else {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy-lookups",
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
        if let Err(why) = crate::ssrf::check_url(url).await {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "private-network",
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
}

/// POSTs the connect hook; its refusal, failure or unusable answer is the handshake's.
async fn run_hook(
    shared: &Shared,
    hook: &Url,
    callback: &HeaderValue,
    request_ids: &RequestIds,
    headers: HeaderMap,
    offered: &[String],
) -> Result<Hooked, Refusal> {
    let target = shared.backend.target(hook.clone());
    match shared
        .backend
        .post_connect(&target, callback, request_ids, headers)
        .await
    {
        Ok(ConnectAnswer::Accept {
            subprotocol,
            first_message,
        }) => {
            if let Some(selected) = &subprotocol
                && !offered.iter().any(|o| o == selected)
            {
                return Err(Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    "hook-subprotocol",
                    format!(
                        "the connect hook selected subprotocol {selected:?}, which the client did not offer"
                    ),
                )
                .warn());
            }
            Ok(Hooked {
                subprotocol,
                first_message,
            })
        }
        Ok(ConnectAnswer::Refuse {
            status,
            content_type,
            body,
        }) => {
            let mut refusal = Refusal::new(status, "hook-refused", "refused by the connect hook");
            refusal.passthrough = Some(Box::new((content_type, body)));
            Err(refusal)
        }
        Err(e) => {
            let (status, what) = match e {
                BackendError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "did not answer in time"),
                BackendError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "is unreachable"),
                _ => (StatusCode::BAD_GATEWAY, "failed"),
            };
            warn!(error = %e.detail(), "connect hook failed");
            Err(Refusal::new(
                status,
                "hook-failed",
                format!("the connect hook {what}; try again later"),
            )
            .warn())
        }
    }
}

/// The refusal for a handshake over a connection limit.
fn limit_refusal(refusal: LimitRefusal) -> Refusal {
    match refusal {
        LimitRefusal::Full { limit } => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "max-connections",
            format!(
                "this bridge is at its limit of {limit} open connections (--max-connections); retry later"
            ),
        ),
        LimitRefusal::OpenFiles { limit, open_files } => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "open-files",
            format!(
                "this bridge is at its limit of {limit} open connections, all that its open-files limit ({open_files}) holds; retry later (operator: raise it with ulimit -n or LimitNOFILE=, or lower --max-connections)"
            ),
        ),
        LimitRefusal::PerIp { limit } => Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "max-connections-per-ip",
            format!(
                "too many open connections from your address (limit {limit}, --max-connections-per-ip); close some first"
            ),
        ),
    }
    .warn()
    .retry_after(1)
}

/// Longest value of one client header forwarded to the connect hook.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;

/// Refuses handshakes carrying a header value longer than [`MAX_HEADER_VALUE`] (431), so a
/// client cannot make the bridge forward oversized headers to a backend.
pub fn check_header_sizes(headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.iter().find(|(_, v)| v.len() > MAX_HEADER_VALUE) {
        Some((name, v)) => Err(Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header-too-large",
            format!(
                "header {name} is {} bytes long; at most {MAX_HEADER_VALUE} bytes per header are accepted",
                v.len()
            ),
        )),
        None => Ok(()),
    }
}

/// The subprotocols the client offered, in its order.
pub fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Headers never forwarded to the connect hook: hop-by-hop headers, the WebSocket handshake's
/// own, those the bridge sets itself, and anything a client could use to spoof the bridge.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
];

/// The client's handshake headers as forwarded to the connect hook, without hop-by-hop and
/// forwarding headers, plus the bridge's own `x-forwarded-for` (the client's address, as found
/// behind `--trusted-proxy`), `x-forwarded-proto`, `x-forwarded-host` and
/// `x-ws-proxy-request-uri`.
pub fn forwarded_headers(
    headers: &HeaderMap,
    client: &ClientOrigin,
    uri: &axum::http::Uri,
) -> HeaderMap {
    let named_in_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if NOT_FORWARDED.contains(&n)
            || n.starts_with("x-ws-proxy-")
            || is_forwarding_header(n)
            || named_in_connection.iter().any(|c| c == n)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if let Ok(ip) = HeaderValue::from_str(&client.ip.to_string()) {
        out.insert("x-forwarded-for", ip);
    }
    out.insert("x-forwarded-proto", HeaderValue::from_static(client.proto));
    if let Some(host) = &client.host {
        out.insert("x-forwarded-host", host.clone());
    }
    let request_uri = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/connect");
    if let Ok(v) = HeaderValue::from_str(request_uri) {
        out.insert(crate::backend::HEADER_REQUEST_URI, v);
    }
    out
}

/// Longest host or path shown in a logged URL, in bytes.
const MAX_LOGGED_PART: usize = 100;

/// A backend URL for logs and refusal messages: scheme, host, port and path, each cut to
/// about 100 bytes; never the query (it may carry secrets) nor the fragment.
pub fn redacted(url: &Url) -> String {
    let cut = |part: &str| -> String {
        if part.len() <= MAX_LOGGED_PART {
            return part.to_owned();
        }
        let mut end = MAX_LOGGED_PART;
        while !part.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &part[..end])
    };
    let mut out = format!(
        "{}://{}",
        url.scheme(),
        cut(&url[url::Position::BeforeHost..url::Position::AfterPort])
    );
    out.push_str(&cut(url.path()));
    if url.query().is_some() {
        out.push_str("?…");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allowlist::Allowlist;

    fn allow(patterns: &[&str]) -> Allowlist {
        let p: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        Allowlist::new(&p, &[]).unwrap_or_default()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn urls_come_from_query_or_headers() {
        let a = allow(&[r"http://b\.example/.*"]);
        let q = "f=http%3A%2F%2Fb.example%2Ff&d=http://b.example/d";
        let urls = backend_urls(Some(q), &HeaderMap::new(), &a);
        assert_eq!(
            urls.map(|u| u.frame.to_string()).ok().as_deref(),
            Some("http://b.example/f")
        );
        let h = headers(&[(HEADER_ON_FRAME, "http://b.example/f")]);
        let urls = backend_urls(None, &h, &a);
        assert!(urls.is_ok_and(|u| u.disconnect.is_none()));
    }

    #[test]
    fn conflicts_and_bad_urls_are_400_and_refusals_403() {
        let a = allow(&[r"http://b\.example/.*"]);
        let h = headers(&[(HEADER_ON_FRAME, "http://b.example/other")]);
        let r = backend_urls(Some("f=http://b.example/f"), &h, &a);
        assert_eq!(r.err().map(|r| r.status), Some(StatusCode::BAD_REQUEST));
        let same = headers(&[(HEADER_ON_FRAME, "http://B.example/f")]);
        assert!(backend_urls(Some("f=http://b.example/f"), &same, &a).is_ok());
        for q in [
            "",
            "f=nope",
            "f=ftp://b.example/",
            "f=http://u:p@b.example/",
            "f=1&f=2",
        ] {
            let r = backend_urls(Some(q), &HeaderMap::new(), &a);
            assert_eq!(
                r.err().map(|r| r.status),
                Some(StatusCode::BAD_REQUEST),
                "{q}"
            );
        }
        let r = backend_urls(
            Some("f=http://b.example/f&d=http://evil.example/"),
            &HeaderMap::new(),
            &a,
        );
        let r = r.err();
        assert_eq!(r.as_ref().map(|r| r.status), Some(StatusCode::FORBIDDEN));
        assert!(r.is_some_and(
            |r| r.message.contains("disconnect URL") && r.message.contains("query parameter d")
        ));
    }

    #[test]
    fn upgrade_headers_are_required() {
        let r = check_upgrade(&HeaderMap::new());
        assert_eq!(
            r.err().map(|r| r.status),
            Some(StatusCode::UPGRADE_REQUIRED)
        );
        let h = headers(&[
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert!(check_upgrade(&h).is_ok());
    }

    #[test]
    fn logged_urls_hide_the_query() {
        let url =
            Url::parse("https://b.example/f?token=secret#x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(redacted(&url), "https://b.example/f?…");
        let url = Url::parse("http://b.example:8080/f#frag").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(redacted(&url), "http://b.example:8080/f");
    }

    #[test]
    fn logged_urls_are_short() {
        let long = format!("https://b.example/{}?token=secret", "p".repeat(60_000));
        let url = Url::parse(&long).unwrap_or_else(|e| panic!("{e}"));
        let shown = redacted(&url);
        assert!(shown.len() < 150, "{}", shown.len());
        assert!(shown.starts_with("https://b.example/ppp") && shown.ends_with("…?…"));
    }
}
