//! Property tests (proptest) for every parser the bridge owns and for the allowlist, plus a
//! property test of the callback API over a real bridge with random bodies and content types.
//! Bounded: a fixed number of cases each, run by `cargo test`.

#![allow(clippy::unwrap_used)]

mod common;

use proptest::prelude::*;
use websocket_bridge::allowlist::{Allowlist, parse_backend_url};
use websocket_bridge::callback::close_params;
use websocket_bridge::close::{MAX_REASON_BYTES, header_safe_reason};
use websocket_bridge::config::parse_size;
use websocket_bridge::forwarded::TrustedProxies;
use websocket_bridge::handshake::forwarded_headers;
use websocket_bridge::origin::OriginPolicy;
use websocket_bridge::payload::Payload;
use websocket_bridge::registry::ConnectionId;

fn allowlist(patterns: &[&str], suffixes: &[&str]) -> Allowlist {
    let p: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
    let s: Vec<String> = suffixes.iter().map(|s| s.to_string()).collect();
    Allowlist::new(&p, &s).unwrap()
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn backend_url_parsing_never_panics_and_only_admits_http(raw in "\\PC{0,80}") {
        if let Ok(url) = parse_backend_url(&raw) {
            prop_assert!(url.scheme() == "http" || url.scheme() == "https");
            prop_assert!(url.username().is_empty() && url.password().is_none());
            prop_assert!(url.host().is_some());
        }
    }

    #[test]
    fn anchored_patterns_never_match_other_hosts(
        host in "[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,8}){0,2}",
        tail in "[a-zA-Z0-9/?=&.%:_-]{0,40}",
    ) {
        let list = allowlist(&[r"https://a\.example/.*"], &[]);
        prop_assume!(host != "a.example");
        for candidate in [
            format!("https://{host}/?u=https://a.example/{tail}"),
            format!("https://{host}/https://a.example/{tail}"),
            format!("https://a.example.{host}/{tail}"),
            format!("http://a.example/{tail}"),
        ] {
            if let Ok(url) = parse_backend_url(&candidate) {
                prop_assert!(!list.allows(&url), "{candidate} must be refused");
            }
        }
        let good = format!("https://a.example/{tail}");
        if let Ok(url) = parse_backend_url(&good) {
            prop_assert_eq!(list.allows(&url), url.host_str() == Some("a.example"));
        }
    }

    #[test]
    fn host_suffixes_match_on_label_boundaries_of_the_parsed_host(
        label in "[a-z0-9]{1,10}",
        junk in "[a-zA-Z0-9/?=&.#@:_-]{0,30}",
    ) {
        let list = allowlist(&[], &[".example.com"]);
        let sub = format!("https://{label}.example.com/{junk}");
        if let Ok(url) = parse_backend_url(&sub) {
            prop_assert_eq!(list.allows(&url), url.host_str().is_some_and(|h| h.ends_with(".example.com")));
        }
        for bad in [
            format!("https://{label}example.com/"),
            format!("https://example.com.{label}/"),
            format!("https://{label}.test/{junk}.example.com"),
        ] {
            if let Ok(url) = parse_backend_url(&bad) {
                let host = url.host_str().unwrap_or_default().to_owned();
                prop_assert_eq!(list.allows(&url), host == "example.com" || host.ends_with(".example.com"), "{}", bad);
            }
        }
    }

    #[test]
    fn close_params_only_accept_valid_codes_and_short_reasons(query in "[a-z=&%0-9A-F+]{0,200}") {
        if let Ok((code, reason)) = close_params(Some(&query)) {
            prop_assert!(code == 1000 || (3000..=4999).contains(&code));
            prop_assert!(reason.len() <= MAX_REASON_BYTES);
        }
    }

    #[test]
    fn close_params_round_trip(code in 3000u16..=4999, reason in "\\PC{0,30}") {
        let encoded: String = url::form_urlencoded::byte_serialize(reason.as_bytes()).collect();
        let result = close_params(Some(&format!("code={code}&reason={encoded}")));
        if reason.len() <= MAX_REASON_BYTES {
            prop_assert_eq!(result, Ok((code, reason)));
        } else {
            prop_assert!(result.is_err());
        }
    }

    #[test]
    fn header_reasons_are_ascii_and_decode_back(reason in "\\PC{0,60}") {
        let encoded = header_safe_reason(&reason);
        prop_assert!(encoded.bytes().all(|b| (0x20..0x7f).contains(&b)));
        prop_assert_eq!(percent_decode(&encoded), reason.as_bytes().to_vec());
    }

    #[test]
    fn size_parsing_never_panics(raw in "\\PC{0,20}") {
        let _ = parse_size(&raw);
    }

    #[test]
    fn origin_checks_never_panic(entry in "[a-z*.:/]{0,30}", origin in "\\PC{0,40}") {
        if let Ok(policy) = OriginPolicy::new(&[entry]) {
            let _ = policy.allows(Some(&origin));
            let _ = policy.allows(None);
        }
    }

    #[test]
    fn text_payloads_are_exactly_the_utf8_ones(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let ct = axum::http::HeaderValue::from_static("text/plain");
        let result = Payload::from_http(Some(&ct), bytes::Bytes::from(body.clone()));
        prop_assert_eq!(result.is_ok(), std::str::from_utf8(&body).is_ok());
    }

    #[test]
    fn connection_ids_parse_only_in_canonical_form(raw in "[0-9a-fA-F-]{0,40}") {
        if let Some(id) = ConnectionId::parse(&raw) {
            prop_assert_eq!(id.full(), raw);
        }
    }

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

/// Random bodies and content types POSTed to a real bridge's callback URL: the answer is 202,
/// 400 (text that is not UTF-8) or 413 (too large), and the client receives exactly the
/// accepted messages, as text or binary as the content type says.
#[test]
fn the_callback_api_handles_arbitrary_bodies() {
    use common::*;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (bridge, client, callback) = runtime.block_on(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--max-message-size", "256"]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        send_text(&mut client, "hi").await;
        let callback = backend.callback_url("/frame").await;
        (bridge, client, callback)
    });
    let http = http_client();
    let client = tokio::sync::Mutex::new(client);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(128));
    runner
        .run(
            &(proptest::collection::vec(any::<u8>(), 0..300), "(text/plain|text/html; charset=utf-8|application/json|application/octet-stream|TEXT/X|)"),
            |(body, content_type)| {
                runtime.block_on(async {
                    let mut request = http.post(&callback).body(body.clone());
                    if !content_type.is_empty() {
                        request = request.header("content-type", &content_type);
                    }
                    let status = request.send().await.unwrap().status().as_u16();
                    let text = content_type.to_ascii_lowercase().starts_with("text/");
                    let expected = if body.len() > 256 {
                        413
                    } else if text && std::str::from_utf8(&body).is_err() {
                        400
                    } else {
                        202
                    };
                    assert_eq!(status, expected, "{content_type:?} {} bytes", body.len());
                    if status == 202 {
                        let got = next_message(&mut *client.lock().await).await;
                        let want = if text {
                            tokio_tungstenite::tungstenite::Message::text(String::from_utf8(body).unwrap())
                        } else {
                            tokio_tungstenite::tungstenite::Message::binary(body)
                        };
                        assert_eq!(got, want);
                    }
                });
                Ok(())
            },
        )
        .unwrap();
    drop(bridge);
}
