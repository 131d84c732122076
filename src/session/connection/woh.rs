//! The connection task's methods for a websocket-over-http connection: one events request in
//! flight, everything read meanwhile batched into the next; the answer's actions carried out
//! in order; the backend's `Keep-Alive-Interval` and GRIP's client keep-alive; the last
//! request (pending messages, then CLOSE or DISCONNECT).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::warn;

use super::Task;
use crate::backend::BackendError;
use crate::backend::events::EventsOutcome;
use crate::protocol::close_code;
use crate::protocol::events::Event as WsEvent;
use crate::protocol::{Cause, Initiator};
use crate::session::close::Ending;
use crate::session::events::{self, Action};
use crate::session::registry::Departure;
use crate::session::ws::frame::opcode;

impl<S> Task<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends the pending client messages (and any unaccepted rest) in one request when none
    /// is in flight; with `keep_alive`, an empty request too.
    pub(super) fn start_events_request(&mut self, keep_alive: bool) {
        if self.events_in_flight.is_some() {
            return;
        }
        let Some(link) = self.events.as_mut() else {
            return;
        };
        let max = self.sessions.config.read_ahead_bytes;
        let batch = link.batch(&mut self.pending, max);
        self.pending_bytes = self.pending.iter().map(|p| p.len()).sum();
        if batch.is_empty() && !keep_alive {
            return;
        }
        let replayed = link.take_replayed();
        let backend = self.backend.clone();
        let target = Arc::clone(&self.frame_url);
        let request = OwnedRequest {
            connection_id: link.connection_id.clone(),
            meta: link.meta.clone(),
            grip_sig: link.grip_sig(),
        };
        self.events_in_flight = Some(Box::pin(async move {
            let result = backend
                .post_events(
                    &target,
                    crate::backend::events::EventsRequest {
                        connection_id: &request.connection_id,
                        headers: &request.meta,
                        events: &batch,
                        replayed,
                        grip_sig: request.grip_sig,
                    },
                )
                .await;
            (batch, result)
        }));
        self.restart_backend_keep_alive();
    }

    pub(super) async fn on_events_posted(
        &mut self,
        sent: Vec<WsEvent>,
        result: Result<EventsOutcome, BackendError>,
    ) -> Result<(), Ending> {
        self.events_in_flight = None;
        let failed = |why: String| {
            warn!(error = %why, "websocket-over-http request failed");
            Ending::new(
                Initiator::Bridge,
                Cause::BackendError,
                close_code::ERROR,
                &why,
            )
        };
        let answer = match result {
            Ok(EventsOutcome::Answer(answer)) => answer,
            Ok(EventsOutcome::Refused { status, .. }) => {
                return Err(failed(BackendError::Status(status).to_string()));
            }
            Err(e) => return Err(failed(e.detail())),
        };
        let Some(link) = self.events.as_mut() else {
            return Ok(());
        };
        let before = link.keep_alive;
        // In a cluster, the departure record carries the `Meta-*` headers: kept up to date.
        let meta_before = self
            .sessions
            .config
            .node
            .is_some()
            .then(|| link.meta.clone());
        let actions = link.answer(answer, sent).map_err(failed)?;
        let meta_changed = meta_before.is_some_and(|meta| meta != link.meta);
        if link.keep_alive != before {
            self.restart_backend_keep_alive();
        }
        if meta_changed {
            self.record_departure();
        }
        // Callback messages accepted before the backend answered go first.
        while let Some(item) = self.link.mailbox.try_recv() {
            self.deliver(item).await?;
        }
        self.act(actions).await
    }

    /// Rewrites this connection's departure record (cluster mode) with its current `Meta-*`.
    fn record_departure(&self) {
        let (Some(registration), Some(link)) = (&self.registration, &self.events) else {
            return;
        };
        let departure = Departure::events(
            self.frame_url.url(),
            &self.callback,
            self.request_ids.nonce_hex(),
            &link.meta,
        );
        self.sessions.registry.record(registration.id(), departure);
    }

    /// Carries out what an answer asked for, in order.
    pub(super) async fn act(&mut self, actions: Vec<Action>) -> Result<(), Ending> {
        for action in actions {
            match action {
                Action::Message(payload) => self.write(payload).await?,
                Action::Ping(bytes) => self.send(opcode::PING, &bytes).await?,
                Action::Pong(bytes) => self.send(opcode::PONG, &bytes).await?,
                Action::Join(name) => {
                    if let Some(registration) = &self.registration {
                        let id = registration.id();
                        match self.sessions.channels.join(id, &self.link, &name) {
                            Ok(_) => self.sessions.channels.settle(&[name]).await,
                            Err(e) => warn!(channel = %name, error = %e, "GRIP subscribe refused"),
                        }
                    }
                }
                Action::Leave(name) => {
                    if let Some(registration) = &self.registration {
                        let id = registration.id();
                        self.sessions.channels.leave(id, &self.link, &name);
                    }
                }
                Action::KeepClientAlive(keep) => {
                    self.client_keep_alive = keep.map(|keep| {
                        let sleep = Box::pin(tokio::time::sleep(keep.every));
                        Box::new((keep, sleep))
                    });
                }
                Action::Close(code, reason) => {
                    let code = code
                        .filter(|c| matches!(c, 1000 | 3000..=4999))
                        .unwrap_or(close_code::NORMAL);
                    return Err(Ending::new(
                        Initiator::Backend,
                        Cause::BackendClose,
                        code,
                        &reason,
                    ));
                }
                Action::Disconnect => {
                    return Err(Ending::new(
                        Initiator::Backend,
                        Cause::BackendClose,
                        close_code::NORMAL,
                        "disconnected by the backend",
                    ));
                }
            }
        }
        Ok(())
    }

    /// GRIP `keep-alive`: the interval passed (without anything sent, by default); send the
    /// keep-alive frame and start the next interval.
    pub(super) async fn on_client_keep_alive(&mut self) -> Result<(), Ending> {
        let Some(keep) = &mut self.client_keep_alive else {
            return Ok(());
        };
        let every = keep.0.every;
        keep.1.as_mut().reset(Instant::now() + every);
        let (op, payload) = (keep.0.opcode, keep.0.payload.clone());
        self.send(op, &payload).await
    }

    /// (Re)starts the `Keep-Alive-Interval` timer: it fires after that long without a request.
    pub(super) fn restart_backend_keep_alive(&mut self) {
        self.backend_keep_alive =
            self.events
                .as_ref()
                .and_then(|link| link.keep_alive)
                .map(|every| {
                    let mut interval = tokio::time::interval_at(Instant::now() + every, every);
                    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    Box::new(interval)
                });
    }

    /// The last requests: what is in flight finishes, what was read is sent (unless the
    /// backend failed), then CLOSE or DISCONNECT. Returns how many messages were not sent.
    pub(super) async fn post_last_events(&mut self, ending: &Ending) -> usize {
        self.disconnect.paid();
        let Some(mut link) = self.events.take() else {
            return 0;
        };
        if let Some(post) = self.events_in_flight.take() {
            let (sent, result) = post.await;
            if let Ok(EventsOutcome::Answer(answer)) = result {
                // Only the headers and partial acceptance matter now.
                let _ = link.answer(answer, sent);
            }
        }
        let mut last = Vec::new();
        let mut unsent = 0;
        if ending.delivers_pending() {
            last = link.batch(&mut self.pending, usize::MAX);
        } else {
            unsent = self.pending.len();
        }
        last.push(events::last_event(
            ending.code,
            &ending.reason,
            ending.is_clean(),
        ));
        if let Err(e) = events::send_last(&self.backend, &self.frame_url, &mut link, last).await {
            warn!(error = %e.detail(), "websocket-over-http last request failed");
        }
        unsent
    }
}

/// What a request needs of the link, owned so the request can run while the task goes on.
struct OwnedRequest {
    connection_id: reqwest::header::HeaderValue,
    meta: reqwest::header::HeaderMap,
    grip_sig: Option<reqwest::header::HeaderValue>,
}
