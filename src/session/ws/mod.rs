//! The WebSocket protocol (RFC 6455) on an upgraded connection, server side: reading the
//! client's frames into messages, answering pings and close frames, writing the bridge's
//! messages. Replaces tungstenite on the hot path, measured (docs/PERFORMANCE.md) for two
//! reasons:
//!
//! - **No buffer while idle.** Bytes are read into a buffer allocated when the socket is
//!   readable and released once every frame in it is consumed (a payload keeps only its own
//!   slice), so an idle connection holds no read buffer; tungstenite kept (and zero-filled) a
//!   4 KiB buffer per connection on every poll.
//! - **No copy of a payload.** A frame's payload is unmasked in place in the read buffer and
//!   handed on as a slice of it; messages to the client go out as one `writev` of header and
//!   payload. Only a fragmented message is copied, once, as its fragments are joined.
//!
//! Reading is poll-based with all state in [`WsStream`], so a read can be abandoned at any
//! point (`select!`) without losing bytes.
//!
//! Longer than 400 lines on purpose: the reading state machine and the writing side share the
//! stream's state (close sent, a frame cut short) and read best together.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use deflate::{Deflate, InflateError};
use frame::{Header, HeaderError, opcode};
use utf8::Utf8Validator;

mod accept;
pub(crate) mod deflate;
pub(crate) mod frame;
mod utf8;

pub(crate) use accept::accept_key;

/// Room made for a read when the buffer has none: enough for a burst of small messages.
const READ_CHUNK: usize = 4 * 1024;

/// Close codes a peer may send (RFC 6455 section 7.4 and the IANA registry).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// What the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A text message (valid UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping (answered already).
    Ping,
    /// A pong.
    Pong,
    /// A Close frame: its code and reason, if it carried any (answered already).
    Close(Option<(u16, String)>),
}

/// Why reading from the client failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WsError {
    /// The client broke the protocol (1002).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A text message (or close reason) that is not UTF-8 (1007).
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// A message larger than the limit (1009).
    #[error("message larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The connection failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<HeaderError> for WsError {
    fn from(e: HeaderError) -> Self {
        WsError::Protocol(e.to_string())
    }
}

/// A fragmented message being joined.
struct Assembling {
    opcode: u8,
    data: BytesMut,
    utf8: Utf8Validator,
    /// permessage-deflate: inflated (and then checked for UTF-8) once whole.
    compressed: bool,
}

/// A WebSocket connection, server side.
pub(crate) struct WsStream<S> {
    io: S,
    /// Bytes read and not yet consumed; no allocation while empty.
    read: BytesMut,
    message: Option<Assembling>,
    max_message: usize,
    /// Pong and close frames waiting to be written, before any message.
    control: BytesMut,
    close_sent: bool,
    /// A message frame was cut short (its write was abandoned): nothing more can be framed.
    frame_cut: bool,
    /// permessage-deflate, when negotiated.
    deflate: Option<Box<Deflate>>,
}

impl<S> WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// A WebSocket on an upgraded connection; `preread` is what was read past the handshake.
    pub(crate) fn new(io: S, max_message: usize) -> Self {
        WsStream {
            io,
            read: BytesMut::new(),
            message: None,
            max_message,
            control: BytesMut::new(),
            close_sent: false,
            frame_cut: false,
            deflate: None,
        }
    }

    /// With permessage-deflate as negotiated.
    pub(crate) fn with_deflate(mut self, deflate: Option<Deflate>) -> Self {
        self.deflate = deflate.map(Box::new);
        self
    }

    /// The next message or control frame from the client; `None` when the connection closed.
    pub(crate) async fn next(&mut self) -> Option<Result<Incoming, WsError>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, WsError>>> {
        loop {
            if !self.control.is_empty() {
                // Answers to pings and closes go out as soon as the socket takes them; a
                // client that does not read is caught by the write timeout of the next send.
                if let Poll::Ready(Err(e)) = self.poll_write_control(cx) {
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            match self.parse_one() {
                Ok(Some(incoming)) => return Poll::Ready(Some(Ok(incoming))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            if self.read.is_empty() {
                // Nothing waits: read onto the stack first, so that an idle connection, whose
                // read stays pending, holds no buffer. What arrives is copied into a buffer of
                // its size (a small copy; a large payload's rest is read in place below).
                let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
                let mut buf = tokio::io::ReadBuf::uninit(&mut stack);
                if let Err(e) = ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)) {
                    return Poll::Ready(Some(Err(e.into())));
                }
                if buf.filled().is_empty() {
                    return Poll::Ready(None);
                }
                self.read = BytesMut::from(buf.filled());
                continue;
            }
            // Room for the rest of the frame at the head of the buffer, all of it at once (the
            // pages are touched only as bytes arrive), so a large payload is read straight
            // into its place: one copy, from the socket.
            let wanted = self.bytes_wanted();
            if self.read.capacity() - self.read.len() < wanted {
                self.read.reserve(wanted.max(READ_CHUNK));
            }
            match ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)) {
                Ok(0) => return Poll::Ready(None),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    /// How many more bytes the frame at the head of the buffer needs (or a default).
    fn bytes_wanted(&self) -> usize {
        match frame::parse(&self.read) {
            Ok(Some(h)) => (h.header_len as u64 + h.payload_len)
                .saturating_sub(self.read.len() as u64)
                .try_into()
                .unwrap_or(usize::MAX),
            _ => READ_CHUNK,
        }
    }

    /// Consumes one whole frame from the buffer, if there is one; returns what it completes.
    fn parse_one(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            let Some(header) = frame::parse(&self.read)? else {
                self.release_if_empty();
                return Ok(None);
            };
            let Some(key) = header.mask else {
                return Err(WsError::Protocol("client frame not masked".into()));
            };
            self.check_size(&header)?;
            let len = header.payload_len as usize;
            if self.read.len() < header.header_len + len {
                return Ok(None);
            }
            self.read.advance(header.header_len);
            let mut payload = self.read.split_to(len);
            frame::unmask(&mut payload, key, 0);
            let done = self.on_frame(&header, payload)?;
            self.release_if_empty();
            if done.is_some() {
                return Ok(done);
            }
        }
    }

    /// Drops the read buffer once nothing in it is waiting: an idle connection holds none.
    fn release_if_empty(&mut self) {
        if self.read.is_empty() && self.read.capacity() > 0 {
            self.read = BytesMut::new();
        }
    }

    fn check_size(&self, header: &Header) -> Result<(), WsError> {
        if header.is_control() {
            return Ok(());
        }
        let so_far = self.message.as_ref().map_or(0, |m| m.data.len()) as u64;
        if so_far + header.payload_len > self.max_message as u64 {
            return Err(WsError::TooLarge {
                limit: self.max_message,
            });
        }
        Ok(())
    }

    /// Handles one whole frame; returns the message or control event it completes, if any.
    fn on_frame(
        &mut self,
        header: &Header,
        payload: BytesMut,
    ) -> Result<Option<Incoming>, WsError> {
        if header.rsv1
            && (self.deflate.is_none() || !matches!(header.opcode, opcode::TEXT | opcode::BINARY))
        {
            return Err(HeaderError::ReservedBits.into());
        }
        match header.opcode {
            opcode::PING => {
                self.queue_control(opcode::PONG, &payload);
                Ok(Some(Incoming::Ping))
            }
            opcode::PONG => Ok(Some(Incoming::Pong)),
            opcode::CLOSE => self.on_close(&payload).map(Some),
            opcode::TEXT | opcode::BINARY => {
                if self.message.is_some() {
                    return Err(WsError::Protocol(
                        "a new message began before the fragmented one ended".into(),
                    ));
                }
                let compressed = header.rsv1;
                if compressed && header.fin {
                    return self.inflated(header.opcode, &payload).map(Some);
                }
                let mut utf8 = Utf8Validator::default();
                if header.opcode == opcode::TEXT && !compressed {
                    utf8.feed(&payload).map_err(|_| WsError::InvalidUtf8)?;
                }
                if header.fin {
                    utf8.finish().map_err(|_| WsError::InvalidUtf8)?;
                    return Ok(Some(whole(header.opcode, payload.freeze())));
                }
                self.message = Some(Assembling {
                    opcode: header.opcode,
                    data: payload,
                    utf8,
                    compressed,
                });
                Ok(None)
            }
            opcode::CONTINUATION => {
                let Some(message) = self.message.as_mut() else {
                    return Err(WsError::Protocol(
                        "continuation frame without a message".into(),
                    ));
                };
                if message.opcode == opcode::TEXT && !message.compressed {
                    message
                        .utf8
                        .feed(&payload)
                        .map_err(|_| WsError::InvalidUtf8)?;
                }
                message.data.extend_from_slice(&payload);
                if !header.fin {
                    return Ok(None);
                }
                let message = self
                    .message
                    .take()
                    .ok_or_else(|| WsError::Protocol("lost message".into()))?;
                if message.compressed {
                    return self.inflated(message.opcode, &message.data).map(Some);
                }
                message.utf8.finish().map_err(|_| WsError::InvalidUtf8)?;
                Ok(Some(whole(message.opcode, message.data.freeze())))
            }
            other => Err(HeaderError::ReservedOpcode(other).into()),
        }
    }

    /// A whole compressed message, inflated under the message limit and, if text, checked.
    fn inflated(&mut self, op: u8, data: &[u8]) -> Result<Incoming, WsError> {
        let limit = self.max_message;
        let Some(deflate) = self.deflate.as_deref_mut() else {
            return Err(HeaderError::ReservedBits.into());
        };
        let message = deflate.inflate(data, limit).map_err(|e| match e {
            InflateError::TooLarge => WsError::TooLarge { limit },
            InflateError::Corrupt => WsError::Protocol("invalid compressed data".into()),
        })?;
        if op == opcode::TEXT && std::str::from_utf8(&message).is_err() {
            return Err(WsError::InvalidUtf8);
        }
        Ok(whole(op, message))
    }

    /// A Close frame: checks its code and reason, and answers it with the same code.
    fn on_close(&mut self, payload: &[u8]) -> Result<Incoming, WsError> {
        let close = match payload {
            [] => None,
            [_] => {
                return Err(WsError::Protocol(
                    "close frame with a 1-byte payload".into(),
                ));
            }
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !valid_close_code(code) {
                    return Err(WsError::Protocol(format!("invalid close code {code}")));
                }
                let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
                Some((code, reason.to_owned()))
            }
        };
        if !self.close_sent {
            let echo: &[u8] = match &close {
                Some(_) => &payload[..2],
                None => &[],
            };
            self.queue_control(opcode::CLOSE, echo);
            self.close_sent = true;
        }
        Ok(Incoming::Close(close))
    }

    fn queue_control(&mut self, op: u8, payload: &[u8]) {
        let mut head = [0u8; 10];
        let n = frame::encode(&mut head, op, payload.len());
        self.control.extend_from_slice(&head[..n]);
        self.control.extend_from_slice(payload);
    }

    fn poll_write_control(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.control.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.control))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.control.advance(n);
        }
        if self.control.capacity() > 0 {
            self.control = BytesMut::new();
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Writes whatever control frames wait (pongs, the close answer).
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_control(cx)).await
    }

    /// Sends one unfragmented message (`opcode::TEXT`, `BINARY` or `PING`), after any waiting
    /// control frame: header and payload in one `writev`.
    pub(crate) async fn send(&mut self, op: u8, payload: &Bytes) -> io::Result<()> {
        self.flush().await?;
        let compressed = match self.deflate.as_deref_mut() {
            Some(deflate) if matches!(op, opcode::TEXT | opcode::BINARY) => {
                deflate.deflate(payload)
            }
            _ => None,
        };
        let payload = compressed.as_ref().unwrap_or(payload);
        let mut head = [0u8; 10];
        let n = frame::encode(&mut head, op, payload.len());
        if compressed.is_some() {
            head[0] |= 0x40;
        }
        let (mut head, mut body) = (&head[..n], &payload[..]);
        while !head.is_empty() {
            let written = self
                .io
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            // Set until the whole frame is out: if this future is dropped before, the stream
            // holds half a frame.
            self.frame_cut = true;
            let from_head = written.min(head.len());
            head = &head[from_head..];
            body = &body[written - from_head..];
        }
        if !body.is_empty() {
            self.io.write_all(body).await?;
        }
        self.frame_cut = false;
        self.io.flush().await
    }

    /// Shuts the connection's write side (a FIN to the client).
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }

    /// Sends a Close frame (once) with this code and reason (at most 123 bytes).
    /// Fails when a message frame was cut short: a Close after half a frame would be read as
    /// part of it.
    pub(crate) async fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        if self.frame_cut {
            return Err(io::Error::other(
                "a message frame was cut short; no Close frame can follow",
            ));
        }
        if !self.close_sent {
            let mut payload = Vec::with_capacity(2 + reason.len());
            payload.extend_from_slice(&code.to_be_bytes());
            payload.extend_from_slice(reason.as_bytes());
            self.queue_control(opcode::CLOSE, &payload);
            self.close_sent = true;
        }
        self.flush().await
    }
}

fn whole(op: u8, data: Bytes) -> Incoming {
    if op == opcode::TEXT {
        Incoming::Text(data)
    } else {
        Incoming::Binary(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's masked frame.
    fn masked(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let key = [7, 1, 9, 3];
        let mut out = vec![if fin { 0x80 } else { 0 } | op];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        let mut data = payload.to_vec();
        frame::unmask(&mut data, key, 0);
        out.extend_from_slice(&data);
        out
    }

    async fn read_all(bytes: Vec<u8>, max: usize) -> (Vec<Result<Incoming, String>>, Vec<u8>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let mut ws = WsStream::new(server, max);
        client_write
            .write_all(&bytes)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(client_write);
        let mut seen = Vec::new();
        while let Some(item) = ws.next().await {
            let stop = matches!(item, Err(_) | Ok(Incoming::Close(_)));
            seen.push(item.map_err(|e| e.to_string()));
            if stop {
                break;
            }
        }
        let _ = ws.flush().await;
        drop(ws);
        let mut answered = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut client_read, &mut answered).await;
        (seen, answered)
    }

    #[tokio::test]
    async fn fragments_pings_and_close_are_handled() {
        let mut input = masked(opcode::TEXT, false, "héllo ".as_bytes());
        input.extend(masked(opcode::PING, true, b"hi"));
        input.extend(masked(opcode::CONTINUATION, true, b"world"));
        input.extend(masked(opcode::BINARY, true, &[1, 2, 3]));
        input.extend(masked(opcode::CLOSE, true, &[0x03, 0xE8, b'b', b'y', b'e']));
        let (seen, answered) = read_all(input, 1024).await;
        assert_eq!(
            seen,
            vec![
                Ok(Incoming::Ping),
                Ok(Incoming::Text(Bytes::from("héllo world"))),
                Ok(Incoming::Binary(Bytes::from_static(&[1, 2, 3]))),
                Ok(Incoming::Close(Some((1000, "bye".to_owned())))),
            ]
        );
        // A pong echoing the ping, then the close echoing the code.
        assert_eq!(answered, vec![0x8A, 2, b'h', b'i', 0x88, 2, 0x03, 0xE8]);
    }

    #[tokio::test]
    async fn violations_end_reading_with_their_error() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0x81, 0x02, b'h', b'i'], "not masked"),
            (masked(opcode::CONTINUATION, true, b"x"), "continuation"),
            (masked(opcode::TEXT, true, &[0xC3, 0x28]), "UTF-8"),
            (masked(opcode::BINARY, true, &[0u8; 200]), "larger than 100"),
            (
                masked(opcode::CLOSE, true, &[0x03, 0xEC]),
                "invalid close code 1004",
            ),
            (
                [
                    masked(opcode::TEXT, false, b"a"),
                    masked(opcode::TEXT, true, b"b"),
                ]
                .concat(),
                "new message",
            ),
        ];
        for (input, expected) in cases {
            let (seen, _) = read_all(input, 100).await;
            let last = seen.last().cloned();
            assert!(
                matches!(&last, Some(Err(e)) if e.contains(expected)),
                "{expected}: {seen:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_read_buffer() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut ws = WsStream::new(server, 1024);
        client
            .write_all(&masked(opcode::BINARY, true, b"payload"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let got = ws.next().await;
        assert!(matches!(got, Some(Ok(Incoming::Binary(_)))));
        assert_eq!(ws.read.capacity(), 0);
        ws.send(opcode::TEXT, &Bytes::from_static(b"back"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut answer = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut client, &mut answer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&answer, &[0x81, 4, b'b', b'a', b'c', b'k']);
    }
}
