//! SIGTERM on the real binary with 100 open connections: 100 Close 1001 frames, 100
//! disconnect POSTs, all before the process exits 0.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::real::RealBridge;
use common::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_100_connections_and_delivers_100_disconnects_before_exit_0() {
    bounded(async {
        let backend = Backend::start().await;
        let mut bridge = RealBridge::spawn(&["--allowlist", &backend.allowlist()], None).await;
        let connect_url =
            bridge.connect_url(&backend.url("/frame"), Some(&backend.url("/disconnect")));
        let mut readers = Vec::new();
        for _ in 0..100 {
            let mut client = connect(&connect_url).await;
            readers.push(tokio::spawn(async move { expect_close(&mut client).await }));
        }

        let status = bridge.terminate(Duration::from_secs(30)).await;
        assert_eq!(status.code(), Some(0), "exit status");
        // The process has exited: everything it delivered (sent, and got an answer to) is
        // already at the backend.
        let disconnects = backend.requests("/disconnect");
        assert_eq!(
            disconnects.len(),
            100,
            "disconnect POSTs delivered before exit"
        );
        // Nothing more: once the backend has read everything the exited process sent.
        backend.wait_until_disconnected().await;
        backend.assert_exactly("/disconnect", 100);
        assert!(
            disconnects
                .iter()
                .all(|d| d.header("x-ws-proxy-close-code") == Some("1001")
                    && d.header("x-ws-proxy-close-cause") == Some("shutdown"))
        );
        let mut callbacks: Vec<_> = disconnects
            .iter()
            .map(|d| d.header("x-ws-proxy-send").unwrap().to_owned())
            .collect();
        callbacks.sort();
        callbacks.dedup();
        assert_eq!(callbacks.len(), 100, "one per connection");
        for reader in readers {
            assert_eq!(reader.await.unwrap().code, CloseCode::Away);
        }
        let log = bridge.stop().await;
        assert!(log.iter().any(|l| l.contains("SIGTERM received")));
        // Callback ids are capabilities: no log line holds one in full (only an 8-digit prefix).
        for callback in &callbacks {
            let id = callback.rsplit('/').next().unwrap();
            assert!(!log.iter().any(|l| l.contains(id)), "full id {id} logged");
            assert!(
                log.iter().any(|l| l.contains(&id[..8])),
                "short id {} logged",
                &id[..8]
            );
        }
        assert!(log.iter().any(|l| l.contains("shutdown complete")));
    })
    .await;
}
