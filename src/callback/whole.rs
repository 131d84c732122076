//! Callback `POST`s whose whole body arrived with the request head, from the server's lean
//! HTTP/1.1 path: nothing is left to wait for, so they are served at once, with the same
//! answers and counters as through [`Callbacks::serve`]; the body takes its share of
//! `--callback-body-memory` until it is queued, or the request takes the full path.

use bytes::Bytes;
use tokio::sync::SemaphorePermit;

use super::{ApiError, Callbacks, Route};
use crate::protocol::Payload;
use crate::session::registry::{ConnectionHandle, ConnectionId};

/// The connection a whole `POST` is for, when this node answers it, and the body's share of
/// `--callback-body-memory` until it is queued.
#[derive(Debug)]
pub(crate) struct Target<'a> {
    connection: Option<(ConnectionId, ConnectionHandle)>,
    _memory: Option<SemaphorePermit<'a>>,
}

impl Callbacks {
    /// Where a `POST` to the callback URL with this token and a body of `length` bytes is
    /// answered at once: here (with the connection, or none when the token names no open
    /// connection), or `None` when it must take the full path, whose answer may take time: the
    /// connection is on another node of the cluster (the request is forwarded), its callback
    /// body reads are all taken, or the body does not fit in what is left of
    /// `--callback-body-memory` now (the full path waits a little for room).
    pub(crate) fn whole_target(&self, token: &str, length: usize) -> Option<Target<'_>> {
        let connection = match self.route(token) {
            Route::Remote(..) => return None,
            Route::Unknown => None,
            Route::Local(id) => self.registry.lookup(&id).map(|handle| (id, handle)),
        };
        let memory = match (&connection, u32::try_from(length).ok()?) {
            (Some((_, handle)), _) if handle.body_reads.available_permits() == 0 => return None,
            (Some(_), room @ 1..) => Some(self.body_memory.try_acquire_many(room).ok()?),
            _ => None,
        };
        Some(Target {
            connection,
            _memory: memory,
        })
    }

    /// Queues `body` as one message to the client, like a `POST` through [`Callbacks::serve`]
    /// without an `Origin`, and counts the answer.
    pub(crate) fn post_whole(
        &self,
        target: Target<'_>,
        content_type: Option<&[u8]>,
        body: Bytes,
    ) -> Result<(), ApiError> {
        let result = match target.connection {
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

    /// The largest callback body, `--max-message-size`.
    pub(crate) fn max_body(&self) -> usize {
        self.config.max_message_size
    }
}
