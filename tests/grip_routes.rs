//! Backends written for Pushpin with a GRIP library, run unchanged behind a websocket-over-http
//! route (issue 15): Python's `gripcontrol` (`tests/grip/woh_backend.py`, `WebSocketContext`,
//! `decode_websocket_events`, `encode_websocket_events`, `GripPubControl`) and Node's
//! `@fanoutio/grip` (`tests/grip/woh_backend.mjs`, `getWebSocketContextFromNodeReq`,
//! `WebSocketContext`, `encodeWebSocketEvents`, `Publisher`) run as child processes that learn
//! the bridge's publish API from `GRIP_URL`, as they would learn Pushpin's. Real WebSocket
//! clients see: echo (text and binary), a publish made by the library's own publisher reaching
//! the channel the backend subscribed them to (and no other), the backend's close with its code,
//! and their own close answered. With `GRIP_URL=…?verify-key=KEY` the backends check `Grip-Sig`
//! with the library's validator: `--grip-key KEY` gets through, another key or none gets the
//! backend's 403.
//!
//! A library that is missing makes its tests print `SKIPPED: …` and pass, except under CI (`CI`
//! set), where they fail: `.ci/run` installs both (pip, `npm ci` in `tests/grip`).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// 32 bytes: PyJWT warns about shorter HMAC keys.
const GRIP_KEY: &str = "grip-sig-key-grip-sig-key-32byte";
const WRONG_KEY: &str = "not-the-key-not-the-key-32-bytes";

/// How long a backend has to print its port.
const STARTUP: Duration = Duration::from_secs(20);

const GRIP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grip");

/// One GRIP library's backend and how to run it.
struct GripBackend {
    name: &'static str,
    program: &'static str,
    /// The backend script, in `tests/grip` (where the programs run, so that Node finds
    /// `tests/grip/node_modules`).
    script: &'static str,
    /// Arguments that succeed exactly when the library can be imported.
    probe: &'static [&'static str],
    /// How to install it, for the message when it is missing.
    install: &'static str,
}

const GRIPCONTROL: GripBackend = GripBackend {
    name: "gripcontrol (Python)",
    program: "python3",
    script: "woh_backend.py",
    probe: &["-c", "import gripcontrol"],
    install: "pip install -r tests/grip/requirements.txt",
};

const FANOUTIO_GRIP: GripBackend = GripBackend {
    name: "@fanoutio/grip (Node)",
    program: "node",
    script: "woh_backend.mjs",
    probe: &["--input-type=module", "-e", "import '@fanoutio/grip'"],
    install: "cd tests/grip && npm ci",
};

/// A backend process, killed when dropped.
struct Running {
    port: u16,
    _child: Child,
}

impl Running {
    /// The route binding `/ws/` to this backend.
    fn route(&self) -> String {
        format!(
            "/ws/=http://127.0.0.1:{}/,protocol=websocket-over-http",
            self.port
        )
    }
}

impl GripBackend {
    /// Whether the library is there; under CI, panics when it is not.
    fn installed(&self) -> bool {
        let works = std::process::Command::new(self.program)
            .args(self.probe)
            .current_dir(GRIP_DIR)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !works {
            let why = format!("{} is not installed ({})", self.name, self.install);
            assert!(
                std::env::var_os("CI").is_none(),
                "{why}; .ci/run installs it"
            );
            eprintln!("SKIPPED: {why}");
        }
        works
    }

    /// Starts the backend with `GRIP_URL=grip_url` and waits for the port it prints.
    async fn start(&self, grip_url: &str) -> Running {
        let mut child = Command::new(self.program)
            .arg(self.script)
            .current_dir(GRIP_DIR)
            .env("GRIP_URL", grip_url)
            .env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // A traceback, if any, goes where the test's own output goes.
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        let stdout = child.stdout.take().unwrap();
        let line = tokio::time::timeout(STARTUP, BufReader::new(stdout).lines().next_line())
            .await
            .unwrap_or_else(|_| panic!("{} printed no port within {STARTUP:?}", self.name))
            .unwrap();
        let port = line
            .as_deref()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("{} printed {line:?}, not a port", self.name));
        Running {
            port,
            _child: child,
        }
    }

    /// The backend, given the publish API's URL, and a bridge routing `/ws/` to it with
    /// `extra` flags.
    async fn behind_a_bridge(&self, extra: &[&str]) -> (Running, Bridge) {
        let publish = bind_ephemeral().await;
        let grip_url = format!("http://{}", publish.local_addr().unwrap());
        let backend = self.start(&grip_url).await;
        let route = backend.route();
        let mut args = vec!["--route", route.as_str()];
        args.extend_from_slice(extra);
        let bridge = Bridge::start_with_publish_listener(publish, &args).await;
        (backend, bridge)
    }
}

fn ws_url(bridge: &Bridge, path: &str) -> String {
    format!("ws://{}{path}", bridge.addr)
}

async fn send(client: &mut Client, message: Message) {
    client.send(message).await.expect("send");
}

/// Echo, a publish through the library's publisher to the sender's channel (both members get
/// it, a client of another channel does not), the backend's close with 4001, and a client's
/// close answered.
async fn serves_echo_publish_and_close(library: &GripBackend) {
    if !library.installed() {
        return;
    }
    let (_backend, bridge) = library.behind_a_bridge(&[]).await;
    let mut first = connect(&ws_url(&bridge, "/ws/room")).await;
    let mut second = connect(&ws_url(&bridge, "/ws/room")).await;
    let mut outsider = connect(&ws_url(&bridge, "/ws/other")).await;

    send_text(&mut first, "hello ✓").await;
    assert_eq!(
        next_message(&mut first).await,
        Message::text("echo hello ✓")
    );

    // The backend publishes with GripPubControl / Publisher to the channel it kept in the
    // connection's meta (Set-Meta-channel on the OPEN answer, Meta-channel since).
    send_text(&mut first, "publish:news for the room").await;
    for client in [&mut first, &mut second] {
        assert_eq!(
            next_message(client).await,
            Message::text("news for the room")
        );
    }
    // The publish had reached every member before `first` got it: had the outsider been sent
    // it, it would come before this echo.
    send_text(&mut outsider, "still here").await;
    assert_eq!(
        next_message(&mut outsider).await,
        Message::text("echo still here")
    );

    send_text(&mut first, "bye").await;
    let frame = expect_close(&mut first).await;
    assert_eq!(u16::from(frame.code), 4001, "{frame:?}");

    // The client closes; the backend answers its CLOSE with the library's close.
    for client in [&mut second, &mut outsider] {
        client
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "done".into(),
            }))
            .await
            .unwrap();
        expect_close_reply(client).await;
    }
    bridge.shutdown().await;
}

/// Binary messages: both libraries' `send_binary` / `sendBinary` put the message prefix (`m:`)
/// in front of a BINARY event too, and Pushpin removes it from binary messages as from text.
async fn echoes_binary(library: &GripBackend) {
    if !library.installed() {
        return;
    }
    let (_backend, bridge) = library.behind_a_bridge(&[]).await;
    let mut client = connect(&ws_url(&bridge, "/ws/room")).await;
    let bytes = vec![0u8, 1, 0xff, b'm', b':'];
    send(&mut client, Message::binary(bytes.clone())).await;
    assert_eq!(next_message(&mut client).await, Message::binary(bytes));
    send_text(&mut client, "bye").await;
    assert_eq!(u16::from(expect_close(&mut client).await.code), 4001);
    bridge.shutdown().await;
}

/// The backend checks `Grip-Sig` with the library's validator (`GRIP_URL=…?verify-key=KEY`):
/// `--grip-key KEY` gets through; another key and no key get the backend's 403 and body.
async fn checks_grip_sig(library: &GripBackend) {
    if !library.installed() {
        return;
    }
    let publish = bind_ephemeral().await;
    let grip_url = format!(
        "http://{}/?verify-key={GRIP_KEY}",
        publish.local_addr().unwrap()
    );
    let backend = library.start(&grip_url).await;
    let route = backend.route();

    let bridge =
        Bridge::start_with_publish_listener(publish, &["--route", &route, "--grip-key", GRIP_KEY])
            .await;
    let mut client = connect(&ws_url(&bridge, "/ws/room")).await;
    send_text(&mut client, "signed").await;
    assert_eq!(
        next_message(&mut client).await,
        Message::text("echo signed")
    );
    send_text(&mut client, "publish:signed news").await;
    assert_eq!(
        next_message(&mut client).await,
        Message::text("signed news")
    );
    send_text(&mut client, "bye").await;
    assert_eq!(u16::from(expect_close(&mut client).await.code), 4001);
    bridge.shutdown().await;

    for flags in [
        vec!["--route", route.as_str(), "--grip-key", WRONG_KEY],
        vec!["--route", route.as_str()],
    ] {
        let bridge = Bridge::start(&flags).await;
        let (status, body) = refused(ws_url(&bridge, "/ws/room")).await;
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (403, "invalid or missing Grip-Sig\n"),
            "{flags:?}"
        );
        bridge.shutdown().await;
    }
}

#[tokio::test]
async fn gripcontrol_backend_echoes_publishes_and_closes() {
    bounded(serves_echo_publish_and_close(&GRIPCONTROL)).await;
}

#[tokio::test]
async fn fanoutio_grip_backend_echoes_publishes_and_closes() {
    bounded(serves_echo_publish_and_close(&FANOUTIO_GRIP)).await;
}

#[tokio::test]
async fn gripcontrol_backend_echoes_binary() {
    bounded(echoes_binary(&GRIPCONTROL)).await;
}

#[tokio::test]
async fn fanoutio_grip_backend_echoes_binary() {
    bounded(echoes_binary(&FANOUTIO_GRIP)).await;
}

#[tokio::test]
async fn gripcontrol_backend_accepts_only_the_grip_key() {
    bounded(checks_grip_sig(&GRIPCONTROL)).await;
}

#[tokio::test]
async fn fanoutio_grip_backend_accepts_only_the_grip_key() {
    bounded(checks_grip_sig(&FANOUTIO_GRIP)).await;
}
