//! The lean path for the request that dominates a busy bridge: a small callback `POST` over
//! HTTP/1.1 keep-alive. Each connection starts here: requests are parsed from the
//! connection's read buffer with `httparse` and, when one is such a `POST` (whole within
//! [`LEAN_REQUEST_MAX`], no `Origin`, `Expect`, `Transfer-Encoding`, `Upgrade` or
//! `Connection` other than `keep-alive`, for a connection of this node), it is answered from
//! here with a head written in one piece: no request or header map is built, no timer is set
//! while the request arrives whole. The first request of any other kind, and everything after
//! it on that connection, goes to hyper together with the bytes read so far; the answers are
//! the same either way.

use std::cell::RefCell;
use std::io::Write;
use std::ops::Range;
use std::time::SystemTime;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{App, callback_path};
use crate::callback::ApiError;
use crate::callback::whole::Target;

/// Largest request, head and body, served on the lean path; larger ones go to hyper.
pub(crate) const LEAN_REQUEST_MAX: usize = 16 * 1024;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 4096;
/// Most headers a lean request may have; one with more goes to hyper.
const MAX_HEADERS: usize = 32;

/// How the lean path left a connection.
pub(crate) enum Ended {
    /// Closed, or to be closed: the peer went away, was too slow, or shutdown started.
    Closed,
    /// Hyper serves the rest of the connection, starting with these bytes.
    HandOff(bytes::Bytes),
}

/// A callback `POST` the lean path answers.
struct LeanPost {
    target: Target,
    /// Where the `Content-Type` value is in the request.
    content_type: Option<Range<usize>>,
    /// Length of the head.
    head: usize,
    /// Length of the whole request.
    end: usize,
}

/// What the buffered bytes start with.
enum Parsed {
    /// Not a whole request head yet.
    Partial,
    /// A request for hyper.
    Other,
    /// A request for the lean path (its body may not have arrived yet).
    Post(LeanPost),
}

/// Serves requests from `io` while they are lean callback `POST`s.
pub(crate) async fn serve<IO>(app: &App, io: &mut IO) -> Ended
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    let mut answer = Vec::with_capacity(256);
    let shutdown = app.shutdown.cancelled();
    let mut shutdown = std::pin::pin!(shutdown);
    // Set while a request is partly in: all of it must arrive within --handshake-timeout.
    let mut deadline: Option<Instant> = None;
    loop {
        let pending = match parse(app, &buf) {
            Parsed::Other => return Ended::HandOff(buf.freeze()),
            Parsed::Post(post) if buf.len() >= post.end => {
                if app.shutdown.is_cancelled() {
                    // Hyper answers it and closes the connection.
                    return Ended::HandOff(buf.freeze());
                }
                deadline = None;
                let request = buf.split_to(post.end).freeze();
                let content_type = post.content_type.map(|range| &request[range]);
                let result =
                    app.callbacks
                        .post_whole(post.target, content_type, request.slice(post.head..));
                write_answer(&mut answer, result, false);
                if io.write_all(&answer).await.is_err() || io.flush().await.is_err() {
                    return Ended::Closed;
                }
                continue;
            }
            other => other,
        };
        if !buf.is_empty() && deadline.is_none() {
            deadline = Some(Instant::now() + app.handshake_timeout);
        }
        buf.reserve(READ_CHUNK);
        let read = match deadline {
            None => tokio::select! {
                read = io.read_buf(&mut buf) => read,
                () = shutdown.as_mut() => return Ended::Closed,
            },
            Some(deadline) => {
                match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => return timed_out(app, io, pending, &mut answer).await,
                }
            }
        };
        if !matches!(read, Ok(n) if n > 0) {
            return Ended::Closed;
        }
    }
}

/// A request did not arrive whole within --handshake-timeout: a missing head closes the
/// connection (as hyper does), a missing body is answered 408 first.
async fn timed_out<IO>(app: &App, io: &mut IO, pending: Parsed, answer: &mut Vec<u8>) -> Ended
where
    IO: AsyncWrite + Unpin,
{
    if let Parsed::Post(_) = pending {
        write_answer(answer, Err(app.callbacks.body_timed_out()), true);
        let _ = io.write_all(answer).await;
        let _ = io.shutdown().await;
    }
    Ended::Closed
}

/// What `buf` starts with.
fn parse(app: &App, buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head = match request.parse(buf) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) if buf.len() < LEAN_REQUEST_MAX => return Parsed::Partial,
        Ok(httparse::Status::Partial) | Err(_) => return Parsed::Other,
    };
    let (Some("POST"), Some(1), Some(target)) = (request.method, request.version, request.path)
    else {
        return Parsed::Other;
    };
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    let Some((token, None)) = callback_path(&app.callback_prefix, path) else {
        return Parsed::Other;
    };
    let Some(target) = app.callbacks.whole_target(token) else {
        return Parsed::Other;
    };
    let Some((length, content_type)) = lean_headers(request.headers, buf) else {
        return Parsed::Other;
    };
    if length > app.callbacks.max_body() || head + length > LEAN_REQUEST_MAX {
        return Parsed::Other;
    }
    Parsed::Post(LeanPost {
        target,
        content_type,
        head,
        end: head + length,
    })
}

/// The body length and where the content type is, if the headers allow the lean path.
fn lean_headers(
    headers: &[httparse::Header<'_>],
    buf: &[u8],
) -> Option<(usize, Option<Range<usize>>)> {
    let mut length = None;
    let mut content_type = None;
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = header.value;
            let valid =
                !value.is_empty() && value.len() <= 18 && value.iter().all(u8::is_ascii_digit);
            if length.is_some() || !valid {
                return None;
            }
            length = std::str::from_utf8(value).ok()?.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("content-type") {
            if content_type.is_some() {
                return None;
            }
            // The value is a slice of `buf`.
            let start = header.value.as_ptr() as usize - buf.as_ptr() as usize;
            content_type = Some(start..start + header.value.len());
        } else if name.eq_ignore_ascii_case("connection") {
            if !header.value.eq_ignore_ascii_case(b"keep-alive") {
                return None;
            }
        } else if ["transfer-encoding", "expect", "origin", "upgrade"]
            .iter()
            .any(|other| name.eq_ignore_ascii_case(other))
        {
            return None;
        }
    }
    Some((length.unwrap_or(0), content_type))
}

/// Writes the answer to a lean request into `out`, as hyper would for the same response.
fn write_answer(out: &mut Vec<u8>, result: Result<(), ApiError>, close: bool) {
    out.clear();
    let message = match result {
        Ok(()) => {
            out.extend_from_slice(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n");
            None
        }
        Err(e) => {
            let status = e.status();
            let _ = write!(
                out,
                "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            if let Some((name, value)) = e.extra_header() {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            let message = format!("{e}\n");
            let _ = write!(out, "content-length: {}\r\n", message.len());
            Some(message)
        }
    };
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    http_date(out);
    out.extend_from_slice(b"\r\n\r\n");
    if let Some(message) = message {
        out.extend_from_slice(message.as_bytes());
    }
}

/// Appends the current time as an HTTP date, formatted at most once a second per thread.
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}
