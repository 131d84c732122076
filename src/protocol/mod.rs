//! The wire protocol between the bridge, its clients and its backends, as the README states
//! it: every `x-ws-proxy-*` header and query parameter name, the content types, the close
//! causes and initiators with their header values, and how close reasons travel in headers.
//! [`payload`] maps content types to text or binary messages; [`signing`] is the signature
//! scheme. Pure data and functions: no I/O, no dependency on any other module of the bridge.

pub(crate) mod channel;
pub(crate) mod events;
pub(crate) mod grip_control;
pub(crate) mod jwt;
pub(crate) mod payload;
pub(crate) mod signing;

pub(crate) use payload::{BINARY_CONTENT_TYPE, Payload, TEXT_CONTENT_TYPE};

/// Query parameter naming the frame URL at `GET /connect`.
pub(crate) const QUERY_ON_FRAME: &str = "f";
/// Query parameter naming the disconnect URL.
pub(crate) const QUERY_ON_DISCONNECT: &str = "d";
/// Query parameter naming the connect hook URL.
pub(crate) const QUERY_ON_CONNECT: &str = "c";
/// Header naming the frame URL (alternative to query `f`).
pub(crate) const HEADER_ON_FRAME: &str = "x-ws-proxy-on-frame";
/// Header naming the disconnect URL (alternative to query `d`).
pub(crate) const HEADER_ON_DISCONNECT: &str = "x-ws-proxy-on-disconnect";
/// Header naming the connect hook URL (alternative to query `c`).
pub(crate) const HEADER_ON_CONNECT: &str = "x-ws-proxy-on-connect";

/// Prefix of every header the bridge sets towards backends; a client's own are dropped.
pub(crate) const HEADER_PREFIX: &str = "x-ws-proxy-";
/// `x-ws-proxy-send`: the callback URL of the connection.
pub(crate) const HEADER_SEND: &str = "x-ws-proxy-send";
/// `x-ws-proxy-seq`: the message's position in the connection, from 0.
pub(crate) const HEADER_SEQ: &str = "x-ws-proxy-seq";
/// `x-ws-proxy-request-id`: the same on every attempt of one request, unique across requests.
pub(crate) const HEADER_REQUEST_ID: &str = "x-ws-proxy-request-id";
/// `x-ws-proxy-request-uri`: the client's original path and query (connect hook).
pub(crate) const HEADER_REQUEST_URI: &str = "x-ws-proxy-request-uri";
/// `x-ws-proxy-close-code`: close code of the ending (disconnect POSTs).
pub(crate) const HEADER_CLOSE_CODE: &str = "x-ws-proxy-close-code";
/// `x-ws-proxy-close-reason`: close reason, percent-encoded UTF-8 (disconnect POSTs).
pub(crate) const HEADER_CLOSE_REASON: &str = "x-ws-proxy-close-reason";
/// `x-ws-proxy-close-initiator`: client, backend or bridge (disconnect POSTs).
pub(crate) const HEADER_CLOSE_INITIATOR: &str = "x-ws-proxy-close-initiator";
/// `x-ws-proxy-close-cause`: the cause keyword (disconnect POSTs).
pub(crate) const HEADER_CLOSE_CAUSE: &str = "x-ws-proxy-close-cause";
/// `x-ws-proxy-reply: true` on a frame POST's answer: the body is a reply even when empty.
pub(crate) const HEADER_REPLY: &str = "x-ws-proxy-reply";
/// Answer header (connect hook, frame POST): channels to join, comma-separated.
pub(crate) const HEADER_SUBSCRIBE: &str = "x-ws-proxy-subscribe";
/// Answer header (frame POST): channels to leave, comma-separated.
pub(crate) const HEADER_UNSUBSCRIBE: &str = "x-ws-proxy-unsubscribe";
/// `x-ws-proxy-signature`: `t=…,v2=…` with `--signing-secret`.
pub(crate) const HEADER_SIGNATURE: &str = "x-ws-proxy-signature";

/// Close codes the bridge sends or reports (RFC 6455 section 7.4.1).
pub(crate) mod close_code {
    /// Normal closure.
    pub(crate) const NORMAL: u16 = 1000;
    /// Going away: shutdown, idle timeout, lifetime.
    pub(crate) const AWAY: u16 = 1001;
    /// Protocol error.
    pub(crate) const PROTOCOL: u16 = 1002;
    /// Never sent: the connection dropped without a Close frame.
    pub(crate) const ABNORMAL: u16 = 1006;
    /// Invalid payload (text that is not UTF-8).
    pub(crate) const INVALID: u16 = 1007;
    /// Policy violation.
    pub(crate) const POLICY: u16 = 1008;
    /// Message too big.
    pub(crate) const SIZE: u16 = 1009;
    /// Internal error (of the bridge or its backend).
    pub(crate) const ERROR: u16 = 1011;
    /// Try again later: the client read too slowly for a channel (`slow-consumer`).
    pub(crate) const TRY_AGAIN: u16 = 1013;
}

/// Longest close reason a Close frame can carry (125-byte payload minus the 2-byte code).
pub(crate) const MAX_REASON_BYTES: usize = 123;

/// Who ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Initiator {
    /// The WebSocket client (Close frame, or it vanished).
    Client,
    /// The backend, through the callback API.
    Backend,
    /// The bridge itself (backend failure, limits, shutdown).
    Bridge,
}

impl Initiator {
    /// The value of `x-ws-proxy-close-initiator`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Initiator::Client => "client",
            Initiator::Backend => "backend",
            Initiator::Bridge => "bridge",
        }
    }
}

/// The cause of an ending, as reported in `x-ws-proxy-close-cause` and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Cause {
    /// The client sent a Close frame.
    ClientClose,
    /// The client's connection dropped without a Close frame.
    ClientGone,
    /// The client broke the WebSocket protocol (or sent invalid UTF-8 text).
    ProtocolError,
    /// A client message was larger than `--max-message-size`.
    TooLarge,
    /// The backend failed a frame POST (non-2xx, unreachable, timeout).
    BackendError,
    /// The backend asked for the close through the callback API.
    BackendClose,
    /// The client did not accept written data within `--client-write-timeout`.
    ClientTooSlow,
    /// The bridge is shutting down.
    Shutdown,
    /// The client was silent (no message, no pong) for `--idle-timeout`.
    IdleTimeout,
    /// The connection reached `--max-connection-lifetime`.
    Lifetime,
    /// The client sent more than `--max-messages-per-second` (`--rate-limit-action close`).
    RateLimited,
    /// A fault inside the bridge (a connection task panicked); reported, never expected.
    InternalError,
    /// A channel publication found the client's send queue full.
    SlowConsumer,
    /// The node holding the connection died; another node reports it (cluster mode).
    NodeLost,
}

impl Cause {
    /// The value of `x-ws-proxy-close-cause`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Cause::ClientClose => "client-close",
            Cause::ClientGone => "client-gone",
            Cause::ProtocolError => "protocol-error",
            Cause::TooLarge => "too-large",
            Cause::BackendError => "backend-error",
            Cause::BackendClose => "backend-close",
            Cause::ClientTooSlow => "client-too-slow",
            Cause::Shutdown => "shutdown",
            Cause::IdleTimeout => "idle-timeout",
            Cause::Lifetime => "lifetime",
            Cause::RateLimited => "rate-limited",
            Cause::InternalError => "internal-error",
            Cause::SlowConsumer => "slow-consumer",
            Cause::NodeLost => "node-lost",
        }
    }
}

/// How a connection ended, as the disconnect POST reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CloseReport<'a> {
    pub(crate) initiator: Initiator,
    pub(crate) cause: Cause,
    /// The close code; `None` when the client's Close frame carried none.
    pub(crate) code: Option<u16>,
    pub(crate) reason: &'a str,
}

/// Cuts a reason to at most [`MAX_REASON_BYTES`] bytes on a character boundary.
pub(crate) fn truncate_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_owned();
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// Encodes a close reason for an HTTP header: UTF-8, with `%`, controls and non-ASCII bytes
/// percent-encoded, so any reason fits a header value and decodes back exactly.
pub(crate) fn header_safe_reason(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    for &b in reason.as_bytes() {
        if b == b'%' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_char_boundaries() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_REASON_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn header_reasons_are_ascii() {
        assert_eq!(header_safe_reason("bye"), "bye");
        assert_eq!(header_safe_reason("50% off"), "50%25 off");
        assert_eq!(header_safe_reason("é\n"), "%C3%A9%0A");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn percent_decode(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(0));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn header_reasons_are_ascii_and_decode_back(reason in "\\PC{0,60}") {
            let encoded = header_safe_reason(&reason);
            prop_assert!(encoded.bytes().all(|b| (0x20..0x7f).contains(&b)));
            prop_assert_eq!(percent_decode(&encoded), reason.as_bytes().to_vec());
        }
    }
}
