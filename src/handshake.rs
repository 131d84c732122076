//! `GET /connect`: validates the client's backend URLs against the allowlist, checks the
//! WebSocket upgrade request, registers the connection and answers 101; the connection task is
//! spawned on the upgraded socket. Owns the refusal messages a client sees at connect time.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{Instrument, info, info_span, warn};
use url::Url;

use crate::allowlist::parse_backend_url;
use crate::backend::{BackendError, ConnectAnswer};
use crate::close::Ending;
use crate::connection::{self, Connection};
use crate::limits::{LimitRefusal, worth_logging};
use crate::registry::{ConnectionHandle, ConnectionId, ConnectionStats};
use crate::server::{ClientAddr, Shared};

/// Header naming the frame URL (alternative to query `f`).
pub const HEADER_ON_FRAME: &str = "x-ws-proxy-on-frame";
/// Header naming the disconnect URL (alternative to query `d`).
pub const HEADER_ON_DISCONNECT: &str = "x-ws-proxy-on-disconnect";
/// Header naming the connect hook URL (alternative to query `c`).
pub const HEADER_ON_CONNECT: &str = "x-ws-proxy-on-connect";

/// A refused handshake: status code and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// 400, 403, 426 or 500.
    pub status: StatusCode,
    /// What was wrong and how to fix it.
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        if self.status == StatusCode::UPGRADE_REQUIRED {
            let headers = response.headers_mut();
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
    let bad = |message: String| Refusal::new(StatusCode::BAD_REQUEST, message);
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
        parse_backend_url(raw).map_err(|e| bad(format!("{} ({source}) {e}", role.name)))
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
            format!("{} ({source}) {url} is not allowed: {hint}", role.name),
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
            "this endpoint only accepts WebSocket connections: send Upgrade: websocket and Connection: Upgrade (use a WebSocket client)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
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
                "missing or malformed Sec-WebSocket-Key (expected 16 bytes, base64-encoded)",
            )
        })?;
    Ok(key)
}

/// The `GET /connect` handler.
pub(crate) async fn connect(State(shared): State<Arc<Shared>>, mut request: Request) -> Response {
    let client_addr = request
        .extensions()
        .get::<ClientAddr>()
        .map(|a| a.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    if shared.shutdown.is_cancelled() {
        let mut response = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this bridge is shutting down; connect again (to another instance)",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        shared.metrics.refusal("shutting-down");
        return response;
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if !shared.config.allowed_origins.allows(origin) {
        let refusal = Refusal::new(
            StatusCode::FORBIDDEN,
            match origin {
                Some(o) => format!("origin {o:?} may not open connections here (--allowed-origin)"),
                None => "an Origin header is required here (--allowed-origin is set)".to_owned(),
            },
        );
        warn!(client.addr = %client_addr, reason = %refusal.message, "connection refused");
        shared.metrics.refusal("origin");
        return refusal.into_response();
    }
    if let Err(refusal) = check_header_sizes(request.headers()) {
        info!(client.addr = %client_addr, reason = %refusal.message, "connection refused");
        shared.metrics.refusal("header-too-large");
        return refusal.into_response();
    }
    let urls = match backend_urls(
        request.uri().query(),
        request.headers(),
        &shared.config.allowlist,
    ) {
        Ok(urls) => urls,
        Err(refusal) => {
            warn!(client.addr = %client_addr, status = refusal.status.as_u16(), reason = %refusal.message, "connection refused");
            shared
                .metrics
                .refusal(if refusal.status == StatusCode::FORBIDDEN {
                    "allowlist"
                } else {
                    "bad-request"
                });
            return refusal.into_response();
        }
    };
    if shared.config.deny_private_networks {
        let named = [
            ("frame URL", Some(&urls.frame)),
            ("disconnect URL", urls.disconnect.as_ref()),
            ("connect hook URL", urls.connect.as_ref()),
        ];
        for (name, url) in named {
            if let Some(url) = url
                && let Err(why) = crate::ssrf::check_url(url).await
            {
                let refusal = Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!("{name} {url} is refused: {why}"),
                );
                warn!(client.addr = %client_addr, reason = %refusal.message, "connection refused");
                shared.metrics.refusal("private-network");
                return refusal.into_response();
            }
        }
    }
    let key = match check_upgrade(request.headers()) {
        Ok(key) => key,
        Err(refusal) => {
            info!(client.addr = %client_addr, status = refusal.status.as_u16(), reason = %refusal.message, "connection refused");
            shared.metrics.refusal("not-websocket");
            return refusal.into_response();
        }
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded to WebSocket (use HTTP/1.1)",
        )
        .into_response();
    };

    let slot = match shared.limits.try_acquire(client_addr.ip()) {
        Ok(slot) => slot,
        Err(refusal) => {
            shared.metrics.refusal(match refusal {
                LimitRefusal::Full { .. } => "max-connections",
                LimitRefusal::OpenFiles { .. } => "open-files",
                LimitRefusal::PerIp { .. } => "max-connections-per-ip",
            });
            return limit_refusal(refusal, client_addr);
        }
    };
    let offered = offered_subprotocols(request.headers());
    let id = ConnectionId::random();
    let callback_url = format!("{}/{}", shared.base_url, id.full());
    let Ok(callback) = HeaderValue::from_str(&callback_url) else {
        return Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot build the callback URL",
        )
        .into_response();
    };

    let mut subprotocol = None;
    let mut first_message = None;
    if let Some(hook) = &urls.connect {
        let headers = forwarded_headers(
            request.headers(),
            client_addr,
            shared.config.tls.is_some(),
            request.uri(),
        );
        let target = shared.backend.target(hook.clone());
        match shared
            .backend
            .post_connect(&target, &callback, headers)
            .await
        {
            Ok(ConnectAnswer::Accept {
                subprotocol: selected,
                first_message: first,
            }) => {
                if let Some(selected) = &selected
                    && !offered.iter().any(|o| o == selected)
                {
                    let refusal = Refusal::new(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "the connect hook selected subprotocol {selected:?}, which the client did not offer"
                        ),
                    );
                    warn!(conn.id = %id, client.addr = %client_addr, reason = %refusal.message, "connection refused");
                    shared.metrics.refusal("hook-subprotocol");
                    return refusal.into_response();
                }
                subprotocol = selected;
                first_message = first;
            }
            Ok(ConnectAnswer::Refuse {
                status,
                content_type,
                body,
            }) => {
                info!(conn.id = %id, client.addr = %client_addr, status = status.as_u16(), "connection refused by the connect hook");
                shared.metrics.refusal("hook-refused");
                let mut response = (status, body).into_response();
                if let Some(ct) = content_type {
                    response.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                return response;
            }
            Err(e) => {
                let (status, what) = match e {
                    BackendError::Timeout => {
                        (StatusCode::GATEWAY_TIMEOUT, "did not answer in time")
                    }
                    BackendError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "is unreachable"),
                    _ => (StatusCode::BAD_GATEWAY, "failed"),
                };
                warn!(conn.id = %id, client.addr = %client_addr, error = %e.detail(), "connect hook failed");
                shared.metrics.refusal("hook-failed");
                return Refusal::new(status, format!("the connect hook {what}; try again later"))
                    .into_response();
            }
        }
    }

    let (sender, receiver) = mpsc::channel(shared.config.send_queue);
    let stats = Arc::new(ConnectionStats::new(subprotocol.clone()));
    let handle = ConnectionHandle {
        sender,
        stats: Arc::clone(&stats),
    };
    let registration = shared.registry.register(id, handle);
    let connection = Connection {
        id,
        frame_url: Arc::new(shared.backend.target(urls.frame)),
        disconnect_url: urls.disconnect.map(|u| shared.backend.target(u)),
        callback,
        registration,
        outbound: receiver,
        stats,
        first_message,
        slot,
    };
    let span = info_span!("conn", conn.id = %id, client.addr = %client_addr);
    let task_shared = Arc::clone(&shared);
    shared.tracker.spawn(
        async move {
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
                        Some(task_shared.ws_config),
                    )
                    .await;
                    connection::run(ws, connection, task_shared).await;
                }
                Err(e) => {
                    let ending = Ending::client_gone(&format!("upgrade failed: {e}"));
                    drop(connection.registration);
                    if let Some(url) = &connection.disconnect_url {
                        let _ = task_shared
                            .backend
                            .post_disconnect(url, &connection.callback, &ending)
                            .await;
                    }
                    info!(%ending, "connection closed");
                }
            }
        }
        .instrument(span),
    );

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
    if let Some(protocol) = subprotocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// Answers a handshake refused by a connection limit, logging it with its running count.
fn limit_refusal(refusal: LimitRefusal, client_addr: SocketAddr) -> Response {
    let (status, message, total, flag) = match refusal {
        LimitRefusal::Full { limit, total } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this bridge is at its limit of {limit} open connections (--max-connections); retry later"
            ),
            total,
            "--max-connections",
        ),
        LimitRefusal::OpenFiles {
            limit,
            open_files,
            total,
        } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this bridge is at its limit of {limit} open connections, all that its open-files limit ({open_files}) holds; retry later"
            ),
            total,
            "open files (RLIMIT_NOFILE): raise it (ulimit -n, LimitNOFILE=) or lower --max-connections",
        ),
        LimitRefusal::PerIp { limit, total } => (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many open connections from your address (limit {limit}, --max-connections-per-ip); close some first"
            ),
            total,
            "--max-connections-per-ip",
        ),
    };
    if worth_logging(total) {
        warn!(client.addr = %client_addr, limit = flag, refused_total = total, "connection refused by a limit");
    }
    let mut response = Refusal::new(status, message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Longest value of one client header forwarded to the connect hook.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;

/// Refuses handshakes carrying a header value longer than [`MAX_HEADER_VALUE`] (431), so a
/// client cannot make the bridge forward oversized headers to a backend.
pub fn check_header_sizes(headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.iter().find(|(_, v)| v.len() > MAX_HEADER_VALUE) {
        Some((name, v)) => Err(Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
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
    "x-forwarded-proto",
    "x-forwarded-for",
];

/// The client's handshake headers as forwarded to the connect hook, plus `x-forwarded-for`
/// (the client's address appended to any it sent), `x-forwarded-proto`, `x-forwarded-host`
/// and `x-ws-proxy-request-uri`.
pub fn forwarded_headers(
    headers: &HeaderMap,
    client: SocketAddr,
    tls: bool,
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
            || named_in_connection.iter().any(|c| c == n)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    let prior: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let mut chain = prior.join(", ");
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    chain.push_str(&client.ip().to_string());
    if let Ok(v) = HeaderValue::from_str(&chain) {
        out.insert("x-forwarded-for", v);
    }
    out.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(host) = headers.get(header::HOST) {
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

/// A backend URL for logs: scheme, host, port and path; the query may carry secrets.
pub fn redacted(url: &Url) -> String {
    let end = url::Position::AfterPath;
    let shown = &url[..end];
    if url.query().is_some() {
        format!("{shown}?…")
    } else {
        shown.to_owned()
    }
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
    }
}
