//! The short strings the bridge parses (the input): a connection id from a callback path, and
//! the size and duration flag values. Properties: no panic; an id parses only from its one
//! canonical form; a plain byte count is that many bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket_bridge::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(id) = fuzzing::connection_id(s) {
        assert_eq!(id, s);
    }
    let size = fuzzing::parse_size(s);
    let digits = s.trim();
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = digits.parse::<usize>()
    {
        assert_eq!(size, Ok(n));
    }
    let _ = fuzzing::parse_duration(s);
});
