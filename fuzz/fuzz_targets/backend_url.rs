//! One client-named backend URL (the whole input), parsed and matched against the allowlists.
//! Properties: no panic; an accepted URL is http(s), without user info, has a host and parses
//! back to itself; a host suffix admits only https URLs whose parsed host is the suffix or ends
//! with `.` and the suffix.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use websocket_bridge::fuzzing::{self, Allowlist};

static LISTS: OnceLock<(Allowlist, Allowlist)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (sample, suffix) = LISTS.get_or_init(|| {
        (
            fuzzing::sample_allowlist().expect("sample allowlist"),
            fuzzing::suffix_allowlist("example.com").expect("suffix allowlist"),
        )
    });
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(url) = fuzzing::parse_backend_url(raw) else {
        return;
    };
    assert!(matches!(url.scheme(), "http" | "https"), "{url}");
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{url}"
    );
    assert!(url.host().is_some(), "{url}");
    assert_eq!(fuzzing::parse_backend_url(url.as_str()).as_ref(), Ok(&url));
    let _ = fuzzing::allows(sample, &url);
    if fuzzing::allows(suffix, &url) {
        let host = url.host_str().unwrap_or_default().trim_end_matches('.');
        assert_eq!(url.scheme(), "https", "{url}");
        assert!(
            host == "example.com" || host.ends_with(".example.com"),
            "{url}"
        );
    }
});
