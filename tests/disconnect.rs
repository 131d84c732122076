//! Exactly one disconnect POST for every way a connection ends, with the close code, reason,
//! initiator and cause; the client sees the matching Close frame.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::http::{StatusCode, header};
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn code(r: &Recorded) -> Option<u16> {
    r.header("x-ws-proxy-close-code")
        .and_then(|c| c.parse().ok())
}

#[tokio::test]
async fn client_close_sends_one_disconnect_with_the_clients_code() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        send_text(&mut client, "one").await;
        send_text(&mut client, "two").await;
        client
            .close(Some(CloseFrame {
                code: CloseCode::Library(4001),
                reason: "done here".into(),
            }))
            .await
            .unwrap();
        // The bridge answers the closing handshake.
        expect_close_reply(&mut client).await;

        backend.wait_for("/disconnect", 1).await;
        bridge.shutdown().await;
        let d = backend.assert_exactly("/disconnect", 1);
        assert_eq!(code(&d[0]), Some(4001));
        assert_eq!(d[0].header("x-ws-proxy-close-reason"), Some("done here"));
        assert_eq!(d[0].header("x-ws-proxy-close-initiator"), Some("client"));
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("client-close"));
        let frames = backend.requests("/frame");
        assert_eq!(
            frames.len(),
            2,
            "messages sent before the close are delivered"
        );
        assert_eq!(
            d[0].header("x-ws-proxy-send"),
            frames[0].header("x-ws-proxy-send")
        );
    })
    .await;
}

#[tokio::test]
async fn client_vanishing_without_close_sends_one_disconnect() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;

        // FIN without a Close frame.
        let mut client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        send_text(&mut client, "bye").await;
        backend.wait_for("/frame", 1).await;
        drop(client);
        let d = backend.wait_for("/disconnect", 1).await;
        assert_eq!(code(&d[0]), Some(1006));
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("client-gone"));

        // RST (TCP abort).
        let client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = client.get_ref() {
            #[allow(deprecated)]
            tcp.set_linger(Some(Duration::ZERO)).unwrap();
        }
        drop(client);
        backend.wait_for("/disconnect", 2).await;
        bridge.shutdown().await;
        let d = backend.assert_exactly("/disconnect", 2);
        assert_eq!(code(&d[1]), Some(1006));
        assert_eq!(d[1].header("x-ws-proxy-close-initiator"), Some("client"));
    })
    .await;
}

#[tokio::test]
async fn backend_500_closes_with_1011_and_disconnects_once() {
    bounded(async {
        let backend = Backend::builder()
            .on("/fail", Reply::status(500))
            .start()
            .await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/fail", Some("/disconnect")).await;
        send_text(&mut client, "boom").await;
        let close = expect_close(&mut client).await;
        assert_eq!(close.code, CloseCode::Error);
        assert!(close.reason.contains("500"), "{}", close.reason);
        backend.wait_for("/disconnect", 1).await;
        bridge.shutdown().await;
        let d = backend.assert_exactly("/disconnect", 1);
        assert_eq!(code(&d[0]), Some(1011));
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("backend-error"));
        assert_eq!(d[0].header("x-ws-proxy-close-initiator"), Some("bridge"));
        backend.assert_exactly("/fail", 1);
    })
    .await;
}

/// The retries' backoff (8 retries by default) runs under paused time.
#[tokio::test(start_paused = true)]
async fn unreachable_backend_closes_with_1011_and_disconnects_once() {
    bounded(async {
        let backend = Backend::start().await;
        let allow = r"http://127\.0\.0\.1:\d+/.*";
        let bridge = Bridge::start(&["--allowlist", allow]).await;
        let frame = format!("http://127.0.0.1:{}/frame", free_port());
        let url = bridge.connect_url(&frame, Some(&backend.url("/disconnect")));
        let mut client = connect(&url).await;
        send_text(&mut client, "anyone?").await;
        let close = expect_close(&mut client).await;
        assert_eq!(close.code, CloseCode::Error);
        assert!(close.reason.contains("unreachable"), "{}", close.reason);
        backend.wait_for("/disconnect", 1).await;
        bridge.shutdown().await;
        let d = backend.assert_exactly("/disconnect", 1);
        assert_eq!(code(&d[0]), Some(1011));
    })
    .await;
}

/// The backend timeout runs under paused time.
#[tokio::test(start_paused = true)]
async fn a_backend_that_never_answers_times_out_with_1011() {
    bounded(async {
        let backend = Backend::builder().on("/hang", Reply::never()).start().await;
        let bridge = Bridge::for_backend(&backend, &["--backend-timeout", "300ms"]).await;
        let mut client = bridge.client(&backend, "/hang", Some("/disconnect")).await;
        send_text(&mut client, "hello?").await;
        let close = expect_close(&mut client).await;
        assert_eq!(close.code, CloseCode::Error);
        assert!(close.reason.contains("timed out"), "{}", close.reason);
        backend.wait_for("/disconnect", 1).await;
        bridge.shutdown().await;
        let d = backend.assert_exactly("/disconnect", 1);
        assert_eq!(code(&d[0]), Some(1011));
    })
    .await;
}

#[tokio::test]
async fn redirects_are_never_followed() {
    bounded(async {
        let backend = Backend::builder()
            .on(
                "/redirect",
                Reply::with(|_, _| {
                    (
                        StatusCode::TEMPORARY_REDIRECT,
                        [(header::LOCATION, "/frame")],
                    )
                }),
            )
            .start()
            .await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge
            .client(&backend, "/redirect", Some("/disconnect"))
            .await;
        send_text(&mut client, "follow me").await;
        let close = expect_close(&mut client).await;
        assert_eq!(close.code, CloseCode::Error);
        assert!(close.reason.contains("307"), "{}", close.reason);
        backend.wait_for("/disconnect", 1).await;
        bridge.shutdown().await;
        backend.assert_exactly("/disconnect", 1);
        assert_eq!(
            backend.requests("/frame").len(),
            0,
            "the redirect target was never requested"
        );
    })
    .await;
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_after_earlier_messages() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--max-message-size", "1KiB"]).await;
        let mut client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        send_text(&mut client, "small").await;
        client.send(Message::binary(vec![1u8; 1024])).await.unwrap();
        client.send(Message::binary(vec![1u8; 2048])).await.unwrap();
        let close = expect_close(&mut client).await;
        assert_eq!(close.code, CloseCode::Size);
        backend.wait_for("/disconnect", 1).await;
        bridge.shutdown().await;
        let d = backend.assert_exactly("/disconnect", 1);
        assert_eq!(code(&d[0]), Some(1009));
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("too-large"));
        let frames = backend.requests("/frame");
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].body.len(), 1024);
    })
    .await;
}

#[tokio::test]
async fn no_disconnect_url_means_no_disconnect_post() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        send_text(&mut client, "x").await;
        backend.wait_for("/frame", 1).await;
        client.close(None).await.unwrap();
        expect_close_reply(&mut client).await;
        bridge.shutdown().await;
        assert_eq!(backend.requests("/frame").len(), 1);
        assert!(backend.requests("/disconnect").is_empty());
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001_and_disconnects_each() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut clients = Vec::new();
        for _ in 0..5 {
            clients.push(bridge.client(&backend, "/frame", Some("/disconnect")).await);
        }
        let readers: Vec<_> = clients
            .into_iter()
            .map(|mut c| tokio::spawn(async move { expect_close(&mut c).await }))
            .collect();
        bridge.shutdown().await;
        for reader in readers {
            let close = reader.await.unwrap();
            assert_eq!(close.code, CloseCode::Away);
        }
        let d = backend.assert_exactly("/disconnect", 5);
        assert!(d.iter().all(
            |r| code(r) == Some(1001) && r.header("x-ws-proxy-close-cause") == Some("shutdown")
        ));
    })
    .await;
}
