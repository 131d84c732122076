//! Client -> backend and backend -> client messages over real sockets: content types, bodies,
//! sequence numbers, callback header, ordering, replies in response bodies, pings.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Bytes, Message};

#[tokio::test]
async fn text_and_binary_reach_the_backend_with_their_headers() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;

        send_text(&mut client, "héllo wörld ✓ 🦀").await;
        let blob: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
        client.send(Message::binary(blob.clone())).await.unwrap();
        client
            .send(Message::binary(vec![0u8, 159, 146, 150]))
            .await
            .unwrap();

        let frames = backend.wait_for("/frame", 3).await;
        assert_eq!(
            frames[0].header("content-type"),
            Some("text/plain;charset=UTF-8")
        );
        assert_eq!(
            std::str::from_utf8(&frames[0].body).unwrap(),
            "héllo wörld ✓ 🦀"
        );
        assert_eq!(
            frames[1].header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(frames[1].body.as_ref(), blob.as_slice());
        assert_eq!(frames[2].body.as_ref(), &[0u8, 159, 146, 150]);
        let seqs: Vec<_> = frames.iter().map(|f| f.seq()).collect();
        assert_eq!(seqs, vec![Some(0), Some(1), Some(2)]);

        let callback = frames[0].header("x-ws-proxy-send").unwrap().to_owned();
        assert!(
            callback.starts_with(&format!("http://{}/", bridge.addr)),
            "{callback}"
        );
        let id = callback.rsplit('/').next().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(uuid_version(id), 4);
        assert!(
            frames
                .iter()
                .all(|f| f.header("x-ws-proxy-send") == Some(callback.as_str()))
        );
    })
    .await;
}

fn uuid_version(id: &str) -> u32 {
    id.chars().nth(14).and_then(|c| c.to_digit(16)).unwrap_or(0)
}

#[tokio::test]
async fn callbacks_deliver_text_and_binary_to_the_client() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        send_text(&mut client, "hi").await;
        let callback = backend.callback_url("/frame").await;
        let http = http_client();

        let r = http
            .post(&callback)
            .header("content-type", "text/plain; charset=utf-8")
            .body("grüße 🦀")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(next_message(&mut client).await, Message::text("grüße 🦀"));

        let blob: Vec<u8> = (0..512 * 1024).map(|i| (i % 253) as u8).collect();
        let r = http
            .post(&callback)
            .header("content-type", "application/octet-stream")
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(
            next_message(&mut client).await,
            Message::Binary(Bytes::from(blob))
        );

        // No content type at all: binary.
        let r = http.post(&callback).body("raw").send().await.unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(
            next_message(&mut client).await,
            Message::binary(b"raw".to_vec())
        );
    })
    .await;
}

#[tokio::test]
async fn ten_thousand_messages_arrive_in_order_without_gaps_or_repeats() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--max-messages-per-second", "0"]).await;
        let client = bridge.client(&backend, "/frame", None).await;
        const N: usize = 10_000;
        let (mut sink, mut stream) = client.split();
        let writer = tokio::spawn(async move {
            for i in 0..N {
                sink.feed(Message::text(i.to_string())).await.unwrap();
            }
            sink.flush().await.unwrap();
            sink
        });
        // Keep reading so pongs and closes are processed.
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        let frames = backend.wait_for("/frame", N).await;
        assert_eq!(frames.len(), N);
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame.seq(), Some(i as u64), "seq at position {i}");
            assert_eq!(frame.body, i.to_string(), "body at position {i}");
        }
        let sink = writer.await.unwrap();
        drop(sink);
        reader.abort();
        let _ = reader.await;
        bridge.shutdown().await;
        backend.assert_exactly("/frame", N);
    })
    .await;
}

#[tokio::test]
async fn a_reply_in_the_response_body_reaches_the_client_in_order() {
    bounded(async {
        let backend = Backend::builder().on("/echo", Reply::echo()).start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/echo", None).await;
        for i in 0..20 {
            send_text(&mut client, &format!("m{i}")).await;
        }
        client.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        for i in 0..20 {
            assert_eq!(
                next_message(&mut client).await,
                Message::text(format!("m{i}"))
            );
        }
        assert_eq!(
            next_message(&mut client).await,
            Message::binary(vec![1u8, 2, 3])
        );
    })
    .await;
}

#[tokio::test]
async fn pings_are_answered_and_not_forwarded() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        client
            .send(Message::Ping(Bytes::from_static(b"are you there")))
            .await
            .unwrap();
        let pong = tokio::time::timeout(std::time::Duration::from_secs(10), client.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(pong, Message::Pong(Bytes::from_static(b"are you there")));
        client
            .send(Message::Pong(Bytes::from_static(b"unsolicited")))
            .await
            .unwrap();
        send_text(&mut client, "after").await;
        let frames = backend.wait_for("/frame", 1).await;
        assert_eq!(frames[0].body, "after");
        assert_eq!(frames[0].seq(), Some(0));
        drop(client);
        bridge.shutdown().await;
        backend.assert_exactly("/frame", 1);
    })
    .await;
}

#[tokio::test]
async fn empty_messages_travel_both_ways() {
    bounded(async {
        let backend = Backend::builder().on("/echo", Reply::echo()).start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/echo", None).await;
        send_text(&mut client, "").await;
        client
            .send(Message::binary(Vec::<u8>::new()))
            .await
            .unwrap();
        // x-ws-proxy-reply: true makes an empty body a reply.
        assert_eq!(next_message(&mut client).await, Message::text(""));
        assert_eq!(
            next_message(&mut client).await,
            Message::binary(Vec::<u8>::new())
        );
        let frames = backend.wait_for("/echo", 2).await;
        assert!(frames[0].body.is_empty() && frames[1].body.is_empty());
        assert_eq!(
            frames[0].header("content-type"),
            Some("text/plain;charset=UTF-8")
        );

        // Without the header, an empty 2xx body is no reply; an empty callback POST is a message.
        let mut client = bridge.client(&backend, "/frame", None).await;
        send_text(&mut client, "").await;
        let callback = backend.callback_url("/frame").await;
        let r = http_client()
            .post(&callback)
            .header("content-type", "text/plain")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(next_message(&mut client).await, Message::text(""));
    })
    .await;
}
