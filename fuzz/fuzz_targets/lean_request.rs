//! The first bytes of a connection as the lean callback path parses them (the input).
//! Properties: no panic; a lean `POST`'s head ends within the request, the request within the
//! input, and its token is a callback token's shape.

#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket_bridge::fuzzing;

fuzz_target!(|data: &[u8]| {
    if let Some((token, head, end)) = fuzzing::lean_request(data) {
        assert!(head <= end, "{head} > {end}");
        assert!(head <= data.len(), "head past the input");
        assert!(end - head <= 1024, "body over the limit");
        assert!(!token.contains('/'), "{token}");
    }
});
