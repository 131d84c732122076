//! Load generators: WebSocket clients of the bridge and keep-alive HTTP/1.1 posters.
//!
//! Every client socket is set to `SO_LINGER 0`, so dropping it resets the connection: the
//! bridge then discards what the client had written but it had not yet read, and a scenario
//! that ends mid-stream leaves no backlog to the next one.
//!
//! [`run_shard`] is the hidden `--client-shard` mode: a child process of the bench that opens
//! part of the idle scenario's connections, because one process may hold only so many files.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::BoxError;

/// A WebSocket client connection to the bridge.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// The bridge URL a client connects to so that its messages are POSTed to `frame_url`.
pub(crate) fn connect_url(bridge: SocketAddr, frame_url: &str) -> String {
    format!("ws://{bridge}/connect?f={}", percent_encode(frame_url))
}

/// Opens one WebSocket connection to `url` (a [`connect_url`]).
///
/// `small` picks a 4 KiB read buffer, for connections that will sit idle.
pub(crate) async fn connect(url: &str, small: bool) -> Result<Ws, BoxError> {
    let rest = url.strip_prefix("ws://").ok_or("not a ws:// URL")?;
    let authority = rest.split('/').next().ok_or("no authority")?;
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    stream.set_zero_linger()?;
    let config = if small {
        WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0)
    } else {
        WebSocketConfig::default().read_buffer_size(64 * 1024)
    };
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

/// Opens `count` connections to `url` with at most `in_flight` handshakes at once, giving up
/// at `deadline`. Returns the open connections, the number of failures and the last error.
pub(crate) async fn open_many(
    url: &str,
    count: usize,
    in_flight: usize,
    small: bool,
    deadline: tokio::time::Instant,
) -> (Vec<Ws>, usize, Option<String>) {
    let permits = Arc::new(Semaphore::new(in_flight.max(1)));
    let url: Arc<str> = Arc::from(url);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let permits = Arc::clone(&permits);
        let url = Arc::clone(&url);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            match tokio::time::timeout_at(deadline, connect(&url, small)).await {
                Ok(Ok(ws)) => Ok(ws),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("deadline reached while connecting".to_owned()),
            }
        });
    }
    let mut open = Vec::with_capacity(count);
    let mut failed = 0;
    let mut last_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(ws)) => open.push(ws),
            Ok(Err(e)) => {
                failed += 1;
                last_error = Some(e);
            }
            Err(e) => {
                failed += 1;
                last_error = Some(e.to_string());
            }
        }
    }
    (open, failed, last_error)
}

/// One keep-alive HTTP/1.1 connection used for a stream of POSTs, reconnecting when it breaks.
pub(crate) struct Poster {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Poster {
    /// A poster to `addr`; connects on first use.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let host = HeaderValue::from_str(&addr.to_string())
            .unwrap_or(HeaderValue::from_static("127.0.0.1"));
        Self {
            addr,
            host,
            sender: None,
        }
    }

    /// POSTs `body` to `path` (origin form, e.g. `/sink`) and returns the status after reading
    /// the whole answer.
    pub(crate) async fn post(
        &mut self,
        path: &Uri,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<StatusCode, BoxError> {
        let sender = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender,
            _ => {
                let stream = TcpStream::connect(self.addr).await?;
                stream.set_nodelay(true)?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                self.sender.insert(sender)
            }
        };
        let request = Request::post(path.clone())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(body))?;
        let result = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        Ok(result?)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for a query value).
pub(crate) fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The hidden `--client-shard` mode: opens `count` idle connections to `url`, prints
/// `opened OK FAILED SECONDS` on stdout, holds them until stdin closes (or `hold` passes),
/// then exits, resetting them all.
pub(crate) async fn run_shard(
    url: &str,
    count: usize,
    in_flight: usize,
    hold: Duration,
) -> Result<(), BoxError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + hold;
    let (open, failed, last_error) = open_many(url, count, in_flight, true, deadline).await;
    let line = format!(
        "opened {} {} {:.6}\n",
        open.len(),
        failed,
        started.elapsed().as_secs_f64()
    );
    let mut stdout = tokio::io::stdout();
    stdout.write_all(line.as_bytes()).await?;
    stdout.flush().await?;
    if let Some(error) = last_error {
        eprintln!("client shard: {failed} connections failed, last error: {error}");
    }
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let _ = tokio::time::timeout_at(deadline, async {
        while let Ok(Some(_)) = stdin.next_line().await {}
    })
    .await;
    drop(open);
    Ok(())
}

/// A shared event counter, cheap to bump from many tasks.
pub(crate) type Counter = Arc<AtomicU64>;

/// Reads `counter` (relaxed: the scenarios only need totals taken at a quiet moment or
/// snapshots whose skew is far below the measurement window).
pub(crate) fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_urls_are_encoded_as_query_values() {
        assert_eq!(
            connect_url(
                SocketAddr::from(([127, 0, 0, 1], 8080)),
                "http://127.0.0.1:9000/sink"
            ),
            "ws://127.0.0.1:8080/connect?f=http%3A%2F%2F127.0.0.1%3A9000%2Fsink"
        );
    }
}
