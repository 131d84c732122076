//! The bridge's clients: WebSocket clients (tokio-tungstenite), raw TCP, and the HTTP client
//! that uses the callback API, plus the URLs they connect to.
//!
//! Every socket here has Nagle's algorithm off. With it on, a small write that follows another
//! one waits in the kernel for the peer's delayed ACK (up to 40 ms); paused time cannot see
//! that wait, so the virtual clock would run ahead (firing timeouts) while the bytes are held.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::backend::Backend;
use super::encode;

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a client waits for the next frame from the bridge.
const READ_WAIT: Duration = Duration::from_secs(20);

/// `ws://{addr}/connect?f=…&d=…` with both URLs query-encoded.
pub fn connect_url(addr: impl Display, frame: &str, disconnect: Option<&str>) -> String {
    let mut url = format!("ws://{addr}/connect?f={}", encode(frame));
    if let Some(d) = disconnect {
        url.push_str("&d=");
        url.push_str(&encode(d));
    }
    url
}

/// The path (and query) of `url`, for a request line written by hand.
pub fn path_of(url: &str) -> String {
    let url = url::Url::parse(url).expect("an absolute URL");
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// `url` with a connect hook: `&c={hook}`.
pub fn with_hook(url: &str, hook: &str) -> String {
    format!("{url}&c={}", encode(hook))
}

/// A TCP connection to `addr`, for tests that write raw bytes.
pub async fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    tcp
}

/// Opens a WebSocket connection (a URL or a request with headers), whatever the outcome.
pub async fn try_connect(
    request: impl IntoClientRequest + Unpin,
) -> Result<(Client, Response), WsError> {
    tokio_tungstenite::connect_async_with_config(request, None, true).await
}

/// Opens a WebSocket connection; panics unless the handshake succeeds.
pub async fn connect(url: &str) -> Client {
    let (client, response) = try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    client
}

/// Opens a WebSocket connection with extra handshake headers; the refusal's status if refused.
pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Client, StatusCode> {
    let mut request = url.into_client_request().expect("client request");
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    match try_connect(request).await {
        Ok((client, _)) => Ok(client),
        Err(WsError::Http(response)) => Err(response.status()),
        Err(e) => panic!("handshake to {url} failed without an HTTP answer: {e}"),
    }
}

/// Opens a WebSocket connection (a URL or a request with headers) and expects the handshake to
/// be refused; returns status and body.
pub async fn refused(request: impl IntoClientRequest) -> (StatusCode, String) {
    let request = request.into_client_request().expect("client request");
    let uri = request.uri().clone();
    match try_connect(request).await {
        Ok(_) => panic!("handshake to {uri} unexpectedly succeeded"),
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (response.status(), body)
        }
        Err(e) => panic!("handshake to {uri} failed without an HTTP answer: {e}"),
    }
}

/// The next data message (text or binary), skipping pings and pongs; panics on a close.
pub async fn next_message<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
) -> Message {
    loop {
        let message = tokio::time::timeout(READ_WAIT, client.next())
            .await
            .unwrap_or_else(|_| panic!("no message within {READ_WAIT:?}"))
            .expect("stream ended")
            .expect("read error");
        match message {
            Message::Text(_) | Message::Binary(_) => return message,
            Message::Close(frame) => panic!("closed by the bridge: {frame:?}"),
            _ => {}
        }
    }
}

/// Reads until the bridge's Close frame arrives and answers it, as a browser does; returns it.
/// Data messages before it are skipped.
pub async fn expect_close<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
) -> CloseFrame {
    loop {
        let message = tokio::time::timeout(READ_WAIT, client.next())
            .await
            .unwrap_or_else(|_| panic!("no close within {READ_WAIT:?}"));
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                // tungstenite queued the reply when it read the Close: send it.
                let _ = client.flush().await;
                return frame;
            }
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("read error before close: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// After `client` sent a Close: waits (5 s at most) for the bridge to answer the closing
/// handshake, with its Close or by closing the connection.
pub async fn expect_close_reply<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
) {
    let reply = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("the bridge answers a Close within 5 s");
    assert!(
        matches!(reply, Some(Ok(Message::Close(_))) | None),
        "{reply:?}"
    );
}

/// Sends a text message.
pub async fn send_text<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
    text: &str,
) {
    client.send(Message::text(text)).await.expect("send text");
}

/// Sends "hello" on `client` and returns the callback URL of the frame POST to `/frame` it
/// causes.
pub async fn callback_of(backend: &Backend, client: &mut Client) -> String {
    send_text(client, "hello").await;
    backend.callback_url("/frame").await
}

/// An HTTP client for the callback API; it follows no redirects.
pub fn http_client() -> reqwest::Client {
    websocket_bridge::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .expect("http client")
}
