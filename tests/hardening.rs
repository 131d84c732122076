//! Regression tests for the outside security review (issue 10): safe defaults that never break
//! an ordinary client, and the holes the review found, each shown over real sockets.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{StatusCode, header};
use common::real;
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Item 1: with default flags, a burst far over `--max-messages-per-second` is slowed, not
/// closed: every message reaches the backend, in order. The rate limit's waits (about 9 s at
/// 1000 messages a second) run under paused time.
#[tokio::test(start_paused = true)]
async fn a_burst_of_10000_messages_is_slowed_and_all_of_it_arrives_in_order() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        const N: usize = 10_000;
        for i in 0..N {
            client.feed(Message::text(i.to_string())).await.unwrap();
        }
        client.flush().await.unwrap();
        let frames = backend.wait_for("/frame", N).await;
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame.seq(), Some(i as u64));
            assert_eq!(frame.body, i.to_string().as_bytes());
        }
        client.close(None).await.unwrap();
        let d = backend.wait_for("/disconnect", 1).await;
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("client-close"));
        bridge.shutdown().await;
        assert_eq!(backend.count("/frame"), N);
    })
    .await;
}

/// Item 9: a `Retry-After` too large to add to a clock used to panic the connection task (no
/// Close, no disconnect POST, the open-connections gauge stuck). It now ends the connection
/// like any other backend failure.
#[tokio::test]
async fn a_huge_retry_after_fails_the_frame_cleanly() {
    bounded(async {
        let backend = Backend::builder()
            .on(
                "/frame",
                Reply::with(|_, _| {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, "18446744073709551615")],
                    )
                }),
            )
            .start()
            .await;
        let allow = backend.allowlist();
        let (bridge, metrics) = Bridge::start_with_metrics(&["--allowlist", &allow]).await;
        let mut client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        send_text(&mut client, "hello").await;
        let close = expect_close(&mut client).await;
        assert_eq!(close.code, CloseCode::Error);
        let d = backend.wait_for("/disconnect", 1).await;
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("backend-error"));
        wait_for_sample(metrics, "ws_bridge_connections_open", 0.0).await;
        bridge.shutdown().await;
        assert_eq!(
            backend.count("/frame"),
            1,
            "not retried: the wait exceeds the budget"
        );
        assert_eq!(backend.count("/disconnect"), 1);
    })
    .await;
}

/// Item 2: behind a trusted proxy, each forwarded client has its own per-IP limit (IPv6
/// clients per /64); without `--trusted-proxy`, forwarding headers change nothing.
#[tokio::test]
async fn per_ip_limits_count_the_client_behind_a_trusted_proxy() {
    bounded(async {
        let backend = Backend::start().await;
        let limit = ["--max-connections-per-ip", "2"];
        let trusted = Bridge::for_backend(
            &backend,
            &[&limit[..], &["--trusted-proxy", "127.0.0.0/8"]].concat(),
        )
        .await;
        let url = trusted.connect_url(&backend.url("/frame"), None);
        let from = |ip: &'static str| [("x-forwarded-for", ip)];
        let mut open = Vec::new();
        for ip in [
            "198.51.100.1",
            "198.51.100.1",
            "2001:db8:1:2::1",
            "2001:db8:1:2::2",
        ] {
            open.push(connect_with(&url, &from(ip)).await.unwrap());
        }
        assert_eq!(
            connect_with(&url, &from("198.51.100.1")).await.err(),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(
            connect_with(&url, &from("2001:db8:1:2::3")).await.err(),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
        open.push(connect_with(&url, &from("198.51.100.2")).await.unwrap());
        open.push(connect_with(&url, &from("2001:db8:1:3::1")).await.unwrap());
        // A forged left-most entry does not help: the proxy's own entry is the client.
        assert_eq!(
            connect_with(&url, &from("203.0.113.50, 198.51.100.1"))
                .await
                .err(),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );

        // The same headers at a bridge that trusts no proxy: everyone is 127.0.0.1.
        let untrusting = Bridge::for_backend(&backend, &limit).await;
        let url = untrusting.connect_url(&backend.url("/frame"), None);
        let _a = connect_with(&url, &from("198.51.100.1")).await.unwrap();
        let _b = connect_with(&url, &from("198.51.100.2")).await.unwrap();
        assert_eq!(
            connect_with(&url, &from("198.51.100.3")).await.err(),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
    })
    .await;
}

/// Items 2 and 10: the connect hook sees forwarding headers the bridge set itself, never the
/// client's claims; a trusted proxy's claims are believed.
#[tokio::test]
async fn the_connect_hook_gets_forwarding_headers_the_bridge_vouches_for() {
    bounded(async {
        let backend = Backend::start().await;
        let spoofed = [
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "443"),
            ("forwarded", "for=203.0.113.9;proto=https"),
            ("x-real-ip", "203.0.113.9"),
            ("true-client-ip", "203.0.113.9"),
        ];
        let hook_url = |bridge: &Bridge| {
            with_hook(
                &bridge.connect_url(&backend.url("/frame"), None),
                &backend.url("/hook"),
            )
        };
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let _client = connect_with(&hook_url(&bridge), &spoofed).await.unwrap();
        let hook = backend.wait_for("/hook", 1).await.remove(0);
        assert_eq!(hook.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(hook.header("x-forwarded-proto"), Some("http"));
        assert_eq!(
            hook.header("x-forwarded-host"),
            Some(bridge.addr.to_string().as_str())
        );
        for name in [
            "x-forwarded-port",
            "forwarded",
            "x-real-ip",
            "true-client-ip",
        ] {
            assert_eq!(hook.header(name), None, "{name} was passed through");
        }

        let behind = Bridge::for_backend(&backend, &["--trusted-proxy", "127.0.0.1"]).await;
        let _client = connect_with(&hook_url(&behind), &spoofed).await.unwrap();
        let hook = backend.wait_for("/hook", 2).await.remove(1);
        assert_eq!(hook.header("x-forwarded-for"), Some("203.0.113.9"));
        assert_eq!(hook.header("x-forwarded-proto"), Some("https"));
        assert_eq!(hook.header("x-forwarded-host"), Some("evil.example"));
        assert_eq!(hook.header("x-real-ip"), None);
    })
    .await;
}

/// Item 10: a request without `Host` cannot smuggle an `X-Forwarded-Host` to the hook.
#[tokio::test]
async fn a_request_without_host_forwards_no_host() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let query = format!(
            "f={}&c={}",
            encode(&backend.url("/frame")),
            encode(&backend.url("/hook"))
        );
        let mut tcp = tcp_connect(bridge.addr).await;
        let request = format!(
            "GET /connect?{query} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             X-Forwarded-Host: evil.example\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 101");
        let hook = backend.wait_for("/hook", 1).await.remove(0);
        assert_eq!(hook.header("x-forwarded-host"), None);
    })
    .await;
}

/// Item 3: 256 callers that announce a body and trickle one byte hold two reads of the one
/// connection whose URL they have; every other connection's callbacks still work.
#[tokio::test]
async fn slow_bodies_to_one_callback_url_do_not_starve_other_connections() {
    use tokio::io::AsyncWriteExt;
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(
            &backend,
            &["--handshake-timeout", "20s", "--http-idle-timeout", "30s"],
        )
        .await;
        let mut victim = bridge.client(&backend, "/frame", None).await;
        let victim_url = callback_of(&backend, &mut victim).await;
        let path = path_of(&victim_url);
        let mut other = bridge.client(&backend, "/frame", None).await;
        send_text(&mut other, "me too").await;
        let frames = backend.wait_for("/frame", 2).await;
        let other_url = frames[1].header("x-ws-proxy-send").unwrap().to_owned();
        assert_ne!(other_url, victim_url);

        let mut slow = Vec::new();
        for _ in 0..256 {
            let mut tcp = tcp_connect(bridge.addr).await;
            let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx");
            tcp.write_all(head.as_bytes()).await.unwrap();
            slow.push(tcp);
        }
        let http = http_client();
        for i in 0..20 {
            let r = http
                .post(&other_url)
                .body(format!("m{i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
        for i in 0..20 {
            assert_eq!(
                next_message(&mut other).await,
                Message::binary(format!("m{i}"))
            );
        }
        // The attacked connection answers 503 with Retry-After, not a hang.
        let r = http.post(&victim_url).body("later").send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        assert!(r.text().await.unwrap().contains("this connection"));
        drop(slow);
    })
    .await;
}

/// Item 5: a host-suffix entry admits port 443 only, unless it names its port.
#[tokio::test]
async fn host_suffix_entries_admit_only_their_port() {
    bounded(async {
        let bridge = Bridge::start(&[
            "--host-suffix-allowlist",
            ".example.com",
            "--host-suffix-allowlist",
            "api.example.org:8443",
        ])
        .await;
        for (url, status) in [
            ("https://api.example.com:8443/f", 403),
            ("https://api.example.com:22/f", 403),
            ("https://api.example.org/f", 403),
        ] {
            let (got, body) = refused(&bridge.connect_url(url, None)).await;
            assert_eq!(got, status, "{url}: {body}");
        }
        // Allowed: the handshake completes (nothing is requested until a message is sent).
        for url in [
            "https://api.example.com/f",
            "https://api.example.com:443/f",
            "https://x.api.example.org:8443/f",
        ] {
            drop(connect(&bridge.connect_url(url, None)).await);
        }
    })
    .await;
}

/// Item 8: encoded separators and `;` parameters in a backend path are refused with 400
/// naming the parameter, unless the operator opts in.
#[tokio::test]
async fn encoded_path_traversal_is_refused_unless_allowed() {
    bounded(async {
        let backend = Backend::start().await;
        let prefix = format!(r"http://127\.0\.0\.1:{}/ws/.*", backend.addr.port());
        let bridge = Bridge::start(&["--allowlist", &prefix]).await;
        for path in [
            "/ws/..%2fadmin",
            "/ws/..%5cadmin",
            "/ws/..;/admin",
            "/ws/%2e%2e%2fadmin",
        ] {
            let (status, body) = refused(&bridge.connect_url(&backend.url(path), None)).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains("query parameter f"), "{body}");
            assert!(body.contains("--allow-encoded-paths"), "{body}");
        }
        let open = Bridge::start(&["--allowlist", &prefix, "--allow-encoded-paths"]).await;
        let mut client = connect(&open.connect_url(&backend.url("/ws/..%2fadmin"), None)).await;
        send_text(&mut client, "verbatim").await;
        assert_eq!(
            backend.wait_for("/ws/..%2fadmin", 1).await[0].body,
            "verbatim"
        );
    })
    .await;
}

/// Item 7: cheap checks come before DNS: a plain GET naming a name that resolves to loopback
/// is 426 (not 403), and a bridge at its connection limit answers 503 before resolving.
#[tokio::test]
async fn no_dns_lookup_happens_before_the_cheap_checks() {
    bounded(async {
        let backend = Backend::start().await;
        let port = backend.addr.port();
        let allow = format!(r"http://(localhost|127\.0\.0\.1):{port}/.*|http://1\.1\.1\.1:9/f");
        let bridge = Bridge::start(&[
            "--allowlist",
            &allow,
            "--deny-private-networks",
            "--max-connections",
            "1",
        ])
        .await;
        let local = format!("http://localhost:{port}/frame");
        let plain = bridge
            .connect_url(&local, None)
            .replacen("ws://", "http://", 1);
        let r = http_client().get(&plain).send().await.unwrap();
        assert_eq!(r.status(), 426);
        // Fill the one slot with a connection to a public address literal (never contacted:
        // nothing is sent on it).
        let _held = connect(&bridge.connect_url("http://1.1.1.1:9/f", None)).await;
        let (status, body) = refused(&bridge.connect_url(&local, None)).await;
        assert_eq!(
            status, 503,
            "at the limit, refused before any lookup: {body}"
        );
        assert!(body.contains("--max-connections"), "{body}");
        drop(_held);
        // With a free slot, the private-network check runs and refuses.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (status, body) = refused(&bridge.connect_url(&local, None)).await;
            if status == 403 {
                assert!(body.contains("--deny-private-networks"), "{body}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{status}: {body}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Item 11: with `--callback-cors-origin`, a request from a foreign origin is refused (403),
/// not delivered with its answer hidden.
#[tokio::test]
async fn callback_requests_from_foreign_origins_are_refused() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge =
            Bridge::for_backend(&backend, &["--callback-cors-origin", "https://app.example"]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        let callback = callback_of(&backend, &mut client).await;
        let http = http_client();
        let send = |origin: Option<&'static str>, body: &'static str| {
            let mut request = http
                .post(&callback)
                .header("content-type", "text/plain")
                .body(body);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            request.send()
        };
        let r = send(Some("https://evil.example"), "forged").await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("--callback-cors-origin"));
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let r = http
                .request(method, &callback)
                .header("origin", "https://evil.example")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403);
        }
        assert_eq!(
            send(Some("https://app.example"), "from the app")
                .await
                .unwrap()
                .status(),
            202
        );
        assert_eq!(send(None, "from a server").await.unwrap().status(), 202);
        assert_eq!(
            next_message(&mut client).await,
            Message::text("from the app")
        );
        assert_eq!(
            next_message(&mut client).await,
            Message::text("from a server")
        );
    })
    .await;
}

/// Item 12: Teredo and local-use NAT64 addresses are refused under `--deny-private-networks`.
#[tokio::test]
async fn teredo_and_local_nat64_backends_are_refused() {
    bounded(async {
        let bridge = Bridge::start(&[
            "--allowlist",
            r"http://\[[0-9a-f:]+\]:9/.*",
            "--deny-private-networks",
        ])
        .await;
        for ip in ["2001:0:4136:e378:8000:63bf:3fff:fdd2", "64:ff9b:1::a00:1"] {
            let (status, body) =
                refused(&bridge.connect_url(&format!("http://[{ip}]:9/f"), None)).await;
            assert_eq!(status, 403, "{ip}: {body}");
        }
    })
    .await;
}

/// Item 4: refusals and backend failures log redacted URLs (no query, cut short) and are
/// throttled: 100 refusals of 60 KB URLs add little to the log and no secret reaches it.
#[tokio::test]
async fn logs_stay_small_and_never_show_a_secret_query() {
    bounded(async {
        let backend = Backend::builder()
            .on("/fail", Reply::status(500))
            .start()
            .await;
        let allow = format!("{}|http://127\\.0\\.0\\.1:1/.*", backend.allowlist());
        let bridge =
            real::RealBridge::spawn(&["--allowlist", &allow, "--backend-retries", "0"], None).await;
        let ws = |query: String| format!("ws://{}/connect?{query}", bridge.addr);
        let evil = format!("http://evil.example/{}?token=SECRET-A", "a".repeat(60_000));
        let http = http_client();
        for _ in 0..50 {
            let plain = ws(format!("f={}", encode(&evil))).replacen("ws://", "http://", 1);
            assert_eq!(http.get(&plain).send().await.unwrap().status(), 426);
        }
        for _ in 0..50 {
            let (status, body) = refused(&ws(format!("f={}", encode(&evil)))).await;
            assert_eq!(status, 403);
            assert!(!body.contains("SECRET"), "{body}");
        }
        // Backend failures: a 500, an unreachable backend, an unreachable connect hook.
        for frame in [
            backend.url("/fail?token=SECRET-B"),
            "http://127.0.0.1:1/f?token=SECRET-C".to_owned(),
        ] {
            let mut client = connect(&ws(format!("f={}", encode(&frame)))).await;
            send_text(&mut client, "x").await;
            assert_eq!(expect_close(&mut client).await.code, CloseCode::Error);
        }
        let (status, _) = refused(&with_hook(
            &ws(format!("f={}", encode(&backend.url("/frame")))),
            "http://127.0.0.1:1/hook?token=SECRET-D",
        ))
        .await;
        assert_eq!(status, 502);
        bridge
            .wait_for_line("connect hook failed", std::time::Duration::from_secs(10))
            .await;
        let log = bridge.stop().await;
        let bytes: usize = log.iter().map(String::len).sum();
        assert!(
            !log.iter().any(|l| l.contains("SECRET")),
            "a secret reached the log: {log:#?}"
        );
        assert!(bytes < 32 * 1024, "the log grew by {bytes} bytes");
        assert!(
            log.iter().any(|l| l.contains("backend answered 500")),
            "{log:#?}"
        );
    })
    .await;
}

/// The publish listener guards itself like the main one (it shares its code with the metrics
/// listener): more silent connections than it serves at once (256) are all closed after
/// `--handshake-timeout`, the ones beyond 256 waiting in the accept queue meanwhile; a body
/// that does not arrive within that limit gets 408 naming it; and a publish gets through
/// afterwards.
#[tokio::test]
async fn the_publish_listener_cuts_off_silent_and_slow_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(async {
        let (_bridge, publish) = Bridge::start_with_publish(&["--handshake-timeout", "1s"]).await;
        let addr: std::net::SocketAddr = publish.trim_start_matches("http://").parse().unwrap();

        let mut silent = Vec::new();
        for _ in 0..300 {
            silent.push(tcp_connect(addr).await);
        }
        let mut slow = tcp_connect(addr).await;
        // Queued behind the silent ones: its head goes out once a slot frees up.
        slow.write_all(b"POST /channels/room HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
            .await
            .unwrap();
        let closed_by_bridge = |mut tcp: tokio::net::TcpStream| async move {
            let mut byte = [0_u8; 1];
            // End of stream or a reset: either way the bridge let go.
            matches!(tcp.read(&mut byte).await, Ok(0) | Err(_))
        };
        let closed = bounded_for(std::time::Duration::from_secs(20), async {
            let mut closed = 0;
            for tcp in silent {
                closed += usize::from(closed_by_bridge(tcp).await);
            }
            closed
        })
        .await;
        assert_eq!(closed, 300);

        let mut answer = Vec::new();
        bounded_for(
            std::time::Duration::from_secs(20),
            slow.read_to_end(&mut answer),
        )
        .await
        .ok();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("--handshake-timeout"), "{answer}");

        let published = http_client()
            .post(format!("{publish}/channels/room"))
            .body("still here")
            .send()
            .await
            .unwrap();
        assert_eq!(published.status(), 200);
    })
    .await;
}
