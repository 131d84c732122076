//! A backend's `Retry-After` value (the input). Properties: no panic; a value of decimal
//! digits (surrounding spaces and tabs allowed) that fits in a u64 is that many seconds.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use websocket_bridge::fuzzing::{self, HeaderValue};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let parsed = fuzzing::retry_after(&value);
    // Only visible ASCII (and tabs, spaces) reads as text in a header value.
    let trimmed = value.to_str().map(str::trim).unwrap_or_default();
    if !trimmed.is_empty()
        && trimmed.bytes().all(|b| b.is_ascii_digit())
        && let Ok(secs) = trimmed.parse::<u64>()
    {
        assert_eq!(parsed, Some(Duration::from_secs(secs)));
    }
});
