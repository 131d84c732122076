//! Channel members for the fanout scenarios: the lightest WebSocket client the bench can
//! afford 10,000 of in one process, on the same two cores as the bridge it measures.
//!
//! A [`Member`] is a bare `TcpStream` and one small buffer. The handshake is written by hand
//! (the bridge is trusted: its `101` is checked, its accept key is not); after it, server
//! frames are parsed straight from the buffer, without a copy or an allocation per message,
//! and handed out as [`Frame`]s that borrow the buffer. Members write only masked control
//! frames (pong, close) and the odd text message; the mask key is fixed, which RFC 6455 asks
//! clients not to do but which no server can tell from a random one.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BoxError;

/// Bytes a member's buffer starts with: dozens of small frames, or one frame up to this
/// size; it grows for larger frames.
const INITIAL_BUFFER: usize = 1024;
/// Largest handshake answer head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// The key the handshake sends (RFC 6455's example; the bench does not check the answer's
/// accept value, so any valid key will do).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The mask key of the frames members write.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Frame opcodes (RFC 6455 section 5.2).
pub(crate) mod opcode {
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

/// One frame from the server; its payload borrows the member's buffer until the next read.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: &'a [u8],
}

/// An open WebSocket connection to the bridge, reading frames from its own buffer.
pub(crate) struct Member {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Where the next unparsed byte is.
    start: usize,
    /// How far the buffer is filled.
    end: usize,
}

/// Why a member could not read a frame.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The server closed the TCP connection (without a Close frame, or after it).
    Eof,
    /// A masked frame, or a length that does not fit in memory.
    Protocol(&'static str),
    /// The socket failed.
    Io(std::io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Eof => f.write_str("the connection closed"),
            Self::Protocol(why) => write!(f, "protocol error: {why}"),
            Self::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl Member {
    /// Opens a connection to `url` (`ws://HOST:PORT/PATH?QUERY`) and completes the
    /// WebSocket handshake.
    pub(crate) async fn connect(url: &str) -> Result<Self, BoxError> {
        let rest = url.strip_prefix("ws://").ok_or("not a ws:// URL")?;
        let slash = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(slash);
        let path = if path.is_empty() { "/" } else { path };
        let mut stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        // Dropping the member resets the connection (the bench's clients all do).
        stream.set_zero_linger()?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut member = Self {
            stream,
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
        };
        let head_end = loop {
            if let Some(at) = find(&member.buf[..member.end], b"\r\n\r\n") {
                break at + 4;
            }
            if member.end >= MAX_HEAD {
                return Err("the handshake answer's head is too long".into());
            }
            if member.end == member.buf.len() {
                member.buf.resize(member.buf.len() * 2, 0);
            }
            member.fill().await.map_err(ReadError::from)?;
        };
        let head = &member.buf[..head_end];
        if !head.starts_with(b"HTTP/1.1 101") {
            let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
            return Err(format!(
                "handshake refused: {}",
                String::from_utf8_lossy(line).trim()
            )
            .into());
        }
        // Bytes after the head are the first frames.
        member.start = head_end;
        Ok(member)
    }

    /// The next frame, reading from the socket as needed.
    pub(crate) async fn next(&mut self) -> Result<Frame<'_>, ReadError> {
        loop {
            match parse_header(&self.buf[self.start..self.end])? {
                Some((header, len)) if self.end - self.start >= header + len => {
                    let first = self.buf[self.start];
                    let payload = self.start + header..self.start + header + len;
                    self.start = payload.end;
                    return Ok(Frame {
                        fin: first & 0x80 != 0,
                        opcode: first & 0x0F,
                        payload: &self.buf[payload],
                    });
                }
                Some((header, len)) => self.make_room(header + len)?,
                None => self.make_room(0)?,
            }
            self.fill().await?;
        }
    }

    /// Moves the unparsed bytes to the front and grows the buffer to hold `frame` bytes.
    fn make_room(&mut self, frame: usize) -> Result<(), ReadError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && (self.end == self.buf.len() || frame > 0) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if frame > self.buf.len() {
            if frame > 1 << 30 {
                return Err(ReadError::Protocol("a frame larger than 1 GiB"));
            }
            self.buf.resize(frame, 0);
        } else if self.end == self.buf.len() {
            // A header that does not fit (cannot happen with a buffer of 14 bytes or more).
            self.buf.resize(self.buf.len() * 2, 0);
        }
        Ok(())
    }

    /// Reads what the socket has into the free end of the buffer.
    async fn fill(&mut self) -> Result<(), FillError> {
        match self.stream.read(&mut self.buf[self.end..]).await {
            Ok(0) => Err(FillError::Eof),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) => Err(FillError::Io(e)),
        }
    }

    /// Writes one masked frame.
    pub(crate) async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let frame = masked_frame(opcode, payload);
        self.stream.write_all(&frame).await
    }
}

/// Why a read into the buffer got nothing.
enum FillError {
    Eof,
    Io(std::io::Error),
}

impl From<FillError> for ReadError {
    fn from(e: FillError) -> Self {
        match e {
            FillError::Eof => Self::Eof,
            FillError::Io(e) => Self::Io(e),
        }
    }
}

/// Parses a server frame's header at the start of `bytes`: its length and the payload's,
/// or `None` when the header is not all there yet.
fn parse_header(bytes: &[u8]) -> Result<Option<(usize, usize)>, ReadError> {
    let [_, second, ..] = *bytes else {
        return Ok(None);
    };
    if second & 0x80 != 0 {
        return Err(ReadError::Protocol("a masked frame from the server"));
    }
    let (header, len) = match second & 0x7F {
        126 => match bytes.get(2..4) {
            Some(&[a, b]) => (4, u64::from(u16::from_be_bytes([a, b]))),
            _ => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(raw) => {
                let mut be = [0; 8];
                be.copy_from_slice(raw);
                (10, u64::from_be_bytes(be))
            }
            None => return Ok(None),
        },
        short => (2, u64::from(short)),
    };
    let len = usize::try_from(len).map_err(|_| ReadError::Protocol("a frame too large"))?;
    Ok(Some((header, len)))
}

/// A complete, final, masked frame (FIN set).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frame_headers_parse() {
        assert!(matches!(parse_header(&[0x82]), Ok(None)));
        assert!(matches!(parse_header(&[0x82, 64]), Ok(Some((2, 64)))));
        assert!(matches!(parse_header(&[0x82, 126, 1]), Ok(None)));
        assert!(matches!(
            parse_header(&[0x82, 126, 1, 0]),
            Ok(Some((4, 256)))
        ));
        assert!(matches!(
            parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
            Ok(Some((10, 65_536)))
        ));
        assert!(matches!(
            parse_header(&[0x82, 0x80 | 5]),
            Err(ReadError::Protocol(_))
        ));
    }

    #[test]
    fn client_frames_are_masked() {
        let frame = masked_frame(opcode::PONG, b"hi");
        assert_eq!(frame[..2], [0x8A, 0x82]);
        assert_eq!(frame[2..6], MASK);
        assert_eq!(frame[6..], [b'h' ^ MASK[0], b'i' ^ MASK[1]]);
        let long = masked_frame(opcode::BINARY, &[0; 300]);
        assert_eq!(long[..4], [0x82, 0x80 | 126, 1, 44]);
        assert_eq!(long.len(), 4 + 4 + 300);
    }

    #[tokio::test]
    async fn frames_are_read_across_reads_and_buffer_growth() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut head = vec![0; 1024];
            let n = socket.read(&mut head).await.expect("read");
            assert!(head[..n].starts_with(b"GET /connect?x HTTP/1.1\r\n"));
            // The answer and the first frame in one write, then a frame in two halves, then a
            // frame larger than the buffer.
            let mut first = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
            first.extend_from_slice(&[0x82, 3, 1, 2, 3]);
            socket.write_all(&first).await.expect("write");
            socket.write_all(&[0x89, 2, b'p']).await.expect("write");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            socket.write_all(b"q").await.expect("write");
            let mut big = vec![0x82, 126, 0x0B, 0xB8];
            big.extend(std::iter::repeat_n(7u8, 3000));
            socket.write_all(&big).await.expect("write");
            let mut pong = [0; 8];
            socket.read_exact(&mut pong).await.expect("pong");
            assert_eq!(pong[..2], [0x8A, 0x82]);
        });
        let mut member = Member::connect(&format!("ws://{addr}/connect?x"))
            .await
            .expect("handshake");
        let frame = member.next().await.expect("frame");
        assert_eq!(
            (frame.fin, frame.opcode, frame.payload),
            (true, 2, &[1, 2, 3][..])
        );
        let frame = member.next().await.expect("ping");
        assert_eq!((frame.opcode, frame.payload), (opcode::PING, &b"pq"[..]));
        let payload = frame.payload.to_vec();
        member.send(opcode::PONG, &payload).await.expect("pong");
        let frame = member.next().await.expect("large frame");
        assert_eq!(frame.payload.len(), 3000);
        assert!(frame.payload.iter().all(|b| *b == 7));
        server.await.expect("server");
        assert!(matches!(member.next().await, Err(ReadError::Eof)));
    }
}
