//! Connection lifecycle and control over real sockets: the connect hook (refusal, subprotocol,
//! first message, forwarded headers, failures), replies in bodies keeping order with callback
//! messages, DELETE and GET on the callback URL, keepalive and idle timeout, lifetime, drain.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The connect URL for frames to `/frame`, disconnects to `/disconnect` and the hook `hook`,
/// all on `backend`.
fn hooked(bridge: &Bridge, backend: &Backend, hook: &str) -> String {
    let url = bridge.connect_url(&backend.url("/frame"), Some(&backend.url("/disconnect")));
    with_hook(&url, &backend.url(hook))
}

#[tokio::test]
async fn a_hook_that_refuses_with_401_shows_its_body_to_the_client() {
    bounded(async {
        let backend = Backend::builder()
            .on(
                "/connect",
                Reply::with(|_, _| {
                    (
                        StatusCode::UNAUTHORIZED,
                        [(header::CONTENT_TYPE, "text/plain")],
                        "bad token: log in first",
                    )
                }),
            )
            .start()
            .await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let (status, body) = refused(&hooked(&bridge, &backend, "/connect")).await;
        assert_eq!(status, 401);
        assert_eq!(body, "bad token: log in first");
        backend.wait_for("/connect", 1).await;
        bridge.shutdown().await;
        assert!(
            backend.requests("/disconnect").is_empty(),
            "never opened: no disconnect"
        );
    })
    .await;
}

#[tokio::test]
async fn the_hook_sees_the_handshake_headers_and_selects_a_subprotocol_and_first_message() {
    bounded(async {
        let backend = Backend::builder()
            .on(
                "/connect",
                Reply::with(|_, _| {
                    (
                        StatusCode::OK,
                        [
                            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                            (header::SEC_WEBSOCKET_PROTOCOL, "chat.v2"),
                        ],
                        "welcome",
                    )
                }),
            )
            .start()
            .await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut request = hooked(&bridge, &backend, "/connect")
            .into_client_request()
            .unwrap();
        let h = request.headers_mut();
        h.insert(
            "sec-websocket-protocol",
            "chat.v1, chat.v2".parse().unwrap(),
        );
        h.insert("cookie", "session=abc".parse().unwrap());
        h.insert("authorization", "Bearer t0ken".parse().unwrap());
        h.insert("origin", "https://app.example".parse().unwrap());
        h.insert("user-agent", "test-agent/1".parse().unwrap());
        h.insert(
            "x-ws-proxy-send",
            "http://spoofed.example/".parse().unwrap(),
        );
        h.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        let (mut client, response) = try_connect(request).await.unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v2");
        assert_eq!(next_message(&mut client).await, Message::text("welcome"));

        let hook = &backend.wait_for("/connect", 1).await[0];
        assert_eq!(hook.header("cookie"), Some("session=abc"));
        assert_eq!(hook.header("authorization"), Some("Bearer t0ken"));
        assert_eq!(hook.header("origin"), Some("https://app.example"));
        assert_eq!(hook.header("user-agent"), Some("test-agent/1"));
        assert_eq!(
            hook.header("sec-websocket-protocol"),
            Some("chat.v1, chat.v2")
        );
        // The client's own X-Forwarded-For is a claim, not a fact (no --trusted-proxy here):
        // the bridge sends the address it saw.
        assert_eq!(hook.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(hook.header("x-forwarded-proto"), Some("http"));
        assert!(hook.header("sec-websocket-key").is_none());
        assert!(hook.header("upgrade").is_none());
        let uri = hook.header("x-ws-proxy-request-uri").unwrap();
        assert!(uri.starts_with("/connect?f="), "{uri}");
        let callback = hook.header("x-ws-proxy-send").unwrap().to_owned();
        assert!(
            callback.starts_with(&format!("http://{}/", bridge.addr)),
            "not spoofed: {callback}"
        );

        // The callback URL the hook saw is the connection's.
        send_text(&mut client, "hi").await;
        let frame = &backend.wait_for("/frame", 1).await[0];
        assert_eq!(frame.header("x-ws-proxy-send"), Some(callback.as_str()));
        let body = http_client()
            .get(&callback)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(info["subprotocol"], "chat.v2");
    })
    .await;
}

/// The backend timeout runs under paused time.
#[tokio::test(start_paused = true)]
async fn hook_failures_map_to_502_and_504() {
    bounded(async {
        let backend = Backend::builder()
            .on(
                "/badproto",
                Reply::with(|_, _| {
                    (
                        StatusCode::OK,
                        [(header::SEC_WEBSOCKET_PROTOCOL, "not-offered")],
                    )
                }),
            )
            .on("/hang", Reply::never())
            .start()
            .await;
        let bridge = Bridge::for_backend(&backend, &["--backend-timeout", "300ms"]).await;

        let mut request = hooked(&bridge, &backend, "/badproto")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "a, b".parse().unwrap());
        let (status, body) = refused(request).await;
        assert_eq!(status, 502);
        assert!(body.contains("did not offer"), "{body}");

        let (status, body) = refused(&hooked(&bridge, &backend, "/hang")).await;
        assert_eq!(status, 504, "{body}");

        let any_port = Bridge::start(&["--allowlist", r"http://127\.0\.0\.1:\d+/.*"]).await;
        let url = with_hook(
            &any_port.connect_url(&backend.url("/frame"), Some(&backend.url("/disconnect"))),
            &format!("http://127.0.0.1:{}/hook", free_port()),
        );
        let (status, body) = refused(&url).await;
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("unreachable"), "{body}");
        bridge.shutdown().await;
        any_port.shutdown().await;
        assert!(
            backend.requests("/disconnect").is_empty(),
            "never opened: no disconnect"
        );
    })
    .await;
}

#[tokio::test]
async fn body_replies_keep_order_with_callback_messages() {
    bounded(async {
        // Sends "A<body>" through the callback URL, then answers "B<body>".
        let backend = Backend::builder()
            .on(
                "/frame",
                Reply::with_async(|request, _| async move {
                    let text = String::from_utf8_lossy(&request.body).into_owned();
                    let callback = request.header("x-ws-proxy-send").unwrap();
                    let sent = http_client()
                        .post(callback)
                        .header(header::CONTENT_TYPE, "text/plain")
                        .body(format!("A{text}"))
                        .send()
                        .await;
                    assert_eq!(sent.map(|r| r.status().as_u16()).ok(), Some(202));
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "text/plain")],
                        format!("B{text}"),
                    )
                        .into_response()
                }),
            )
            .start()
            .await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        for i in 0..10 {
            send_text(&mut client, &i.to_string()).await;
        }
        for i in 0..10 {
            assert_eq!(
                next_message(&mut client).await,
                Message::text(format!("A{i}"))
            );
            assert_eq!(
                next_message(&mut client).await,
                Message::text(format!("B{i}"))
            );
        }
    })
    .await;
}

#[tokio::test]
async fn delete_closes_with_code_and_reason_after_earlier_messages() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        send_text(&mut client, "hello").await;
        let callback = backend.callback_url("/frame").await;
        let http = http_client();

        for bad in ["code=1001", "code=2000", "code=abc", "reason=%FF"] {
            let r = http
                .delete(format!("{callback}?{bad}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{bad}");
        }
        let long = "x".repeat(124);
        let r = http
            .delete(format!("{callback}?reason={long}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);

        for i in 0..3 {
            let r = http
                .post(&callback)
                .header("content-type", "text/plain")
                .body(format!("before {i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
        let r = http
            .delete(format!(
                "{callback}?code=4000&reason={}",
                encode("room closed ✓")
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        for i in 0..3 {
            assert_eq!(
                next_message(&mut client).await,
                Message::text(format!("before {i}"))
            );
        }
        let close = expect_close(&mut client).await;
        assert_eq!(close.code, CloseCode::Library(4000));
        assert_eq!(close.reason.as_str(), "room closed ✓");

        let d = backend.wait_for("/disconnect", 1).await;
        assert_eq!(d[0].header("x-ws-proxy-close-code"), Some("4000"));
        assert_eq!(
            d[0].header("x-ws-proxy-close-reason"),
            Some("room closed %E2%9C%93")
        );
        assert_eq!(d[0].header("x-ws-proxy-close-initiator"), Some("backend"));
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("backend-close"));
        // The callback URL is unregistered before the disconnect POST is sent.
        assert_eq!(http.delete(&callback).send().await.unwrap().status(), 404);
        assert_eq!(http.get(&callback).send().await.unwrap().status(), 404);
        bridge.shutdown().await;
        backend.assert_exactly("/disconnect", 1);
    })
    .await;
}

#[tokio::test]
async fn get_reports_counts_in_each_direction() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        send_text(&mut client, "abc").await;
        send_text(&mut client, "de").await;
        send_text(&mut client, "f").await;
        let callback = backend.wait_for("/frame", 3).await[0]
            .header("x-ws-proxy-send")
            .unwrap()
            .to_owned();
        let http = http_client();
        for body in ["1234", "56"] {
            http.post(&callback).body(body).send().await.unwrap();
        }
        next_message(&mut client).await;
        next_message(&mut client).await;
        let r = http.get(&callback).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let info: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(info["id"], callback.rsplit('/').next().unwrap());
        assert_eq!(info["messages_in"], 3);
        assert_eq!(info["bytes_in"], 6);
        assert_eq!(info["messages_out"], 2);
        assert_eq!(info["bytes_out"], 6);
        assert_eq!(info["subprotocol"], serde_json::Value::Null);
        let connected_at = info["connected_at"].as_str().unwrap();
        let last = info["last_activity"].as_str().unwrap();
        assert!(
            humantime::parse_rfc3339(connected_at).is_ok(),
            "{connected_at}"
        );
        assert!(humantime::parse_rfc3339(last).is_ok(), "{last}");
        assert!(last >= connected_at);
    })
    .await;
}

/// Pings and the idle timeout run under paused time.
#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_by_the_idle_timeout_and_an_answering_one_is_not() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(
            &backend,
            &["--ping-interval", "100ms", "--idle-timeout", "1500ms"],
        )
        .await;

        // This one reads (so tungstenite answers every ping) for well past the idle timeout.
        let mut lively = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_millis(2500);
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, lively.next()).await {
            match message {
                Message::Ping(_) => pings += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            pings >= 5,
            "the bridge pings every interval ({pings} pings)"
        );
        // Not a sleep: had the bridge closed this client, the loop above would have read the
        // Close (and panicked).
        assert!(
            backend.requests("/disconnect").is_empty(),
            "answering client stays open"
        );

        // This one never reads, so it never answers a ping.
        let mut silent = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let close = expect_close(&mut silent).await;
        assert_eq!(close.code, CloseCode::Away);
        assert_eq!(close.reason.as_str(), "idle timeout");
        let d = backend.wait_for("/disconnect", 1).await;
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("idle-timeout"));
        assert_eq!(d[0].header("x-ws-proxy-close-initiator"), Some("bridge"));
        drop(lively);
    })
    .await;
}

/// The lifetime runs under paused time.
#[tokio::test(start_paused = true)]
async fn connections_older_than_the_lifetime_are_closed_with_1001() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--max-connection-lifetime", "300ms"]).await;
        let mut client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        let close = expect_close(&mut client).await;
        assert_eq!(close.code, CloseCode::Away);
        let d = backend.wait_for("/disconnect", 1).await;
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("lifetime"));
    })
    .await;
}

/// The backend timeout that keeps the drain going runs under paused time.
#[tokio::test(start_paused = true)]
async fn while_draining_readyz_is_503_and_new_handshakes_are_refused() {
    bounded(async {
        let backend = Backend::builder().on("/hang", Reply::never()).start().await;
        let bridge = Bridge::for_backend(&backend, &["--backend-timeout", "2s"]).await;
        let addr = bridge.addr;
        // A message stuck at a backend that never answers keeps the drain going for ~2 s.
        let mut client = bridge.client(&backend, "/hang", Some("/disconnect")).await;
        send_text(&mut client, "stuck").await;
        backend.wait_for("/hang", 1).await;
        let http = http_client();
        assert_eq!(
            http.get(format!("http://{addr}/readyz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let shutdown = tokio::spawn(bridge.shutdown());
        let close = expect_close(&mut client).await;
        assert_eq!(close.code, CloseCode::Away);
        let r = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let (status, body) = refused(&connect_url(addr, &backend.url("/frame"), None)).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(
            http.get(format!("http://{addr}/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        shutdown.await.unwrap();
        let d = backend.assert_exactly("/disconnect", 1);
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("shutdown"));
    })
    .await;
}
