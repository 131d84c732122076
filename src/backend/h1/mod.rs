//! A lean HTTP/1.1 client for plain `http://` backends: the hot path of every frame POST.
//!
//! Why not reqwest here: measured with callgrind (docs/PERFORMANCE.md), reqwest's layers
//! re-parsed the frame URL twice per request and moved large futures between layers, about
//! 40 % of the bridge's instructions per message. This client writes a request head built from
//! parts fixed per target (method, path, host) plus the per-request headers in one `writev`
//! with the payload (no copy of the payload), reads the answer into the pooled connection's
//! buffer and parses it with `httparse`; a body that arrives whole is handed on without a copy.
//! Keep-alive connections are pooled per `host:port`. `https://` backends keep reqwest, which
//! brings HTTP/2 by ALPN.
//!
//! Scope: what backends answer to a POST: `Content-Length`, chunked or close-delimited bodies,
//! `1xx` interim answers skipped, `Connection: close` honoured. Every exchange is bounded by the
//! caller's timeout and the body by `max_body`.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use bytes::{Buf, Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ssrf::is_forbidden;
use answer::{MAX_HEAD, parse_head, read_body};

mod answer;

/// Idle keep-alive connections kept per backend `host:port`, beyond which a returned
/// connection is closed. Under load every in-flight request holds one, so this bounds only
/// what lingers after a burst.
const MAX_IDLE_PER_HOST: usize = 256;

/// First allocation of a connection's read buffer: a typical answer head and a small body.
const READ_BUFFER: usize = 4 * 1024;

/// Why an exchange failed, in the terms the retry logic needs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    /// No connection could be made (refused, unreachable, no address).
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    /// The connection closed or reset before a whole answer arrived.
    #[error("connection lost: {0}")]
    Lost(#[source] io::Error),
    /// The answer is not HTTP/1.x as this client reads it.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    /// The answer's body is larger than allowed.
    #[error("answer body too large")]
    TooLarge,
}

/// A backend's answer: status, the few headers the bridge reads, and the whole body.
#[derive(Debug)]
pub(crate) struct H1Answer {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<HeaderValue>,
    pub(crate) retry_after: Option<HeaderValue>,
    /// `x-ws-proxy-reply: true`.
    pub(crate) explicit_reply: bool,
    /// `x-ws-proxy-subscribe` and `x-ws-proxy-unsubscribe`.
    pub(crate) channels: super::ChannelHeaders,
    pub(crate) body: Bytes,
}

/// One keep-alive connection and what has been read from it but not used.
#[derive(Debug)]
pub(super) struct Connection {
    pub(super) stream: TcpStream,
    pub(super) buf: BytesMut,
}

/// The idle connections to one backend `host:port`, and how to make new ones.
#[derive(Debug)]
pub(crate) struct HostPool {
    /// `host` or `host:port` as it goes in the `Host` header.
    authority: String,
    host: String,
    port: u16,
    deny_private_networks: bool,
    idle: Mutex<Vec<Connection>>,
}

impl HostPool {
    pub(crate) fn new(
        authority: String,
        host: String,
        port: u16,
        deny_private_networks: bool,
    ) -> Self {
        HostPool {
            authority,
            host,
            port,
            deny_private_networks,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The `Host` header's value.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends `head` and `body` and reads the answer, on a pooled connection if one is idle and
    /// still open, else on a new one. A reused connection that the backend closed while it was
    /// idle fails before any byte of an answer: the request is sent once more on a new
    /// connection (the backend saw nothing of it, or can drop the repeat by its request id).
    pub(crate) async fn exchange(
        &self,
        head: &[u8],
        body: &Bytes,
        max_body: usize,
    ) -> Result<H1Answer, H1Error> {
        if let Some(conn) = self.take_idle() {
            match exchange_on(conn, true, head, body, max_body).await {
                Ok((answer, reusable)) => {
                    self.give_back(reusable);
                    return Ok(answer);
                }
                Err(Failure::Stale) => {}
                Err(Failure::Error(e)) => return Err(e),
            }
        }
        let conn = self.connect().await?;
        match exchange_on(conn, false, head, body, max_body).await {
            Ok((answer, reusable)) => {
                self.give_back(reusable);
                Ok(answer)
            }
            Err(Failure::Stale) => Err(H1Error::Lost(io::ErrorKind::UnexpectedEof.into())),
            Err(Failure::Error(e)) => Err(e),
        }
    }

    /// An idle connection that has not been closed by the backend meanwhile.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(mut conn) = idle.pop() {
            // Readiness is known from the event loop: no system call unless the socket was
            // signalled (the backend closed it, or sent something unasked).
            let mut probe = [0u8; 1];
            match conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(conn),
                _ => {}
            }
            conn.buf.clear();
        }
        None
    }

    fn give_back(&self, conn: Option<Connection>) {
        let Some(mut conn) = conn else { return };
        if !conn.buf.is_empty() {
            // Bytes nobody asked for: the connection's state is unknown.
            return;
        }
        if conn.buf.capacity() > READ_BUFFER * 4 {
            conn.buf = BytesMut::new();
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_PER_HOST {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Connection, H1Error> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(H1Error::Connect)?
            .filter(|a| !(self.deny_private_networks && is_forbidden(a.ip())))
            .collect();
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            "the host resolves to no usable address",
        );
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(Connection {
                        stream,
                        buf: BytesMut::new(),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(H1Error::Connect(last))
    }
}

/// How one exchange on one connection failed.
enum Failure {
    /// A reused connection closed before any byte of an answer: try a new one.
    Stale,
    Error(H1Error),
}

/// Writes the request and reads the answer on `conn` (`reused`: taken from the pool); returns
/// the answer and the connection if it may be reused.
async fn exchange_on(
    mut conn: Connection,
    reused: bool,
    head: &[u8],
    body: &Bytes,
    max_body: usize,
) -> Result<(H1Answer, Option<Connection>), Failure> {
    let fresh = !reused;
    if let Err(e) = write_request(&mut conn.stream, head, body).await {
        return Err(if fresh {
            Failure::Error(H1Error::Lost(e))
        } else {
            Failure::Stale
        });
    }
    if conn.buf.capacity() == 0 {
        conn.buf.reserve(READ_BUFFER);
    }
    loop {
        let parsed = parse_head(&conn.buf).map_err(Failure::Error)?;
        let Some(head) = parsed else {
            if conn.buf.len() >= MAX_HEAD {
                return Err(Failure::Error(H1Error::Malformed("answer head too large")));
            }
            match read_more(&mut conn).await {
                Ok(0) if conn.buf.is_empty() && !fresh => return Err(Failure::Stale),
                Ok(0) => {
                    return Err(Failure::Error(H1Error::Lost(
                        io::ErrorKind::UnexpectedEof.into(),
                    )));
                }
                Ok(_) => continue,
                Err(e) if conn.buf.is_empty() && !fresh => {
                    drop(e);
                    return Err(Failure::Stale);
                }
                Err(e) => return Err(Failure::Error(H1Error::Lost(e))),
            }
        };
        conn.buf.advance(head.len);
        if head.status.is_informational() {
            continue;
        }
        let body = read_body(&mut conn, &head, max_body)
            .await
            .map_err(Failure::Error)?;
        let reusable = head.keep_alive && body.framed;
        let answer = H1Answer {
            status: head.status,
            content_type: head.content_type,
            retry_after: head.retry_after,
            explicit_reply: head.explicit_reply,
            channels: head.channels,
            body: body.bytes,
        };
        return Ok((answer, reusable.then_some(conn)));
    }
}

async fn write_request(stream: &mut TcpStream, head: &[u8], body: &Bytes) -> io::Result<()> {
    let (mut head, mut body) = (head, &body[..]);
    while !head.is_empty() {
        let written = stream
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = written.min(head.len());
        head = &head[from_head..];
        body = &body[written - from_head..];
    }
    if !body.is_empty() {
        stream.write_all(body).await?;
    }
    Ok(())
}

pub(super) async fn read_more(conn: &mut Connection) -> io::Result<usize> {
    if conn.buf.capacity() - conn.buf.len() < 1024 {
        conn.buf.reserve(READ_BUFFER);
    }
    conn.stream.read_buf(&mut conn.buf).await
}

/// Writes a request head: the request line and `Host` from the target, the fixed headers,
/// then `headers` and `content-length`.
pub(crate) fn request_head(
    out: &mut BytesMut,
    path_and_query: &str,
    authority: &str,
    headers: &[(&str, &[u8])],
    content_length: usize,
) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(
        concat!(
            "\r\nuser-agent: websocket-bridge/",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        )
        .as_bytes(),
    );
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(content_length).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_carry_host_length_and_headers() {
        let mut out = BytesMut::new();
        request_head(
            &mut out,
            "/f?x=1",
            "b.example:8080",
            &[("x-ws-proxy-seq", b"7")],
            12,
        );
        let text = String::from_utf8(out.to_vec()).unwrap_or_default();
        assert!(
            text.starts_with("POST /f?x=1 HTTP/1.1\r\nhost: b.example:8080\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nx-ws-proxy-seq: 7\r\n"), "{text}");
        assert!(text.ends_with("content-length: 12\r\n\r\n"), "{text}");
    }
}
