//! What nodes say to each other through Redis, as bytes: a callback forwarded to the node that
//! holds the connection ([`Request`]), its answer ([`Answer`]), and a channel publication
//! ([`Publication`]). A small binary form with a leading tag and version, so a message from a
//! node of another version is recognised and dropped, never misread.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::protocol::Payload;
use crate::protocol::channel::ChannelName;

/// Format version; bumped on any change below.
const VERSION: u8 = 1;

const TAG_REQUEST: u8 = b'Q';
const TAG_ANSWER: u8 = b'A';
const TAG_PUBLICATION: u8 = b'P';

/// What a forwarded callback asks of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `POST {callback}`: send this message.
    Send(Payload),
    /// `DELETE {callback}`: close with this code and reason.
    Close { code: u16, reason: String },
    /// `GET {callback}`: the connection's facts.
    Get,
    /// `PUT {callback}/channels/{name}`.
    Join(ChannelName),
    /// `DELETE {callback}/channels/{name}`.
    Leave(ChannelName),
}

/// A callback forwarded to the owning node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// Matches the answer to the waiting caller on the asking node.
    pub(crate) number: u64,
    /// The asking node's id (its inbox).
    pub(crate) from: String,
    /// The connection's id (hyphenated UUID).
    pub(crate) connection: String,
    pub(crate) op: Op,
}

/// The owning node's answer, as the asking node passes it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) number: u64,
    pub(crate) status: u16,
    /// Whether the answer carries `Retry-After` (the 503s).
    pub(crate) retry_after: bool,
    /// Whether the body is JSON (the facts of `GET`) rather than a line of text.
    pub(crate) json: bool,
    pub(crate) body: Bytes,
}

/// What a channel publication asks of every member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Publication {
    Send(Payload),
    Close { code: u16, reason: String },
}

/// A message from another node, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Request(Request),
    Answer(Answer),
}

/// Bytes that are not a message of this version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a cluster message of format version {VERSION}")]
pub(crate) struct Malformed;

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u16(u16::try_from(s.len()).unwrap_or(u16::MAX));
    out.put_slice(&s.as_bytes()[..s.len().min(usize::from(u16::MAX))]);
}

fn get_str(input: &mut Bytes) -> Result<String, Malformed> {
    if input.remaining() < 2 {
        return Err(Malformed);
    }
    let len = usize::from(input.get_u16());
    if input.remaining() < len {
        return Err(Malformed);
    }
    String::from_utf8(input.split_to(len).to_vec()).map_err(|_| Malformed)
}

fn put_payload(out: &mut BytesMut, payload: &Payload) {
    out.put_u8(u8::from(matches!(payload, Payload::Binary(_))));
    out.put_slice(payload.bytes());
}

fn get_payload(input: &mut Bytes) -> Result<Payload, Malformed> {
    if input.remaining() < 1 {
        return Err(Malformed);
    }
    let binary = input.get_u8() == 1;
    let bytes = std::mem::take(input);
    if binary {
        Ok(Payload::Binary(bytes))
    } else {
        std::str::from_utf8(&bytes).map_err(|_| Malformed)?;
        Ok(Payload::Text(bytes))
    }
}

impl Request {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_u8(TAG_REQUEST);
        out.put_u8(VERSION);
        out.put_u64(self.number);
        put_str(&mut out, &self.from);
        put_str(&mut out, &self.connection);
        match &self.op {
            Op::Send(payload) => {
                out.put_u8(b's');
                put_payload(&mut out, payload);
            }
            Op::Close { code, reason } => {
                out.put_u8(b'c');
                out.put_u16(*code);
                put_str(&mut out, reason);
            }
            Op::Get => out.put_u8(b'g'),
            Op::Join(name) => {
                out.put_u8(b'j');
                put_str(&mut out, name.as_ref());
            }
            Op::Leave(name) => {
                out.put_u8(b'l');
                put_str(&mut out, name.as_ref());
            }
        }
        out.freeze()
    }

    fn decode(mut input: Bytes) -> Result<Self, Malformed> {
        if input.remaining() < 8 {
            return Err(Malformed);
        }
        let number = input.get_u64();
        let from = get_str(&mut input)?;
        let connection = get_str(&mut input)?;
        if input.remaining() < 1 {
            return Err(Malformed);
        }
        let name = |input: &mut Bytes| ChannelName::parse(&get_str(input)?).map_err(|_| Malformed);
        let op = match input.get_u8() {
            b's' => Op::Send(get_payload(&mut input)?),
            b'c' if input.remaining() >= 2 => Op::Close {
                code: input.get_u16(),
                reason: get_str(&mut input)?,
            },
            b'g' => Op::Get,
            b'j' => Op::Join(name(&mut input)?),
            b'l' => Op::Leave(name(&mut input)?),
            _ => return Err(Malformed),
        };
        Ok(Request {
            number,
            from,
            connection,
            op,
        })
    }
}

impl Answer {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(16 + self.body.len());
        out.put_u8(TAG_ANSWER);
        out.put_u8(VERSION);
        out.put_u64(self.number);
        out.put_u16(self.status);
        out.put_u8(u8::from(self.retry_after) | (u8::from(self.json) << 1));
        out.put_slice(&self.body);
        out.freeze()
    }

    fn decode(mut input: Bytes) -> Result<Self, Malformed> {
        if input.remaining() < 11 {
            return Err(Malformed);
        }
        let number = input.get_u64();
        let status = input.get_u16();
        let flags = input.get_u8();
        Ok(Answer {
            number,
            status,
            retry_after: flags & 1 != 0,
            json: flags & 2 != 0,
            body: input,
        })
    }
}

impl Message {
    /// Reads a message from a node's inbox.
    pub(crate) fn decode(mut input: Bytes) -> Result<Self, Malformed> {
        if input.remaining() < 2 {
            return Err(Malformed);
        }
        let tag = input.get_u8();
        if input.get_u8() != VERSION {
            return Err(Malformed);
        }
        match tag {
            TAG_REQUEST => Request::decode(input).map(Message::Request),
            TAG_ANSWER => Answer::decode(input).map(Message::Answer),
            _ => Err(Malformed),
        }
    }
}

impl Publication {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(16);
        out.put_u8(TAG_PUBLICATION);
        out.put_u8(VERSION);
        match self {
            Publication::Send(payload) => {
                out.put_u8(b's');
                put_payload(&mut out, payload);
            }
            Publication::Close { code, reason } => {
                out.put_u8(b'c');
                out.put_u16(*code);
                put_str(&mut out, reason);
            }
        }
        out.freeze()
    }

    pub(crate) fn decode(mut input: Bytes) -> Result<Self, Malformed> {
        if input.remaining() < 3 || input.get_u8() != TAG_PUBLICATION || input.get_u8() != VERSION {
            return Err(Malformed);
        }
        match input.get_u8() {
            b's' => Ok(Publication::Send(get_payload(&mut input)?)),
            b'c' if input.remaining() >= 2 => Ok(Publication::Close {
                code: input.get_u16(),
                reason: get_str(&mut input)?,
            }),
            _ => Err(Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(request: Request) {
        let decoded = Message::decode(request.encode());
        assert_eq!(decoded, Ok(Message::Request(request)));
    }

    #[test]
    fn every_message_round_trips() {
        let connection = "0d9e4c1e-8a47-4a53-9d3e-3b8f4f0b7d2a".to_owned();
        let room = ChannelName::parse("room").unwrap_or_else(|e| panic!("{e}"));
        for op in [
            Op::Send(Payload::Text(Bytes::from_static(b"hi"))),
            Op::Send(Payload::Binary(Bytes::from_static(&[0, 255]))),
            Op::Close {
                code: 4000,
                reason: "bye".into(),
            },
            Op::Get,
            Op::Join(room.clone()),
            Op::Leave(room),
        ] {
            round_trip(Request {
                number: 7,
                from: "node-a".into(),
                connection: connection.clone(),
                op,
            });
        }
        let answer = Answer {
            number: 9,
            status: 503,
            retry_after: true,
            json: false,
            body: Bytes::from_static(b"full\n"),
        };
        assert_eq!(
            Message::decode(answer.encode()),
            Ok(Message::Answer(answer))
        );
        for publication in [
            Publication::Send(Payload::Text(Bytes::from_static(b"x"))),
            Publication::Close {
                code: 1000,
                reason: String::new(),
            },
        ] {
            assert_eq!(Publication::decode(publication.encode()), Ok(publication));
        }
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            &b""[..],
            b"Q",
            b"Q\x02",
            b"A\x01\x00",
            b"Z\x01",
            b"P\x01s\x00\xff",
        ] {
            assert!(Message::decode(Bytes::copy_from_slice(bad)).is_err() || bad.starts_with(b"P"));
            assert!(Publication::decode(Bytes::copy_from_slice(bad)).is_err());
        }
    }
}
