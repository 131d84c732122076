//! Reading callback bodies within bounds: at most `--max-message-size` bytes, within the body
//! timeout, each chunk taking its share of `--callback-body-memory` as it arrives; and
//! discarding the bodies of refused requests, so the caller sees the answer rather than a reset.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use super::error::ApiError;

/// Longest wait for a body-reading slot of the connection, or for room in
/// `--callback-body-memory`, before answering 503.
pub(crate) const CALLBACK_BODY_WAIT: Duration = Duration::from_secs(1);

/// The bounds a body is read within.
pub(crate) struct BodyLimits<'a> {
    /// Largest body, in bytes (`--max-message-size`).
    pub(crate) size: usize,
    /// Time for the whole body.
    pub(crate) within: Duration,
    /// Bytes of bodies held bridge-wide, one permit per byte.
    pub(crate) memory: &'a Semaphore,
    /// `--callback-body-memory`, for the 503's message.
    pub(crate) memory_limit: usize,
}

/// Reads a callback body of at most `limit` bytes within the handshake timeout, taking room
/// in `--callback-body-memory` for each chunk as it arrives (waiting at most
/// [`CALLBACK_BODY_WAIT`] for it). A body that arrives in one chunk is not copied.
pub(crate) async fn read_body(body: Body, limits: BodyLimits<'_>) -> Result<Bytes, ApiError> {
    let limit = limits.size;
    let deadline = tokio::time::Instant::now() + limits.within;
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received = 0usize;
    let mut held: Option<tokio::sync::SemaphorePermit<'_>> = None;
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| ApiError::BodyTimeout)?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| ApiError::BadBody(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if data.is_empty() {
            continue;
        }
        received += data.len();
        if received > limit {
            return Err(ApiError::TooLarge { limit });
        }
        let room = u32::try_from(data.len()).map_err(|_| ApiError::TooLarge { limit })?;
        let permit =
            tokio::time::timeout(CALLBACK_BODY_WAIT, limits.memory.acquire_many(room)).await;
        let Ok(Ok(permit)) = permit else {
            return Err(ApiError::Busy {
                limit: limits.memory_limit,
            });
        };
        match held.as_mut() {
            Some(all) => all.merge(permit),
            None => held = Some(permit),
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut whole = bytes::BytesMut::with_capacity(received);
            for chunk in &chunks {
                whole.extend_from_slice(chunk);
            }
            whole.freeze()
        }
    })
}

/// Reads and drops a request body, at most `limit` bytes and `within` time.
pub(crate) async fn discard(body: Body, limit: usize, within: Duration) {
    let drain = async {
        let mut body = body;
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(within, drain).await;
}
