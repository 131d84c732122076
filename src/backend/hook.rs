//! The connect hook: the POST made before a handshake is answered, the client's handshake
//! headers it forwards ([`forwarded_headers`]), and what its answer means ([`ConnectAnswer`]).
//! Not retried: the client is waiting, and may retry itself.

use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{self, CONTENT_TYPE, HeaderMap, HeaderValue};

use super::request_id::RequestIds;
use super::{BackendClient, BackendError, BackendTarget};
use crate::metrics::RequestKind;
use crate::policy::forwarded::{ClientOrigin, is_forwarding_header};
use crate::protocol::{HEADER_PREFIX, HEADER_REQUEST_ID, HEADER_REQUEST_URI, HEADER_SEND, Payload};

/// Longest body of a connect hook's refusal that is passed on to the client.
pub(crate) const MAX_REFUSAL_BODY: usize = 4096;

/// What a connect hook decided.
#[derive(Debug)]
pub(crate) enum ConnectAnswer {
    /// 2xx: complete the upgrade.
    Accept {
        /// The hook's `Sec-WebSocket-Protocol`, if any.
        subprotocol: Option<String>,
        /// A non-empty answer body: the first message to the client.
        first_message: Option<Payload>,
        /// `x-ws-proxy-subscribe`: channels the connection starts in.
        subscribe: Option<HeaderValue>,
    },
    /// Non-2xx: refuse the handshake with this status and (at most [`MAX_REFUSAL_BODY`] bytes
    /// of) this body.
    Refuse {
        /// The hook's status.
        status: StatusCode,
        /// The hook's content type.
        content_type: Option<HeaderValue>,
        /// The hook's body, cut to [`MAX_REFUSAL_BODY`] bytes.
        body: Bytes,
    },
}

impl BackendClient {
    /// POSTs to the connect hook before the upgrade completes. `headers` are the client's
    /// handshake headers to forward (already filtered by the caller). Not retried: the client
    /// is waiting, and may retry itself.
    pub(crate) async fn post_connect(
        &self,
        target: &BackendTarget,
        callback: &HeaderValue,
        ids: &RequestIds,
        headers: reqwest::header::HeaderMap,
    ) -> Result<ConnectAnswer, BackendError> {
        let request = self
            .http
            .post(target.url.clone())
            .headers(headers)
            .header(HEADER_SEND, callback.clone())
            .header(HEADER_REQUEST_ID, ids.connect())
            .body(Bytes::new());
        let mut answer = match self.attempt(target, RequestKind::Connect, request).await {
            Ok(answer) => answer,
            Err(e) => {
                self.settings
                    .metrics
                    .backend_failure(RequestKind::Connect, e.reason());
                return Err(e);
            }
        };
        let status = answer.response.status();
        let content_type = answer.response.headers().get(CONTENT_TYPE).cloned();
        if !status.is_success() {
            return Ok(ConnectAnswer::Refuse {
                status,
                content_type,
                body: refusal_body(&mut answer.response).await?,
            });
        }
        let subprotocol = answer
            .response
            .headers()
            .get(reqwest::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let subscribe = answer
            .response
            .headers()
            .get(crate::protocol::HEADER_SUBSCRIBE)
            .cloned();
        let body =
            super::post::read_limited(answer.response, self.settings.config.max_reply_size).await?;
        let first_message = if body.is_empty() {
            None
        } else {
            Some(
                Payload::from_http(content_type.as_ref(), body)
                    .map_err(|_| BackendError::ReplyNotUtf8)?,
            )
        };
        Ok(ConnectAnswer::Accept {
            subprotocol,
            first_message,
            subscribe,
        })
    }
}

/// The first [`MAX_REFUSAL_BODY`] bytes of a refusing answer's body, to pass on to the client.
pub(super) async fn refusal_body(response: &mut reqwest::Response) -> Result<Bytes, BackendError> {
    let mut body = BytesMut::new();
    while body.len() < MAX_REFUSAL_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_REFUSAL_BODY - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(e) => return Err(BackendError::from_reqwest(e)),
        }
    }
    Ok(body.freeze())
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
pub(crate) fn forwarded_headers(
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
            || n.starts_with(HEADER_PREFIX)
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
        out.insert(HEADER_REQUEST_URI, v);
    }
    out
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::policy::forwarded::TrustedProxies;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn forwarded_headers_never_carry_spoofed_or_hop_by_hop_headers(
            names in proptest::collection::vec("(x-ws-proxy-[a-z]{1,8}|connection|upgrade|te|host|x-[a-z]{1,6}|sec-websocket-key|x-forwarded-[a-z]{1,6}|forwarded|x-real-ip|true-client-ip)", 0..8),
        ) {
            let mut headers = axum::http::HeaderMap::new();
            for name in &names {
                headers.append(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), "v".parse().unwrap());
            }
            let uri: axum::http::Uri = "/connect?f=x".parse().unwrap();
            let client = TrustedProxies::default().client("127.0.0.1:1".parse().unwrap(), false, &headers);
            let out = forwarded_headers(&headers, &client, &uri);
            for (name, value) in &out {
                let n = name.as_str();
                prop_assert!(n == "x-ws-proxy-request-uri" || !n.starts_with("x-ws-proxy-"), "{}", n);
                prop_assert!(!["connection", "upgrade", "te", "host", "sec-websocket-key", "forwarded", "x-real-ip", "true-client-ip"].contains(&n), "{}", n);
                if n.starts_with("x-forwarded-") {
                    prop_assert!(["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"].contains(&n), "{}", n);
                }
                if n == "x-forwarded-for" {
                    prop_assert_eq!(value, "127.0.0.1");
                }
            }
        }
    }
}
