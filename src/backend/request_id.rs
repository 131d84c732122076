//! [`RequestIds`]: the `x-ws-proxy-request-id` of each backend request of one connection,
//! the same on every attempt of a request, so a backend can drop repeats. Owns no I/O beyond
//! one draw from the OS CSPRNG per connection.

use std::fmt;

use reqwest::header::HeaderValue;

/// The `x-ws-proxy-request-id` values of one connection's requests: a random 64-bit nonce in
/// hex, drawn once per connection, then `-` and the request's place in the connection: `c` for
/// the connect hook, the frame's seq, `d` for the disconnect POST (`9f2c41d07ab3e655-17`).
///
/// The nonce is drawn independently of the connection id, so a request id never reveals the
/// callback URL; unique across connections with overwhelming probability (64 random bits), and
/// one `format!` per request on the hot path (no syscall).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestIds {
    nonce: u64,
}

/// The operating system's random number generator failed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub(crate) struct RandomUnavailable;

impl RequestIds {
    /// A fresh nonce from the operating system's CSPRNG.
    pub(crate) fn random() -> Result<Self, RandomUnavailable> {
        let bytes: [u8; 8] = ring::rand::generate(&ring::rand::SystemRandom::new())
            .map_err(|_| RandomUnavailable)?
            .expose();
        Ok(RequestIds {
            nonce: u64::from_le_bytes(bytes),
        })
    }

    /// The nonce as 16 hex digits, to be stored for another node (cluster mode).
    pub(crate) fn nonce_hex(&self) -> String {
        format!("{:016x}", self.nonce)
    }

    /// The ids of a connection whose nonce another node stored.
    pub(crate) fn from_nonce_hex(hex: &str) -> Option<Self> {
        (hex.len() == 16)
            .then(|| u64::from_str_radix(hex, 16).ok())
            .flatten()
            .map(|nonce| RequestIds { nonce })
    }

    /// The id of the connect hook POST.
    pub(crate) fn connect(&self) -> HeaderValue {
        self.value(format_args!("c"))
    }

    /// The id of the frame POST of message `seq`.
    pub(crate) fn frame(&self, seq: u64) -> HeaderValue {
        self.value(format_args!("{seq}"))
    }

    /// The id of the disconnect POST.
    pub(crate) fn disconnect(&self) -> HeaderValue {
        self.value(format_args!("d"))
    }

    fn value(&self, place: fmt::Arguments<'_>) -> HeaderValue {
        let text = format!("{:016x}-{place}", self.nonce);
        // Hex digits, '-' and a number or a letter: always a valid header value.
        HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_name_their_place_after_a_per_connection_nonce() {
        let ids = RequestIds::random().unwrap_or(RequestIds { nonce: 7 });
        let connect = ids.connect();
        let connect = connect.to_str().unwrap_or_default();
        let (nonce, place) = connect.split_once('-').unwrap_or_default();
        assert_eq!(nonce.len(), 16);
        assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()), "{nonce}");
        assert_eq!(place, "c");
        assert_eq!(ids.frame(17), format!("{nonce}-17").as_str());
        assert_eq!(ids.disconnect(), format!("{nonce}-d").as_str());
        assert_eq!(ids.frame(3), ids.frame(3), "stable for retries");
        let other = RequestIds::random().unwrap_or(RequestIds { nonce: 8 });
        assert_ne!(ids, other, "a fresh nonce per connection");
        assert_eq!(
            RequestIds { nonce: 0xab }.frame(0),
            "00000000000000ab-0",
            "zero-padded"
        );
    }
}
