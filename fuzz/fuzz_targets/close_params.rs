//! `DELETE {callback}`'s query (the input). Properties: no panic; an accepted code is 1000 or
//! 3000-4999 and an accepted reason fits a Close frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket_bridge::fuzzing::{self, MAX_REASON_BYTES};

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    if let Ok((code, reason)) = fuzzing::close_params(Some(&query)) {
        assert!(code == 1000 || (3000..=4999).contains(&code), "{code}");
        assert!(reason.len() <= MAX_REASON_BYTES, "{} bytes", reason.len());
    }
});
