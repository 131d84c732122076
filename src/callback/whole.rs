//! Callback `POST`s whose whole body arrived with the request head, from the server's lean
//! HTTP/1.1 path: nothing is left to wait for, so they are served at once, without the body
//! reading bounds of [`Callbacks::serve`] (the body is already held, in the connection's read
//! buffer) and with the same answers and counters.

use bytes::Bytes;

use super::{ApiError, Callbacks, Route};
use crate::protocol::Payload;
use crate::session::registry::ConnectionId;

/// The connection a whole `POST` is for, when this node answers it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target(Option<ConnectionId>);

impl Callbacks {
    /// Where a `POST` to the callback URL with this token is answered: here (with the
    /// connection's id, or none when the token names no connection), or `None` when the
    /// connection is on another node of the cluster and the request must be forwarded.
    pub(crate) fn whole_target(&self, token: &str) -> Option<Target> {
        match self.route(token) {
            Route::Remote(..) => None,
            Route::Unknown => Some(Target(None)),
            Route::Local(id) => Some(Target(Some(id))),
        }
    }

    /// Queues `body` as one message to the client, like a `POST` through [`Callbacks::serve`]
    /// without an `Origin`, and counts the answer.
    pub(crate) fn post_whole(
        &self,
        target: Target,
        content_type: Option<&[u8]>,
        body: Bytes,
    ) -> Result<(), ApiError> {
        let handle = target
            .0
            .and_then(|id| Some((id, self.registry.lookup(&id)?)));
        let result = match handle {
            None => Err(ApiError::UnknownConnection),
            Some((id, handle)) if !handle.mailbox.has_room() => Err(self.queue_full(&handle, id)),
            Some((id, handle)) => Payload::from_http_raw(content_type, body)
                .map_err(|_| ApiError::NotUtf8)
                .and_then(|payload| self.enqueue(&handle, id, payload).map(drop)),
        };
        let status = match &result {
            Ok(()) => 202,
            Err(e) => e.status().as_u16(),
        };
        self.metrics.callback_response(status);
        result
    }

    /// Counts a whole `POST` whose body did not arrive within the handshake timeout and
    /// gives its error.
    pub(crate) fn body_timed_out(&self) -> ApiError {
        self.metrics
            .callback_response(ApiError::BodyTimeout.status().as_u16());
        ApiError::BodyTimeout
    }

    /// The largest callback body, `--max-message-size`.
    pub(crate) fn max_body(&self) -> usize {
        self.config.max_message_size
    }
}
