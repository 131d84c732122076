//! [`Ending`]: why one connection ended (close code and reason, initiator, cause). One value
//! drives the Close frame sent to the client, the disconnect POST's headers, the log line and
//! the metrics; the wire names of causes and initiators are in [`crate::protocol`]. Also what a
//! client's read means for the connection ([`read_outcome`]) and the closing handshake
//! ([`close_client`]).

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::ws::{Incoming, WsError, WsStream};
use crate::protocol::close_code;

use crate::protocol::Payload;

use crate::protocol::{Cause, CloseReport, Initiator, truncate_reason};

/// How one connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ending {
    /// Close code sent or received; `None` when the client's Close frame carried no code.
    pub(crate) code: Option<u16>,
    /// Close reason (at most [`MAX_REASON_BYTES`] bytes).
    pub(crate) reason: String,
    /// Who ended it.
    pub(crate) initiator: Initiator,
    /// Why.
    pub(crate) cause: Cause,
}

impl Ending {
    /// An ending the bridge or the backend initiates; the reason is cut to fit a Close frame.
    pub(crate) fn new(initiator: Initiator, cause: Cause, code: u16, reason: &str) -> Self {
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
        Ending::new(Initiator::Bridge, cause, close_code::AWAY, reason)
    }

    /// A fault inside the bridge ended the connection: 1011.
    pub(crate) fn internal_error() -> Self {
        Ending::new(
            Initiator::Bridge,
            Cause::InternalError,
            close_code::ERROR,
            "internal error",
        )
    }

    /// The client sent a Close frame.
    pub(crate) fn client_close(code: Option<u16>, reason: &str) -> Self {
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
            code: Some(close_code::ABNORMAL),
            reason: truncate_reason(detail),
            initiator: Initiator::Client,
            cause: Cause::ClientGone,
        }
    }

    /// Whether the bridge should send a Close frame to the client.
    pub(crate) fn sends_close_frame(&self) -> bool {
        self.initiator != Initiator::Client && self.cause != Cause::ClientTooSlow
    }

    /// Whether, after its Close frame, the bridge waits for the client's: not when the client
    /// broke the protocol, where the connection is failed at once (RFC 6455 section 7.1.7).
    pub(crate) fn awaits_close_reply(&self) -> bool {
        !matches!(self.cause, Cause::ProtocolError | Cause::TooLarge)
    }

    /// Whether client messages read before the ending are still posted to the backend. They
    /// are, unless the backend is what failed or the bridge's own state is in doubt.
    pub(crate) fn delivers_pending(&self) -> bool {
        !matches!(self.cause, Cause::BackendError | Cause::InternalError)
    }

    /// Whether the client took part in the closing (it sent or was sent a Close frame and
    /// is still there): a websocket-over-http backend then gets CLOSE, otherwise DISCONNECT.
    pub(crate) fn is_clean(&self) -> bool {
        !matches!(self.cause, Cause::ClientGone | Cause::ClientTooSlow)
    }

    /// What the disconnect POST reports of this ending.
    pub(crate) fn report(&self) -> CloseReport<'_> {
        CloseReport {
            initiator: self.initiator,
            cause: self.cause,
            code: self.code_number(),
            reason: &self.reason,
        }
    }

    /// The close code as a number, if any.
    pub(crate) fn code_number(&self) -> Option<u16> {
        self.code
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

/// Time given to the WebSocket closing handshake before the socket is dropped.
pub(crate) const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// What one read from the client produced.
pub(crate) enum Read {
    /// A text or binary message to post.
    Message(Payload),
    /// A ping (answered already) or a pong: nothing to post.
    Control,
    /// The connection is over.
    End(Ending),
}

pub(crate) fn read_outcome(incoming: Option<Result<Incoming, WsError>>) -> Read {
    match incoming {
        Some(Ok(Incoming::Text(text))) => Read::Message(Payload::Text(text)),
        Some(Ok(Incoming::Binary(bytes))) => Read::Message(Payload::Binary(bytes)),
        Some(Ok(Incoming::Ping | Incoming::Pong)) => Read::Control,
        Some(Ok(Incoming::Close(close))) => Read::End(match close {
            Some((code, reason)) => Ending::client_close(Some(code), &reason),
            None => Ending::client_close(None, ""),
        }),
        Some(Err(e @ WsError::TooLarge { .. })) => Read::End(Ending::new(
            Initiator::Bridge,
            Cause::TooLarge,
            close_code::SIZE,
            &format!("message too large: {e}"),
        )),
        Some(Err(WsError::InvalidUtf8)) => Read::End(Ending::new(
            Initiator::Bridge,
            Cause::ProtocolError,
            close_code::INVALID,
            "text message is not valid UTF-8",
        )),
        Some(Err(WsError::Protocol(e))) => Read::End(Ending::new(
            Initiator::Bridge,
            Cause::ProtocolError,
            close_code::PROTOCOL,
            &e,
        )),
        Some(Err(WsError::Io(e))) => Read::End(Ending::client_gone(&e.to_string())),
        None => Read::End(Ending::client_gone(
            "connection closed without a Close frame",
        )),
    }
}

/// Ends the WebSocket: sends the bridge's or backend's Close frame and waits (bounded) for the
/// client's answer, or completes the handshake the client started.
pub(crate) async fn close_client<S>(ws: &mut WsStream<S>, ending: &Ending)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let finish = async {
        if ending.sends_close_frame() {
            let code = ending.code.unwrap_or(close_code::NORMAL);
            if ws.close(code, &ending.reason).await.is_err() || !ending.awaits_close_reply() {
                return;
            }
            // Read until the client's Close arrives (messages after ours are not forwarded).
            while let Some(Ok(incoming)) = ws.next().await {
                if matches!(incoming, Incoming::Close(_)) {
                    break;
                }
            }
        } else if ending.cause == Cause::ClientClose {
            // The answer to the client's Close was queued when it was read; send it.
            let _ = ws.flush().await;
        }
    };
    if tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, finish)
        .await
        .is_err()
    {
        debug!("closing handshake timed out");
    }
    // The server closes the TCP connection first (RFC 6455 section 7.1.1), now rather than
    // after the backend requests still owed.
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, ws.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings_read_well_in_logs() {
        let ending = Ending::new(
            Initiator::Bridge,
            Cause::BackendError,
            close_code::ERROR,
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
