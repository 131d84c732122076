//! Regression tests for the outside security review (issue 10): safe defaults that never break
//! an ordinary client, and the holes the review found, each shown over real sockets.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Item 1: with default flags, a burst far over `--max-messages-per-second` is slowed, not
/// closed: every message reaches the backend, in order.
#[tokio::test]
async fn a_burst_of_10000_messages_is_slowed_and_all_of_it_arrives_in_order() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        const N: usize = 10_000;
        for i in 0..N {
            client.feed(Message::text(i.to_string())).await.unwrap();
        }
        client.flush().await.unwrap();
        let frames = backend.wait_for("/frame", N).await;
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame.seq(), Some(i as u64));
            assert_eq!(frame.body, i.to_string().as_bytes());
        }
        client.close(None).await.unwrap();
        let d = backend.wait_for("/disconnect", 1).await;
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("client-close"));
        bridge.shutdown().await;
        assert_eq!(backend.count("/frame"), N);
    })
    .await;
}

/// Item 9: a `Retry-After` too large to add to a clock used to panic the connection task (no
/// Close, no disconnect POST, the open-connections gauge stuck). It now ends the connection
/// like any other backend failure.
#[tokio::test]
async fn a_huge_retry_after_fails_the_frame_cleanly() {
    bounded(async {
        let backend = Backend::answering(|request, _| {
            (request.path == "/frame").then(|| {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "18446744073709551615")],
                )
                    .into_response()
            })
        })
        .await;
        let allow = backend.allowlist();
        let (bridge, metrics) = Bridge::start_with_metrics(&["--allowlist", &allow]).await;
        let mut client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        send_text(&mut client, "hello").await;
        let close = expect_close(&mut client).await;
        assert_eq!(close.code, CloseCode::Error);
        let d = backend.wait_for("/disconnect", 1).await;
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("backend-error"));
        wait_for_sample(metrics, "ws_bridge_connections_open", 0.0).await;
        bridge.shutdown().await;
        assert_eq!(
            backend.count("/frame"),
            1,
            "not retried: the wait exceeds the budget"
        );
        assert_eq!(backend.count("/disconnect"), 1);
    })
    .await;
}
