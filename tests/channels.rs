//! Channels end to end: members join through the connect hook's answer, a frame answer and
//! the callback API; one publication (GRIP JSON at `/publish/`, or a raw body at
//! `/channels/{name}`) reaches exactly the members, in order; bad requests deliver nothing;
//! the publish secret is enforced; a member that never reads is evicted with 1013 while the
//! others get everything.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use base64::Engine as _;
use common::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBE: HeaderName = HeaderName::from_static("x-ws-proxy-subscribe");
const UNSUBSCRIBE: HeaderName = HeaderName::from_static("x-ws-proxy-unsubscribe");
const REPLY: HeaderName = HeaderName::from_static("x-ws-proxy-reply");

/// A backend whose connect hook (`/hook`) joins `room`, whose `/join` answer joins `room`
/// (and replies "joined"), whose `/leave` answer leaves it (and replies "left"); everything
/// else answers 204.
async fn backend() -> Backend {
    let joins = |header: HeaderName, reply: &'static str| {
        Reply::with(move |_, _| {
            (
                StatusCode::OK,
                [
                    (header.clone(), HeaderValue::from_static("room")),
                    (REPLY, HeaderValue::from_static("true")),
                ],
                reply,
            )
        })
    };
    Backend::builder()
        .on(
            "/hook",
            Reply::with(|_, _| {
                (
                    StatusCode::OK,
                    [(SUBSCRIBE, HeaderValue::from_static("room, lobby"))],
                )
            }),
        )
        .on("/join", joins(SUBSCRIBE, "joined"))
        .on("/leave", joins(UNSUBSCRIBE, "left"))
        .start()
        .await
}

/// A client whose frame POSTs go to `frame`; returns it and its callback URL.
async fn client_at(bridge: &Bridge, backend: &Backend, frame: &str) -> (Client, String) {
    let mut client = bridge.client(backend, frame, Some("/disconnect")).await;
    send_text(&mut client, "hello").await;
    let callback = backend.callback_url(frame).await;
    (client, callback)
}

async fn publish_json(publish: &str, body: serde_json::Value) -> reqwest::Response {
    http_client()
        .post(format!("{publish}/publish/"))
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn json_of(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn text_item(channel: &str, text: &str) -> serde_json::Value {
    serde_json::json!({"channel": channel, "formats": {"ws-message": {"content": text}}})
}

#[tokio::test]
async fn one_publish_reaches_exactly_the_members_in_order() {
    bounded(async {
        let backend = backend().await;
        let (bridge, publish) = Bridge::start_with_publish(&["--allowlist", &backend.allowlist()]).await;
        let http = http_client();

        // Joined by the connect hook's answer.
        let url = with_hook(&bridge.connect_url(&backend.url("/a"), Some(&backend.url("/disconnect"))), &backend.url("/hook"));
        let mut by_hook = connect(&url).await;
        // Joined by a frame POST's answer.
        let mut by_answer = bridge.client(&backend, "/join", Some("/disconnect")).await;
        send_text(&mut by_answer, "join me").await;
        assert_eq!(next_message(&mut by_answer).await, Message::text("joined"));
        // Joined through the callback API.
        let (mut by_api, api_callback) = client_at(&bridge, &backend, "/c").await;
        let r = http.put(format!("{api_callback}/channels/room")).send().await.unwrap();
        assert_eq!(r.status(), 204);
        // In another channel only.
        let (mut outsider, outsider_callback) = client_at(&bridge, &backend, "/d").await;
        let r = http.put(format!("{outsider_callback}/channels/elsewhere")).send().await.unwrap();
        assert_eq!(r.status(), 204);

        let facts: serde_json::Value = json_of(http.get(&api_callback).send().await.unwrap()).await;
        assert_eq!(facts["channels"], serde_json::json!(["room"]));

        // 1,000 publications, alternating the two forms.
        for i in 0..1000 {
            let text = format!("m{i}");
            let r = if i % 2 == 0 {
                publish_json(&publish, serde_json::json!({"items": [text_item("room", &text)]})).await
            } else {
                http.post(format!("{publish}/channels/room"))
                    .header("content-type", "text/plain")
                    .body(text)
                    .send()
                    .await
                    .unwrap()
            };
            assert_eq!(r.status(), 200, "publication {i}");
            if i == 0 {
                let counts: serde_json::Value = json_of(r).await;
                assert_eq!(counts["recipients"], 3, "{counts}");
            }
        }
        // Binary, both forms.
        let encoded = base64::engine::general_purpose::STANDARD.encode([1u8, 2, 3]);
        let item = serde_json::json!({"channel": "room", "ws-message": {"content-bin": encoded}});
        assert_eq!(publish_json(&publish, serde_json::json!({"items": [item]})).await.status(), 200);
        let r = http.post(format!("{publish}/channels/room")).body(vec![4u8, 5, 6]).send().await.unwrap();
        assert_eq!(r.status(), 200);

        for member in [&mut by_hook, &mut by_answer, &mut by_api] {
            for i in 0..1000 {
                assert_eq!(next_message(member).await, Message::text(format!("m{i}")));
            }
            assert_eq!(next_message(member).await, Message::binary(vec![1u8, 2, 3]));
            assert_eq!(next_message(member).await, Message::binary(vec![4u8, 5, 6]));
        }
        // The outsider got none of it: the first message it sees is one sent to it directly.
        let r = http.post(&outsider_callback).body("just you").header("content-type", "text/plain").send().await.unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(next_message(&mut outsider).await, Message::text("just you"));

        // The close action closes every member with its code and reason.
        let close = serde_json::json!({"items": [{"channel": "room", "formats": {"ws-message": {"action": "close", "code": 4000, "reason": "room closed"}}}]});
        assert_eq!(publish_json(&publish, close).await.status(), 200);
        for member in [&mut by_hook, &mut by_answer, &mut by_api] {
            let frame = expect_close(member).await;
            assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4000, "room closed"));
        }
        backend.wait_for("/disconnect", 3).await;
        // A publish to a channel without members succeeds and says so.
        let empty = publish_json(&publish, serde_json::json!({"items": [text_item("room", "late")]})).await;
        assert_eq!(empty.status(), 200);
        let counts: serde_json::Value = json_of(empty).await;
        assert_eq!(counts["recipients"], 0);
        outsider.close(None).await.unwrap();
        bridge.shutdown().await;
        for disconnect in backend.assert_exactly("/disconnect", 4).iter().take(3) {
            assert_eq!(disconnect.header("x-ws-proxy-close-code"), Some("4000"));
        }
    })
    .await;
}

#[tokio::test]
async fn the_callback_api_joins_and_leaves() {
    bounded(async {
        let backend = backend().await;
        let bridge = Bridge::for_backend(&backend, &["--max-channels-per-connection", "2"]).await;
        let http = http_client();
        let (mut client, callback) = client_at(&bridge, &backend, "/a").await;
        let channels = |callback: String| async move {
            let facts = json_of(http_client().get(&callback).send().await.unwrap()).await;
            facts["channels"].clone()
        };

        assert_eq!(
            http.put(format!("{callback}/channels/b"))
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
        assert_eq!(
            http.put(format!("{callback}/channels/b"))
                .send()
                .await
                .unwrap()
                .status(),
            204,
            "joining twice is fine"
        );
        assert_eq!(
            http.put(format!("{callback}/channels/a"))
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
        let r = http
            .put(format!("{callback}/channels/c"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("--max-channels-per-connection")
        );
        assert_eq!(
            channels(callback.clone()).await,
            serde_json::json!(["a", "b"])
        );

        let r = http
            .put(format!("{callback}/channels/not%20valid"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("not 1-128 characters"));
        let r = http
            .post(format!("{callback}/channels/a"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "PUT, DELETE, OPTIONS");
        let unknown = "00000000-0000-4000-8000-000000000000";
        let r = http
            .put(bridge.http(&format!("/{unknown}/channels/a")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);

        assert_eq!(
            http.delete(format!("{callback}/channels/a"))
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
        assert_eq!(
            http.delete(format!("{callback}/channels/a"))
                .send()
                .await
                .unwrap()
                .status(),
            204,
            "leaving twice is a no-op"
        );
        assert_eq!(channels(callback.clone()).await, serde_json::json!(["b"]));

        client.close(None).await.unwrap();
        bridge.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn frame_answers_join_and_leave() {
    bounded(async {
        let backend = backend().await;
        let (bridge, publish) =
            Bridge::start_with_publish(&["--allowlist", &backend.allowlist()]).await;
        let http = http_client();
        // The /join answer joins `room`.
        let mut joiner = bridge.client(&backend, "/join", None).await;
        send_text(&mut joiner, "in").await;
        assert_eq!(next_message(&mut joiner).await, Message::text("joined"));
        // The /leave answer leaves it: a no-op first, then after joining through the API.
        let mut leaver = bridge.client(&backend, "/leave", None).await;
        send_text(&mut leaver, "x").await;
        assert_eq!(next_message(&mut leaver).await, Message::text("left"));
        let leaver_callback = backend.callback_url("/leave").await;
        assert_eq!(
            http.put(format!("{leaver_callback}/channels/room"))
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
        let r = publish_json(
            &publish,
            serde_json::json!({"items": [text_item("room", "both")]}),
        )
        .await;
        let counts: serde_json::Value = json_of(r).await;
        assert_eq!(counts["recipients"], 2);
        assert_eq!(next_message(&mut leaver).await, Message::text("both"));
        send_text(&mut leaver, "y").await;
        assert_eq!(next_message(&mut leaver).await, Message::text("left"));
        let r = publish_json(
            &publish,
            serde_json::json!({"items": [text_item("room", "after")]}),
        )
        .await;
        let counts: serde_json::Value = json_of(r).await;
        assert_eq!(counts["recipients"], 1, "only the joiner is left in room");
        assert_eq!(next_message(&mut joiner).await, Message::text("both"));
        assert_eq!(next_message(&mut joiner).await, Message::text("after"));
        joiner.close(None).await.unwrap();
        leaver.close(None).await.unwrap();
        bridge.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_bad_item_refuses_the_whole_request_and_names_it() {
    bounded(async {
        let backend = backend().await;
        let (bridge, publish) = Bridge::start_with_publish(&["--allowlist", &backend.allowlist(), "--max-message-size", "1KiB"]).await;
        let (mut member, callback) = client_at(&bridge, &backend, "/a").await;
        let http = http_client();
        assert_eq!(http.put(format!("{callback}/channels/room")).send().await.unwrap().status(), 204);

        let bad = serde_json::json!({"items": [text_item("room", "first"), {"channel": "room", "formats": {"ws-message": {"content-bin": "%%%"}}}]});
        let r = publish_json(&publish, bad).await;
        assert_eq!(r.status(), 400);
        let message = r.text().await.unwrap();
        assert!(message.contains("item 1") && message.contains("base64"), "{message}");
        let r = publish_json(&publish, serde_json::json!({"items": [text_item("no spaces", "x")]})).await;
        assert_eq!(r.status(), 400);
        let r = publish_json(&publish, serde_json::json!({"items": [text_item("room", &"x".repeat(1025))]})).await;
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("--max-message-size"));
        let r = http.post(format!("{publish}/channels/room")).body(vec![0u8; 1025]).send().await.unwrap();
        assert_eq!(r.status(), 413);
        let r = http.post(format!("{publish}/channels/a%20b")).body("x").send().await.unwrap();
        assert_eq!(r.status(), 400);
        let r = http.post(format!("{publish}/channels/room")).header("content-type", "text/plain").body(vec![0xffu8]).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let r = http.post(format!("{publish}/elsewhere")).body("x").send().await.unwrap();
        assert_eq!(r.status(), 404);
        // Trailing slash optional; a plain-text answer without Accept: json.
        let r = http.post(format!("{publish}/publish")).body(serde_json::json!({"items": [text_item("room", "good")]}).to_string()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("1 recipient"));
        // Nothing from the refused requests arrived: "good" is the first message.
        assert_eq!(next_message(&mut member).await, Message::text("good"));
        member.close(None).await.unwrap();
        bridge.shutdown().await;
    })
    .await;
}

/// An HS256 JWT over `claims`, signed with `key`.
fn jwt(key: &[u8], claims: &serde_json::Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signed = format!(
        "{}.{}",
        b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    format!(
        "{signed}.{}",
        b64.encode(ring::hmac::sign(&key, signed.as_bytes()))
    )
}

#[tokio::test]
async fn the_publish_secret_is_required_when_set() {
    bounded(async {
        let secret = "publish-secret-publish-secret-32";
        let backend = backend().await;
        let (bridge, publish) = Bridge::start_with_publish(&[
            "--allowlist",
            &backend.allowlist(),
            "--publish-secret",
            secret,
        ])
        .await;
        let http = http_client();
        let body = serde_json::json!({"items": [text_item("room", "x")]});
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let cases: Vec<(Option<String>, u16)> = vec![
            (None, 401),
            (Some("Bearer wrong".into()), 401),
            (Some(format!("Basic {secret}")), 401),
            (
                Some(format!(
                    "Bearer {}",
                    jwt(
                        secret.as_bytes(),
                        &serde_json::json!({"iss": "realm", "exp": now - 10})
                    )
                )),
                401,
            ),
            (
                Some(format!(
                    "Bearer {}",
                    jwt(
                        b"another-key-another-key-another!",
                        &serde_json::json!({"iss": "realm", "exp": now + 600})
                    )
                )),
                401,
            ),
            (Some(format!("Bearer {secret}")), 200),
            (
                Some(format!(
                    "Bearer {}",
                    jwt(
                        secret.as_bytes(),
                        &serde_json::json!({"iss": "realm", "exp": now + 600})
                    )
                )),
                200,
            ),
        ];
        for (authorization, status) in cases {
            let mut request = http
                .post(format!("{publish}/publish/"))
                .body(body.to_string());
            if let Some(value) = &authorization {
                request = request.header("authorization", value);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), status, "{authorization:?}");
            if status == 401 {
                assert_eq!(r.headers()["www-authenticate"], "Bearer");
                assert!(!r.text().await.unwrap().is_empty());
            }
        }
        let r = http
            .post(format!("{publish}/channels/room"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "the raw form needs it too");
        bridge.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_member_that_never_reads_is_evicted_and_the_others_get_everything() {
    bounded(async {
        let backend = backend().await;
        let (bridge, publish) = Bridge::start_with_publish(&["--allowlist", &backend.allowlist(), "--send-queue", "8"]).await;
        let http = http_client();
        let (mut reader, reader_callback) = client_at(&bridge, &backend, "/a").await;
        assert_eq!(http.put(format!("{reader_callback}/channels/room")).send().await.unwrap().status(), 204);

        // A raw client that completes the handshake and then never reads a byte.
        let mut sleeper = tcp_connect(bridge.addr).await;
        let frame = encode(&backend.url("/sleeper"));
        let disconnect = encode(&backend.url("/gone"));
        let head = format!(
            "GET /connect?f={frame}&d={disconnect} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        sleeper.write_all(head.as_bytes()).await.unwrap();
        // One masked text frame "hi", so the bridge POSTs and the test learns the callback URL.
        sleeper.write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]).await.unwrap();
        let sleeper_callback = backend.callback_url("/sleeper").await;
        assert_eq!(http.put(format!("{sleeper_callback}/channels/room")).send().await.unwrap().status(), 204);

        // 64 KiB messages: the sleeper's socket buffers fill, then its queue of 8, then it is
        // evicted; no publish waits for it.
        let chunk = "x".repeat(64 * 1024);
        let rounds = 400;
        let reading = tokio::spawn(async move {
            for i in 0..rounds {
                match next_message(&mut reader).await {
                    Message::Text(text) => assert_eq!(text.len(), 64 * 1024 + format!("{i}").len(), "message {i}"),
                    other => panic!("{other:?}"),
                }
            }
            reader
        });
        for i in 0..rounds {
            let r = http
                .post(format!("{publish}/channels/room"))
                .header("content-type", "text/plain")
                .body(format!("{chunk}{i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let mut reader = reading.await.unwrap();
        let gone = backend.wait_for("/gone", 1).await;
        assert_eq!(gone[0].header("x-ws-proxy-close-code"), Some("1013"));
        assert_eq!(gone[0].header("x-ws-proxy-close-cause"), Some("slow-consumer"));
        let metrics_ok = http.get(reader_callback.to_string()).send().await.unwrap().status();
        assert_eq!(metrics_ok, 200, "the reader is still connected");
        reader.close(None).await.unwrap();
        drop(sleeper);
        bridge.shutdown().await;
    })
    .await;
}
