//! `--route`: paths bound to backends by the operator (no allowlist needed), with the seed
//! protocol or Pushpin's WebSocket-over-HTTP (issue 15): the OPEN handshake and its refusal,
//! events both ways, `Connection-Id` and `Meta-*`, batching without delay, GRIP control
//! messages (subscribe, set-meta, close), the backend's CLOSE and the client's.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use common::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// One WebSocket-over-HTTP event, as the tests read and write them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Open,
    Text(String),
    Binary(Vec<u8>),
    Close(Option<u16>, String),
    Disconnect,
    Other(String),
}

fn encode(events: &[Ev]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |kind: &str, content: Option<&[u8]>| match content {
        None => out.extend_from_slice(format!("{kind}\r\n").as_bytes()),
        Some(c) => {
            out.extend_from_slice(format!("{kind} {:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
    };
    for e in events {
        match e {
            Ev::Open => put("OPEN", None),
            Ev::Text(t) => put("TEXT", Some(t.as_bytes())),
            Ev::Binary(b) => put("BINARY", Some(b)),
            Ev::Close(code, reason) => {
                let mut c = Vec::new();
                if let Some(code) = code {
                    c.extend_from_slice(&code.to_be_bytes());
                    c.extend_from_slice(reason.as_bytes());
                }
                put("CLOSE", Some(&c));
            }
            Ev::Disconnect => put("DISCONNECT", None),
            Ev::Other(kind) => put(kind, None),
        }
    }
    out
}

fn decode(mut body: &[u8]) -> Vec<Ev> {
    let mut events = Vec::new();
    while !body.is_empty() {
        let eol = body.windows(2).position(|w| w == b"\r\n").expect("CRLF");
        let line = std::str::from_utf8(&body[..eol]).unwrap().to_owned();
        body = &body[eol + 2..];
        let (kind, content) = match line.split_once(' ') {
            None => (line.as_str(), Vec::new()),
            Some((kind, len)) => {
                let len = usize::from_str_radix(len, 16).unwrap();
                let content = body[..len].to_vec();
                assert_eq!(&body[len..len + 2], b"\r\n");
                body = &body[len + 2..];
                (kind, content)
            }
        };
        events.push(match kind {
            "OPEN" => Ev::Open,
            "TEXT" => Ev::Text(String::from_utf8(content).unwrap()),
            "BINARY" => Ev::Binary(content),
            "CLOSE" if content.len() >= 2 => Ev::Close(
                Some(u16::from_be_bytes([content[0], content[1]])),
                String::from_utf8(content[2..].to_vec()).unwrap(),
            ),
            "CLOSE" => Ev::Close(None, String::new()),
            "DISCONNECT" => Ev::Disconnect,
            other => Ev::Other(other.to_owned()),
        });
    }
    events
}

/// An answer with these events and headers.
fn events_answer(events: &[Ev], headers: &[(&'static str, &str)]) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = (StatusCode::OK, encode(events)).into_response();
    let h = response.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/websocket-events"),
    );
    for (name, value) in headers {
        h.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    response
}

/// A websocket-over-http backend at `/ws/...`: answers OPEN with OPEN (and the `grip`
/// extension, a meta value), echoes TEXT as `m:`-prefixed TEXT, turns `join` into a GRIP
/// subscribe, `bye` into a CLOSE 4001, and acknowledges CLOSE with CLOSE.
async fn woh_backend() -> Backend {
    Backend::builder()
        .on(
            "/ws/room",
            Reply::with(|request, _| {
                let events = decode(&request.body);
                let mut out = Vec::new();
                for e in &events {
                    match e {
                        Ev::Open => out.push(Ev::Open),
                        Ev::Text(t) if t == "join" => out.push(Ev::Text(
                            r#"c:{"type":"subscribe","channel":"room"}"#.to_owned(),
                        )),
                        Ev::Text(t) if t == "bye" => {
                            out.push(Ev::Close(Some(4001), "bye".to_owned()))
                        }
                        Ev::Text(t) => out.push(Ev::Text(format!("m:echo {t}"))),
                        Ev::Close(code, _) => out.push(Ev::Close(*code, String::new())),
                        _ => {}
                    }
                }
                let headers: &[(&'static str, &str)] = if events.first() == Some(&Ev::Open) {
                    &[
                        ("sec-websocket-extensions", "grip"),
                        ("set-meta-user", "alice"),
                    ]
                } else {
                    &[]
                };
                events_answer(&out, headers)
            }),
        )
        .on(
            "/ws/refused",
            Reply::with(|_, _| (StatusCode::FORBIDDEN, "no entry for you")),
        )
        .on(
            "/ws/not-open",
            Reply::with(|_, _| events_answer(&[Ev::Text("hi".into())], &[])),
        )
        .start()
        .await
}

fn text(message: Message) -> String {
    match message {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test]
async fn a_seed_route_needs_no_allowlist_and_passes_the_request_uri() {
    bounded(async {
        let backend = Backend::builder().on("/frame", Reply::echo()).start().await;
        let route = format!(
            "/chat/={},disconnect={}",
            backend.url("/frame"),
            backend.url("/gone")
        );
        let bridge = Bridge::start(&["--route", &route]).await;
        let mut client = connect(&format!("ws://{}/chat/lobby?user=7", bridge.addr)).await;
        send_text(&mut client, "hi").await;
        assert_eq!(text(next_message(&mut client).await), "hi");
        let frames = backend.wait_for("/frame", 1).await;
        assert_eq!(
            frames[0].header("x-ws-proxy-request-uri"),
            Some("/chat/lobby?user=7")
        );
        client.close(None).await.unwrap();
        let gone = backend.wait_for("/gone", 1).await;
        assert_eq!(
            gone[0].header("x-ws-proxy-request-uri"),
            Some("/chat/lobby?user=7")
        );
        // An unrouted path is still a 404, and /connect still needs the allowlist.
        let (status, _) = refused(format!("ws://{}/other", bridge.addr)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = refused(connect_url(bridge.addr, &backend.url("/frame"), None)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        bridge.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn websocket_over_http_open_events_meta_and_close() {
    bounded(async {
        let backend = woh_backend().await;
        let route = format!("/ws/={},protocol=websocket-over-http", backend.url("/ws/"));
        let (bridge, publish) = Bridge::start_with_publish(&["--route", &route]).await;
        let mut client = connect(&format!("ws://{}/ws/room?k=v", bridge.addr)).await;

        let open = backend.wait_for("/ws/room", 1).await;
        assert_eq!(decode(&open[0].body), vec![Ev::Open]);
        assert_eq!(
            open[0].header("content-type"),
            Some("application/websocket-events")
        );
        let connection_id = open[0].header("connection-id").unwrap().to_owned();

        send_text(&mut client, "hello").await;
        assert_eq!(text(next_message(&mut client).await), "echo hello");
        let second = &backend.wait_for("/ws/room", 2).await[1];
        assert_eq!(decode(&second.body), vec![Ev::Text("hello".into())]);
        assert_eq!(second.header("connection-id"), Some(connection_id.as_str()));
        assert_eq!(second.header("meta-user"), Some("alice"), "Set-Meta-User");

        // GRIP subscribe, then a publish reaches the client.
        send_text(&mut client, "join").await;
        backend.wait_for("/ws/room", 3).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let r = http_client()
                .post(format!("{publish}/channels/room"))
                .header("content-type", "text/plain")
                .body("published")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            if r.text().await.unwrap().contains("to 1 recipient") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never subscribed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(text(next_message(&mut client).await), "published");

        // The backend's CLOSE closes the client with its code.
        send_text(&mut client, "bye").await;
        let frame = expect_close(&mut client).await;
        assert_eq!(frame.code, CloseCode::from(4001));
        // The last request is a CLOSE.
        backend.wait_for("/ws/room", 5).await;
        bridge.shutdown().await;
        let all = backend.requests("/ws/room");
        let last = decode(&all.last().unwrap().body);
        assert!(
            matches!(last.last(), Some(Ev::Close(Some(4001), _))),
            "{last:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_client_close_is_sent_as_close_and_a_lost_client_as_disconnect() {
    bounded(async {
        let backend = woh_backend().await;
        let route = format!("/ws/={},protocol=websocket-over-http", backend.url("/ws/"));
        let bridge = Bridge::start(&["--route", &route]).await;
        let mut client = connect(&format!("ws://{}/ws/room", bridge.addr)).await;
        client
            .close(Some(CloseFrame {
                code: CloseCode::from(4000),
                reason: "done".into(),
            }))
            .await
            .unwrap();
        expect_close_reply(&mut client).await;
        let requests = backend.wait_for("/ws/room", 2).await;
        assert_eq!(
            decode(&requests[1].body),
            vec![Ev::Close(Some(4000), "done".into())]
        );

        let client = tcp_connect(bridge.addr).await;
        let mut raw = client;
        use tokio::io::AsyncWriteExt;
        raw.write_all(b"GET /ws/room HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
        backend.wait_for("/ws/room", 3).await;
        drop(raw);
        let requests = backend.wait_for("/ws/room", 4).await;
        assert_eq!(decode(&requests[3].body), vec![Ev::Disconnect]);
        bridge.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_burst_goes_in_few_requests_in_order() {
    bounded(async {
        let backend = Backend::builder()
            .on(
                "/ws/room",
                Reply::with(|request, _| {
                    let events = decode(&request.body);
                    if events.first() == Some(&Ev::Open) {
                        return events_answer(&[Ev::Open], &[]);
                    }
                    events_answer(&[], &[])
                }),
            )
            .start()
            .await;
        let route = format!("/ws/={},protocol=websocket-over-http", backend.url("/ws/"));
        let bridge = Bridge::start(&["--route", &route]).await;
        let mut client = connect(&format!("ws://{}/ws/room", bridge.addr)).await;
        use futures_util::SinkExt;
        for i in 0..1000 {
            client.feed(Message::text(format!("{i}"))).await.unwrap();
        }
        client.flush().await.unwrap();
        client.close(None).await.unwrap();
        expect_close_reply(&mut client).await;
        bridge.shutdown().await;
        let requests = backend.requests("/ws/room");
        let texts: Vec<String> = requests
            .iter()
            .flat_map(|r| decode(&r.body))
            .filter_map(|e| match e {
                Ev::Text(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(texts, (0..1000).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(
            requests.len() < 1000,
            "{} requests for 1,000 messages: no batching",
            requests.len()
        );
        eprintln!("1,000 messages in {} requests", requests.len());
    })
    .await;
}

#[tokio::test]
async fn the_open_request_is_refused_with_the_backends_answer() {
    bounded(async {
        let backend = woh_backend().await;
        let route = format!("/ws/={},protocol=websocket-over-http", backend.url("/ws/"));
        let bridge = Bridge::start(&["--route", &route]).await;
        let (status, body) = refused(format!("ws://{}/ws/refused", bridge.addr)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, "no entry for you");
        let (status, body) = refused(format!("ws://{}/ws/not-open", bridge.addr)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(body.contains("OPEN"), "{body}");
        bridge.shutdown().await;
    })
    .await;
}

#[test]
fn route_tables_in_the_configuration_file_are_routes() {
    let dir = scratch_dir("route-config");
    let path = dir.join("bridge.toml");
    std::fs::write(
        &path,
        "[[route]]\npath = \"/ws/\"\ntarget = \"http://127.0.0.1:9/\"\nprotocol = \"websocket-over-http\"\n\n[[route]]\npath = \"/chat\"\ntarget = \"http://127.0.0.1:9/frame\"\n",
    )
    .unwrap();
    let cli = websocket_bridge::Cli::parse_layered([
        "websocket-bridge",
        "--config",
        path.to_str().unwrap(),
    ])
    .unwrap();
    let described = cli.describe();
    assert!(
        described.contains(r#"route = ["/ws/=http://127.0.0.1:9/,protocol=websocket-over-http", "/chat=http://127.0.0.1:9/frame"]"#),
        "{described}"
    );
    let config = websocket_bridge::Config::try_from(cli);
    assert!(config.is_ok(), "{:?}", config.err());
    std::fs::write(&path, "[[route]]\npath = \"/ws/\"\n").unwrap();
    let e = websocket_bridge::Cli::parse_layered([
        "websocket-bridge",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert!(e.is_err_and(|e| e.to_string().contains("target")));
}

/// A backend that accepts OPEN with `Keep-Alive-Interval: 1`, takes only 2 content bytes of the
/// first message, and everything after.
async fn partial_backend() -> Backend {
    Backend::builder()
        .on(
            "/ws/partial",
            Reply::with(|request, n| {
                let events = decode(&request.body);
                if events.first() == Some(&Ev::Open) {
                    return events_answer(&[Ev::Open], &[("keep-alive-interval", "1")]);
                }
                if n == 2 {
                    return events_answer(&[], &[("content-bytes-accepted", "2")]);
                }
                events_answer(&[], &[])
            }),
        )
        .start()
        .await
}

#[tokio::test]
async fn partial_acceptance_replays_the_rest_and_keep_alives_are_sent() {
    bounded(async {
        let backend = partial_backend().await;
        let route = format!("/ws/={},protocol=websocket-over-http", backend.url("/ws/"));
        let bridge = Bridge::start(&["--route", &route]).await;
        // A client-sent Meta-* header never reaches the backend: only the backend sets those.
        let mut client = connect_with(
            &format!("ws://{}/ws/partial", bridge.addr),
            &[("meta-user", "mallory")],
        )
        .await
        .unwrap();
        let open = backend.wait_for("/ws/partial", 1).await;
        assert_eq!(open[0].header("meta-user"), None);

        send_text(&mut client, "hello").await;
        let requests = backend.wait_for("/ws/partial", 3).await;
        assert_eq!(decode(&requests[1].body), vec![Ev::Text("hello".into())]);
        // The rest of "hello" comes first in the next request, said to be replayed.
        assert_eq!(decode(&requests[2].body), vec![Ev::Text("llo".into())]);
        assert_eq!(requests[2].header("content-bytes-replayed"), Some("3"));

        // Keep-Alive-Interval: 1 brings an empty request after a second without one.
        let requests = backend.wait_for("/ws/partial", 4).await;
        assert_eq!(decode(&requests[3].body), vec![]);
        client.close(None).await.unwrap();
        expect_close_reply(&mut client).await;
        bridge.shutdown().await;
    })
    .await;
}
