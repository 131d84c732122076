//! Security over real sockets: signed requests verified by the README's Python and JavaScript
//! snippets running as real backends, --deny-private-networks, --allowed-origin, header
//! hygiene, --callback-cors-origin, and handshake timeouts against slowloris.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const SECRET: &str = "test-secret-0123456789abcdef";

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Starts a verifying backend (`python3 examples/verify_signature.py` or the Node one) and
/// returns it with a channel of its "<path> ok|refused" lines.
async fn verifier(
    program: &str,
    script: &str,
    secret: &str,
) -> (Child, u16, mpsc::UnboundedReceiver<String>) {
    let port = free_port().await;
    let mut child = Command::new(program)
        .arg(script)
        .arg(port.to_string())
        .env("WS_BRIDGE_SIGNING_SECRET", secret)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (child, port, rx);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{program} {script} did not start listening");
}

async fn next_line(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

async fn signed_round_trip(program: &str, script: &str) {
    let (_child, port, mut lines) = verifier(program, script, SECRET).await;
    let allow = format!(r"http://127\.0\.0\.1:{port}/.*");
    // Two secrets, as during a rotation: the backend knows only the second.
    let bridge = Bridge::start(&[
        "--allowlist",
        &allow,
        "--signing-secret",
        "old-secret-0123456789abc",
        "--signing-secret",
        SECRET,
    ])
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let url = format!(
        "{}&c={}",
        bridge.connect_url(
            &format!("{base}/frame"),
            Some(&format!("{base}/disconnect"))
        ),
        encode(&format!("{base}/connect"))
    );
    let mut client = connect(&url).await;
    assert_eq!(next_line(&mut lines).await, "/connect ok");
    send_text(&mut client, "signed text ✓").await;
    assert_eq!(next_line(&mut lines).await, "/frame ok");
    futures_util::SinkExt::send(
        &mut client,
        tokio_tungstenite::tungstenite::Message::binary(vec![0u8, 255, 10, 46]),
    )
    .await
    .unwrap();
    assert_eq!(next_line(&mut lines).await, "/frame ok");
    client.close(None).await.unwrap();
    assert_eq!(next_line(&mut lines).await, "/disconnect ok");

    // A bridge with the wrong secret is refused: the hook's 401 reaches the client.
    let bridge = Bridge::start(&[
        "--allowlist",
        &allow,
        "--signing-secret",
        "wrong-secret-0123456789ab",
    ])
    .await;
    let url = format!(
        "{}&c={}",
        bridge.connect_url(&format!("{base}/frame"), None),
        encode(&format!("{base}/connect"))
    );
    let (status, _) = refused(&url).await;
    assert_eq!(status, 401);
    assert_eq!(next_line(&mut lines).await, "/connect refused");
}

#[tokio::test]
async fn the_readme_python_snippet_verifies_real_signed_requests() {
    bounded(async {
        let readme = std::fs::read_to_string("README.md").unwrap();
        let script = std::fs::read_to_string("examples/verify_signature.py").unwrap();
        let verify_fn =
            &script[script.find("def verify").unwrap()..script.find("class Backend").unwrap()];
        assert!(
            readme.contains(verify_fn.trim()),
            "README shows examples/verify_signature.py's verify()"
        );
        signed_round_trip("python3", "examples/verify_signature.py").await;
    })
    .await;
}

#[tokio::test]
async fn the_readme_javascript_snippet_verifies_real_signed_requests() {
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: node is not installed");
        return;
    }
    bounded(async {
        let readme = std::fs::read_to_string("README.md").unwrap();
        let script = std::fs::read_to_string("examples/verify_signature.mjs").unwrap();
        let verify_fn = &script
            [script.find("export function verify").unwrap()..script.find("createServer(").unwrap()];
        assert!(
            readme.contains(verify_fn.trim()),
            "README shows examples/verify_signature.mjs's verify()"
        );
        signed_round_trip("node", "examples/verify_signature.mjs").await;
    })
    .await;
}

#[tokio::test]
async fn deny_private_networks_refuses_an_allowlisted_name_resolving_to_loopback() {
    bounded(async {
        let backend = Backend::start().await;
        let port = backend.addr.port();
        let allow = format!(r"http://(localhost|127\.0\.0\.1|\[::1\]):{port}/.*");
        let bridge = Bridge::start(&["--allowlist", &allow, "--deny-private-networks"]).await;
        for frame in [
            format!("http://localhost:{port}/frame"),
            format!("http://127.0.0.1:{port}/frame"),
            format!("http://[::1]:{port}/frame"),
        ] {
            let (status, body) = refused(&bridge.connect_url(&frame, None)).await;
            assert_eq!(status, 403, "{frame}: {body}");
            assert!(body.contains("--deny-private-networks"), "{body}");
        }
        // The disconnect URL is checked too.
        let url = format!(
            "ws://{}/connect?f={}&d={}",
            bridge.addr,
            encode("http://localhost:1/"),
            encode("http://localhost:1/")
        );
        assert_eq!(refused(&url).await.0, 403);
        assert!(backend.requests("/frame").is_empty());

        // The same allowlist without the flag: accepted.
        let bridge = Bridge::start(&["--allowlist", &allow]).await;
        let mut client =
            connect(&bridge.connect_url(&format!("http://localhost:{port}/frame"), None)).await;
        send_text(&mut client, "loopback ok without the flag").await;
        backend.wait_for("/frame", 1).await;
    })
    .await;
}

#[tokio::test]
async fn the_guarded_resolver_drops_private_addresses_at_request_time() {
    use reqwest::dns::Resolve;
    let resolver = websocket_bridge::ssrf::GuardedResolver;
    let name: reqwest::dns::Name = "localhost".parse().unwrap();
    let result = resolver.resolve(name).await;
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("--deny-private-networks"), "{message}");
}

#[tokio::test]
async fn allowed_origin_refuses_missing_and_foreign_origins() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(
            &backend,
            &[
                "--allowed-origin",
                "https://app.example",
                "--allowed-origin",
                "*.trusted.example",
            ],
        )
        .await;
        let url = bridge.connect_url(&backend.url("/frame"), None);
        let (status, body) = refused(&url).await;
        assert_eq!(status, 403);
        assert!(body.contains("Origin"), "{body}");
        for (origin, ok) in [
            ("https://evil.example", false),
            ("https://app.example.evil.example", false),
            ("https://trusted.example", false),
            ("https://app.example", true),
            ("http://chat.trusted.example", true),
        ] {
            let mut request = url.as_str().into_client_request().unwrap();
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
            let result = tokio_tungstenite::connect_async(request).await;
            assert_eq!(result.is_ok(), ok, "{origin}");
        }
    })
    .await;
}

#[tokio::test]
async fn oversized_client_headers_are_refused_with_431() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut request = bridge
            .connect_url(&backend.url("/frame"), None)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("cookie", "a".repeat(9000).parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 431),
            other => panic!("expected 431, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn callback_cors_origin_restricts_browsers() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge =
            Bridge::for_backend(&backend, &["--callback-cors-origin", "https://app.example"]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        send_text(&mut client, "x").await;
        let callback = backend.callback_url("/frame").await;
        let http = http_client();
        let preflight = |origin: &'static str| {
            http.request(reqwest::Method::OPTIONS, &callback)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .send()
        };
        let good = preflight("https://app.example").await.unwrap();
        assert_eq!(
            good.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        let bad = preflight("https://evil.example").await.unwrap();
        assert!(bad.headers().get("access-control-allow-origin").is_none());
    })
    .await;
}

#[tokio::test]
async fn slowloris_handshakes_are_cut_off() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--handshake-timeout", "500ms"]).await;
        // A request head that never completes.
        let mut tcp = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
        tcp.write_all(b"GET /connect HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
        let n = read
            .expect("the bridge closes a slow handshake")
            .unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
        // A connection that never sends a byte.
        let mut idle = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf)).await;
        assert!(read.is_ok(), "an idle connection is closed");
    })
    .await;
}

#[tokio::test]
async fn a_bridge_with_tls_drops_clients_that_never_say_hello() {
    bounded(async {
        let backend = Backend::start().await;
        let dir = std::env::temp_dir().join(format!("ws-bridge-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let allow = backend.allowlist();
        let bridge = Bridge::start(&[
            "--allowlist",
            &allow,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--handshake-timeout",
            "500ms",
        ])
        .await;
        let mut tcp = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
        assert!(read.is_ok(), "closed after the handshake timeout");
    })
    .await;
}

#[tokio::test]
async fn a_backend_refusing_the_signature_closes_with_1011() {
    bounded(async {
        let (_child, port, mut lines) =
            verifier("python3", "examples/verify_signature.py", SECRET).await;
        let allow = format!(r"http://127\.0\.0\.1:{port}/.*");
        let bridge = Bridge::start(&[
            "--allowlist",
            &allow,
            "--signing-secret",
            "another-secret-0123456789",
        ])
        .await;
        let mut client =
            connect(&bridge.connect_url(&format!("http://127.0.0.1:{port}/frame"), None)).await;
        send_text(&mut client, "x").await;
        assert_eq!(next_line(&mut lines).await, "/frame refused");
        assert_eq!(expect_close(&mut client).await.code, CloseCode::Error);
    })
    .await;
}
