//! A handshake's headers (the input, `name: value` lines): the upgrade checks, the offered
//! subprotocols, the headers forwarded to the connect hook and the Origin check. Properties: no
//! panic; an accepted key is 24 bytes; a refusal is 400 or 426; subprotocols are trimmed,
//! non-empty and free of commas; nothing hop-by-hop or `x-ws-proxy-*` (but the bridge's own
//! request URI) is forwarded, and `x-forwarded-for` is the client's address.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use websocket_bridge::fuzzing::{self, OriginPolicy, StatusCode, Uri};

static POLICY: OnceLock<OriginPolicy> = OnceLock::new();

const NEVER_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-forwarded-port",
];

fuzz_target!(|data: &[u8]| {
    let policy = POLICY.get_or_init(|| fuzzing::sample_origin_policy().expect("sample policy"));
    let headers = fuzzing::headers(data);

    match fuzzing::check_upgrade(&headers) {
        Ok(key) => assert_eq!(key.len(), 24),
        Err(status) => assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UPGRADE_REQUIRED,
            "{status}"
        ),
    }

    for protocol in fuzzing::offered_subprotocols(&headers) {
        assert!(
            !protocol.is_empty() && !protocol.contains(','),
            "{protocol:?}"
        );
        assert_eq!(protocol.trim(), protocol);
    }

    let client = SocketAddr::from(([192, 0, 2, 7], 40000));
    let uri = Uri::from_static("/connect?f=x");
    let forwarded = fuzzing::forwarded_headers(&headers, client, false, &uri);
    for name in forwarded.keys() {
        let name = name.as_str();
        assert!(!NEVER_FORWARDED.contains(&name), "{name} forwarded");
        assert!(
            !name.starts_with("x-ws-proxy-") || name == "x-ws-proxy-request-uri",
            "{name} forwarded"
        );
    }
    let chain = forwarded
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .expect("x-forwarded-for");
    // No --trusted-proxy: the client's own forwarding headers are ignored.
    assert_eq!(chain, "192.0.2.7");

    let origin = headers.get("origin").and_then(|v| v.to_str().ok());
    let _ = fuzzing::origin_allowed(policy, origin);
});
