//! A message's payload and kind as it crosses between WebSocket and HTTP: `text/*` bodies are
//! text and must be UTF-8, everything else is binary. Owns no I/O.

use bytes::Bytes;
use reqwest::header::HeaderValue;

/// Content type of text messages.
pub(crate) const TEXT_CONTENT_TYPE: &str = "text/plain;charset=UTF-8";
/// Content type of binary messages.
pub(crate) const BINARY_CONTENT_TYPE: &str = "application/octet-stream";

/// A WebSocket message's payload and kind, as carried over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    /// UTF-8 text (validated once, where it entered the bridge).
    Text(Bytes),
    /// Arbitrary bytes.
    Binary(Bytes),
}

impl Payload {
    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.bytes().len()
    }

    /// The payload bytes.
    pub(crate) fn bytes(&self) -> &Bytes {
        match self {
            Payload::Text(b) | Payload::Binary(b) => b,
        }
    }

    /// Builds a payload from an HTTP body and its content type: `text/*` is text and must be
    /// UTF-8; anything else (or no content type) is binary.
    pub(crate) fn from_http(
        content_type: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<Self, NotUtf8> {
        Self::from_http_raw(content_type.map(HeaderValue::as_bytes), body)
    }

    /// [`Payload::from_http`] with the content type as the raw bytes of its header value.
    pub(crate) fn from_http_raw(content_type: Option<&[u8]>, body: Bytes) -> Result<Self, NotUtf8> {
        if is_text(content_type) {
            match std::str::from_utf8(&body) {
                Ok(_) => Ok(Payload::Text(body)),
                Err(_) => Err(NotUtf8),
            }
        } else {
            Ok(Payload::Binary(body))
        }
    }
}

/// A `text/*` body that is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the content type is text/* but the body is not valid UTF-8")]
pub(crate) struct NotUtf8;

/// Whether a content type names text (`text/*`, case-insensitive); a value with bytes other
/// than visible ASCII and tabs names none.
pub(crate) fn is_text(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|v| {
        v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
            && v.trim_ascii_start()
                .get(..5)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"text/"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_content_types() {
        let v = |s: &'static str| s.as_bytes();
        assert!(is_text(Some(v("text/plain"))));
        assert!(is_text(Some(v("Text/HTML; charset=utf-8"))));
        assert!(!is_text(Some(v("application/json"))));
        assert!(!is_text(Some(v("tex"))));
        assert!(!is_text(None));
        assert!(!is_text(Some(b"text/plain; x=\xe9")), "not visible ASCII");
    }

    #[test]
    fn text_payloads_must_be_utf8() {
        let ct = HeaderValue::from_static("text/plain");
        assert_eq!(
            Payload::from_http(Some(&ct), Bytes::from_static(b"\xff")),
            Err(NotUtf8)
        );
        assert_eq!(
            Payload::from_http(None, Bytes::from_static(b"\xff")),
            Ok(Payload::Binary(Bytes::from_static(b"\xff")))
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn text_payloads_are_exactly_the_utf8_ones(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let ct = axum::http::HeaderValue::from_static("text/plain");
            let result = Payload::from_http(Some(&ct), bytes::Bytes::from(body.clone()));
            prop_assert_eq!(result.is_ok(), std::str::from_utf8(&body).is_ok());
        }
    }
}
