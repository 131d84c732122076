//! `GET /connect`'s backend URLs from the query (first line of the input) and the headers (the
//! rest, `name: value` lines), against a sample allowlist. Properties: no panic; an accepted
//! URL is http(s), without user info, has a host, is admitted by the allowlist, and parses
//! back to itself (the URL checked is the URL requested); a refusal is 400 or 403.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use websocket_bridge::fuzzing::{self, Allowlist, StatusCode, Url};

static ALLOWLIST: OnceLock<Allowlist> = OnceLock::new();

fn check(allowlist: &Allowlist, url: &Url) {
    assert!(matches!(url.scheme(), "http" | "https"), "{url}");
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{url}"
    );
    assert!(url.host().is_some(), "{url}");
    assert!(fuzzing::allows(allowlist, url), "{url}");
    assert_eq!(fuzzing::parse_backend_url(url.as_str()).as_ref(), Ok(url));
}

fuzz_target!(|data: &[u8]| {
    let allowlist =
        ALLOWLIST.get_or_init(|| fuzzing::sample_allowlist().expect("sample allowlist"));
    let (query, rest) = fuzzing::first_line(data);
    let query = String::from_utf8_lossy(query);
    let headers = fuzzing::headers(rest);
    match fuzzing::backend_urls(Some(&query), &headers, allowlist) {
        Ok(urls) => {
            check(allowlist, &urls.frame);
            urls.disconnect.iter().for_each(|u| check(allowlist, u));
            urls.connect.iter().for_each(|u| check(allowlist, u));
        }
        Err((status, message)) => {
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN,
                "{status}: {message}"
            );
            assert!(
                !message.is_empty() && !message.contains('\n'),
                "{message:?}"
            );
        }
    }
});
