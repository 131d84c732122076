//! Load: 5,000 concurrent connections through the real binary, each sending 100 messages and
//! receiving 100 callback messages. The backend's count equals what the clients sent (every
//! seq once per connection), every client gets every callback message exactly once, and every
//! disconnect POST arrives exactly once. Slow (about a minute in a release build): ignored by
//! default, run by `.ci/run` with `--include-ignored`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use common::real::RealBridge;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const CONNECTIONS: usize = 5_000;
const MESSAGES: usize = 100;

#[derive(Clone, Default)]
struct Seen {
    /// callback URL -> seqs of the frames received for it.
    frames: Arc<Mutex<HashMap<String, Vec<u64>>>>,
    /// callback URLs of the disconnect POSTs received.
    disconnects: Arc<Mutex<Vec<String>>>,
    http: Option<reqwest::Client>,
}

/// Records the frame, then sends its body back through the callback URL before answering.
async fn frame(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Some(callback) = headers.get("x-ws-proxy-send").and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    let seq = headers
        .get("x-ws-proxy-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    seen.frames
        .lock()
        .unwrap()
        .entry(callback.to_owned())
        .or_default()
        .push(seq);
    let http = seen.http.as_ref().unwrap();
    match http
        .post(callback)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
    {
        Ok(r) if r.status() == 202 => StatusCode::NO_CONTENT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn disconnect(State(seen): State<Seen>, headers: HeaderMap) -> StatusCode {
    let callback = headers
        .get("x-ws-proxy-send")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    seen.disconnects.lock().unwrap().push(callback);
    StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: run by .ci/run with --include-ignored"]
async fn five_thousand_connections_each_send_and_receive_a_hundred_messages() {
    bounded_for(Duration::from_secs(600), async {
        let seen = Seen {
            http: Some(http_client()),
            ..Seen::default()
        };
        let app = Router::new()
            .route("/frame", post(frame))
            .route("/disconnect", post(disconnect))
            .with_state(seen.clone());
        let listener = bind_ephemeral().await;
        let backend = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let allow = format!(r"http://127\.0\.0\.1:{}/.*", backend.port());
        let mut bridge = RealBridge::spawn_logging(
            &[
                "--allowlist",
                &allow,
                "--max-connections-per-ip",
                "0",
                "--max-messages-per-second",
                "0",
            ],
            None,
            "warn,websocket_bridge::server=info",
        )
        .await;
        let url = bridge.connect_url(
            &format!("http://{backend}/frame"),
            Some(&format!("http://{backend}/disconnect")),
        );

        // Open every connection first, a few hundred at a time, so all 5,000 are open at once.
        let mut clients = Vec::with_capacity(CONNECTIONS);
        while clients.len() < CONNECTIONS {
            let batch = (CONNECTIONS - clients.len()).min(250);
            let opened = futures_util::future::join_all((0..batch).map(|_| connect(&url))).await;
            clients.extend(opened);
        }
        eprintln!("{CONNECTIONS} connections open");

        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(k, mut client)| {
                tokio::spawn(async move {
                    for i in 0..MESSAGES {
                        client
                            .feed(Message::text(format!("{k}:{i}")))
                            .await
                            .unwrap();
                    }
                    client.flush().await.unwrap();
                    let mut got = HashSet::new();
                    while got.len() < MESSAGES {
                        match client.next().await {
                            Some(Ok(Message::Text(t))) => {
                                assert!(got.insert(t.to_string()), "duplicate {t}");
                            }
                            Some(Ok(_)) => {}
                            other => panic!("client {k}: {other:?} after {} messages", got.len()),
                        }
                    }
                    let expected: HashSet<String> =
                        (0..MESSAGES).map(|i| format!("{k}:{i}")).collect();
                    assert_eq!(got, expected, "client {k} got every callback message once");
                    client.close(None).await.unwrap();
                    while let Some(Ok(_)) = client.next().await {}
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        eprintln!("every client got its {MESSAGES} callback messages");

        // SIGTERM: the bridge exits once every connection task has finished, its disconnect
        // POST answered (and so recorded). Nothing more can arrive after that.
        let status = bridge.terminate(Duration::from_secs(60)).await;
        assert_eq!(status.code(), Some(0));

        // Every disconnect POST arrives, once per connection.
        let disconnects = seen.disconnects.lock().unwrap().clone();
        assert_eq!(disconnects.len(), CONNECTIONS, "disconnect POSTs");
        let unique: HashSet<_> = disconnects.iter().collect();
        assert_eq!(unique.len(), CONNECTIONS, "one disconnect per connection");

        let frames = seen.frames.lock().unwrap().clone();
        assert_eq!(frames.len(), CONNECTIONS, "connections seen by the backend");
        let total: usize = frames.values().map(Vec::len).sum();
        assert_eq!(
            total,
            CONNECTIONS * MESSAGES,
            "frames at the backend = frames sent"
        );
        for (callback, seqs) in &frames {
            let expected: Vec<u64> = (0..MESSAGES as u64).collect();
            assert_eq!(seqs, &expected, "{callback}: in order, no gaps, no repeats");
            assert!(unique.contains(callback));
        }

        let log = bridge.stop().await;
        let warnings: Vec<_> = log.iter().filter(|l| l.contains("WARN")).collect();
        assert!(warnings.is_empty(), "no warnings under load: {warnings:#?}");
    })
    .await;
}
