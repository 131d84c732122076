//! The `application/websocket-events` body of websocket-over-http requests and answers, as
//! the bench backend reads and writes it: a series of `TYPE[ <hex length>]\r\n`, each
//! followed by `<content>\r\n` when it has a length.
//!
//! Only what the bench needs: [`decode`] splits a request body into events borrowing from it,
//! [`encode`] appends one event to an answer. The bridge's own codec is not used, so a bug
//! there cannot hide behind the same bug here.

/// The content type of events bodies.
pub(crate) const CONTENT_TYPE: &str = "application/websocket-events";

/// One event of a body; `content` is empty for events without a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Event<'a> {
    pub(crate) kind: Kind,
    pub(crate) content: &'a [u8],
}

/// The event types of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Open,
    Text,
    Binary,
    Ping,
    Pong,
    Close,
    Disconnect,
}

impl Kind {
    fn parse(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"OPEN" => Self::Open,
            b"TEXT" => Self::Text,
            b"BINARY" => Self::Binary,
            b"PING" => Self::Ping,
            b"PONG" => Self::Pong,
            b"CLOSE" => Self::Close,
            b"DISCONNECT" => Self::Disconnect,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Text => "TEXT",
            Self::Binary => "BINARY",
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::Close => "CLOSE",
            Self::Disconnect => "DISCONNECT",
        }
    }

    /// TEXT and BINARY: what the scenarios count as messages.
    pub(crate) fn is_message(self) -> bool {
        matches!(self, Self::Text | Self::Binary)
    }
}

/// Splits `body` into its events, or says what is wrong with it.
pub(crate) fn decode(mut body: &[u8]) -> Result<Vec<Event<'_>>, String> {
    let mut events = Vec::new();
    while !body.is_empty() {
        let end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("an event line without CRLF")?;
        let line = &body[..end];
        body = &body[end + 2..];
        let (name, length) = match line.iter().position(|&b| b == b' ') {
            Some(space) => (&line[..space], Some(&line[space + 1..])),
            None => (line, None),
        };
        let kind = Kind::parse(name)
            .ok_or_else(|| format!("unknown event {:?}", String::from_utf8_lossy(name)))?;
        let content = match length {
            None => &body[..0],
            Some(hex) => {
                let len = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|hex| usize::from_str_radix(hex, 16).ok())
                    .ok_or("a length that is not hex")?;
                if body.len() < len + 2 || &body[len..len + 2] != b"\r\n" {
                    return Err(format!("{} content shorter than {len} bytes", kind.name()));
                }
                let content = &body[..len];
                body = &body[len + 2..];
                content
            }
        };
        events.push(Event { kind, content });
    }
    Ok(events)
}

/// Appends an event of `kind` with `content` (behind `prefix`; both empty: no length) to
/// `out`.
pub(crate) fn encode(out: &mut Vec<u8>, kind: Kind, prefix: &[u8], content: &[u8]) {
    out.extend_from_slice(kind.name().as_bytes());
    let len = prefix.len() + content.len();
    if len > 0 {
        out.extend_from_slice(format!(" {len:x}\r\n").as_bytes());
        out.extend_from_slice(prefix);
        out.extend_from_slice(content);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_split_into_events() {
        let body =
            b"OPEN\r\nTEXT 5\r\nhello\r\nBINARY 2\r\n\r\n\r\nPING\r\nCLOSE 2\r\n\x03\xe8\r\n";
        let events = decode(body).expect("a valid body");
        let kinds: Vec<Kind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Open,
                Kind::Text,
                Kind::Binary,
                Kind::Ping,
                Kind::Close
            ]
        );
        assert_eq!(events[1].content, b"hello");
        assert_eq!(events[2].content, b"\r\n", "content is taken by length");
        assert_eq!(events[4].content, [0x03, 0xe8]);
        assert!(decode(b"").expect("empty is valid").is_empty());
    }

    #[test]
    fn bad_bodies_are_refused() {
        assert!(decode(b"TEXT 5\r\nhi\r\n").is_err());
        assert!(decode(b"TEXT zz\r\nhi\r\n").is_err());
        assert!(decode(b"HELLO\r\n").is_err());
        assert!(decode(b"OPEN").is_err());
    }

    #[test]
    fn events_encode_with_hex_lengths_and_round_trip() {
        let mut out = Vec::new();
        encode(&mut out, Kind::Open, b"", b"");
        encode(&mut out, Kind::Binary, b"m:", &[0xA5; 14]);
        assert_eq!(&out[..13], b"OPEN\r\nBINARY ");
        assert_eq!(&out[13..16], b"10\r");
        let events = decode(&out).expect("what we encode decodes");
        assert_eq!(events[1].content.len(), 16);
        assert!(events[1].content.starts_with(b"m:"));
    }
}
