//! The lean path for the request that dominates a busy bridge: a small callback `POST` over
//! HTTP/1.1 keep-alive. Each connection starts here: requests are parsed from the
//! connection's read buffer with `httparse`, and one that is such a `POST` (whole within
//! [`LEAN_REQUEST_MAX`] and its body already read, no `Origin`, `Expect`,
//! `Transfer-Encoding`, `Upgrade` or `Connection` other than `keep-alive`, for a connection of
//! this node) is answered from here with a head written in one piece: no request, header map
//! or response is built, and no timer is set. The first request of any other kind (a body
//! still on its way included, so that the bounds on callback bodies apply), and everything
//! after it on that connection, goes to hyper together with the bytes read so far. The
//! answers are the same either way (`tests/lean_path.rs` compares them).

use std::cell::RefCell;
use std::io::Write;
use std::ops::Range;
use std::time::SystemTime;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{App, callback_path};
use crate::callback::ApiError;

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

/// The head of a callback `POST` the lean path answers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head<'b> {
    /// The callback token (`{id}` or `{node}.{id}`).
    pub(crate) token: &'b str,
    /// Where the `Content-Type` value is in the request.
    pub(crate) content_type: Option<Range<usize>>,
    /// Length of the head.
    pub(crate) head: usize,
    /// Length of the whole request.
    pub(crate) end: usize,
}

/// What a connection's buffered bytes start with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'b> {
    /// Not a whole request head yet.
    Partial,
    /// A request for hyper.
    Other,
    /// A request for the lean path (its body may not have arrived yet).
    Post(Head<'b>),
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
    // Set while a request head is partly in: all of it must arrive within --handshake-timeout.
    let mut deadline: Option<Instant> = None;
    loop {
        match parse(&buf, &app.callback_prefix, app.callbacks.max_body()) {
            Parsed::Post(post) if buf.len() >= post.end => {
                let target = app.callbacks.whole_target(post.token, post.end - post.head);
                let (content_type, head, end) = (post.content_type, post.head, post.end);
                let Some(target) = target else {
                    return Ended::HandOff(buf.freeze());
                };
                deadline = None;
                let request = buf.split_to(end).freeze();
                let content_type = content_type.map(|range| &request[range]);
                let result = app
                    .callbacks
                    .post_whole(target, content_type, request.slice(head..));
                write_answer(&mut answer, result);
                if io.write_all(&answer).await.is_err() || io.flush().await.is_err() {
                    return Ended::Closed;
                }
                continue;
            }
            // A body still on its way is read by hyper, within the bounds on callback bodies.
            Parsed::Post(_) | Parsed::Other => return Ended::HandOff(buf.freeze()),
            Parsed::Partial => {}
        }
        if !buf.is_empty() && deadline.is_none() {
            deadline = Some(Instant::now() + app.handshake_timeout);
        }
        buf.reserve(READ_CHUNK);
        let read = match deadline {
            // The shutdown token is polled only while there is nothing to read: between
            // requests, where a draining bridge closes keep-alive connections.
            None => tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => read,
                () = shutdown.as_mut() => return Ended::Closed,
            },
            Some(deadline) => {
                match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
                    Ok(read) => read,
                    // Like hyper's header read timeout: closed without an answer.
                    Err(_) => return Ended::Closed,
                }
            }
        };
        if !matches!(read, Ok(n) if n > 0) {
            return Ended::Closed;
        }
    }
}

/// What `buf` starts with: the head of a lean callback `POST` for a callback URL under
/// `prefix` with a body of at most `max_body` bytes, something else, or not enough to tell.
pub(crate) fn parse<'b>(buf: &'b [u8], prefix: &str, max_body: usize) -> Parsed<'b> {
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
    let Some((token, None)) = callback_path(prefix, path) else {
        return Parsed::Other;
    };
    let Some((length, content_type)) = lean_headers(request.headers, buf) else {
        return Parsed::Other;
    };
    if length > max_body || head + length > LEAN_REQUEST_MAX {
        return Parsed::Other;
    }
    Parsed::Post(Head {
        token,
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
            length = Some(std::str::from_utf8(value).ok()?.parse::<usize>().ok()?);
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
fn write_answer(out: &mut Vec<u8>, result: Result<(), ApiError>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0d9e4c1e-8a47-4a53-9d3e-3b8f4f0b7d2a";

    fn request(extra: &str, body: &str) -> String {
        format!(
            "POST /ws/{ID} HTTP/1.1\r\nhost: b\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn lean_posts_are_recognised_with_their_content_type_and_length() {
        let text = request("Content-Type: text/plain\r\n", "hello");
        let Parsed::Post(head) = parse(text.as_bytes(), "/ws/", 1024) else {
            panic!("not lean: {text}");
        };
        assert_eq!(head.token, ID);
        assert_eq!(&text[head.content_type.clone().unwrap()], "text/plain");
        assert_eq!(
            (head.end, &text[head.head..head.end]),
            (text.len(), "hello")
        );
        let keep_alive = request("connection: Keep-Alive\r\n", "");
        assert!(matches!(
            parse(keep_alive.as_bytes(), "/ws/", 1024),
            Parsed::Post(_)
        ));
        let query = text.replacen(ID, &format!("{ID}?x=1"), 1);
        assert!(matches!(
            parse(query.as_bytes(), "/ws/", 1024),
            Parsed::Post(_)
        ));
        assert_eq!(parse(&text.as_bytes()[..20], "/ws/", 1024), Parsed::Partial);
        assert_eq!(parse(b"", "/ws/", 1024), Parsed::Partial);
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        let others = [
            request("transfer-encoding: chunked\r\n", ""),
            request("expect: 100-continue\r\n", "x"),
            request("origin: https://a.example\r\n", "x"),
            request("connection: close\r\n", "x"),
            request("upgrade: h2c\r\n", "x"),
            request("content-length: 1\r\n", "x"),
            request("content-type: a\r\ncontent-type: b\r\n", "x"),
            request("", "x").replace("HTTP/1.1", "HTTP/1.0"),
            request("", "x").replacen("POST", "PUT", 1),
            request("", "x").replacen("/ws/", "/", 1),
            request("", "x").replacen(ID, &format!("{ID}/channels/a"), 1),
            request("", "x").replacen("content-length: 1", "content-length: +1", 1),
            request("", &"x".repeat(1025)),
            format!("POST /ws/{ID} HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(40)),
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
            "GET /connect HTTP/1.1\r\n\r\n".to_owned(),
        ];
        for other in others {
            assert_eq!(
                parse(other.as_bytes(), "/ws/", 1024),
                Parsed::Other,
                "{other}"
            );
        }
        let huge = format!(
            "POST /ws/{ID} HTTP/1.1\r\nx: {}",
            "y".repeat(LEAN_REQUEST_MAX)
        );
        assert_eq!(parse(huge.as_bytes(), "/ws/", 1024), Parsed::Other);
        let big = request("", &"x".repeat(LEAN_REQUEST_MAX));
        assert_eq!(parse(big.as_bytes(), "/ws/", usize::MAX), Parsed::Other);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Parsed::Post(head) = parse(&bytes, "/", 1024) {
                prop_assert!(head.head <= head.end);
                prop_assert!(head.content_type.is_none_or(|range| range.end <= head.head));
            }
        }

        #[test]
        fn a_lean_post_is_split_where_its_body_ends(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            next in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = format!(
                "POST /0d9e4c1e-8a47-4a53-9d3e-3b8f4f0b7d2a HTTP/1.1\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            let head = bytes.len();
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(&next);
            let Parsed::Post(parsed) = parse(&bytes, "/", 1024) else {
                return Err(TestCaseError::fail("not lean"));
            };
            prop_assert_eq!((parsed.head, parsed.end), (head, head + body.len()));
        }
    }
}
