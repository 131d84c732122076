//! One task per WebSocket connection.
//!
//! The task owns the client socket. Its loop waits for one event at a time (client message,
//! the frame POST in flight finishing, an item of the bounded outbound queue fed by the
//! callback API, the ping timer, the lifetime, the end of a rate-limit pause, shutdown) and
//! hands it to one method. Client messages are read ahead at most `--read-ahead-messages`
//! messages or `--read-ahead-bytes` bytes while a frame POST is in flight, then the socket is
//! not read (TCP backpressure); a client over `--max-messages-per-second` is paused the same
//! way (or closed with 1008 under `--rate-limit-action close`). Message N+1 is posted only
//! after message N succeeded.
//!
//! When the loop ends the task closes the client, removes the registry entry (callbacks answer
//! 404 from then on), posts what was read but not yet posted (unless the backend is what
//! failed), and sends exactly one disconnect POST. A panic in the loop is caught and ends the
//! connection with 1011 like any other ending; should the closing itself fail, drop guards
//! still send the disconnect POST and fix the counters.
//!
//! Longer than 400 lines on purpose: the task is one object whose methods are its events, and
//! its state machine reads best top-down in one file (the guards it relies on are in
//! `obligations`, the closing handshake in `close`).

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use reqwest::header::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tracing::{error, info, warn};

use super::Sessions;
use super::close::{Read, close_client, read_outcome};
use super::events::{Action, ClientKeepAlive, EventsLink};
use super::obligations::{DisconnectNotice, DisconnectOwed, OpenConnection};
use super::ws::{Incoming, WsError, WsStream, frame::opcode};
use crate::backend::events::EventsOutcome;
use crate::backend::{BackendClient, BackendError, BackendTarget, FrameAnswer, RequestIds};
use crate::config::RateLimitAction;
use crate::logging::worth_logging;
use crate::metrics::Metrics;
use crate::policy::limits::{ConnectionSlot, TokenBucket};
use crate::protocol::close_code;
use crate::protocol::events::Event as WsEvent;
use crate::protocol::payload::Payload;
use crate::protocol::{Cause, Initiator};
use crate::session::close::Ending;
use crate::session::registry::{ConnectionHandle, Outbound, Registration};

mod woh;

type FramePost = Pin<Box<dyn Future<Output = Result<FrameAnswer, BackendError>> + Send>>;
/// A websocket-over-http request in flight: the events it carries and its outcome.
type EventsPost =
    Pin<Box<dyn Future<Output = (Vec<WsEvent>, Result<EventsOutcome, BackendError>)> + Send>>;

/// The reason of a `slow-consumer` close.
pub(crate) const SLOW_CONSUMER: &str =
    "slow consumer: the client did not keep up with its channels";

/// Everything a connection task needs besides the socket.
pub(crate) struct Connection {
    pub(crate) frame_url: Arc<BackendTarget>,
    pub(crate) disconnect_url: Option<BackendTarget>,
    /// The callback URL as a header value, built once.
    pub(crate) callback: HeaderValue,
    /// The `x-ws-proxy-request-id`s of this connection's backend requests.
    pub(crate) request_ids: RequestIds,
    pub(crate) registration: Registration,
    /// The queue the callback API feeds and the counters `GET {callback}` reads.
    pub(crate) link: ConnectionHandle,
    /// The connect hook's answer body, sent before anything else.
    pub(crate) first_message: Option<Payload>,
    /// This connection's place in the connection limits, released when the task ends.
    pub(crate) slot: ConnectionSlot,
    /// A websocket-over-http connection: its protocol state and what the OPEN answer asked
    /// for after OPEN. `frame_url` is then the events URL; there is no disconnect URL.
    pub(crate) events: Option<Box<(EventsLink, Vec<Action>)>>,
    /// permessage-deflate, as agreed in the handshake.
    pub(crate) deflate: Option<crate::session::ws::deflate::Agreed>,
}

/// Runs a connection to its end, disconnect POST included, whatever happens inside.
pub(crate) async fn run<S>(ws: WsStream<S>, conn: Connection, sessions: Arc<Sessions>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut task = Task::new(ws, conn, sessions);
    let ending = match AssertUnwindSafe(task.serve()).catch_unwind().await {
        Ok(ending) => ending,
        Err(panic) => {
            error!(
                panic = panic_message(panic.as_ref()),
                "connection task panicked; closing the connection"
            );
            Ending::internal_error()
        }
    };
    // Boxed: closing (the POSTs still owed, the disconnect POST) is a large future, and inline
    // it would make every idle connection's task that large.
    Box::pin(task.finish(ending)).await;
}

/// The text of a caught panic, for the log.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A client over its message rate: how it is held back.
struct RateLimit {
    bucket: TokenBucket,
    action: RateLimitAction,
}

/// What woke the connection's loop.
enum Event {
    Shutdown,
    Lifetime,
    Ping,
    PauseOver,
    Outbound(Option<Outbound>),
    Posted(Result<FrameAnswer, BackendError>),
    EventsPosted(Vec<WsEvent>, Result<EventsOutcome, BackendError>),
    /// `Keep-Alive-Interval` passed without a request.
    BackendKeepAlive,
    /// GRIP `keep-alive`: the client got nothing for that long.
    ClientKeepAlive,
    Client(Option<Result<Incoming, WsError>>),
}

/// A connection task's state.
struct Task<S> {
    ws: WsStream<S>,
    sessions: Arc<Sessions>,
    backend: BackendClient,
    metrics: Arc<Metrics>,
    frame_url: Arc<BackendTarget>,
    callback: HeaderValue,
    request_ids: RequestIds,
    /// Dropped when the loop ends: callbacks answer 404 from then on.
    registration: Option<Registration>,
    link: ConnectionHandle,
    first_message: Option<Payload>,
    /// The disconnect POST this connection owes, sent once by [`Task::finish`] or, failing
    /// that, by the guard's `Drop`.
    disconnect: DisconnectOwed,
    /// Keeps the open-connections gauge and the connection slot until the task is gone.
    _open: OpenConnection,
    /// Client messages read and not yet posted, oldest first.
    pending: VecDeque<Payload>,
    pending_bytes: usize,
    in_flight: Option<FramePost>,
    /// The seq of the next frame POST.
    seq: u64,
    rate: Option<RateLimit>,
    /// While set, the client is over its rate and its socket is not read.
    paused_until: Option<Instant>,
    last_seen: Instant,
    ping: Interval,
    lifetime: Option<Pin<Box<Sleep>>>,
    /// websocket-over-http: the protocol state, the request in flight, the timers.
    // Boxed: a seed connection pays a pointer for each, not their size.
    events: Option<Box<EventsLink>>,
    events_in_flight: Option<EventsPost>,
    first_actions: Vec<Action>,
    backend_keep_alive: Option<Box<Interval>>,
    client_keep_alive: Option<Box<(ClientKeepAlive, Pin<Box<Sleep>>)>>,
}

impl<S> Task<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(ws: WsStream<S>, conn: Connection, sessions: Arc<Sessions>) -> Self {
        let config = &sessions.config;
        let backend = sessions.backend.clone();
        let metrics = Arc::clone(&sessions.metrics);
        metrics.opened.inc();
        metrics.open.inc();
        let mut ping =
            tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let rate = config.rate_limit.map(|(per_second, action)| RateLimit {
            bucket: TokenBucket::new(per_second),
            action,
        });
        let lifetime = config
            .max_connection_lifetime
            .map(|d| Box::pin(tokio::time::sleep(d)));
        let (events, first_actions) = match conn.events.map(|b| *b) {
            Some((link, actions)) => (Some(Box::new(link)), actions),
            None => (None, Vec::new()),
        };
        let disconnect = match &events {
            Some(link) => Some(DisconnectNotice::Events {
                backend: backend.clone(),
                target: Arc::clone(&conn.frame_url),
                link: Box::new(EventsLink::new(
                    link.connection_id.clone(),
                    link.grip_key.clone(),
                )),
            }),
            None => conn.disconnect_url.map(|target| DisconnectNotice::Post {
                backend: backend.clone(),
                target,
                callback: conn.callback.clone(),
                request_ids: conn.request_ids,
            }),
        };
        Task {
            ws,
            disconnect: DisconnectOwed(disconnect),
            _open: OpenConnection {
                metrics: Arc::clone(&metrics),
                _slot: conn.slot,
            },
            backend,
            metrics,
            frame_url: conn.frame_url,
            callback: conn.callback,
            request_ids: conn.request_ids,
            registration: Some(conn.registration),
            link: conn.link,
            first_message: conn.first_message,
            pending: VecDeque::new(),
            pending_bytes: 0,
            in_flight: None,
            seq: 0,
            rate,
            paused_until: None,
            last_seen: Instant::now(),
            ping,
            lifetime,
            sessions,
            events,
            events_in_flight: None,
            first_actions,
            backend_keep_alive: None,
            client_keep_alive: None,
        }
    }

    /// Serves the connection until something ends it.
    async fn serve(&mut self) -> Ending {
        if let Some(payload) = self.first_message.take()
            && let Err(ending) = self.write(payload).await
        {
            return ending;
        }
        let first = std::mem::take(&mut self.first_actions);
        self.restart_backend_keep_alive();
        if let Err(ending) = self.act(first).await {
            return ending;
        }
        loop {
            self.start_next_post();
            let step = match self.next_event().await {
                Event::Shutdown => Err(Ending::away(Cause::Shutdown, "server shutting down")),
                Event::Lifetime => Err(Ending::away(
                    Cause::Lifetime,
                    "maximum connection lifetime reached",
                )),
                Event::Ping => self.on_ping().await,
                Event::PauseOver => {
                    self.paused_until = None;
                    Ok(())
                }
                Event::Outbound(item) => self.on_outbound(item).await,
                Event::Posted(result) => self.on_posted(result).await,
                Event::EventsPosted(sent, result) => self.on_events_posted(sent, result).await,
                Event::BackendKeepAlive => {
                    self.start_events_request(true);
                    Ok(())
                }
                Event::ClientKeepAlive => self.on_client_keep_alive().await,
                Event::Client(message) => self.on_client(message),
            };
            if let Err(ending) = step {
                return ending;
            }
        }
    }

    /// Posts the oldest pending message when no POST is in flight.
    fn start_next_post(&mut self) {
        if self.events.is_some() {
            self.start_events_request(false);
            return;
        }
        if self.in_flight.is_some() {
            return;
        }
        if let Some(payload) = self.pending.pop_front() {
            self.pending_bytes -= payload.len();
            let backend = self.backend.clone();
            let url = Arc::clone(&self.frame_url);
            let callback = self.callback.clone();
            let ids = self.request_ids;
            let seq = self.seq;
            self.in_flight = Some(Box::pin(async move {
                backend
                    .post_frame(&url, &callback, &ids, seq, &payload)
                    .await
            }));
            self.seq += 1;
        }
    }

    async fn next_event(&mut self) -> Event {
        let config = &self.sessions.config;
        let may_read = self.paused_until.is_none()
            && self.pending.len() < config.read_ahead_messages
            && self.pending_bytes < config.read_ahead_bytes;
        let paused_until = self.paused_until;
        tokio::select! {
            biased;
            () = self.sessions.shutdown.cancelled() => Event::Shutdown,
            () = wait_for(self.lifetime.as_mut()) => Event::Lifetime,
            _ = self.ping.tick() => Event::Ping,
            item = self.link.mailbox.recv() => Event::Outbound(item),
            result = poll_in_flight(&mut self.in_flight) => Event::Posted(result),
            (sent, result) = poll_events(&mut self.events_in_flight) => Event::EventsPosted(sent, result),
            () = tick(self.backend_keep_alive.as_deref_mut()) => Event::BackendKeepAlive,
            () = wait_for(self.client_keep_alive.as_mut().map(|k| &mut k.1)) => Event::ClientKeepAlive,
            () = sleep_until(paused_until) => Event::PauseOver,
            message = self.ws.next(), if may_read => Event::Client(message),
        }
    }

    async fn on_ping(&mut self) -> Result<(), Ending> {
        if self.last_seen.elapsed() >= self.sessions.config.idle_timeout {
            return Err(Ending::away(Cause::IdleTimeout, "idle timeout"));
        }
        self.send(opcode::PING, &bytes::Bytes::new()).await
    }

    async fn on_outbound(&mut self, item: Option<Outbound>) -> Result<(), Ending> {
        match item {
            Some(item) => self.deliver(item).await,
            // The registration holds a sender until this task drops it.
            None => Err(Ending::client_gone("outbound queue closed")),
        }
    }

    async fn on_posted(&mut self, result: Result<FrameAnswer, BackendError>) -> Result<(), Ending> {
        self.in_flight = None;
        if let Ok(answer) = &result
            && !answer.channels.is_empty()
            && let Some(registration) = &self.registration
        {
            let id = registration.id();
            let joined = self
                .sessions
                .channels
                .apply(id, &self.link, &answer.channels);
            self.sessions.channels.settle(&joined).await;
        }
        match result.map(|answer| answer.reply) {
            Ok(None) => Ok(()),
            Ok(Some(reply)) => {
                // Callback messages accepted before the backend answered go first.
                while let Some(item) = self.link.mailbox.try_recv() {
                    self.deliver(item).await?;
                }
                self.write(reply).await
            }
            Err(e) => {
                warn!(seq = self.seq - 1, error = %e.detail(), "frame POST failed");
                Err(Ending::new(
                    Initiator::Bridge,
                    Cause::BackendError,
                    close_code::ERROR,
                    &e.to_string(),
                ))
            }
        }
    }

    fn on_client(&mut self, message: Option<Result<Incoming, WsError>>) -> Result<(), Ending> {
        match read_outcome(message) {
            Read::Message(payload) => {
                self.admit_rate()?;
                self.last_seen = Instant::now();
                self.link.stats.record_in(payload.len());
                self.metrics.messages_in.inc();
                self.metrics.bytes_in.inc_by(payload.len() as u64);
                self.pending_bytes += payload.len();
                self.pending.push_back(payload);
                Ok(())
            }
            Read::Control => {
                self.last_seen = Instant::now();
                self.link.stats.touch();
                Ok(())
            }
            Read::End(ending) => Err(ending),
        }
    }

    /// Charges one message to the client's rate: over it, the socket is not read until the
    /// rate allows again (or, with `--rate-limit-action close`, the connection ends with 1008).
    fn admit_rate(&mut self) -> Result<(), Ending> {
        let Some(rate) = self.rate.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        let over = match rate.action {
            RateLimitAction::Slow => match rate.bucket.take_or_wait(now.into_std()) {
                None => false,
                Some(wait) => {
                    self.paused_until = Some(now + wait);
                    true
                }
            },
            RateLimitAction::Close => !rate.bucket.take_at(now.into_std()),
        };
        if !over {
            return Ok(());
        }
        // `inc` returns the count before this one.
        let total = self.metrics.rate_limited.inc() + 1;
        if worth_logging(total) {
            let action = rate.action.as_str();
            warn!(
                rate_limited_total = total,
                action, "client exceeded --max-messages-per-second"
            );
        }
        match rate.action {
            RateLimitAction::Slow => Ok(()),
            RateLimitAction::Close => Err(Ending::new(
                Initiator::Bridge,
                Cause::RateLimited,
                close_code::POLICY,
                "message rate limit exceeded",
            )),
        }
    }

    /// Carries out one item of the outbound queue: writes a message, or ends the connection on
    /// a close request.
    async fn deliver(&mut self, item: Outbound) -> Result<(), Ending> {
        match item {
            Outbound::Message(payload) => self.write(payload).await,
            Outbound::Close { code, reason } => Err(Ending::new(
                Initiator::Backend,
                Cause::BackendClose,
                code,
                &reason,
            )),
            Outbound::Evict { code, reason } => Err(Ending::new(
                Initiator::Bridge,
                Cause::SlowConsumer,
                code,
                reason,
            )),
        }
    }

    /// Writes one message to the client within the write timeout.
    async fn write(&mut self, payload: Payload) -> Result<(), Ending> {
        let len = payload.len();
        let op = match payload {
            Payload::Text(_) => opcode::TEXT,
            Payload::Binary(_) => opcode::BINARY,
        };
        self.send(op, payload.bytes()).await?;
        if let Some(keep) = &mut self.client_keep_alive
            && !keep.0.always
        {
            let every = keep.0.every;
            keep.1.as_mut().reset(Instant::now() + every);
        }
        self.link.stats.record_out(len);
        self.metrics.messages_out.inc();
        self.metrics.bytes_out.inc_by(len as u64);
        Ok(())
    }

    /// Sends one frame to the client within the write timeout; a client that does not take it
    /// in time is dropped as too slow.
    async fn send(&mut self, op: u8, payload: &bytes::Bytes) -> Result<(), Ending> {
        let timeout = self.sessions.config.client_write_timeout;
        let write = tokio::time::timeout(timeout, self.ws.send(op, payload));
        tokio::select! {
            biased;
            written = write => match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Ending::client_gone(&format!("write failed: {e}"))),
                Err(_) => Err(Ending::new(
                    Initiator::Bridge,
                    Cause::ClientTooSlow,
                    close_code::POLICY,
                    "client did not read its messages in time",
                )),
            },
            // A channel publication found the queue full: a client that is not reading would
            // otherwise hold this write until the timeout.
            () = self.link.mailbox.evicted() => Err(Ending::new(
                Initiator::Bridge,
                Cause::SlowConsumer,
                close_code::TRY_AGAIN,
                SLOW_CONSUMER,
            )),
        }
    }

    /// Closes the client, posts what is still owed to the backend, sends the disconnect POST
    /// and logs the ending.
    async fn finish(mut self, ending: Ending) {
        self.metrics.closed(ending.cause);
        // From here on the callback URL answers 404.
        drop(self.registration.take());
        let undelivered = self
            .link
            .mailbox
            .close()
            .iter()
            .filter(|o| !matches!(o, Outbound::Close { .. }))
            .count();
        close_client(&mut self.ws, &ending).await;
        let unposted = if self.events.is_some() {
            self.post_last_events(&ending).await
        } else {
            let unposted = self.post_pending(&ending).await;
            self.disconnect.send(&ending).await;
            unposted
        };
        let stats = &self.link.stats;
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
    }

    /// Posts the messages read before the ending, in order, unless the ending says not to.
    /// Returns how many could not be posted.
    async fn post_pending(&mut self, ending: &Ending) -> usize {
        if !ending.delivers_pending() {
            self.in_flight = None;
            return self.pending.len();
        }
        if let Some(post) = self.in_flight.take()
            && let Err(e) = post.await
        {
            warn!(error = %e.detail(), "frame POST failed while closing");
            return self.pending.len();
        }
        while let Some(payload) = self.pending.pop_front() {
            let posted = self
                .backend
                .post_frame(
                    &self.frame_url,
                    &self.callback,
                    &self.request_ids,
                    self.seq,
                    &payload,
                )
                .await;
            if let Err(e) = posted {
                warn!(seq = self.seq, error = %e.detail(), "frame POST failed while closing");
                return self.pending.len() + 1;
            }
            self.seq += 1;
        }
        0
    }
}

/// Waits for the events request in flight, or forever when there is none.
async fn poll_events(
    in_flight: &mut Option<EventsPost>,
) -> (Vec<WsEvent>, Result<EventsOutcome, BackendError>) {
    match in_flight {
        Some(post) => post.await,
        None => std::future::pending().await,
    }
}

/// Waits for an interval's next tick, or forever when there is none.
async fn tick(interval: Option<&mut Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Waits for the frame POST in flight, or forever when there is none.
async fn poll_in_flight(in_flight: &mut Option<FramePost>) -> Result<FrameAnswer, BackendError> {
    match in_flight {
        Some(post) => post.await,
        None => std::future::pending().await,
    }
}

/// Waits for a timer, or forever when there is none.
async fn wait_for(timer: Option<&mut Pin<Box<Sleep>>>) {
    match timer {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
