//! The one surface the fuzz targets in `fuzz/` reach the bridge through: every parser that
//! reads client or backend bytes, wrapped or re-exported here, plus helpers that turn raw fuzz
//! input into the types those parsers take. Compiled only with the `fuzzing` feature and hidden
//! from the docs: not an API. When a parser moves or turns private, this file changes and the
//! targets do not. Owns no logic of its own beyond input shaping.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderName;
use bytes::Bytes;

pub use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
pub use url::Url;

/// Longest close reason a Close frame can carry.
pub const MAX_REASON_BYTES: usize = crate::protocol::MAX_REASON_BYTES;

/// An operator's allowlist (opaque).
pub struct Allowlist(crate::policy::allowlist::Allowlist);

/// An `--allowed-origin` policy (opaque).
pub struct OriginPolicy(crate::policy::origin::OriginPolicy);

/// A message as the bridge would carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// UTF-8 text.
    Text(Bytes),
    /// Arbitrary bytes.
    Binary(Bytes),
}

impl Payload {
    /// The payload bytes.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Payload::Text(b) | Payload::Binary(b) => b,
        }
    }
}

/// The backend URLs an accepted handshake names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrls {
    /// Where each client message is POSTed.
    pub frame: Url,
    /// Where the disconnect notice is POSTed, if anywhere.
    pub disconnect: Option<Url>,
    /// Where the connect hook is POSTed, if anywhere.
    pub connect: Option<Url>,
}

/// Headers from a block of `name: value` lines (`\n`-separated, a trailing `\r` ignored), as a
/// client or backend could send them. Lines hyper would have refused (no colon, an invalid
/// name or value) are left out, as they never reach the bridge's parsers.
pub fn headers(block: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.trim_ascii();
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    map
}

/// Splits fuzz input at its first `\n`: the first line and the rest.
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// An allowlist of the shapes operators write: two anchored patterns and a host suffix.
/// `None` only if those fixed entries stopped compiling.
pub fn sample_allowlist() -> Option<Allowlist> {
    crate::policy::allowlist::Allowlist::new(
        &[
            r"https://api\.example\.com/ws/.*".to_owned(),
            r"http://127\.0\.0\.1:9000/.*".to_owned(),
        ],
        &["example.org".to_owned()],
    )
    .ok()
    .map(Allowlist)
}

/// An allowlist with only the host suffix `suffix` (for the suffix properties).
pub fn suffix_allowlist(suffix: &str) -> Option<Allowlist> {
    crate::policy::allowlist::Allowlist::new(&[], &[suffix.to_owned()])
        .ok()
        .map(Allowlist)
}

/// An origin policy with an exact origin and a subdomain pattern.
pub fn sample_origin_policy() -> Option<OriginPolicy> {
    crate::policy::origin::OriginPolicy::new(&[
        "https://app.example.com".to_owned(),
        "https://*.example.org".to_owned(),
    ])
    .ok()
    .map(OriginPolicy)
}

/// `GET /connect`: the frame, disconnect and connect hook URLs from the query and headers,
/// checked against `allowlist`; on refusal, its status and message.
pub fn backend_urls(
    query: Option<&str>,
    headers: &HeaderMap,
    allowlist: &Allowlist,
) -> Result<BackendUrls, (StatusCode, String)> {
    crate::session::request::backend_urls(query, headers, &allowlist.0)
        .map(|u| BackendUrls {
            frame: u.frame,
            disconnect: u.disconnect,
            connect: u.connect,
        })
        .map_err(|r| (r.status, r.message))
}

/// A client-named backend URL, parsed and checked for scheme, user info and host.
pub fn parse_backend_url(raw: &str) -> Result<Url, String> {
    crate::policy::allowlist::parse_backend_url(raw).map_err(|e| e.to_string())
}

/// Whether the allowlist admits an already parsed backend URL.
pub fn allows(allowlist: &Allowlist, url: &Url) -> bool {
    allowlist.0.allows(url)
}

/// The WebSocket upgrade checks: the `Sec-WebSocket-Key`, or the refusal's status.
pub fn check_upgrade(headers: &HeaderMap) -> Result<HeaderValue, StatusCode> {
    crate::session::request::check_upgrade(headers).map_err(|r| r.status)
}

/// The subprotocols a client offered, in its order.
pub fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
    crate::session::request::offered_subprotocols(headers)
}

/// The headers forwarded to the connect hook.
pub fn forwarded_headers(
    headers: &HeaderMap,
    client: SocketAddr,
    tls: bool,
    uri: &Uri,
) -> HeaderMap {
    let origin = crate::policy::forwarded::TrustedProxies::default().client(client, tls, headers);
    crate::backend::hook::forwarded_headers(headers, &origin, uri)
}

/// Whether the origin policy admits a handshake's `Origin`.
pub fn origin_allowed(policy: &OriginPolicy, origin: Option<&str>) -> bool {
    policy.0.allows(origin)
}

/// A backend's `Retry-After` (seconds or an HTTP date).
pub fn retry_after(value: &HeaderValue) -> Option<Duration> {
    crate::backend::retry::retry_after(Some(value))
}

/// A callback body and its content type as a message: text or binary.
pub fn payload_from_http(
    content_type: Option<&HeaderValue>,
    body: &[u8],
) -> Result<Payload, String> {
    use crate::protocol::Payload as Carried;
    match Carried::from_http(content_type, Bytes::copy_from_slice(body)) {
        Ok(Carried::Text(text)) => Ok(Payload::Text(text)),
        Ok(Carried::Binary(bytes)) => Ok(Payload::Binary(bytes)),
        Err(e) => Err(e.to_string()),
    }
}

/// `DELETE {callback}?code=…&reason=…`: the close code and reason, or the 400 message.
pub fn close_params(query: Option<&str>) -> Result<(u16, String), String> {
    crate::callback::close::close_params(query).map_err(|e| e.to_string())
}

/// The lean callback path's parse of a connection's buffered bytes (callback prefix `/`, at
/// most 1,024 body bytes): `Some((token, head length, request length))` for a lean `POST`,
/// `None` for anything else or not enough to tell.
pub fn lean_request(buf: &[u8]) -> Option<(String, usize, usize)> {
    match crate::server::http::fast::parse(buf, "/", 1024) {
        crate::server::http::fast::Parsed::Post(head) => {
            Some((head.token.to_owned(), head.head, head.end))
        }
        _ => None,
    }
}

/// A close reason cut to fit a Close frame.
pub fn truncate_reason(reason: &str) -> String {
    crate::protocol::truncate_reason(reason)
}

/// A close reason encoded for the `x-ws-proxy-close-reason` header.
pub fn header_safe_reason(reason: &str) -> String {
    crate::protocol::header_safe_reason(reason)
}

/// The id in a callback path, as the whole id it parsed to.
pub fn connection_id(s: &str) -> Option<String> {
    crate::session::registry::ConnectionId::parse(s).map(|id| id.full())
}

/// A size flag's value (`--max-message-size 1MiB`).
pub fn parse_size(value: &str) -> Result<usize, String> {
    crate::config::parse::parse_size(value).map_err(|e| e.to_string())
}

/// A duration flag's value (`--backend-timeout 10s`).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    crate::config::parse::parse_duration(value).map_err(|e| e.to_string())
}

/// A WebSocket-over-HTTP body (contents up to `max_content` bytes each): its events encoded
/// again, or the error's message.
pub fn ws_events(body: &[u8], max_content: usize) -> Result<Vec<u8>, String> {
    use crate::protocol::events;
    let events =
        events::decode(&Bytes::copy_from_slice(body), max_content).map_err(|e| e.to_string())?;
    let mut out = bytes::BytesMut::new();
    for event in &events {
        events::encode(event, &mut out);
    }
    Ok(out.to_vec())
}

/// What a request leaves to send again after partial acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsReplay {
    /// The events to replay, encoded.
    pub events: Vec<u8>,
    /// The next request's `Content-Bytes-Replayed`.
    pub replayed_bytes: usize,
    /// The content bytes the request offered.
    pub offered: usize,
}

/// The events of `body` taken as a request the backend answered with `Content-Bytes-Accepted:
/// accepted`: what is left to replay, or the error's message. `None` when `body` is not a run
/// of events.
pub fn ws_events_replay(body: &[u8], accepted: usize) -> Option<Result<WsReplay, String>> {
    use crate::protocol::events;
    let sent = events::decode(&Bytes::copy_from_slice(body), usize::MAX).ok()?;
    let offered = sent.iter().map(events::Event::content_len).sum();
    Some(
        events::replay_after(&sent, Some(accepted))
            .map(|replay| {
                let mut out = bytes::BytesMut::new();
                for event in &replay.events {
                    events::encode(event, &mut out);
                }
                WsReplay {
                    events: out.to_vec(),
                    replayed_bytes: replay.replayed_bytes,
                    offered,
                }
            })
            .map_err(|e| e.to_string()),
    )
}

/// A backend TEXT message under the `Sec-WebSocket-Extensions` value `extension`: `None` when
/// it negotiates no `grip`; else the message for the client (prefix stripped), `Ok(None)` for
/// a control message or a dropped one, or the control error's message.
pub fn grip_text(extension: &str, text: &[u8]) -> Option<Result<Option<Vec<u8>>, String>> {
    use crate::protocol::grip_control::{self, FromBackend};
    let ext = grip_control::parse_extension(extension)?;
    Some(
        match grip_control::classify_text(&ext, &Bytes::copy_from_slice(text)) {
            Ok(FromBackend::Message(m)) => Ok(Some(m.to_vec())),
            Ok(FromBackend::Control(_) | FromBackend::Dropped) => Ok(None),
            Err(e) => Err(e.to_string()),
        },
    )
}
