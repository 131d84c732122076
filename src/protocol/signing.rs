//! Request signing: with `--signing-secret`, every request to a backend carries
//! `x-ws-proxy-signature: t=<unix seconds>,v2=<hex HMAC-SHA256(secret, signed string)>`, one
//! `v2=` per configured secret (several during a key rotation). The v2 signed string covers the
//! method, the target URL, the bridge's `x-ws-proxy-*` headers, the content type and the body
//! (see [`SignedRequest`]). With `--signing-v1` the old `v1=` values, over
//! `"<t>.<x-ws-proxy-send>.<body>"` only, follow, for verifiers not yet upgraded. Owns the
//! secrets and the signed string's layout; never logs or prints the secrets. Which request is
//! signed, and with what, is the backend client's business.

use std::fmt;

use reqwest::header::HeaderValue;
use ring::hmac;

/// Shortest accepted secret, in bytes.
pub(crate) const MIN_SECRET_BYTES: usize = 16;

/// What a `v2` signature covers: the request as sent. Each header is its value's bytes, or
/// empty when the request does not carry it.
///
/// The signed string joins, with `\n`: `v2`, the timestamp, then the fields below in their
/// order here, the body last. Header values and URLs cannot hold a newline and the body comes
/// last, so two different requests never give the same string.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SignedRequest<'a> {
    /// `POST`.
    pub(crate) method: &'a str,
    /// The target URL as requested: scheme, host, port (unless the default), path and query;
    /// never a fragment.
    pub(crate) url: &'a str,
    /// `x-ws-proxy-request-id`.
    pub(crate) request_id: &'a [u8],
    /// `x-ws-proxy-seq` (frame POSTs).
    pub(crate) seq: &'a [u8],
    /// `content-type`.
    pub(crate) content_type: &'a [u8],
    /// `x-ws-proxy-send`: the callback URL.
    pub(crate) send: &'a [u8],
    /// `x-ws-proxy-request-uri` (connect hook).
    pub(crate) request_uri: &'a [u8],
    /// `x-ws-proxy-close-code` (disconnect POSTs).
    pub(crate) close_code: &'a [u8],
    /// `x-ws-proxy-close-reason` (disconnect POSTs), as sent: percent-encoded.
    pub(crate) close_reason: &'a [u8],
    /// `x-ws-proxy-close-initiator` (disconnect POSTs).
    pub(crate) close_initiator: &'a [u8],
    /// `x-ws-proxy-close-cause` (disconnect POSTs).
    pub(crate) close_cause: &'a [u8],
    /// The raw body.
    pub(crate) body: &'a [u8],
}

impl SignedRequest<'_> {
    /// The parts of the signed string after `v2` and the timestamp, in order.
    fn parts(&self) -> [&[u8]; 12] {
        [
            self.method.as_bytes(),
            self.url.as_bytes(),
            self.request_id,
            self.seq,
            self.content_type,
            self.send,
            self.request_uri,
            self.close_code,
            self.close_reason,
            self.close_initiator,
            self.close_cause,
            self.body,
        ]
    }
}

/// Signs backend requests with one or more secrets.
#[derive(Clone)]
pub(crate) struct Signer {
    keys: Vec<hmac::Key>,
    /// Also send the `v1=` values (`--signing-v1`).
    v1: bool,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schemes = if self.v1 { "v2 + v1" } else { "v2" };
        write!(
            f,
            "Signer({} secret(s), redacted, {schemes})",
            self.keys.len()
        )
    }
}

impl Signer {
    /// A signer for these secrets (in the order the `v2=` values appear), sending only `v2=`.
    pub(crate) fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Self {
        Signer {
            keys: secrets
                .iter()
                .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.as_ref()))
                .collect(),
            v1: false,
        }
    }

    /// Whether to also send the old `v1=` values after the `v2=` ones (`--signing-v1`).
    pub(crate) fn with_v1(mut self, v1: bool) -> Self {
        self.v1 = v1;
        self
    }

    /// The header value for `request` sent at `unix_seconds`.
    pub(crate) fn signature(&self, unix_seconds: u64, request: &SignedRequest<'_>) -> String {
        let t = unix_seconds.to_string();
        let per_value = ",v2=".len() + 64;
        let values = self.keys.len() * if self.v1 { 2 } else { 1 };
        let mut out = String::with_capacity(2 + t.len() + values * per_value);
        out.push_str("t=");
        out.push_str(&t);
        let parts = request.parts();
        for key in &self.keys {
            let mut ctx = hmac::Context::with_key(key);
            ctx.update(b"v2\n");
            ctx.update(t.as_bytes());
            for part in parts {
                ctx.update(b"\n");
                ctx.update(part);
            }
            out.push_str(",v2=");
            push_hex(&mut out, ctx.sign().as_ref());
        }
        if self.v1 {
            for key in &self.keys {
                let mut ctx = hmac::Context::with_key(key);
                ctx.update(t.as_bytes());
                ctx.update(b".");
                ctx.update(request.send);
                ctx.update(b".");
                ctx.update(request.body);
                out.push_str(",v1=");
                push_hex(&mut out, ctx.sign().as_ref());
            }
        }
        out
    }

    /// [`Signer::signature`] for now, as a header value.
    pub(crate) fn header(&self, request: &SignedRequest<'_>) -> HeaderValue {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let value = self.signature(now, request);
        // Only ASCII digits, letters, '=' and ',': always a valid header value.
        HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        let mut out = String::new();
        push_hex(&mut out, bytes);
        out
    }

    /// A frame POST as the bridge sends it.
    fn frame() -> SignedRequest<'static> {
        SignedRequest {
            method: "POST",
            url: "https://api.example/ws/frame?room=42",
            request_id: b"9f2c41d07ab3e655-17",
            seq: b"17",
            content_type: b"text/plain;charset=UTF-8",
            send: b"https://bridge.example/0d9e4c1e-8a47-4a53-9d3e-3b8f4f0b7d2a",
            body: b"hello",
            ..SignedRequest::default()
        }
    }

    fn v2_values(sig: &str) -> Vec<&str> {
        sig.split(',')
            .filter_map(|p| p.strip_prefix("v2="))
            .collect()
    }

    #[test]
    fn hex_encoding_matches_a_known_hmac() {
        // The classic HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"key");
        let classic = hmac::sign(&key, b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex(classic.as_ref()),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn v2_signs_the_documented_string() {
        let secret = "test-secret-0123456789abcdef";
        let sig = Signer::new(&[secret]).signature(1_700_000_000, &frame());
        let signed = "v2\n1700000000\nPOST\nhttps://api.example/ws/frame?room=42\n\
                      9f2c41d07ab3e655-17\n17\ntext/plain;charset=UTF-8\n\
                      https://bridge.example/0d9e4c1e-8a47-4a53-9d3e-3b8f4f0b7d2a\n\
                      \n\n\n\n\nhello";
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let expected = hex(hmac::sign(&key, signed.as_bytes()).as_ref());
        assert_eq!(sig, format!("t=1700000000,v2={expected}"));
        // A fixed known answer (computed independently with Python's hmac module), so that a
        // change of the layout cannot go unnoticed by changing both sides of the test above.
        assert_eq!(
            expected,
            "c2803b4b083075e4c014746672e615a87b3773bcdf41f9a57be7644ef14af15c"
        );
    }

    #[test]
    fn every_signed_part_changes_the_signature() {
        let signer = Signer::new(&["test-secret-0123456789abcdef"]);
        let original = signer.signature(1, &frame());
        let changed: [SignedRequest<'static>; 12] = [
            SignedRequest {
                method: "PUT",
                ..frame()
            },
            SignedRequest {
                url: "https://api.example/ws/other?room=42",
                ..frame()
            },
            SignedRequest {
                request_id: b"9f2c41d07ab3e655-18",
                ..frame()
            },
            SignedRequest {
                seq: b"18",
                ..frame()
            },
            SignedRequest {
                content_type: b"application/octet-stream",
                ..frame()
            },
            SignedRequest {
                send: b"https://bridge.example/other",
                ..frame()
            },
            SignedRequest {
                request_uri: b"/connect",
                ..frame()
            },
            SignedRequest {
                close_code: b"1000",
                ..frame()
            },
            SignedRequest {
                close_reason: b"bye",
                ..frame()
            },
            SignedRequest {
                close_initiator: b"client",
                ..frame()
            },
            SignedRequest {
                close_cause: b"client-close",
                ..frame()
            },
            SignedRequest {
                body: b"hello!",
                ..frame()
            },
        ];
        for (i, request) in changed.iter().enumerate() {
            assert_ne!(signer.signature(1, request), original, "part {i}");
        }
        // Moving a byte from one part to the next changes it too (the separators are signed).
        let shifted = SignedRequest {
            close_cause: b"x",
            body: b"ello",
            ..frame()
        };
        let unshifted = SignedRequest {
            close_cause: b"xe",
            body: b"llo",
            ..frame()
        };
        assert_ne!(
            signer.signature(1, &shifted),
            signer.signature(1, &unshifted)
        );
        assert_ne!(signer.signature(2, &frame()), original, "the timestamp");
    }

    #[test]
    fn one_v2_per_secret_and_v1_only_when_asked() {
        let secrets = ["first-secret-0123456", "second-secret-012345"];
        let sig = Signer::new(&secrets).signature(1_700_000_000, &frame());
        assert!(sig.starts_with("t=1700000000,v2="), "{sig}");
        assert_eq!(v2_values(&sig).len(), 2);
        assert!(!sig.contains("v1="), "{sig}");

        let sig = Signer::new(&secrets)
            .with_v1(true)
            .signature(1_700_000_000, &frame());
        assert_eq!(v2_values(&sig).len(), 2);
        let v1: Vec<&str> = sig
            .split(',')
            .filter_map(|p| p.strip_prefix("v1="))
            .collect();
        assert_eq!(v1.len(), 2);
        // v1 is the old "<t>.<send>.<body>" for each secret, in order.
        for (secret, value) in secrets.iter().zip(v1) {
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            let old =
                b"1700000000.https://bridge.example/0d9e4c1e-8a47-4a53-9d3e-3b8f4f0b7d2a.hello";
            assert_eq!(value, hex(hmac::sign(&key, old).as_ref()));
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let signer = Signer::new(&["very-secret-value-123"]).with_v1(true);
        let shown = format!("{signer:?}");
        assert_eq!(shown, "Signer(1 secret(s), redacted, v2 + v1)");
    }
}
