//! Why a connection ended: the close code and reason, who initiated it, and the cause, as
//! reported to the client (Close frame), to the backend (disconnect POST headers) and to the
//! logs. Owns no I/O.

use std::fmt;

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Longest close reason a Close frame can carry (125-byte payload minus the 2-byte code).
pub const MAX_REASON_BYTES: usize = 123;

/// Who ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// The WebSocket client (Close frame, or it vanished).
    Client,
    /// The backend, through the callback API.
    Backend,
    /// The bridge itself (backend failure, limits, shutdown).
    Bridge,
}

impl Initiator {
    /// The value of `x-ws-proxy-close-initiator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::Client => "client",
            Initiator::Backend => "backend",
            Initiator::Bridge => "bridge",
        }
    }
}

/// The cause of an ending, as reported in `x-ws-proxy-close-cause` and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
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
}

impl Cause {
    /// The value of `x-ws-proxy-close-cause`.
    pub fn as_str(self) -> &'static str {
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
        }
    }
}

/// How one connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// Close code sent or received; `None` when the client's Close frame carried no code.
    pub code: Option<CloseCode>,
    /// Close reason (at most [`MAX_REASON_BYTES`] bytes).
    pub reason: String,
    /// Who ended it.
    pub initiator: Initiator,
    /// Why.
    pub cause: Cause,
}

impl Ending {
    /// An ending the bridge or the backend initiates; the reason is cut to fit a Close frame.
    pub fn new(initiator: Initiator, cause: Cause, code: CloseCode, reason: &str) -> Self {
        Ending {
            code: Some(code),
            reason: truncate_reason(reason),
            initiator,
            cause,
        }
    }

    /// The bridge closes the connection with 1001 (going away): shutdown, idle timeout,
    /// lifetime.
    pub fn away(cause: Cause, reason: &str) -> Self {
        Ending::new(Initiator::Bridge, cause, CloseCode::Away, reason)
    }

    /// A fault inside the bridge ended the connection: 1011.
    pub fn internal_error() -> Self {
        Ending::new(
            Initiator::Bridge,
            Cause::InternalError,
            CloseCode::Error,
            "internal error",
        )
    }

    /// The client sent a Close frame.
    pub fn client_close(code: Option<CloseCode>, reason: &str) -> Self {
        Ending {
            code,
            reason: truncate_reason(reason),
            initiator: Initiator::Client,
            cause: Cause::ClientClose,
        }
    }

    /// The client went away without a Close frame: 1006 (never sent on the wire).
    pub fn client_gone(detail: &str) -> Self {
        Ending {
            code: Some(CloseCode::Abnormal),
            reason: truncate_reason(detail),
            initiator: Initiator::Client,
            cause: Cause::ClientGone,
        }
    }

    /// Whether the bridge should send a Close frame to the client.
    pub fn sends_close_frame(&self) -> bool {
        self.initiator != Initiator::Client && self.cause != Cause::ClientTooSlow
    }

    /// Whether client messages read before the ending are still posted to the backend. They
    /// are, unless the backend is what failed or the bridge's own state is in doubt.
    pub fn delivers_pending(&self) -> bool {
        !matches!(self.cause, Cause::BackendError | Cause::InternalError)
    }

    /// The close code as a number, if any.
    pub fn code_number(&self) -> Option<u16> {
        self.code.map(u16::from)
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} by {}", self.cause.as_str(), self.initiator.as_str())?;
        if let Some(code) = self.code_number() {
            write!(f, ", code {code}")?;
        }
        if !self.reason.is_empty() {
            write!(f, ", reason {:?}", self.reason)?;
        }
        Ok(())
    }
}

/// Cuts a reason to at most [`MAX_REASON_BYTES`] bytes on a character boundary.
pub fn truncate_reason(reason: &str) -> String {
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
pub fn header_safe_reason(reason: &str) -> String {
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
