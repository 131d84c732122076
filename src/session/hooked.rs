//! What the backend says before a handshake is answered: the connect hook (seed connections
//! that name one) or the OPEN request (websocket-over-http routes). Either may refuse the
//! handshake, with its own status and body passed on, or fail it (502/504); an answer that
//! accepts gives the subprotocol, the channels to join before the 101, and what the
//! connection starts with.

use axum::http::{HeaderValue, Request, StatusCode};
use tracing::warn;
use url::Url;

use super::Sessions;
use super::events::{self, Action, EventsLink};
use super::refusal::Refusal;
use super::request::{BackendUrls, offered_subprotocols};
use crate::backend::events::{EventsOutcome, EventsRequest};
use crate::backend::hook::forwarded_headers;
use crate::backend::{BackendError, ConnectAnswer, RequestIds};
use crate::metrics::RefusalReason;
use crate::policy::forwarded::ClientOrigin;
use crate::protocol::Payload;
use crate::protocol::channel::ChannelName;
use crate::protocol::events::Event;
use crate::protocol::grip_control;

/// Asks the backend about an admitted handshake: the OPEN request, the connect hook, or
/// nothing.
pub(super) async fn ask<B>(
    sessions: &Sessions,
    request: &Request<B>,
    client: &ClientOrigin,
    urls: &BackendUrls,
    callback: &HeaderValue,
    request_ids: &RequestIds,
) -> Result<Hooked, Refusal> {
    if !urls.events && urls.connect.is_none() {
        return Ok(Hooked::default());
    }
    let headers = forwarded_headers(request.headers(), client, request.uri());
    let offered = offered_subprotocols(request.headers());
    match &urls.connect {
        _ if urls.events => run_open(sessions, &urls.frame, request_ids, headers, &offered).await,
        Some(hook) => run_hook(sessions, hook, callback, request_ids, headers, &offered).await,
        None => Ok(Hooked::default()),
    }
}

/// What the connect hook added to an accepted connection.
#[derive(Debug, Default)]
pub(super) struct Hooked {
    pub(super) subprotocol: Option<String>,
    pub(super) first_message: Option<Payload>,
    /// `x-ws-proxy-subscribe`.
    pub(super) channels: Vec<ChannelName>,
    /// A websocket-over-http connection's protocol state and the OPEN answer's other events.
    pub(super) events: Option<Box<(EventsLink, Vec<Action>)>>,
}

/// The channels of the connect hook's `x-ws-proxy-subscribe`; a name that is not a channel
/// name refuses the handshake with 502, so the backend's mistake shows at once.
fn hook_channels(value: Option<&HeaderValue>) -> Result<Vec<ChannelName>, Refusal> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let refused = |why: String| {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            RefusalReason::HookChannel,
            format!("the connect hook's x-ws-proxy-subscribe is refused: {why}"),
        )
        .warn()
    };
    let value = value
        .to_str()
        .map_err(|_| refused("not ASCII".to_owned()))?;
    ChannelName::parse_list(value).map_err(|e| refused(e.to_string()))
}

/// Sends a websocket-over-http route's OPEN request; the backend's refusal, failure or an
/// answer that does not start with OPEN is the handshake's.
async fn run_open(
    sessions: &Sessions,
    url: &Url,
    request_ids: &RequestIds,
    headers: axum::http::HeaderMap,
    offered: &[String],
) -> Result<Hooked, Refusal> {
    let target = sessions.backend.target(url.clone());
    let connection_id = HeaderValue::from_str(&request_ids.nonce_hex())
        .unwrap_or_else(|_| HeaderValue::from_static("0"));
    let mut link = EventsLink::new(connection_id, sessions.config.grip_key.clone());
    let mut open_headers = events::open_headers(headers);
    // As Pushpin does: the bridge understands the grip extension, if the backend wants it.
    open_headers.insert(
        axum::http::header::SEC_WEBSOCKET_EXTENSIONS,
        HeaderValue::from_static(grip_control::EXTENSION_NAME),
    );
    let request = EventsRequest {
        headers: &open_headers,
        ..link.request(&[Event::Open], 0)
    };
    let outcome = sessions.backend.post_events(&target, request).await;
    let answer = match outcome {
        Ok(EventsOutcome::Answer(answer)) => answer,
        Ok(EventsOutcome::Refused {
            status,
            content_type,
            body,
        }) => return Err(Refusal::from_hook(status, content_type, body)),
        Err(e) => return Err(hook_failed(e)),
    };
    let bad = |message: String| {
        Refusal::new(StatusCode::BAD_GATEWAY, RefusalReason::HookFailed, message).warn()
    };
    if answer.events.first() != Some(&Event::Open) {
        return Err(bad(
            "the backend's answer to OPEN does not start with an OPEN event".to_owned(),
        ));
    }
    if let Some(selected) = &answer.subprotocol
        && !offered.contains(selected)
    {
        return Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            RefusalReason::HookSubprotocol,
            format!(
                "the backend selected subprotocol {selected:?}, which the client did not offer"
            ),
        )
        .warn());
    }
    let subprotocol = answer.subprotocol.clone();
    link.grip = answer
        .extensions
        .as_deref()
        .and_then(grip_control::parse_extension);
    let mut channels = Vec::new();
    let mut rest = Vec::new();
    let actions = link.answer(answer, vec![Event::Open]).map_err(|why| {
        bad(format!(
            "the backend's answer to OPEN breaks the protocol: {why}"
        ))
    })?;
    for action in actions {
        match action {
            Action::Join(name) => channels.push(name),
            other => rest.push(other),
        }
    }
    Ok(Hooked {
        subprotocol,
        first_message: None,
        channels,
        events: Some(Box::new((link, rest))),
    })
}

/// The refusal for a connect hook (or OPEN request) that failed.
fn hook_failed(e: BackendError) -> Refusal {
    let (status, what) = match e {
        BackendError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "did not answer in time"),
        BackendError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "is unreachable"),
        _ => (StatusCode::BAD_GATEWAY, "failed"),
    };
    warn!(error = %e.detail(), "connect hook failed");
    Refusal::new(
        status,
        RefusalReason::HookFailed,
        format!("the connect hook {what}; try again later"),
    )
    .warn()
}

/// POSTs the connect hook; its refusal, failure or unusable answer is the handshake's.
async fn run_hook(
    sessions: &Sessions,
    hook: &Url,
    callback: &HeaderValue,
    request_ids: &RequestIds,
    headers: axum::http::HeaderMap,
    offered: &[String],
) -> Result<Hooked, Refusal> {
    let target = sessions.backend.target(hook.clone());
    let answer = sessions
        .backend
        .post_connect(&target, callback, request_ids, headers)
        .await;
    match answer {
        Ok(ConnectAnswer::Accept {
            subprotocol: Some(selected),
            ..
        }) if !offered.contains(&selected) => Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            RefusalReason::HookSubprotocol,
            format!(
                "the connect hook selected subprotocol {selected:?}, which the client did not offer"
            ),
        )
        .warn()),
        Ok(ConnectAnswer::Accept {
            subprotocol,
            first_message,
            subscribe,
        }) => Ok(Hooked {
            subprotocol,
            first_message,
            channels: hook_channels(subscribe.as_ref())?,
            events: None,
        }),
        Ok(ConnectAnswer::Refuse {
            status,
            content_type,
            body,
        }) => Err(Refusal::from_hook(status, content_type, body)),
        Err(e) => Err(hook_failed(e)),
    }
}
