//! A callback body and its content type (first line of the input: the content type; the rest:
//! the body). Properties: no panic; `text/*` bodies are text exactly when they are UTF-8, and
//! everything else is binary; the payload's bytes are the body's.

#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket_bridge::fuzzing::{self, HeaderValue, Payload};

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = fuzzing::first_line(data);
    let content_type = HeaderValue::from_bytes(content_type).ok();
    let is_text = content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().get(..5))
        .is_some_and(|p| p.eq_ignore_ascii_case("text/"));
    match fuzzing::payload_from_http(content_type.as_ref(), body) {
        Ok(payload) => {
            assert_eq!(payload.bytes().as_ref(), body);
            assert_eq!(matches!(payload, Payload::Text(_)), is_text);
        }
        Err(_) => assert!(is_text && std::str::from_utf8(body).is_err()),
    }
});
