//! The callback API from an unrelated HTTP client: 202, 404 after close and for unknown ids,
//! 400 for invalid UTF-8 text, 413 over the size limit, cross-origin use, 503 when full.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn unknown_ids_and_closed_connections_get_404() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let http = http_client();
        for path in ["/00000000-0000-4000-8000-000000000000", "/not-a-uuid", "/"] {
            let r = http.post(bridge.http(path)).body("x").send().await.unwrap();
            assert_eq!(r.status(), 404, "{path}");
            assert!(!r.text().await.unwrap().is_empty(), "404 has a message");
        }

        let mut client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        let callback = callback_of(&backend, &mut client).await;
        let r = http.post(&callback).body("x").send().await.unwrap();
        assert_eq!(r.status(), 202);
        client.close(None).await.unwrap();
        backend.wait_for("/disconnect", 1).await;
        let r = http.post(&callback).body("x").send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert!(r.text().await.unwrap().contains("no open connection"));
    })
    .await;
}

#[tokio::test]
async fn invalid_utf8_text_is_400_and_oversized_bodies_are_413() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--max-message-size", "1KiB"]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        let callback = callback_of(&backend, &mut client).await;
        let http = http_client();

        let r = http
            .post(&callback)
            .header("content-type", "text/plain")
            .body(vec![0xffu8, 0xfe, 0x41])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("UTF-8"));

        let r = http
            .post(&callback)
            .body(vec![7u8; 1025])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert!(r.text().await.unwrap().contains("--max-message-size"));

        // Exactly at the limit is fine; without a content length (chunked) too.
        let r = http
            .post(&callback)
            .body(vec![7u8; 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(
            next_message(&mut client).await,
            Message::binary(vec![7u8; 1024])
        );
        let chunks = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(vec![1u8; 600]))),
            Ok(http_body::Frame::data(bytes::Bytes::from(vec![2u8; 600]))),
        ]);
        let r = http
            .post(&callback)
            .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
    })
    .await;
}

#[tokio::test]
async fn callbacks_are_usable_cross_origin() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        let callback = callback_of(&backend, &mut client).await;
        let http = http_client();
        let preflight = http
            .request(reqwest::Method::OPTIONS, &callback)
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .unwrap();
        assert!(preflight.status().is_success());
        assert_eq!(
            preflight.headers()["access-control-allow-origin"]
                .to_str()
                .unwrap(),
            "*"
        );
        let methods = preflight.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap();
        assert!(methods.contains("POST"), "{methods}");
        let r = http
            .post(&callback)
            .header("origin", "https://app.example")
            .header("content-type", "text/plain")
            .body("from a browser")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(
            r.headers()["access-control-allow-origin"].to_str().unwrap(),
            "*"
        );
        assert_eq!(
            next_message(&mut client).await,
            Message::text("from a browser")
        );
    })
    .await;
}

#[tokio::test]
async fn a_full_send_queue_answers_503_with_retry_after() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--send-queue", "4"]).await;
        // A client that reads nothing: its socket buffers fill, then the queue.
        let mut client = bridge.client(&backend, "/frame", None).await;
        let callback = callback_of(&backend, &mut client).await;
        let http = http_client();
        let big = vec![0u8; 512 * 1024];
        let mut saw_503 = None;
        for i in 0..400 {
            let r = http.post(&callback).body(big.clone()).send().await.unwrap();
            if r.status() == 503 {
                saw_503 = Some((i, r.headers().get("retry-after").cloned()));
                assert!(r.text().await.unwrap().contains("queue is full"));
                break;
            }
            assert_eq!(r.status(), 202);
        }
        let (_, retry_after) = saw_503.expect("a 503 once the queue is full");
        assert_eq!(retry_after.unwrap().to_str().unwrap(), "1");
        drop(client);
    })
    .await;
}

#[tokio::test]
async fn a_base_url_with_a_path_and_trailing_slash_builds_clean_callback_urls() {
    bounded(async {
        let backend = Backend::start().await;
        let listener = bind_ephemeral().await;
        let base = format!("http://{}/push/", listener.local_addr().unwrap());
        let config = websocket_bridge::Config::from_args([
            "--allowlist",
            &backend.allowlist(),
            "--base-url",
            &base,
        ])
        .unwrap();
        let bridge = Bridge::start_with(listener, config).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        let callback = callback_of(&backend, &mut client).await;
        let prefix = format!("http://{}/push/", bridge.addr);
        assert!(callback.starts_with(&prefix), "{callback}");
        assert!(!callback[7..].contains("//"), "{callback}");
        let r = http_client()
            .post(&callback)
            .body("via path")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(
            next_message(&mut client).await,
            Message::binary(b"via path".to_vec())
        );
        // Not served at the root.
        let id = callback.rsplit('/').next().unwrap();
        let r = http_client()
            .post(bridge.http(&format!("/{id}")))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    })
    .await;
}

/// Under paused time, each 200 ms sleep ends only once the bridge has nothing left to do: it
/// has read every byte the slow caller sent.
#[tokio::test(start_paused = true)]
async fn callback_body_memory_is_bounded_by_the_bytes_that_arrived() {
    use tokio::io::AsyncWriteExt;
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(
            &backend,
            &["--callback-body-memory", "64", "--handshake-timeout", "4s"],
        )
        .await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        let callback = callback_of(&backend, &mut client).await;
        let path = path_of(&callback);

        // A caller that announces 100 bytes and sends 60 holds 60 of the 64 bytes.
        let mut slow = tcp_connect(bridge.addr).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}",
            "x".repeat(60)
        );
        slow.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;

        let r = http_client()
            .post(&callback)
            .body("0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        assert!(r.text().await.unwrap().contains("--callback-body-memory"));
        // A body that fits what is left still goes through.
        let r = http_client()
            .post(&callback)
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);

        // Once the slow caller finishes, its bytes are free again.
        slow.write_all(&[b'x'; 40]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let r = http_client()
            .post(&callback)
            .body("0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    })
    .await;
}
