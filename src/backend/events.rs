//! The client side of Pushpin's WebSocket-over-HTTP protocol: a POST whose body is a series of
//! events (`application/websocket-events`) and whose answer carries events back, with the
//! protocol's headers (`Connection-Id`, `Meta-*`, `Content-Bytes-Replayed` on the way out;
//! `Set-Meta-*`, `Keep-Alive-Interval`, `Content-Bytes-Accepted`, `Sec-WebSocket-Protocol`,
//! `Sec-WebSocket-Extensions` on the way back) and `Grip-Sig` with `--grip-key`. Not retried:
//! the events of one request are the connection's order, and a failure ends the connection.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::hook::refusal_body;
use super::{BackendClient, BackendError, BackendTarget};
use crate::metrics::RequestKind;
use crate::protocol::events::{
    self, Event, HEADER_CONTENT_BYTES_ACCEPTED as BYTES_ACCEPTED,
    HEADER_CONTENT_BYTES_REPLAYED as BYTES_REPLAYED,
};

/// `Connection-Id`: the connection's id, on every request.
pub(crate) const CONNECTION_ID: &str = "connection-id";
/// `Keep-Alive-Interval`: seconds between keep-alive requests the backend asks for.
const KEEP_ALIVE_INTERVAL: &str = "keep-alive-interval";
/// `Set-Meta-{name}` in an answer becomes `Meta-{name}` on later requests.
const SET_META: &str = "set-meta-";
/// `Meta-{name}`.
pub(crate) const META: &str = "meta-";

/// One events request of a connection.
pub(crate) struct EventsRequest<'a> {
    pub(crate) connection_id: &'a HeaderValue,
    /// `Meta-*` headers set by earlier answers; on the OPEN request, the client's handshake
    /// headers (without its own `Meta-*`) as well.
    pub(crate) headers: &'a HeaderMap,
    /// The events, in order.
    pub(crate) events: &'a [Event],
    /// Content bytes at the start of `events` already sent in an earlier request.
    pub(crate) replayed: usize,
    /// `Grip-Sig`, when `--grip-key` is set.
    pub(crate) grip_sig: Option<HeaderValue>,
}

/// A 2xx answer to an events request.
#[derive(Debug, Default)]
pub(crate) struct EventsAnswer {
    /// The events for the client, in order.
    pub(crate) events: Vec<Event>,
    /// `Set-Meta-{name}: value` pairs, names lower-case, without the prefix.
    pub(crate) set_meta: Vec<(String, HeaderValue)>,
    /// `Keep-Alive-Interval`.
    pub(crate) keep_alive: Option<Duration>,
    /// `Content-Bytes-Accepted`, when the backend took less than everything.
    pub(crate) accepted: Option<usize>,
    /// `Sec-WebSocket-Protocol` (OPEN answers).
    pub(crate) subprotocol: Option<String>,
    /// `Sec-WebSocket-Extensions` (OPEN answers: `grip`).
    pub(crate) extensions: Option<String>,
}

/// What an events request came back with.
#[derive(Debug)]
pub(crate) enum EventsOutcome {
    /// 2xx with a well-formed body.
    Answer(EventsAnswer),
    /// Another status: its content type and (the start of) its body.
    Refused {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
}

impl BackendClient {
    /// POSTs one events request and reads the answer whole (bounded by the reply limit).
    pub(crate) async fn post_events(
        &self,
        target: &BackendTarget,
        request: EventsRequest<'_>,
    ) -> Result<EventsOutcome, BackendError> {
        let kind = match request.events.first() {
            Some(Event::Open) => RequestKind::Connect,
            Some(Event::Close { .. } | Event::Disconnect) => RequestKind::Disconnect,
            _ => RequestKind::Frame,
        };
        let mut body = BytesMut::with_capacity(
            request
                .events
                .iter()
                .map(events::encoded_len)
                .sum::<usize>(),
        );
        for event in request.events {
            events::encode(event, &mut body);
        }
        let mut builder = self
            .http
            .post(target.url.clone())
            .headers(request.headers.clone())
            .header(CONTENT_TYPE, events::CONTENT_TYPE)
            .header(reqwest::header::ACCEPT, events::CONTENT_TYPE)
            .header(CONNECTION_ID, request.connection_id.clone());
        if request.replayed > 0 {
            builder = builder.header(BYTES_REPLAYED, request.replayed);
        }
        if let Some(sig) = request.grip_sig {
            builder = builder.header(crate::protocol::jwt::HEADER_GRIP_SIG, sig);
        }
        if let Some(uri) = &target.request_uri {
            builder = builder.header(crate::protocol::HEADER_REQUEST_URI, uri.clone());
        }
        let answer = match self
            .attempt(target, kind, builder.body(body.freeze()))
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                self.settings.metrics.backend_failure(kind, e.reason());
                return Err(e);
            }
        };
        self.read_events_answer(kind, answer).await
    }

    /// Reads an events answer whole; the host slot is held until then.
    async fn read_events_answer(
        &self,
        kind: RequestKind,
        answer: super::Answer,
    ) -> Result<EventsOutcome, BackendError> {
        let super::Answer {
            mut response,
            _permit,
        } = answer;
        let status = response.status();
        let headers = response.headers().clone();
        if !status.is_success() {
            self.settings
                .metrics
                .backend_failure(kind, BackendError::Status(status).reason());
            return Ok(EventsOutcome::Refused {
                status,
                content_type: headers.get(CONTENT_TYPE).cloned(),
                body: refusal_body(&mut response).await?,
            });
        }
        let max = self.settings.config.max_reply_size;
        let body = super::post::read_limited(response, max).await?;
        let events =
            events::decode(&body, max).map_err(|e| BackendError::BadEvents(e.to_string()))?;
        Ok(EventsOutcome::Answer(EventsAnswer {
            events,
            set_meta: set_meta(&headers),
            keep_alive: header_str(&headers, KEEP_ALIVE_INTERVAL)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            accepted: headers
                .get(BYTES_ACCEPTED)
                .and_then(|v| events::parse_content_bytes_accepted(v.as_bytes())),
            subprotocol: header_str(&headers, "sec-websocket-protocol")
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()),
            extensions: header_str(&headers, "sec-websocket-extensions").map(str::to_owned),
        }))
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `Set-Meta-*` headers of an answer.
fn set_meta(headers: &HeaderMap) -> Vec<(String, HeaderValue)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let meta = name.as_str().strip_prefix(SET_META)?;
            (!meta.is_empty()).then(|| (meta.to_owned(), value.clone()))
        })
        .collect()
}

/// `Meta-{name}` as a header name.
pub(crate) fn meta_header(name: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(format!("{META}{name}").as_bytes()).ok()
}
