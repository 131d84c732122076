//! SIGTERM on the real binary with 100 open connections: 100 Close 1001 frames, 100
//! disconnect POSTs, all before the process exits 0.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_100_connections_and_delivers_100_disconnects_before_exit_0() {
    bounded(async {
        let backend = Backend::start().await;
        let mut child = Command::new(env!("CARGO_BIN_EXE_websocket-bridge"))
            .args([
                "--address",
                "127.0.0.1:0",
                "--allowlist",
                &backend.allowlist(),
            ])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("bridge exited early");
            if line.contains("websocket-bridge listening") {
                let start = line.find("address=").unwrap() + "address=".len();
                break line[start..].split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining the log so the bridge never blocks on a full pipe.
        let log = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                all.push(line);
            }
            all
        });

        let connect_url = format!(
            "ws://{addr}/connect?f={}&d={}",
            encode(&backend.url("/frame")),
            encode(&backend.url("/disconnect"))
        );
        let mut readers = Vec::new();
        for _ in 0..100 {
            let mut client = connect(&connect_url).await;
            readers.push(tokio::spawn(async move { expect_close(&mut client).await }));
        }

        let pid = child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(0), "exit status");
        // The process has exited: everything it delivered is already at the backend.
        let disconnects = backend.requests("/disconnect");
        assert_eq!(
            disconnects.len(),
            100,
            "disconnect POSTs delivered before exit"
        );
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
        let log = log.await.unwrap();
        assert!(log.iter().any(|l| l.contains("SIGTERM received")));
        assert!(log.iter().any(|l| l.contains("shutdown complete")));
        backend.assert_exactly("/disconnect", 100).await;
    })
    .await;
}
