//! The query of `DELETE {callback}?code=…&reason=…`: a close code a backend may send (1000 or
//! 3000-4999) and a reason that fits a Close frame. Pure parsing.

use crate::protocol::MAX_REASON_BYTES;

/// An invalid `code` or `reason`; the message says which and what is allowed (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CloseParamError(String);

/// Parses `code` (1000 or 3000-4999; default 1000) and `reason` (at most 123 bytes of UTF-8)
/// from a raw query string.
pub(crate) fn close_params(query: Option<&str>) -> Result<(u16, String), CloseParamError> {
    let mut code = 1000u16;
    let mut reason = String::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(|| {
            CloseParamError(format!(
                "query parameter {key} is not valid percent-encoded UTF-8"
            ))
        })?;
        match key {
            "code" => {
                code = value
                    .parse::<u16>()
                    .ok()
                    .filter(|c| *c == 1000 || (3000..=4999).contains(c))
                    .ok_or_else(|| {
                        CloseParamError(format!(
                            "close code {value:?} is not allowed: use 1000 or 3000-4999"
                        ))
                    })?;
            }
            "reason" => {
                if value.len() > MAX_REASON_BYTES {
                    return Err(CloseParamError(format!(
                        "close reason is {} bytes long; at most {MAX_REASON_BYTES} bytes of UTF-8 fit in a Close frame",
                        value.len()
                    )));
                }
                reason = value;
            }
            _ => {}
        }
    }
    Ok((code, reason))
}

/// Decodes `%XX` escapes and `+` (as space); `None` if the result is not UTF-8 or an escape is
/// malformed.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_params_are_checked() {
        assert_eq!(close_params(None), Ok((1000, String::new())));
        assert_eq!(
            close_params(Some("code=4000&reason=bye%20now")),
            Ok((4000, "bye now".to_owned()))
        );
        assert_eq!(
            close_params(Some("reason=%C3%A9t%C3%A9")),
            Ok((1000, "été".to_owned()))
        );
        for bad in [
            "code=1001",
            "code=2999",
            "code=5000",
            "code=x",
            "reason=%FF",
            "reason=%4",
        ] {
            assert!(close_params(Some(bad)).is_err(), "{bad}");
        }
        let long = "a".repeat(124);
        assert!(close_params(Some(&format!("reason={long}"))).is_err());
        assert!(close_params(Some(&format!("reason={}", &long[..123]))).is_ok());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

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
    }
}
