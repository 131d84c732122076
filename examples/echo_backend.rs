//! A minimal echo backend for websocket-bridge: every `POST` (to any path) is answered `200`
//! with the same body and the same `content-type`, and `x-ws-proxy-reply: true` so that empty
//! messages are echoed too.
//!
//! ```text
//! cargo run --release --example echo_backend -- 127.0.0.1:9002
//! ```
//!
//! The address argument is optional (default `127.0.0.1:9002`). Behind the bridge, with
//! `--allowlist 'http://127\.0\.0\.1:9002/.*'`, a client connected to
//! `ws://BRIDGE/connect?f=http://127.0.0.1:9002/echo` gets every message back unchanged: text
//! as text (the bridge posts `text/plain;charset=UTF-8`, and a `text/*` reply is delivered as
//! text), binary as binary. That turns the bridge into the echo server that conformance suites
//! such as Autobahn|Testsuite's `fuzzingclient` expect (`.ci/autobahn.sh`).
//!
//! Bodies of any size are accepted (axum's default 2 MB request body limit is disabled): the
//! bridge's own `--max-message-size` is the limit that matters. Other methods answer 405.
//! Once listening, the backend prints one line, `echo backend listening on http://ADDRESS`,
//! to stdout.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

/// Where the backend listens when no address is given.
const DEFAULT_ADDRESS: &str = "127.0.0.1:9002";

/// Answers a POST with its own body and content type; anything else with 405.
async fn echo(method: Method, headers: HeaderMap, body: Bytes) -> Response {
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            "only POST is echoed\n",
        )
            .into_response();
    }
    let mut response = (StatusCode::OK, body).into_response();
    // An empty body is a reply too (an empty message), not "nothing to send".
    response
        .headers_mut()
        .insert("x-ws-proxy-reply", header::HeaderValue::from_static("true"));
    match headers.get(header::CONTENT_TYPE) {
        Some(content_type) => {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
        }
        None => {
            // `Bytes` sets application/octet-stream; echo "no content type" as none.
            response.headers_mut().remove(header::CONTENT_TYPE);
        }
    }
    response
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
    if args.next().is_some() {
        eprintln!("usage: echo_backend [HOST:PORT]   (default {DEFAULT_ADDRESS})");
        return ExitCode::from(64);
    }
    let address: SocketAddr = match address.parse() {
        Ok(address) => address,
        Err(e) => {
            eprintln!("echo_backend: {address:?} is not a HOST:PORT address: {e}");
            return ExitCode::from(64);
        }
    };
    let listener = match TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("echo_backend: cannot listen on {address}: {e}");
            return ExitCode::from(69);
        }
    };
    let bound = listener.local_addr().unwrap_or(address);
    println!("echo backend listening on http://{bound}");

    let app = Router::new()
        .fallback(echo)
        .layer(DefaultBodyLimit::disable());
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_backend: server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
