//! One task per WebSocket connection.
//!
//! The task owns the client socket and runs a single `select!` over: client messages (read
//! ahead at most `--read-ahead-messages` messages or `--read-ahead-bytes` bytes while a frame
//! POST is in flight, then TCP backpressure; at most `--max-messages-per-second`), the one frame POST in flight (message N+1 is
//! posted only after message N succeeded), the bounded outbound queue fed by the callback API,
//! and the shutdown token. When the loop ends it closes the client, removes the registry entry
//! (callbacks answer 404 from then on), posts what was read but not yet posted (unless the
//! backend is what failed), and sends exactly one disconnect POST.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::header::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, info, warn};

use crate::backend::{BackendClient, BackendError, BackendTarget, RequestIds};
use crate::close::{Cause, Ending, Initiator};
use crate::limits::{ConnectionSlot, TokenBucket, worth_logging};
use crate::metrics::Metrics;
use crate::payload::Payload;
use crate::registry::{ConnectionId, ConnectionStats, Outbound, Registration};
use crate::server::Shared;

/// Time given to the WebSocket closing handshake before the socket is dropped.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

type FramePost = Pin<Box<dyn Future<Output = Result<Option<Payload>, BackendError>> + Send>>;

/// Everything a connection task needs besides the socket.
pub(crate) struct Connection {
    pub(crate) id: ConnectionId,
    pub(crate) frame_url: Arc<BackendTarget>,
    pub(crate) disconnect_url: Option<BackendTarget>,
    /// The callback URL as a header value, built once.
    pub(crate) callback: HeaderValue,
    /// The `x-ws-proxy-request-id`s of this connection's backend requests.
    pub(crate) request_ids: RequestIds,
    pub(crate) registration: Registration,
    pub(crate) outbound: mpsc::Receiver<Outbound>,
    /// Counters shared with the registry (read by `GET {callback}`).
    pub(crate) stats: Arc<ConnectionStats>,
    /// The connect hook's answer body, sent before anything else.
    pub(crate) first_message: Option<Payload>,
    /// This connection's place in the connection limits, released when the task ends.
    pub(crate) slot: ConnectionSlot,
}

/// Runs a connection to its end, disconnect POST included.
pub(crate) async fn run<S>(mut ws: WebSocketStream<S>, conn: Connection, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Connection {
        id,
        frame_url,
        disconnect_url,
        callback,
        request_ids: ids,
        registration,
        mut outbound,
        stats,
        first_message,
        slot,
    } = conn;
    let backend = shared.backend.clone();
    let read_ahead_messages = shared.config.read_ahead_messages;
    let read_ahead_bytes = shared.config.read_ahead_bytes;
    let mut rate_limit = (shared.config.max_messages_per_second > 0)
        .then(|| TokenBucket::new(shared.config.max_messages_per_second));
    let write_timeout = shared.config.client_write_timeout;
    let shutdown = shared.shutdown.clone();
    let idle_timeout = shared.config.idle_timeout;
    let mut ping_timer = tokio::time::interval_at(
        Instant::now() + shared.config.ping_interval,
        shared.config.ping_interval,
    );
    ping_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let lifetime = shared.config.max_connection_lifetime;
    let lifetime_end = tokio::time::sleep(lifetime.unwrap_or(Duration::from_secs(86_400 * 365)));
    tokio::pin!(lifetime_end);
    let mut last_seen = Instant::now();
    let metrics = Arc::clone(&shared.metrics);
    metrics.opened.inc();
    metrics.open.inc();

    let mut pending: VecDeque<Payload> = VecDeque::new();
    let mut pending_bytes = 0usize;
    let mut in_flight: Option<FramePost> = None;
    let mut seq = 0u64;

    let mut ending = None;
    if let Some(payload) = first_message
        && let Err(e) = write(&mut ws, payload, write_timeout, &stats, &metrics).await
    {
        ending = Some(e);
    }

    let ending = if let Some(ending) = ending {
        ending
    } else {
        loop {
            if in_flight.is_none()
                && let Some(payload) = pending.pop_front()
            {
                pending_bytes -= payload.len();
                in_flight = Some(post_frame(
                    &backend, &frame_url, &callback, ids, seq, payload,
                ));
                seq += 1;
            }
            let may_read = pending.len() < read_ahead_messages && pending_bytes < read_ahead_bytes;

            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    break Ending::new(Initiator::Bridge, Cause::Shutdown, CloseCode::Away, "server shutting down");
                }
                () = &mut lifetime_end, if lifetime.is_some() => {
                    break Ending::new(Initiator::Bridge, Cause::Lifetime, CloseCode::Away, "maximum connection lifetime reached");
                }
                _ = ping_timer.tick() => {
                    if last_seen.elapsed() >= idle_timeout {
                        break Ending::new(Initiator::Bridge, Cause::IdleTimeout, CloseCode::Away, "idle timeout");
                    }
                    if let Err(ending) = send_within(&mut ws, Message::Ping(bytes::Bytes::new()), write_timeout).await {
                        break ending;
                    }
                }
                command = outbound.recv() => match command {
                    Some(item) => {
                        if let Err(ending) = deliver(&mut ws, item, write_timeout, &stats, &metrics).await {
                            break ending;
                        }
                    }
                    // The registration holds a sender until this task drops it.
                    None => break Ending::client_gone("outbound queue closed"),
                },
                result = poll_in_flight(&mut in_flight) => {
                    in_flight = None;
                    match result {
                        Ok(None) => {}
                        Ok(Some(reply)) => {
                            // Callback messages accepted before the backend answered go first.
                            let mut failed = None;
                            while let Ok(item) = outbound.try_recv() {
                                if let Err(ending) = deliver(&mut ws, item, write_timeout, &stats, &metrics).await {
                                    failed = Some(ending);
                                    break;
                                }
                            }
                            if let Some(ending) = failed {
                                break ending;
                            }
                            if let Err(ending) = write(&mut ws, reply, write_timeout, &stats, &metrics).await {
                                break ending;
                            }
                        }
                        Err(e) => {
                            warn!(seq = seq - 1, error = %e.detail(), "frame POST failed");
                            break Ending::new(Initiator::Bridge, Cause::BackendError, CloseCode::Error, &e.to_string());
                        }
                    }
                }
                message = ws.next(), if may_read => match read_outcome(message) {
                    Read::Message(payload) => {
                        if let Some(bucket) = rate_limit.as_mut()
                            && !bucket.take()
                        {
                            let total = shared.limits.rate_limited.fetch_add(1, Ordering::Relaxed) + 1;
                            if worth_logging(total) {
                                warn!(rate_limited_total = total, "client exceeded --max-messages-per-second");
                            }
                            break Ending::new(Initiator::Bridge, Cause::RateLimited, CloseCode::Policy, "message rate limit exceeded");
                        }
                        last_seen = Instant::now();
                        stats.record_in(payload.len());
                        metrics.messages_in.inc();
                        metrics.bytes_in.inc_by(payload.len() as u64);
                        pending_bytes += payload.len();
                        pending.push_back(payload);
                    }
                    Read::Control => {
                        last_seen = Instant::now();
                        stats.touch();
                    }
                    Read::End(ending) => break ending,
                },
            }
        }
    };

    // From here on the callback URL answers 404.
    drop(registration);
    outbound.close();
    let undelivered = std::iter::from_fn(|| outbound.try_recv().ok())
        .filter(|o| !matches!(o, Outbound::Close { .. }))
        .count();

    close_client(&mut ws, &ending).await;
    drop(ws);

    let mut unposted = 0usize;
    if ending.delivers_pending() {
        if let Some(post) = in_flight.take() {
            if let Err(e) = post.await {
                warn!(error = %e.detail(), "frame POST failed while closing");
                unposted = pending.len();
                pending.clear();
            }
        }
        for payload in pending.drain(..) {
            if let Err(e) = backend
                .post_frame(&frame_url, &callback, &ids, seq, &payload)
                .await
            {
                warn!(seq, error = %e.detail(), "frame POST failed while closing");
                unposted += 1;
                break;
            }
            seq += 1;
        }
        unposted += pending.len();
    } else {
        unposted = pending.len();
    }

    if let Some(url) = &disconnect_url {
        if let Err(e) = backend.post_disconnect(url, &callback, &ids, &ending).await {
            warn!(error = %e.detail(), "disconnect POST failed");
        }
    }

    info!(
        %ending,
        messages_in = stats.messages_in.load(Ordering::Relaxed),
        bytes_in = stats.bytes_in.load(Ordering::Relaxed),
        messages_out = stats.messages_out.load(Ordering::Relaxed),
        bytes_out = stats.bytes_out.load(Ordering::Relaxed),
        unposted,
        undelivered,
        "connection closed"
    );
    metrics.open.dec();
    metrics.closed(ending.cause);
    drop(slot);
    debug!(conn.id = %id, "connection task finished");
}

fn post_frame(
    backend: &BackendClient,
    url: &Arc<BackendTarget>,
    callback: &HeaderValue,
    ids: RequestIds,
    seq: u64,
    payload: Payload,
) -> FramePost {
    let backend = backend.clone();
    let url = Arc::clone(url);
    let callback = callback.clone();
    Box::pin(async move {
        backend
            .post_frame(&url, &callback, &ids, seq, &payload)
            .await
    })
}

/// Waits for the frame POST in flight, or forever when there is none.
async fn poll_in_flight(
    in_flight: &mut Option<FramePost>,
) -> Result<Option<Payload>, BackendError> {
    match in_flight {
        Some(post) => post.await,
        None => std::future::pending().await,
    }
}

/// What one read from the client produced.
enum Read {
    /// A text or binary message to post.
    Message(Payload),
    /// A ping or pong (answered by tungstenite) or a raw frame: nothing to post.
    Control,
    /// The connection is over.
    End(Ending),
}

fn read_outcome(message: Option<Result<Message, WsError>>) -> Read {
    match message {
        Some(Ok(Message::Text(text))) => Read::Message(Payload::Text(text)),
        Some(Ok(Message::Binary(bytes))) => Read::Message(Payload::Binary(bytes)),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Read::Control,
        Some(Ok(Message::Close(frame))) => Read::End(match frame {
            Some(f) => Ending::client_close(Some(f.code), &f.reason),
            None => Ending::client_close(None, ""),
        }),
        Some(Err(WsError::Capacity(e))) => Read::End(Ending::new(
            Initiator::Bridge,
            Cause::TooLarge,
            CloseCode::Size,
            &format!("message too large: {e}"),
        )),
        Some(Err(WsError::Utf8(_))) => Read::End(Ending::new(
            Initiator::Bridge,
            Cause::ProtocolError,
            CloseCode::Invalid,
            "text message is not valid UTF-8",
        )),
        Some(Err(WsError::Protocol(
            e @ tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ))) => Read::End(Ending::client_gone(&e.to_string())),
        Some(Err(WsError::Protocol(e))) => Read::End(Ending::new(
            Initiator::Bridge,
            Cause::ProtocolError,
            CloseCode::Protocol,
            &e.to_string(),
        )),
        Some(Err(e)) => Read::End(Ending::client_gone(&e.to_string())),
        None => Read::End(Ending::client_gone(
            "connection closed without a Close frame",
        )),
    }
}

/// Writes one message to the client within the write timeout.
async fn write<S>(
    ws: &mut WebSocketStream<S>,
    payload: Payload,
    timeout: Duration,
    stats: &ConnectionStats,
    metrics: &Metrics,
) -> Result<(), Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let len = payload.len();
    let message = match payload {
        Payload::Text(text) => Message::Text(text),
        Payload::Binary(bytes) => Message::Binary(bytes),
    };
    send_within(ws, message, timeout).await?;
    stats.record_out(len);
    metrics.messages_out.inc();
    metrics.bytes_out.inc_by(len as u64);
    Ok(())
}

/// Sends one frame to the client within the write timeout; a client that does not take it in
/// time is dropped as too slow.
async fn send_within<S>(
    ws: &mut WebSocketStream<S>,
    message: Message,
    timeout: Duration,
) -> Result<(), Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, ws.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Ending::client_gone(&format!("write failed: {e}"))),
        Err(_) => Err(Ending::new(
            Initiator::Bridge,
            Cause::ClientTooSlow,
            CloseCode::Policy,
            "client did not read its messages in time",
        )),
    }
}

/// Carries out one item of the outbound queue: writes a message, or ends the connection on a
/// close request.
async fn deliver<S>(
    ws: &mut WebSocketStream<S>,
    item: Outbound,
    timeout: Duration,
    stats: &ConnectionStats,
    metrics: &Metrics,
) -> Result<(), Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match item {
        Outbound::Message(payload) => {
            stats
                .queued_bytes
                .fetch_sub(payload.len(), Ordering::AcqRel);
            write(ws, payload, timeout, stats, metrics).await
        }
        Outbound::Close { code, reason } => Err(Ending::new(
            Initiator::Backend,
            Cause::BackendClose,
            code,
            &reason,
        )),
    }
}

/// Ends the WebSocket: sends the bridge's or backend's Close frame and waits (bounded) for the
/// client's answer, or completes the handshake the client started.
async fn close_client<S>(ws: &mut WebSocketStream<S>, ending: &Ending)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let finish = async {
        if ending.sends_close_frame() {
            let frame = CloseFrame {
                code: ending.code.unwrap_or(CloseCode::Normal),
                reason: ending.reason.as_str().into(),
            };
            if ws.send(Message::Close(Some(frame))).await.is_err() {
                return;
            }
            // Read until the client's Close arrives (messages after ours are not forwarded).
            while let Some(Ok(message)) = ws.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        } else if ending.cause == Cause::ClientClose {
            // tungstenite queued the Close reply when it read the client's Close; send it.
            let _ = ws.flush().await;
        }
    };
    if tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, finish)
        .await
        .is_err()
    {
        debug!("closing handshake timed out");
    }
}
