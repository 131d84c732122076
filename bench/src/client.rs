//! Load generators: WebSocket clients of the bridge and keep-alive HTTP/1.1 posters.
//!
//! Every client socket is set to `SO_LINGER 0`, so dropping it resets the connection: the
//! bridge then discards what the client had written but it had not yet read, and a scenario
//! that ends mid-stream leaves no backlog to the next one.
//!
//! [`paced`] drives one connection at a set pace (the growth scenario).
//!
//! [`run_shard`] is the hidden `--client-shard` mode: a child process of the bench that opens
//! part of the idle or growth scenario's connections (and in growth sends paced messages on
//! them), because one process may hold only so many files, and one process's handshakes
//! only go so fast.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::BoxError;

/// A WebSocket client connection to the bridge.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Opens one WebSocket connection to `url` (a bridge's connect URL).
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
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
    if offer_deflate() {
        // As a browser offers it; tungstenite itself compresses nothing, so this is for
        // connections that stay idle (the `idle` scenario's memory with deflate negotiated).
        request.headers_mut().insert(
            "sec-websocket-extensions",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static(
                "permessage-deflate; client_max_window_bits",
            ),
        );
    }
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

/// `BENCH_OFFER_DEFLATE=1`: clients offer permessage-deflate in their handshake (inherited by
/// the client shard processes).
fn offer_deflate() -> bool {
    std::env::var_os("BENCH_OFFER_DEFLATE").is_some_and(|v| v == "1")
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
    let url: Arc<str> = Arc::from(url);
    open_many_with(count, in_flight, deadline, move || {
        let url = Arc::clone(&url);
        async move { connect(&url, small).await }
    })
    .await
}

/// Runs `connect` `count` times, at most `in_flight` at once, giving up at `deadline`.
/// Returns what connected, the number of failures and the last error.
pub(crate) async fn open_many_with<T, F, Fut>(
    count: usize,
    in_flight: usize,
    deadline: tokio::time::Instant,
    connect: F,
) -> (Vec<T>, usize, Option<String>)
where
    T: Send + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, BoxError>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(in_flight.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let permits = Arc::clone(&permits);
        let connecting = connect();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            match tokio::time::timeout_at(deadline, connecting).await {
                Ok(Ok(connection)) => Ok(connection),
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
            Ok(Ok(connection)) => open.push(connection),
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
        let (status, _) = self.exchange(path, content_type, None, body).await?;
        Ok(status)
    }

    /// POSTs `body` to `path` with `Accept: accept` (if given) and returns the status and the
    /// answer's body.
    pub(crate) async fn exchange(
        &mut self,
        path: &Uri,
        content_type: &'static str,
        accept: Option<&'static str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), BoxError> {
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
        let mut request = Request::post(path.clone())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, content_type);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        let request = request.body(Full::new(body))?;
        let result = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
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

/// Sends `payload` on `ws` every `interval_us` microseconds (read before each wait, so the
/// caller may change the pace), the first time after `offset`, until `stop` turns true.
/// Whatever the bridge sends is read and dropped (reading lets tungstenite answer pings).
/// `counters` are the messages sent and the connections lost.
pub(crate) async fn paced(
    mut ws: Ws,
    payload: Bytes,
    interval_us: Arc<AtomicU64>,
    offset: Duration,
    mut stop: watch::Receiver<bool>,
    counters: [Counter; 2],
) {
    let [sent, lost] = counters;
    let mut next = tokio::time::Instant::now() + offset;
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            incoming = ws.next() => match incoming {
                Some(Ok(_)) => continue,
                _ => {
                    lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            _ = stop.changed() => return,
        }
        if ws.send(Message::Binary(payload.clone())).await.is_err() {
            lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        sent.fetch_add(1, Ordering::Relaxed);
        let now = tokio::time::Instant::now();
        next += Duration::from_micros(interval_us.load(Ordering::Relaxed).max(1));
        // After a stall, go on from now rather than send a burst to catch up.
        if next < now {
            next = now;
        }
    }
}

/// What a client shard does with its connections once open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShardWork {
    /// Connections to open.
    pub(crate) count: usize,
    /// Handshakes in flight at once.
    pub(crate) in_flight: usize,
    /// Longest life of the shard.
    pub(crate) hold: Duration,
    /// Interval between one connection's messages (zero: the connections stay idle).
    pub(crate) interval: Duration,
    /// Size of each message.
    pub(crate) size: usize,
}

/// The hidden `--client-shard` mode: opens `work.count` connections to `url`, prints
/// `opened OK FAILED SECONDS` on stdout, then holds them (sending paced messages if
/// `work.interval` is not zero, spread evenly over one interval) until stdin closes or
/// `work.hold` passes, then exits, resetting them all.
pub(crate) async fn run_shard(url: &str, work: ShardWork) -> Result<(), BoxError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + work.hold;
    let (open, failed, last_error) =
        open_many(url, work.count, work.in_flight, true, deadline).await;
    let opened = open.len();
    let line = format!(
        "opened {opened} {failed} {:.6}\n",
        started.elapsed().as_secs_f64()
    );
    let mut stdout = tokio::io::stdout();
    stdout.write_all(line.as_bytes()).await?;
    stdout.flush().await?;
    if let Some(error) = last_error {
        eprintln!("client shard: {failed} connections failed, last error: {error}");
    }
    let (stop, stopped) = watch::channel(false);
    let mut senders = tokio::task::JoinSet::new();
    let mut idle = Vec::new();
    if work.interval.is_zero() {
        idle = open;
    } else {
        let interval_us = Arc::new(AtomicU64::new(work.interval.as_micros() as u64));
        let payload = Bytes::from(vec![0xA5; work.size]);
        let counters = [Counter::default(), Counter::default()];
        for (i, ws) in open.into_iter().enumerate() {
            senders.spawn(paced(
                ws,
                payload.clone(),
                Arc::clone(&interval_us),
                work.interval.mul_f64(i as f64 / opened.max(1) as f64),
                stopped.clone(),
                counters.clone(),
            ));
        }
    }
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let _ = tokio::time::timeout_at(deadline, async {
        while let Ok(Some(_)) = stdin.next_line().await {}
    })
    .await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while senders.join_next().await.is_some() {}
    })
    .await;
    drop(idle);
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
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode("http://127.0.0.1:9000/sink?a=b c"),
            "http%3A%2F%2F127.0.0.1%3A9000%2Fsink%3Fa%3Db%20c"
        );
    }
}
