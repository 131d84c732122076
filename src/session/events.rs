//! A connection opened through a `websocket-over-http` route: its side of Pushpin's protocol.
//! The OPEN request before the upgrade ([`open`]), the batches of client messages (everything
//! read while a request was in flight goes in the next one, so a lone message goes at once and
//! a burst in few requests), what an answer asks for ([`EventsLink::answer`]: messages, pings,
//! a close, `Set-Meta-*`, `Keep-Alive-Interval`, partial acceptance, and with the `grip`
//! extension GRIP's control messages), and the last request (CLOSE or DISCONNECT).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use tracing::{debug, warn};

use crate::backend::events::{EventsAnswer, EventsRequest, META, meta_header};
use crate::backend::{BackendClient, BackendError, BackendTarget};
use crate::protocol::Payload;
use crate::protocol::channel::ChannelName;
use crate::protocol::events::{Event, replay_after};
use crate::protocol::grip_control::{
    self, Control, FromBackend, GripExtension, KeepAliveMode, MessageKind,
};
use crate::session::ws::frame::opcode;

/// What an answer asks of the connection, in order.
#[derive(Debug)]
pub(crate) enum Action {
    /// Write a message to the client.
    Message(Payload),
    /// Send a ping or a pong to the client.
    Ping(Bytes),
    Pong(Bytes),
    /// Join or leave channels (GRIP `subscribe` / `unsubscribe`).
    Join(ChannelName),
    Leave(ChannelName),
    /// GRIP `keep-alive`: send this frame (opcode, payload) to the client every interval (of
    /// silence, unless `always`); `None` stops it.
    KeepClientAlive(Option<ClientKeepAlive>),
    /// Close the client with this code and reason (CLOSE event or GRIP `close`).
    Close(Option<u16>, String),
    /// Drop the client without a closing handshake (DISCONNECT event).
    Disconnect,
}

/// A GRIP keep-alive for the client.
#[derive(Debug, Clone)]
pub(crate) struct ClientKeepAlive {
    pub(crate) opcode: u8,
    pub(crate) payload: Bytes,
    pub(crate) every: Duration,
    /// `mode: interval`: also when other messages were sent.
    pub(crate) always: bool,
}

/// The protocol state of one websocket-over-http connection.
#[derive(Debug)]
pub(crate) struct EventsLink {
    pub(crate) connection_id: HeaderValue,
    /// `Meta-*` headers for the next requests.
    pub(crate) meta: HeaderMap,
    /// The `grip` extension, when the OPEN answer negotiated it.
    pub(crate) grip: Option<GripExtension>,
    /// `Keep-Alive-Interval`: an empty request after this long without one.
    pub(crate) keep_alive: Option<Duration>,
    /// `--grip-key`: signs `Grip-Sig`.
    pub(crate) grip_key: Option<std::sync::Arc<[u8]>>,
    /// Events the backend did not accept (`Content-Bytes-Accepted`), sent again first.
    unaccepted: Vec<Event>,
    /// Content bytes at the start of `unaccepted` already sent.
    replayed: usize,
    /// After GRIP `detach`: client messages are no longer sent to the backend.
    pub(crate) detached: bool,
}

impl EventsLink {
    pub(crate) fn new(connection_id: HeaderValue, grip_key: Option<std::sync::Arc<[u8]>>) -> Self {
        EventsLink {
            connection_id,
            meta: HeaderMap::new(),
            grip: None,
            keep_alive: None,
            grip_key,
            unaccepted: Vec::new(),
            replayed: 0,
            detached: false,
        }
    }

    /// The events of the next request: what was not accepted last time, then the client
    /// messages of `pending`, at most `max_bytes` of their content (at least one message).
    pub(crate) fn batch(
        &mut self,
        pending: &mut VecDeque<Payload>,
        max_bytes: usize,
    ) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.unaccepted);
        let mut bytes = 0;
        while let Some(payload) = pending.front() {
            if bytes > 0 && bytes + payload.len() > max_bytes {
                break;
            }
            bytes += payload.len();
            let Some(payload) = pending.pop_front() else {
                break;
            };
            if self.detached {
                debug!("client message not sent: the backend detached");
                continue;
            }
            events.push(match payload {
                Payload::Text(b) => Event::Text(b),
                Payload::Binary(b) => Event::Binary(b),
            });
        }
        events
    }

    /// Content bytes at the start of the next batch sent before.
    pub(crate) fn take_replayed(&mut self) -> usize {
        std::mem::take(&mut self.replayed)
    }

    /// A request carrying `events`.
    pub(crate) fn request<'a>(&'a self, events: &'a [Event], replayed: usize) -> EventsRequest<'a> {
        EventsRequest {
            connection_id: &self.connection_id,
            headers: &self.meta,
            events,
            replayed,
            grip_sig: self.grip_sig(),
        }
    }

    /// `Grip-Sig` for the next request, when `--grip-key` is set.
    pub(crate) fn grip_sig(&self) -> Option<HeaderValue> {
        let key = self.grip_key.as_ref()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        HeaderValue::from_str(&crate::protocol::jwt::grip_sig(key, now)).ok()
    }

    /// Applies an answer's headers and turns its events into actions, in order. `sent` is what
    /// the request carried (for partial acceptance). An error breaks the protocol: the
    /// connection fails.
    pub(crate) fn answer(
        &mut self,
        answer: EventsAnswer,
        sent: Vec<Event>,
    ) -> Result<Vec<Action>, String> {
        for (name, value) in answer.set_meta {
            if let Some(header) = meta_header(&name) {
                if value.is_empty() {
                    self.meta.remove(&header);
                } else {
                    self.meta.insert(header, value);
                }
            }
        }
        if answer.keep_alive.is_some() {
            self.keep_alive = answer.keep_alive;
        }
        if answer.accepted.is_some() {
            let replay = replay_after(&sent, answer.accepted).map_err(|e| e.to_string())?;
            if !replay.progressed && !replay.events.is_empty() {
                return Err("Content-Bytes-Accepted took nothing of the request".to_owned());
            }
            self.unaccepted = replay.events;
            self.replayed = replay.replayed_bytes;
        }
        let mut actions = Vec::with_capacity(answer.events.len());
        for event in answer.events {
            self.action(event, &mut actions);
        }
        Ok(actions)
    }

    fn action(&mut self, event: Event, actions: &mut Vec<Action>) {
        match event {
            Event::Text(text) => match &self.grip {
                None => actions.push(Action::Message(Payload::Text(text))),
                Some(grip) => match grip_control::classify_text(grip, &text) {
                    Ok(FromBackend::Message(text)) => {
                        actions.push(Action::Message(Payload::Text(text)))
                    }
                    Ok(FromBackend::Dropped) => {
                        warn!("backend text message without the GRIP message prefix; not sent")
                    }
                    Ok(FromBackend::Control(control)) => self.control(control, actions),
                    Err(e) => warn!(error = %e, "GRIP control message ignored"),
                },
            },
            Event::Binary(bytes) => match &self.grip {
                None => actions.push(Action::Message(Payload::Binary(bytes))),
                Some(grip) => match grip_control::classify_binary(grip, &bytes) {
                    FromBackend::Message(bytes) => {
                        actions.push(Action::Message(Payload::Binary(bytes)))
                    }
                    _ => warn!("backend binary message without the GRIP message prefix; not sent"),
                },
            },
            Event::Ping(bytes) => actions.push(Action::Ping(bytes)),
            Event::Pong(bytes) => actions.push(Action::Pong(bytes)),
            Event::Close { code, reason } => actions.push(Action::Close(
                code,
                String::from_utf8_lossy(&reason).into_owned(),
            )),
            Event::Disconnect => actions.push(Action::Disconnect),
            Event::Open => debug!("OPEN event after the handshake ignored"),
        }
    }

    fn control(&mut self, control: Control, actions: &mut Vec<Action>) {
        match control {
            Control::Subscribe(name) => channel_action(&name, Action::Join, actions),
            Control::Unsubscribe(name) => channel_action(&name, Action::Leave, actions),
            Control::Detach => self.detached = true,
            Control::SetMeta { name, value } => {
                let Some(header) = meta_header(&name.to_ascii_lowercase()) else {
                    warn!(name, "GRIP set-meta with a bad name ignored");
                    return;
                };
                match value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    Some(value) if !value.is_empty() => {
                        self.meta.insert(header, value);
                    }
                    _ => {
                        self.meta.remove(header);
                    }
                }
            }
            Control::KeepAlive {
                message,
                timeout,
                mode,
            } => {
                let keep = message.and_then(|message| {
                    let opcode = match message.kind {
                        MessageKind::Text => {
                            std::str::from_utf8(&message.content).ok()?;
                            opcode::TEXT
                        }
                        MessageKind::Binary => opcode::BINARY,
                        MessageKind::Ping => opcode::PING,
                        MessageKind::Pong => opcode::PONG,
                    };
                    Some(ClientKeepAlive {
                        opcode,
                        payload: message.content,
                        every: timeout,
                        always: mode == KeepAliveMode::Interval,
                    })
                });
                actions.push(Action::KeepClientAlive(keep));
            }
            Control::Close { code, reason } => actions.push(Action::Close(code, reason)),
        }
    }
}

/// A GRIP subscribe or unsubscribe: `action` for a valid channel name, else logged and ignored.
fn channel_action(name: &str, action: fn(ChannelName) -> Action, actions: &mut Vec<Action>) {
    match ChannelName::parse(name) {
        Ok(name) => actions.push(action(name)),
        Err(_) => {
            warn!(channel = %name, "GRIP subscribe/unsubscribe with a bad channel name ignored")
        }
    }
}

/// The client's handshake headers for the OPEN request: without its own `Meta-*` headers
/// (only the backend sets those).
pub(crate) fn open_headers(mut forwarded: HeaderMap) -> HeaderMap {
    let own: Vec<_> = forwarded
        .keys()
        .filter(|name| name.as_str().starts_with(META))
        .cloned()
        .collect();
    for name in own {
        forwarded.remove(name);
    }
    forwarded
}

/// The last request of a connection: CLOSE with the ending's code when it has one and the
/// client is still there to have sent or received a Close, DISCONNECT otherwise.
pub(crate) fn last_event(code: Option<u16>, reason: &str, clean: bool) -> Event {
    if clean {
        Event::Close {
            code,
            reason: Bytes::copy_from_slice(reason.as_bytes()),
        }
    } else {
        Event::Disconnect
    }
}

/// Sends `events` (and any unaccepted rest, until everything is taken or the backend stops
/// taking anything) as the connection's last requests.
pub(crate) async fn send_last(
    backend: &BackendClient,
    target: &BackendTarget,
    link: &mut EventsLink,
    mut events: Vec<Event>,
) -> Result<(), BackendError> {
    let mut rounds = 0;
    loop {
        let mut all = std::mem::take(&mut link.unaccepted);
        all.append(&mut events);
        if all.is_empty() {
            return Ok(());
        }
        let replayed = link.take_replayed();
        let outcome = backend
            .post_events(target, link.request(&all, replayed))
            .await?;
        match outcome {
            crate::backend::events::EventsOutcome::Answer(answer) => {
                if let Err(why) = link.answer(answer, all) {
                    warn!(error = %why, "websocket-over-http answer to the last request broke the protocol");
                    return Ok(());
                }
            }
            crate::backend::events::EventsOutcome::Refused { status, .. } => {
                return Err(BackendError::Status(status));
            }
        }
        rounds += 1;
        if link.unaccepted.is_empty() || rounds >= 8 {
            return Ok(());
        }
    }
}
