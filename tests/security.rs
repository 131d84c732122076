//! Security over real sockets: signed requests verified by the README's Python and JavaScript
//! snippets running as real backends (replays to another endpoint, with another seq or with
//! other close headers refused), request ids, --signing-v1, --deny-private-networks,
//! --allowed-origin, header hygiene, --callback-cors-origin, and handshake timeouts against
//! slowloris.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::pki::TestPki;
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const SECRET: &str = "test-secret-0123456789abcdef";

/// Starts a verifying backend (`python3 examples/verify_signature.py` or the Node one) and
/// returns it with a channel of its "<path> ok|refused" lines. `origin` is its
/// `PUBLIC_ORIGIN` (by default the address it listens on).
async fn verifier(
    program: &str,
    script: &str,
    secret: &str,
    origin: Option<&str>,
) -> (Child, u16, mpsc::UnboundedReceiver<String>) {
    let port = free_port();
    let mut command = Command::new(program);
    if let Some(origin) = origin {
        command.env("PUBLIC_ORIGIN", origin);
    }
    let mut child = command
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
    let (_child, port, mut lines) = verifier(program, script, SECRET, None).await;
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
    let url = with_hook(
        &bridge.connect_url(
            &format!("{base}/frame"),
            Some(&format!("{base}/disconnect")),
        ),
        &format!("{base}/connect"),
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
    let url = with_hook(
        &bridge.connect_url(&format!("{base}/frame"), None),
        &format!("{base}/connect"),
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
        let program = &script[script.find("import hashlib").unwrap()..];
        assert!(
            readme.contains(program.trim()),
            "README shows examples/verify_signature.py from its imports on"
        );
        signed_round_trip("python3", "examples/verify_signature.py").await;
    })
    .await;
}

#[tokio::test]
async fn the_readme_javascript_snippet_verifies_real_signed_requests() {
    if node_missing() {
        return;
    }
    bounded(async {
        let readme = std::fs::read_to_string("README.md").unwrap();
        let script = std::fs::read_to_string("examples/verify_signature.mjs").unwrap();
        let program = &script[script.find("import { createHmac").unwrap()..];
        assert!(
            readme.contains(program.trim()),
            "README shows examples/verify_signature.mjs from its imports on"
        );
        signed_round_trip("node", "examples/verify_signature.mjs").await;
    })
    .await;
}

fn node_missing() -> bool {
    let missing = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err();
    if missing {
        eprintln!("SKIPPED: node is not installed");
    }
    missing
}

/// Sends a request the backend recorded again, to `url`, with some headers set (`Some`) or
/// removed (`None`); returns the status.
async fn replay(recorded: &Recorded, url: &str, changes: &[(&'static str, Option<&str>)]) -> u16 {
    let mut headers = recorded.headers.clone();
    headers.remove("content-length");
    for (name, value) in changes {
        match value {
            Some(v) => headers.insert(*name, v.parse().unwrap()),
            None => headers.remove(*name),
        };
    }
    http_client()
        .post(url)
        .headers(headers)
        .body(recorded.body.clone())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Captures signed frame and disconnect POSTs at a recording backend, then replays them to a
/// verifier standing in for that backend (its `PUBLIC_ORIGIN` is the recording backend's):
/// the originals verify; another seq, another path, another backend sharing the secret and
/// other close headers do not.
async fn replays_fail_verification(program: &str, script: &str) {
    let backend = Backend::start().await;
    let origin = format!("http://{}", backend.addr);
    let (_verifier, port, mut lines) = verifier(program, script, SECRET, Some(&origin)).await;
    let (_other, other_port, mut other_lines) = verifier(program, script, SECRET, None).await;
    let bridge = Bridge::for_backend(&backend, &["--signing-secret", SECRET]).await;
    let mut client = bridge
        .client(&backend, "/frame?room=42", Some("/disconnect"))
        .await;
    send_text(&mut client, "first").await;
    send_text(&mut client, "second").await;
    let frames = backend.wait_for("/frame", 2).await;
    client
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    let disconnect = backend.wait_for("/disconnect", 1).await[0].clone();
    let at = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let frame = &frames[0];
    assert_eq!(frame.seq(), Some(0));

    let mut check = async |request: &Recorded,
                           path: &str,
                           changes: &[(&'static str, Option<&str>)],
                           ok: bool| {
        let status = replay(request, &at(path), changes).await;
        let verdict = if ok { "ok" } else { "refused" };
        assert_eq!(
            (status, next_line(&mut lines).await),
            (if ok { 204 } else { 401 }, format!("{path} {verdict}")),
            "{path} with {changes:?}"
        );
    };
    // The request as captured verifies.
    check(frame, "/frame?room=42", &[], true).await;
    // Another seq, alone or with the matching request id.
    check(
        frame,
        "/frame?room=42",
        &[("x-ws-proxy-seq", Some("1"))],
        false,
    )
    .await;
    let second_id = frames[1].header("x-ws-proxy-request-id").unwrap();
    let as_second = [
        ("x-ws-proxy-seq", Some("1")),
        ("x-ws-proxy-request-id", Some(second_id)),
    ];
    check(frame, "/frame?room=42", &as_second, false).await;
    check(frame, "/frame?room=42", &[("x-ws-proxy-seq", None)], false).await;
    // Another endpoint: another path, another query.
    check(frame, "/disconnect", &[], false).await;
    check(frame, "/frame?room=43", &[], false).await;
    check(frame, "/frame", &[], false).await;
    // Another content type.
    let binary = [("content-type", Some("application/octet-stream"))];
    check(frame, "/frame?room=42", &binary, false).await;

    // The disconnect POST as captured verifies; with other close headers it does not.
    assert_eq!(disconnect.header("x-ws-proxy-close-code"), Some("1000"));
    check(&disconnect, "/disconnect", &[], true).await;
    for changed in [
        ("x-ws-proxy-close-code", Some("4000")),
        ("x-ws-proxy-close-code", None),
        ("x-ws-proxy-close-reason", Some("other")),
        ("x-ws-proxy-close-initiator", Some("bridge")),
        ("x-ws-proxy-close-cause", Some("shutdown")),
    ] {
        check(&disconnect, "/disconnect", &[changed], false).await;
    }
    check(&disconnect, "/frame?room=42", &[], false).await;

    // Another backend holding the same secret, even with the original Host header (the
    // recorded headers carry it): refused, since it checks against its own origin.
    let status = replay(
        frame,
        &format!("http://127.0.0.1:{other_port}/frame?room=42"),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(next_line(&mut other_lines).await, "/frame?room=42 refused");
}

#[tokio::test]
async fn replays_with_another_seq_endpoint_or_close_headers_fail_python_verification() {
    bounded(replays_fail_verification(
        "python3",
        "examples/verify_signature.py",
    ))
    .await;
}

#[tokio::test]
async fn replays_with_another_seq_endpoint_or_close_headers_fail_javascript_verification() {
    if node_missing() {
        return;
    }
    bounded(replays_fail_verification(
        "node",
        "examples/verify_signature.mjs",
    ))
    .await;
}

/// The request ids of one connection's requests, in arrival order, with their paths.
fn request_ids(backend: &Backend, paths: &[&str]) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for path in paths {
        for r in backend.requests(path) {
            let id = r.header("x-ws-proxy-request-id");
            ids.push((
                path.to_string(),
                id.expect("x-ws-proxy-request-id").to_owned(),
            ));
        }
    }
    ids
}

/// The retries' backoff runs under paused time.
#[tokio::test(start_paused = true)]
async fn request_ids_are_on_every_request_the_same_across_retries_and_unique() {
    bounded(async {
        // Frames and the disconnect go to /flaky: a 503 to the first attempt of each.
        let backend = Backend::builder()
            .on("/flaky", Reply::fail_first(503))
            .start()
            .await;
        let bridge = Bridge::for_backend(&backend, &["--signing-secret", SECRET]).await;
        let url = with_hook(
            &bridge.connect_url(&backend.url("/flaky"), Some(&backend.url("/flaky"))),
            &backend.url("/hook"),
        );
        let mut client = connect(&url).await;
        send_text(&mut client, "zero").await;
        send_text(&mut client, "one").await;
        backend.wait_for("/flaky", 4).await;
        client.close(None).await.unwrap();
        let flaky = backend.wait_for("/flaky", 6).await;
        let callback = backend.callback_url("/hook").await;

        let ids = request_ids(&backend, &["/hook", "/flaky"]);
        let nonce = ids[0]
            .1
            .strip_suffix("-c")
            .expect("the hook's id ends in -c");
        assert_eq!(nonce.len(), 16, "{nonce}");
        assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()), "{nonce}");
        let places: Vec<&str> = ids
            .iter()
            .map(|(_, id)| id.strip_prefix(&format!("{nonce}-")).expect("one nonce"))
            .collect();
        // Each request twice (a 503, then the retry), with the same id; the hook once.
        assert_eq!(places, ["c", "0", "0", "1", "1", "d", "d"], "{ids:?}");
        assert_eq!(flaky[0].header("x-ws-proxy-seq"), Some("0"));
        assert_eq!(flaky[2].header("x-ws-proxy-seq"), Some("1"));
        // Retries are re-signed: same request id, but the signature is computed again.
        assert!(
            flaky
                .iter()
                .all(|r| r.header("x-ws-proxy-signature").is_some())
        );
        // The id reveals nothing of the callback URL.
        let capability: String = callback.rsplit('/').next().unwrap().replace('-', "");
        assert!(!capability.contains(nonce), "{callback} vs {nonce}");

        // Another connection draws another nonce.
        let mut second = bridge.client(&backend, "/frame", None).await;
        send_text(&mut second, "x").await;
        let other = backend.wait_for("/frame", 1).await[0]
            .header("x-ws-proxy-request-id")
            .unwrap()
            .to_owned();
        assert!(other.ends_with("-0"), "{other}");
        assert!(!other.starts_with(nonce), "{other} vs {nonce}");
    })
    .await;
}

#[tokio::test]
async fn signing_v1_also_sends_the_old_values_for_old_verifiers() {
    use ring::hmac;
    bounded(async {
        let backend = Backend::start().await;
        let values = |signature: &str, scheme: &str| -> Vec<String> {
            signature
                .split(',')
                .filter_map(|p| p.strip_prefix(&format!("{scheme}=")))
                .map(str::to_owned)
                .collect()
        };
        // By default: v2 only.
        let bridge = Bridge::for_backend(&backend, &["--signing-secret", SECRET]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        send_text(&mut client, "new").await;
        let frame = backend.wait_for("/frame", 1).await[0].clone();
        let signature = frame.header("x-ws-proxy-signature").unwrap();
        assert_eq!(values(signature, "v2").len(), 1, "{signature}");
        assert!(values(signature, "v1").is_empty(), "{signature}");

        // With --signing-v1, each secret's v1= follows, over "<t>.<send>.<body>" as before.
        let old = "old-secret-0123456789abc";
        let bridge = Bridge::for_backend(
            &backend,
            &[
                "--signing-secret",
                SECRET,
                "--signing-secret",
                old,
                "--signing-v1",
            ],
        )
        .await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        send_text(&mut client, "old").await;
        let frame = backend.wait_for("/frame", 2).await[1].clone();
        let signature = frame.header("x-ws-proxy-signature").unwrap();
        assert_eq!(values(signature, "v2").len(), 2, "{signature}");
        let t = &values(signature, "t")[0];
        let send = frame.header("x-ws-proxy-send").unwrap();
        let signed = [t.as_bytes(), b".", send.as_bytes(), b".", &frame.body].concat();
        let expected: Vec<String> = [SECRET, old]
            .iter()
            .map(|secret| {
                let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
                let tag = hmac::sign(&key, &signed);
                tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
            })
            .collect();
        assert_eq!(values(signature, "v1"), expected, "{signature}");
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
        let url = bridge.connect_url("http://localhost:1/", Some("http://localhost:1/"));
        assert_eq!(refused(&url).await.0, 403);
        bridge.shutdown().await;
        assert!(backend.requests("/frame").is_empty());

        // The same allowlist without the flag: accepted.
        let open = Bridge::start(&["--allowlist", &allow]).await;
        let mut client =
            connect(&open.connect_url(&format!("http://localhost:{port}/frame"), None)).await;
        send_text(&mut client, "loopback ok without the flag").await;
        backend.wait_for("/frame", 1).await;
    })
    .await;
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
            let result = try_connect(request).await;
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
        assert_eq!(refused(request).await.0, 431);
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

/// The handshake timeout runs under paused time.
#[tokio::test(start_paused = true)]
async fn slowloris_handshakes_are_cut_off() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--handshake-timeout", "500ms"]).await;
        // A request head that never completes.
        let mut tcp = tcp_connect(bridge.addr).await;
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
        let mut idle = tcp_connect(bridge.addr).await;
        let read = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf)).await;
        assert!(read.is_ok(), "an idle connection is closed");
    })
    .await;
}

/// The handshake timeout runs under paused time.
#[tokio::test(start_paused = true)]
async fn a_bridge_with_tls_drops_clients_that_never_say_hello() {
    bounded(async {
        let backend = Backend::start().await;
        let files = TestPki::new().write("no-hello");
        let allow = backend.allowlist();
        let bridge = Bridge::start(
            &[
                &["--allowlist", &allow][..],
                &files.tls_flags(),
                &["--handshake-timeout", "500ms"],
            ]
            .concat(),
        )
        .await;
        let mut tcp = tcp_connect(bridge.addr).await;
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
            verifier("python3", "examples/verify_signature.py", SECRET, None).await;
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
