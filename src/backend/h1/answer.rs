//! Reading a backend's answer: the head (`httparse`; status, the few headers the bridge uses,
//! how the body is delimited, whether the connection stays open) and the body
//! (`Content-Length`, chunked or until close), bounded in size.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue};

use super::{Connection, H1Error, read_more};
use crate::backend::ChannelHeaders;

/// Longest answer head accepted.
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// Headers kept from an answer (the rest is read past).
const MAX_HEADERS: usize = 64;

/// The parts of an answer head the bridge uses.
pub(super) struct Head {
    /// Bytes of the head, blank line included.
    pub(super) len: usize,
    pub(super) status: StatusCode,
    pub(super) content_type: Option<HeaderValue>,
    pub(super) retry_after: Option<HeaderValue>,
    pub(super) explicit_reply: bool,
    /// `x-ws-proxy-subscribe` and `x-ws-proxy-unsubscribe`.
    pub(super) channels: ChannelHeaders,
    pub(super) body: Framing,
    pub(super) keep_alive: bool,
}

/// How the answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

pub(super) fn parse_head(buf: &[u8]) -> Result<Option<Head>, H1Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(H1Error::Malformed("not an HTTP/1.x answer")),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Malformed("bad status"))?;
    let version = response.version.unwrap_or(0);
    let mut content_type = None;
    let mut retry_after = None;
    let mut explicit_reply = false;
    let mut channels = ChannelHeaders::default();
    let mut length = None;
    let mut chunked = false;
    let mut close = version == 0;
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok();
        let Some(name) = name else { continue };
        let value = header.value;
        match name.as_str() {
            "content-type" => content_type = HeaderValue::from_bytes(value).ok(),
            "retry-after" => retry_after = HeaderValue::from_bytes(value).ok(),
            "x-ws-proxy-reply" => explicit_reply = value.eq_ignore_ascii_case(b"true"),
            "x-ws-proxy-subscribe" => channels.subscribe = HeaderValue::from_bytes(value).ok(),
            "x-ws-proxy-unsubscribe" => channels.unsubscribe = HeaderValue::from_bytes(value).ok(),
            "content-length" => {
                let n = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or(H1Error::Malformed("bad content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(H1Error::Malformed("conflicting content-length"));
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                chunked = value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            "connection" => {
                for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                        close = false;
                    }
                }
            }
            _ => {}
        }
    }
    let body = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        len,
        status,
        content_type,
        retry_after,
        explicit_reply,
        channels,
        keep_alive: !close && body != Framing::UntilClose,
        body,
    }))
}

/// A read body, and whether the connection's framing is intact for reuse.
pub(super) struct Body {
    pub(super) bytes: Bytes,
    pub(super) framed: bool,
}

pub(super) async fn read_body(
    conn: &mut Connection,
    head: &Head,
    max: usize,
) -> Result<Body, H1Error> {
    match head.body {
        Framing::Empty => Ok(Body {
            bytes: Bytes::new(),
            framed: true,
        }),
        Framing::Length(n) => {
            let n = usize::try_from(n).map_err(|_| H1Error::TooLarge)?;
            if n > max {
                return Err(H1Error::TooLarge);
            }
            while conn.buf.len() < n {
                conn.buf.reserve(n - conn.buf.len());
                if read_more(conn).await.map_err(H1Error::Lost)? == 0 {
                    return Err(H1Error::Lost(io::ErrorKind::UnexpectedEof.into()));
                }
            }
            Ok(Body {
                bytes: conn.buf.split_to(n).freeze(),
                framed: true,
            })
        }
        Framing::UntilClose => {
            while read_more(conn).await.map_err(H1Error::Lost)? > 0 {
                if conn.buf.len() > max {
                    return Err(H1Error::TooLarge);
                }
            }
            Ok(Body {
                bytes: conn.buf.split().freeze(),
                framed: false,
            })
        }
        Framing::Chunked => read_chunked(conn, max).await,
    }
}

async fn read_chunked(conn: &mut Connection, max: usize) -> Result<Body, H1Error> {
    let mut body = BytesMut::new();
    loop {
        // Chunk size line.
        let line_end = loop {
            if let Some(i) = conn.buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if conn.buf.len() > 1024 {
                return Err(H1Error::Malformed("chunk size line too long"));
            }
            if read_more(conn).await.map_err(H1Error::Lost)? == 0 {
                return Err(H1Error::Lost(io::ErrorKind::UnexpectedEof.into()));
            }
        };
        let size_text = std::str::from_utf8(&conn.buf[..line_end])
            .ok()
            .map(|l| l.split(';').next().unwrap_or("").trim())
            .ok_or(H1Error::Malformed("bad chunk size"))?;
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| H1Error::Malformed("bad chunk size"))?;
        conn.buf.advance(line_end + 2);
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                if let Some(i) = conn.buf.windows(2).position(|w| w == b"\r\n") {
                    conn.buf.advance(i + 2);
                    if i == 0 {
                        return Ok(Body {
                            bytes: body.freeze(),
                            framed: true,
                        });
                    }
                    continue;
                }
                if read_more(conn).await.map_err(H1Error::Lost)? == 0 {
                    return Err(H1Error::Lost(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
        if body.len() + size > max {
            return Err(H1Error::TooLarge);
        }
        while conn.buf.len() < size + 2 {
            if read_more(conn).await.map_err(H1Error::Lost)? == 0 {
                return Err(H1Error::Lost(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        body.extend_from_slice(&conn.buf[..size]);
        if &conn.buf[size..size + 2] != b"\r\n" {
            return Err(H1Error::Malformed("chunk without CRLF"));
        }
        conn.buf.advance(size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_with_their_framing() {
        let head = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        )
        .ok()
        .flatten();
        let head = head.unwrap_or_else(|| panic!("complete head"));
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.body, Framing::Length(5));
        assert!(head.keep_alive);
        assert_eq!(
            head.content_type.as_ref().map(|v| v.as_bytes()),
            Some(&b"text/plain"[..])
        );
        let chunked = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .ok()
        .flatten();
        assert!(chunked.is_some_and(|h| h.body == Framing::Chunked && !h.keep_alive));
        let old = parse_head(b"HTTP/1.0 204 No Content\r\n\r\n")
            .ok()
            .flatten();
        assert!(old.is_some_and(|h| h.body == Framing::Empty && !h.keep_alive));
        let open = parse_head(b"HTTP/1.1 200 OK\r\n\r\n").ok().flatten();
        assert!(open.is_some_and(|h| h.body == Framing::UntilClose && !h.keep_alive));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"),
            Ok(None)
        ));
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .is_err()
        );
    }
}
