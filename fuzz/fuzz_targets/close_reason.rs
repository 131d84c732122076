//! A close reason (the input, as UTF-8 with invalid bytes replaced). Properties: the truncated
//! reason is a prefix of at most 123 bytes, the whole reason when it fits; the header form is
//! a valid header value of visible ASCII that percent-decodes back to the reason exactly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket_bridge::fuzzing::{self, HeaderValue, MAX_REASON_BYTES};

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ASCII escape");
            out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let reason = String::from_utf8_lossy(data);

    let cut = fuzzing::truncate_reason(&reason);
    assert!(cut.len() <= MAX_REASON_BYTES);
    assert!(reason.starts_with(cut.as_str()));
    if reason.len() <= MAX_REASON_BYTES {
        assert_eq!(cut, reason);
    }

    let encoded = fuzzing::header_safe_reason(&reason);
    assert!(HeaderValue::from_str(&encoded).is_ok(), "{encoded:?}");
    assert!(
        encoded.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "{encoded:?}"
    );
    assert_eq!(percent_decode(&encoded), reason.as_bytes());
});
