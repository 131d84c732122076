//! Reading a client's handshake request: the backend URLs it names (query or headers, checked
//! against the allowlist), the WebSocket upgrade headers, header sizes, the `Origin`, and the
//! subprotocols it offers. Each check answers a [`Refusal`]; no I/O.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use url::Url;

use super::refusal::Refusal;
use crate::logging::redacted;
use crate::metrics::RefusalReason;
use crate::policy::origin::OriginPolicy;
use crate::protocol::{
    HEADER_ON_CONNECT, HEADER_ON_DISCONNECT, HEADER_ON_FRAME, QUERY_ON_CONNECT,
    QUERY_ON_DISCONNECT, QUERY_ON_FRAME,
};

/// One backend URL role: where it may be given and how it is named in messages.
struct UrlRole {
    query: &'static str,
    header: &'static str,
    name: &'static str,
}

const FRAME: UrlRole = UrlRole {
    query: QUERY_ON_FRAME,
    header: HEADER_ON_FRAME,
    name: "frame URL",
};
const CONNECT: UrlRole = UrlRole {
    query: QUERY_ON_CONNECT,
    header: HEADER_ON_CONNECT,
    name: "connect hook URL",
};
const DISCONNECT: UrlRole = UrlRole {
    query: QUERY_ON_DISCONNECT,
    header: HEADER_ON_DISCONNECT,
    name: "disconnect URL",
};

/// The backend URLs of an accepted handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendUrls {
    /// Where each client message is POSTed.
    pub(crate) frame: Url,
    /// Where the disconnect notice is POSTed, if anywhere.
    pub(crate) disconnect: Option<Url>,
    /// Where the connect hook is POSTed before the upgrade, if anywhere.
    pub(crate) connect: Option<Url>,
    /// Connections opened through a `--route`: the client's path and query, sent as
    /// `x-ws-proxy-request-uri` with every request.
    pub(crate) request_uri: Option<HeaderValue>,
    /// A websocket-over-http route: `frame` is the events URL.
    pub(crate) events: bool,
}

/// Extracts and checks the backend URLs from the query string and headers.
pub(crate) fn backend_urls(
    query: Option<&str>,
    headers: &HeaderMap,
    allowlist: &crate::policy::allowlist::Allowlist,
) -> Result<BackendUrls, Refusal> {
    let frame = role_url(&FRAME, query, headers, allowlist)?.ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            RefusalReason::BadRequest,
            "missing frame URL: pass it as query parameter f (URL-encoded) or header x-ws-proxy-on-frame",
        )
    })?;
    let disconnect = role_url(&DISCONNECT, query, headers, allowlist)?;
    let connect = role_url(&CONNECT, query, headers, allowlist)?;
    Ok(BackendUrls {
        frame,
        disconnect,
        connect,
        request_uri: None,
        events: false,
    })
}

fn role_url(
    role: &UrlRole,
    query: Option<&str>,
    headers: &HeaderMap,
    allowlist: &crate::policy::allowlist::Allowlist,
) -> Result<Option<Url>, Refusal> {
    let bad =
        |message: String| Refusal::new(StatusCode::BAD_REQUEST, RefusalReason::BadRequest, message);
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
            RefusalReason::Allowlist,
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
pub(crate) fn check_upgrade(headers: &HeaderMap) -> Result<HeaderValue, Refusal> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            RefusalReason::NotWebSocket,
            "this endpoint only accepts WebSocket connections: send Upgrade: websocket and Connection: Upgrade (use a WebSocket client)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            RefusalReason::NotWebSocket,
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
                RefusalReason::NotWebSocket,
                "missing or malformed Sec-WebSocket-Key (expected 16 bytes, base64-encoded)",
            )
        })?;
    Ok(key)
}

/// Longest value of one client header forwarded to the connect hook.
pub(crate) const MAX_HEADER_VALUE: usize = 8 * 1024;

/// Refuses handshakes carrying a header value longer than [`MAX_HEADER_VALUE`] (431), so a
/// client cannot make the bridge forward oversized headers to a backend.
pub(crate) fn check_header_sizes(headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.iter().find(|(_, v)| v.len() > MAX_HEADER_VALUE) {
        Some((name, v)) => Err(Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RefusalReason::HeaderTooLarge,
            format!(
                "header {name} is {} bytes long; at most {MAX_HEADER_VALUE} bytes per header are accepted",
                v.len()
            ),
        )),
        None => Ok(()),
    }
}

/// The subprotocols the client offered, in its order.
pub(crate) fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Refuses an `Origin` outside `--allowed-origin` (403).
pub(crate) fn check_origin(policy: &OriginPolicy, headers: &HeaderMap) -> Result<(), Refusal> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if policy.allows(origin) {
        return Ok(());
    }
    Err(Refusal::new(
        StatusCode::FORBIDDEN,
        RefusalReason::Origin,
        match origin {
            Some(o) => format!("origin {o:?} may not open connections here (--allowed-origin)"),
            None => "an Origin header is required here (--allowed-origin is set)".to_owned(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::allowlist::Allowlist;

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
}
