//! Pushpin's WebSocket-over-HTTP event format (`application/websocket-events`), the body of
//! every request the bridge sends to such a backend and of every answer it reads back: a run of
//! `TYPE[ <hex length>]\r\n[<content>\r\n]` events. Also the partial-acceptance rule of the
//! `Content-Bytes-Accepted` answer header ([`replay_after`]). Pure functions over bytes: no I/O,
//! no knowledge of connections or of GRIP control messages (`protocol::grip_control`).

// used by the websocket-over-http backend (issue 15)

use bytes::{BufMut, Bytes, BytesMut};

/// The content type of requests and answers, and the `Accept` value of requests.
pub(crate) const CONTENT_TYPE: &str = "application/websocket-events";
/// Answer header: how many message content bytes of the request the backend took.
pub(crate) const HEADER_CONTENT_BYTES_ACCEPTED: &str = "content-bytes-accepted";
/// Request header: how many message content bytes at the start of the body were sent before.
pub(crate) const HEADER_CONTENT_BYTES_REPLAYED: &str = "content-bytes-replayed";

/// One WebSocket-over-HTTP event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The connection opens (request) or is accepted (answer).
    Open,
    /// A text message; its content is UTF-8 when decoded from an answer. A replayed remainder
    /// ([`replay_after`]) may start inside a character, as Pushpin's replay does.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping and its payload.
    Ping(Bytes),
    /// A pong and its payload.
    Pong(Bytes),
    /// A close; `code: None` travels as a bare `CLOSE` (its reason is then not written).
    Close { code: Option<u16>, reason: Bytes },
    /// The connection is gone without a close handshake.
    Disconnect,
}

impl Event {
    /// The event's type as it travels.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Event::Open => "OPEN",
            Event::Text(_) => "TEXT",
            Event::Binary(_) => "BINARY",
            Event::Ping(_) => "PING",
            Event::Pong(_) => "PONG",
            Event::Close { .. } => "CLOSE",
            Event::Disconnect => "DISCONNECT",
        }
    }

    /// The content bytes the event carries: what `Content-Bytes-Accepted` counts (a CLOSE
    /// counts its 2-byte code and its reason).
    pub(crate) fn content_len(&self) -> usize {
        match self {
            Event::Open | Event::Disconnect => 0,
            Event::Text(b) | Event::Binary(b) | Event::Ping(b) | Event::Pong(b) => b.len(),
            Event::Close { code: None, .. } => 0,
            Event::Close {
                code: Some(_),
                reason,
            } => 2 + reason.len(),
        }
    }

    /// Whether the event is written with a length line. TEXT and BINARY always are (as Pushpin
    /// and the GRIP libraries write them), PING and PONG only when not empty (as Pushpin does).
    fn has_content(&self) -> bool {
        match self {
            Event::Open | Event::Disconnect => false,
            Event::Text(_) | Event::Binary(_) => true,
            Event::Ping(b) | Event::Pong(b) => !b.is_empty(),
            Event::Close { code, .. } => code.is_some(),
        }
    }

    /// The same message without its first `offset` content bytes (TEXT, BINARY, PING, PONG).
    fn without_first(&self, offset: usize) -> Event {
        match self {
            Event::Text(b) => Event::Text(b.slice(offset..)),
            Event::Binary(b) => Event::Binary(b.slice(offset..)),
            Event::Ping(b) => Event::Ping(b.slice(offset..)),
            Event::Pong(b) => Event::Pong(b.slice(offset..)),
            other => other.clone(),
        }
    }
}

/// Why an answer body is not a run of WebSocket-over-HTTP events; `event` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EventsError {
    #[error("event {event}: no CRLF ends the type line")]
    MissingCrlf { event: usize },
    #[error("event {event}: unknown type {name:?}")]
    UnknownType { event: usize, name: String },
    #[error("event {event}: the content length is not a hexadecimal number")]
    BadLength { event: usize },
    #[error("event {event}: content of {len} bytes is over the limit of {max}")]
    TooLarge {
        event: usize,
        len: usize,
        max: usize,
    },
    #[error("event {event}: content of {len} bytes, but only {left} bytes remain")]
    Truncated {
        event: usize,
        len: usize,
        left: usize,
    },
    #[error("event {event}: no CRLF after the content")]
    MissingContentCrlf { event: usize },
    #[error("event {event}: {kind} content is not UTF-8")]
    NotUtf8 { event: usize, kind: &'static str },
    #[error("event {event}: CLOSE content of 1 byte cannot hold a close code")]
    ShortClose { event: usize },
    #[error("event {event}: {kind} cannot carry content")]
    UnexpectedContent { event: usize, kind: &'static str },
}

/// Appends one event to `out`.
pub(crate) fn encode(event: &Event, out: &mut BytesMut) {
    out.reserve(encoded_len(event));
    out.put_slice(event.name().as_bytes());
    if event.has_content() {
        out.put_u8(b' ');
        let mut digits = [0u8; 16];
        let hex = hex(event.content_len(), &mut digits);
        out.put_slice(hex);
        out.put_slice(b"\r\n");
        match event {
            Event::Text(b) | Event::Binary(b) | Event::Ping(b) | Event::Pong(b) => out.put_slice(b),
            Event::Close {
                code: Some(code),
                reason,
            } => {
                out.put_u16(*code);
                out.put_slice(reason);
            }
            _ => {}
        }
    }
    out.put_slice(b"\r\n");
}

/// The number of bytes [`encode`] appends for `event`.
pub(crate) fn encoded_len(event: &Event) -> usize {
    let head = event.name().len() + 2;
    if !event.has_content() {
        return head;
    }
    let mut digits = [0u8; 16];
    head + 1 + hex(event.content_len(), &mut digits).len() + event.content_len() + 2
}

/// Lower-case hexadecimal digits of `n`, written into `buf`.
fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Reads a whole body of events. Contents are slices of `body` (no copy); each may be at most
/// `max_content` bytes. Stricter than Pushpin's reader: unknown types, a missing CRLF after a
/// content, TEXT or a CLOSE reason that is not UTF-8, and content on OPEN or DISCONNECT are
/// errors rather than skipped or patched up.
pub(crate) fn decode(body: &Bytes, max_content: usize) -> Result<Vec<Event>, EventsError> {
    let mut events = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let event = events.len() + 1;
        let rest = &body[pos..];
        let line_len = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(EventsError::MissingCrlf { event })?;
        let line = &rest[..line_len];
        pos += line_len + 2;
        let (name, len) = match line.iter().position(|&b| b == b' ') {
            Some(space) => (&line[..space], Some(parse_hex(&line[space + 1..], event)?)),
            None => (line, None),
        };
        let content = match len {
            None => Bytes::new(),
            Some(len) => {
                if len > max_content {
                    return Err(EventsError::TooLarge {
                        event,
                        len,
                        max: max_content,
                    });
                }
                let left = body.len() - pos;
                if len > left {
                    return Err(EventsError::Truncated { event, len, left });
                }
                let content = body.slice(pos..pos + len);
                pos += len;
                if body.get(pos..pos + 2) != Some(b"\r\n".as_slice()) {
                    return Err(EventsError::MissingContentCrlf { event });
                }
                pos += 2;
                content
            }
        };
        events.push(event_of(name, content, event)?);
    }
    Ok(events)
}

/// A length field: 1 to 16 hexadecimal digits, either case, nothing else.
fn parse_hex(digits: &[u8], event: usize) -> Result<usize, EventsError> {
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(EventsError::BadLength { event });
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| usize::from_str_radix(d, 16).ok())
        .ok_or(EventsError::BadLength { event })
}

/// The event named `name` with `content` (empty when the event had no length line).
fn event_of(name: &[u8], content: Bytes, event: usize) -> Result<Event, EventsError> {
    Ok(match name {
        b"OPEN" | b"DISCONNECT" => {
            let kind = if name == b"OPEN" {
                "OPEN"
            } else {
                "DISCONNECT"
            };
            if !content.is_empty() {
                return Err(EventsError::UnexpectedContent { event, kind });
            }
            if kind == "OPEN" {
                Event::Open
            } else {
                Event::Disconnect
            }
        }
        b"TEXT" => {
            if std::str::from_utf8(&content).is_err() {
                return Err(EventsError::NotUtf8 {
                    event,
                    kind: "TEXT",
                });
            }
            Event::Text(content)
        }
        b"BINARY" => Event::Binary(content),
        b"PING" => Event::Ping(content),
        b"PONG" => Event::Pong(content),
        b"CLOSE" => match content.len() {
            0 => Event::Close {
                code: None,
                reason: Bytes::new(),
            },
            1 => return Err(EventsError::ShortClose { event }),
            _ => {
                let reason = content.slice(2..);
                if std::str::from_utf8(&reason).is_err() {
                    return Err(EventsError::NotUtf8 {
                        event,
                        kind: "CLOSE reason",
                    });
                }
                Event::Close {
                    code: Some(u16::from_be_bytes([content[0], content[1]])),
                    reason,
                }
            }
        },
        other => {
            let shown = &other[..other.len().min(32)];
            return Err(EventsError::UnknownType {
                event,
                name: String::from_utf8_lossy(shown).into_owned(),
            });
        }
    })
}

/// What is left to send after an answer's `Content-Bytes-Accepted` (see [`replay_after`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Replay {
    /// Events to put first in the next request, in this order: the rest of a message the
    /// backend took only part of, every later message, then the CLOSE if it was not delivered.
    pub(crate) events: Vec<Event>,
    /// The next request's `Content-Bytes-Replayed`: the message content bytes in `events`, a
    /// CLOSE's not included (0: send no header).
    pub(crate) replayed_bytes: usize,
    /// Whether the request's CLOSE counts as delivered.
    pub(crate) close_delivered: bool,
    /// Whether the backend took anything: a content byte or a whole (possibly empty) message.
    /// Pushpin fails the connection when a request that left messages queued behind it makes
    /// no progress; that check is the caller's, which knows what it left behind.
    pub(crate) progressed: bool,
}

/// Why a `Content-Bytes-Accepted` value breaks the protocol (the connection fails).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AcceptError {
    #[error("Content-Bytes-Accepted is {accepted}, but the request offered {offered} bytes")]
    MoreThanOffered { accepted: usize, offered: usize },
    #[error(
        "Content-Bytes-Accepted is {accepted}: every message ({messages} bytes) but not the \
         whole CLOSE ({offered} bytes with it)"
    )]
    PartialClose {
        accepted: usize,
        messages: usize,
        offered: usize,
    },
}

/// Reads a `Content-Bytes-Accepted` value as Pushpin does: a decimal count; anything else
/// (not a number, negative) counts as if the header were absent, that is everything accepted.
pub(crate) fn parse_content_bytes_accepted(value: &[u8]) -> Option<usize> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// The events to send again after an answer accepted `accepted` content bytes of the request
/// that carried `sent` (`None`: no `Content-Bytes-Accepted`, everything accepted).
///
/// The rule, from Pushpin's WebSocket-over-HTTP protocol (its partial acceptance of content,
/// the `Content-Bytes-Accepted` and `Content-Bytes-Replayed` headers) as Pushpin's proxy
/// implements it: the count is of message content only (TEXT, BINARY, PING and PONG payloads,
/// then the CLOSE's code and reason), never of event type lines, lengths or CRLFs, nor of the
/// body. The accepted bytes are taken from the front of the messages in order; a message
/// whose content is covered entirely, or an empty one reached with nothing left to take, is
/// delivered; the first message only partly covered is sent again with just its untaken tail,
/// followed by every later message unchanged. The next request says how many replayed content
/// bytes it starts with. A CLOSE is delivered only if every message before it was taken
/// whole, and then its bytes must be taken too: partial acceptance is for waiting for more
/// data, and after a CLOSE none comes. A count above what was offered is an error. OPEN and
/// DISCONNECT carry no content and are never sent again. A CLOSE is expected last, as Pushpin
/// writes it; one elsewhere is counted like a message.
pub(crate) fn replay_after(sent: &[Event], accepted: Option<usize>) -> Result<Replay, AcceptError> {
    let (messages, close) = match sent.split_last() {
        Some((close @ Event::Close { .. }, messages)) => (messages, Some(close)),
        _ => (sent, None),
    };
    let messages_len: usize = messages.iter().map(Event::content_len).sum();
    let offered = messages_len + close.map_or(0, Event::content_len);
    let accepted = accepted.unwrap_or(offered);
    if accepted > offered {
        return Err(AcceptError::MoreThanOffered { accepted, offered });
    }
    let taken = accepted.min(messages_len);
    let mut left = taken;
    let mut replay = Replay {
        replayed_bytes: messages_len - taken,
        progressed: taken > 0,
        ..Replay::default()
    };
    for message in messages {
        if matches!(message, Event::Open | Event::Disconnect) {
            continue;
        }
        let len = message.content_len();
        if replay.events.is_empty() && left >= len {
            left -= len;
            replay.progressed = true;
        } else {
            replay.events.push(message.without_first(left));
            left = 0;
        }
    }
    if let Some(close) = close {
        if taken < messages_len {
            replay.events.push(close.clone());
        } else if accepted < offered {
            return Err(AcceptError::PartialClose {
                accepted,
                messages: messages_len,
                offered,
            });
        } else {
            replay.close_delivered = true;
        }
    }
    Ok(replay)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn body(events: &[Event]) -> Bytes {
        let mut out = BytesMut::new();
        for e in events {
            let before = out.len();
            encode(e, &mut out);
            assert_eq!(out.len() - before, encoded_len(e), "{e:?}");
        }
        out.freeze()
    }

    fn text(s: &str) -> Event {
        Event::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn decoded(raw: &[u8]) -> Result<Vec<Event>, EventsError> {
        decode(&Bytes::copy_from_slice(raw), MAX)
    }

    #[test]
    fn encodes_like_pushpin_and_the_libraries() {
        let events = [
            Event::Open,
            text("hello"),
            Event::Binary(Bytes::from_static(b"\x00\x01")),
            Event::Ping(Bytes::new()),
            Event::Pong(Bytes::from_static(b"p")),
            text(""),
            Event::Close {
                code: Some(1000),
                reason: Bytes::from_static(b"bye"),
            },
            Event::Close {
                code: None,
                reason: Bytes::new(),
            },
            Event::Disconnect,
        ];
        assert_eq!(
            &body(&events)[..],
            b"OPEN\r\nTEXT 5\r\nhello\r\nBINARY 2\r\n\x00\x01\r\nPING\r\nPONG 1\r\np\r\n\
              TEXT 0\r\n\r\nCLOSE 5\r\n\x03\xe8bye\r\nCLOSE\r\nDISCONNECT\r\n"
        );
        assert_eq!(decode(&body(&events), MAX), Ok(events.to_vec()));
    }

    #[test]
    fn decodes_what_the_grip_libraries_write() {
        // @fanoutio/grip 4.3.0: accept(), subscribe("news"), send("hi"), sendBinary([0, 1]),
        // close(1000); gripcontrol 4.4.0 writes the same events with ", " and ": " in its JSON.
        let raw = b"OPEN\r\nTEXT 27\r\nc:{\"channel\":\"news\",\"type\":\"subscribe\"}\r\n\
                    TEXT 4\r\nm:hi\r\nBINARY 4\r\nm:\x00\x01\r\nCLOSE 2\r\n\x03\xe8\r\n";
        assert_eq!(
            decoded(raw),
            Ok(vec![
                Event::Open,
                text("c:{\"channel\":\"news\",\"type\":\"subscribe\"}"),
                text("m:hi"),
                Event::Binary(Bytes::from_static(b"m:\x00\x01")),
                Event::Close {
                    code: Some(1000),
                    reason: Bytes::new()
                },
            ])
        );
        // A PONG answering a PING without content, and code 0 from close() without a code.
        assert_eq!(
            decoded(b"PONG\r\nCLOSE 2\r\n\x00\x00\r\n"),
            Ok(vec![
                Event::Pong(Bytes::new()),
                Event::Close {
                    code: Some(0),
                    reason: Bytes::new()
                }
            ])
        );
    }

    #[test]
    fn empty_bodies_and_contents() {
        assert_eq!(decoded(b""), Ok(vec![]));
        assert_eq!(decoded(b"TEXT\r\n"), Ok(vec![text("")]));
        assert_eq!(decoded(b"TEXT 0\r\n\r\n"), Ok(vec![text("")]));
        assert_eq!(
            decoded(b"BINARY 0\r\n\r\n"),
            Ok(vec![Event::Binary(Bytes::new())])
        );
        assert_eq!(decoded(b"OPEN 0\r\n\r\n"), Ok(vec![Event::Open]));
        assert_eq!(
            decoded(b"PING 0\r\n\r\n"),
            Ok(vec![Event::Ping(Bytes::new())])
        );
    }

    #[test]
    fn hex_lengths_in_either_case() {
        let content = "x".repeat(0xAB);
        let raw = format!("TEXT AB\r\n{content}\r\nTEXT ab\r\n{content}\r\n");
        assert_eq!(
            decoded(raw.as_bytes()),
            Ok(vec![text(&content), text(&content)])
        );
    }

    #[test]
    fn large_contents_are_slices_of_the_body() {
        let big = Event::Binary(Bytes::from(vec![7u8; 3 << 20]));
        let raw = body(std::slice::from_ref(&big));
        assert!(raw.starts_with(b"BINARY 300000\r\n"));
        let events = decode(&raw, 3 << 20).unwrap_or_default();
        assert_eq!(events, vec![big]);
        let Some(Event::Binary(content)) = events.first() else {
            panic!("one binary event");
        };
        assert_eq!(content.as_ptr(), raw[15..].as_ptr(), "no copy");
        assert_eq!(
            decode(&raw, (3 << 20) - 1),
            Err(EventsError::TooLarge {
                event: 1,
                len: 3 << 20,
                max: (3 << 20) - 1
            })
        );
    }

    #[test]
    fn every_error_names_the_event() {
        let cases: [(&[u8], EventsError); 13] = [
            (b"OPEN", EventsError::MissingCrlf { event: 1 }),
            (b"OPEN\r\nTEXT 1\n", EventsError::MissingCrlf { event: 2 }),
            (
                b"OPEN\r\nopen\r\n",
                EventsError::UnknownType {
                    event: 2,
                    name: "open".into(),
                },
            ),
            (b"TEXT 1g\r\nx\r\n", EventsError::BadLength { event: 1 }),
            (b"TEXT \r\n", EventsError::BadLength { event: 1 }),
            (b"TEXT +1\r\nx\r\n", EventsError::BadLength { event: 1 }),
            (
                b"TEXT 00000000000000001\r\nx\r\n",
                EventsError::BadLength { event: 1 },
            ),
            (
                b"TEXT 5\r\nab",
                EventsError::Truncated {
                    event: 1,
                    len: 5,
                    left: 2,
                },
            ),
            (
                b"TEXT 2\r\nabc\r\n",
                EventsError::MissingContentCrlf { event: 1 },
            ),
            (
                b"PING\r\nPONG\r\nTEXT 1\r\n\xff\r\n",
                EventsError::NotUtf8 {
                    event: 3,
                    kind: "TEXT",
                },
            ),
            (
                b"CLOSE 3\r\n\x03\xe8\xff\r\n",
                EventsError::NotUtf8 {
                    event: 1,
                    kind: "CLOSE reason",
                },
            ),
            (b"CLOSE 1\r\n\x03\r\n", EventsError::ShortClose { event: 1 }),
            (
                b"DISCONNECT 1\r\nx\r\n",
                EventsError::UnexpectedContent {
                    event: 1,
                    kind: "DISCONNECT",
                },
            ),
        ];
        for (raw, error) in cases {
            assert_eq!(decoded(raw), Err(error.clone()), "{:?}", raw.escape_ascii());
            let shown = error.to_string();
            assert!(
                shown.starts_with("event ") && !shown.contains('\n'),
                "{shown}"
            );
        }
        assert_eq!(
            decoded(b"PING\r\nPONG\r\nTEXT 1\r\n\xff\r\n")
                .map_err(|e| e.to_string())
                .err()
                .as_deref(),
            Some("event 3: TEXT content is not UTF-8")
        );
        assert_eq!(
            decode(&Bytes::from_static(b"TEXT 3\r\nabc\r\n"), 2),
            Err(EventsError::TooLarge {
                event: 1,
                len: 3,
                max: 2
            })
        );
    }

    fn close(code: u16, reason: &'static str) -> Event {
        Event::Close {
            code: Some(code),
            reason: Bytes::from_static(reason.as_bytes()),
        }
    }

    #[test]
    fn everything_is_accepted_without_the_header() {
        let sent = [text("abc"), Event::Ping(Bytes::new()), close(1000, "")];
        let replay = replay_after(&sent, None);
        assert_eq!(
            replay,
            Ok(Replay {
                events: vec![],
                replayed_bytes: 0,
                close_delivered: true,
                progressed: true,
            })
        );
        assert_eq!(replay_after(&sent, Some(5)), replay);
        assert_eq!(parse_content_bytes_accepted(b" 12 "), Some(12));
        assert_eq!(parse_content_bytes_accepted(b"-1"), None);
        assert_eq!(parse_content_bytes_accepted(b"x"), None);
    }

    #[test]
    fn partial_acceptance_replays_the_untaken_tail() {
        // Pushpin's own test: "[foo]" and "[hello" sent, 5 accepted, "[hello" replayed whole.
        let sent = [text("[foo]"), text("[hello")];
        assert_eq!(
            replay_after(&sent, Some(5)),
            Ok(Replay {
                events: vec![text("[hello")],
                replayed_bytes: 6,
                close_delivered: false,
                progressed: true,
            })
        );
        // Cut inside a message: its tail, then the rest; empty messages at the cut are taken.
        let sent = [
            text("abcd"),
            Event::Binary(Bytes::new()),
            Event::Binary(Bytes::from_static(b"xy")),
            Event::Pong(Bytes::new()),
        ];
        assert_eq!(
            replay_after(&sent, Some(4)).map(|r| (r.events, r.replayed_bytes)),
            Ok((
                vec![
                    Event::Binary(Bytes::from_static(b"xy")),
                    Event::Pong(Bytes::new())
                ],
                2
            ))
        );
        assert_eq!(
            replay_after(&sent, Some(1)).map(|r| (r.events, r.replayed_bytes)),
            Ok((
                vec![
                    text("bcd"),
                    Event::Binary(Bytes::new()),
                    Event::Binary(Bytes::from_static(b"xy")),
                    Event::Pong(Bytes::new())
                ],
                5
            ))
        );
        let nothing = replay_after(&[text("abc")], Some(0));
        assert_eq!(
            nothing,
            Ok(Replay {
                events: vec![text("abc")],
                replayed_bytes: 3,
                close_delivered: false,
                progressed: false,
            })
        );
        assert_eq!(
            replay_after(&[text("abc")], Some(4)),
            Err(AcceptError::MoreThanOffered {
                accepted: 4,
                offered: 3
            })
        );
        assert_eq!(
            replay_after(&[Event::Open], Some(0)).map(|r| r.events),
            Ok(vec![])
        );
    }

    #[test]
    fn a_close_is_delivered_whole_or_held_back() {
        let sent = [text("ab"), close(1000, "bye")];
        assert_eq!(
            replay_after(&sent, Some(1)).map(|r| (r.events, r.replayed_bytes, r.close_delivered)),
            Ok((vec![text("b"), close(1000, "bye")], 1, false))
        );
        for accepted in [2, 3, 6] {
            assert_eq!(
                replay_after(&sent, Some(accepted)),
                Err(AcceptError::PartialClose {
                    accepted,
                    messages: 2,
                    offered: 7
                })
            );
        }
        assert_eq!(
            replay_after(&sent, Some(7)).map(|r| (r.events, r.close_delivered)),
            Ok((vec![], true))
        );
        let bare = Event::Close {
            code: None,
            reason: Bytes::new(),
        };
        assert_eq!(
            replay_after(std::slice::from_ref(&bare), Some(0)).map(|r| r.close_delivered),
            Ok(true)
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn utf8(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::string::string_regex(&format!("\\PC{{0,{max}}}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .prop_map(Bytes::from)
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Open),
            Just(Event::Disconnect),
            utf8(40).prop_map(Event::Text),
            bytes(300).prop_map(Event::Binary),
            bytes(20).prop_map(Event::Ping),
            bytes(20).prop_map(Event::Pong),
            (any::<u16>(), utf8(20)).prop_map(|(code, reason)| Event::Close {
                code: Some(code),
                reason
            }),
            Just(Event::Close {
                code: None,
                reason: Bytes::new()
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn decode_inverts_encode(events in proptest::collection::vec(event(), 0..12)) {
            let mut out = BytesMut::new();
            for e in &events {
                encode(e, &mut out);
            }
            prop_assert_eq!(out.len(), events.iter().map(encoded_len).sum::<usize>());
            prop_assert_eq!(decode(&out.freeze(), 1 << 16), Ok(events));
        }

        #[test]
        fn replay_keeps_every_untaken_byte(
            events in proptest::collection::vec(event(), 0..8),
            cut in any::<proptest::sample::Index>(),
        ) {
            let messages: Vec<Event> = events
                .into_iter()
                .filter(|e| !matches!(e, Event::Close { .. }))
                .collect();
            let offered: usize = messages.iter().map(Event::content_len).sum();
            let accepted = cut.index(offered + 1);
            let replay = replay_after(&messages, Some(accepted))
                .unwrap_or_else(|e| panic!("{e}"));
            let replayed: usize = replay.events.iter().map(Event::content_len).sum();
            prop_assert_eq!(replayed, offered - accepted);
            prop_assert_eq!(replay.replayed_bytes, offered - accepted);
            prop_assert!(replay.events.len() <= messages.len());
        }

        #[test]
        fn decode_never_panics(raw in bytes(200)) {
            let _ = decode(&raw, 64);
        }
    }
}
