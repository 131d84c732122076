//! [`Ending`]: why one connection ended (close code and reason, initiator, cause). One value
//! drives the Close frame sent to the client, the disconnect POST's headers, the log line and
//! the metrics. The wire names of causes and initiators are in [`crate::protocol`]. Owns no
//! I/O.

use std::fmt;

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::protocol::{Cause, Initiator, truncate_reason};

/// How one connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ending {
    /// Close code sent or received; `None` when the client's Close frame carried no code.
    pub(crate) code: Option<CloseCode>,
    /// Close reason (at most [`MAX_REASON_BYTES`] bytes).
    pub(crate) reason: String,
    /// Who ended it.
    pub(crate) initiator: Initiator,
    /// Why.
    pub(crate) cause: Cause,
}

impl Ending {
    /// An ending the bridge or the backend initiates; the reason is cut to fit a Close frame.
    pub(crate) fn new(initiator: Initiator, cause: Cause, code: CloseCode, reason: &str) -> Self {
        Ending {
            code: Some(code),
            reason: truncate_reason(reason),
            initiator,
            cause,
        }
    }

    /// The bridge closes the connection with 1001 (going away): shutdown, idle timeout,
    /// lifetime.
    pub(crate) fn away(cause: Cause, reason: &str) -> Self {
        Ending::new(Initiator::Bridge, cause, CloseCode::Away, reason)
    }

    /// A fault inside the bridge ended the connection: 1011.
    pub(crate) fn internal_error() -> Self {
        Ending::new(
            Initiator::Bridge,
            Cause::InternalError,
            CloseCode::Error,
            "internal error",
        )
    }

    /// The client sent a Close frame.
    pub(crate) fn client_close(code: Option<CloseCode>, reason: &str) -> Self {
        Ending {
            code,
            reason: truncate_reason(reason),
            initiator: Initiator::Client,
            cause: Cause::ClientClose,
        }
    }

    /// The client went away without a Close frame: 1006 (never sent on the wire).
    pub(crate) fn client_gone(detail: &str) -> Self {
        Ending {
            code: Some(CloseCode::Abnormal),
            reason: truncate_reason(detail),
            initiator: Initiator::Client,
            cause: Cause::ClientGone,
        }
    }

    /// Whether the bridge should send a Close frame to the client.
    pub(crate) fn sends_close_frame(&self) -> bool {
        self.initiator != Initiator::Client && self.cause != Cause::ClientTooSlow
    }

    /// Whether client messages read before the ending are still posted to the backend. They
    /// are, unless the backend is what failed or the bridge's own state is in doubt.
    pub(crate) fn delivers_pending(&self) -> bool {
        !matches!(self.cause, Cause::BackendError | Cause::InternalError)
    }

    /// The close code as a number, if any.
    pub(crate) fn code_number(&self) -> Option<u16> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings_read_well_in_logs() {
        let ending = Ending::new(
            Initiator::Bridge,
            Cause::BackendError,
            CloseCode::Error,
            "backend answered 500",
        );
        assert_eq!(
            ending.to_string(),
            "backend-error by bridge, code 1011, reason \"backend answered 500\""
        );
        assert_eq!(
            Ending::client_close(None, "").to_string(),
            "client-close by client"
        );
    }
}
