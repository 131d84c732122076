//! Reliability over real sockets: retries of transient backend failures (same seq, order
//! kept, Retry-After honoured, budget), retried disconnect POSTs, the per-host backend
//! connection limit, HTTP/2 to TLS backends, connection limits and the message rate limit.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use common::pki::TestPki;
use common::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The retries' backoff runs under paused time.
#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_the_same_seq_and_order_is_kept() {
    bounded(async {
        let backend = Backend::builder()
            .on("/flaky", Reply::fail_first(503))
            .start()
            .await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/flaky", Some("/disconnect")).await;
        for i in 0..5 {
            send_text(&mut client, &format!("m{i}")).await;
        }
        let seen = backend.wait_for("/flaky", 10).await;
        // Every message: a 503 attempt, then its retry; never a later seq in between.
        let seqs: Vec<_> = seen.iter().map(|r| r.seq().unwrap()).collect();
        assert_eq!(seqs, vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        for pair in seen.chunks(2) {
            assert_eq!(pair[0].body, pair[1].body);
        }
        drop(client);
        backend.wait_for("/disconnect", 1).await;
        // The disconnect POST comes after every frame POST of the connection, retries included.
        backend.assert_exactly("/flaky", 10);
    })
    .await;
}

/// Retry-After runs under paused time: the wait is measured on the virtual clock.
#[tokio::test(start_paused = true)]
async fn a_429_is_retried_after_its_retry_after() {
    bounded(async {
        // 429 with `Retry-After: 1` to the first attempt of each seq, then 204.
        let backend = Backend::builder()
            .on(
                "/ratelimited",
                Reply::with(|_, attempt| {
                    if attempt == 1 {
                        (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")])
                            .into_response()
                    } else {
                        StatusCode::NO_CONTENT.into_response()
                    }
                }),
            )
            .start()
            .await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let mut client = bridge.client(&backend, "/ratelimited", None).await;
        send_text(&mut client, "patience").await;
        let started = tokio::time::Instant::now();
        let seen = backend.wait_for("/ratelimited", 2).await;
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "waited for Retry-After: 1"
        );
        assert_eq!(seen[0].seq(), Some(0));
        assert_eq!(seen[1].seq(), Some(0));
        assert_eq!(seen[1].body, "patience");
    })
    .await;
}

/// The retries' backoff runs under paused time.
#[tokio::test(start_paused = true)]
async fn when_the_retries_are_spent_the_client_gets_1011_and_the_backend_a_disconnect() {
    bounded(async {
        let backend = Backend::builder()
            .on("/always503", Reply::status(503))
            .start()
            .await;
        let bridge = Bridge::for_backend(&backend, &["--backend-retries", "2"]).await;
        let mut client = bridge
            .client(&backend, "/always503", Some("/disconnect"))
            .await;
        send_text(&mut client, "doomed").await;
        let close = expect_close(&mut client).await;
        assert_eq!(close.code, CloseCode::Error);
        assert!(close.reason.contains("503"), "{}", close.reason);
        backend.wait_for("/disconnect", 1).await;
        bridge.shutdown().await;
        let attempts = backend.assert_exactly("/always503", 3);
        assert!(attempts.iter().all(|a| a.seq() == Some(0)));
        let d = backend.assert_exactly("/disconnect", 1);
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("backend-error"));
    })
    .await;
}

/// The retry's backoff runs under paused time.
#[tokio::test(start_paused = true)]
async fn disconnect_posts_are_retried() {
    bounded(async {
        let backend = Backend::builder()
            .on("/flaky", Reply::fail_first(503))
            .start()
            .await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let client = bridge.client(&backend, "/frame", Some("/flaky")).await;
        drop(client);
        backend.wait_for("/flaky", 2).await;
        bridge.shutdown().await;
        let attempts = backend.assert_exactly("/flaky", 2);
        assert_eq!(
            attempts[0].header("x-ws-proxy-send"),
            attempts[1].header("x-ws-proxy-send")
        );
        assert_eq!(attempts[1].header("x-ws-proxy-close-code"), Some("1006"));
    })
    .await;
}

#[tokio::test]
async fn backend_requests_are_capped_per_host_and_reuse_connections() {
    bounded(async {
        let backend = Backend::builder()
            .on(
                "/slow",
                Reply::after(Duration::from_millis(50), Reply::status(204)),
            )
            .start()
            .await;
        let bridge = Bridge::for_backend(&backend, &["--backend-max-connections", "4"]).await;
        let mut clients = Vec::new();
        for _ in 0..40 {
            clients.push(bridge.client(&backend, "/slow", None).await);
        }
        for round in 0..3 {
            for client in clients.iter_mut() {
                send_text(client, &format!("r{round}")).await;
            }
        }
        let seen = backend.wait_for("/slow", 120).await;
        assert!(backend.max_in_flight() <= 4, "at most 4 at once");
        let connections: HashSet<_> = seen.iter().map(|r| r.peer).collect();
        assert!(
            connections.len() <= 4,
            "{} backend connections for 120 requests",
            connections.len()
        );
    })
    .await;
}

#[tokio::test]
async fn max_connections_answers_503_and_per_ip_429() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--max-connections", "3"]).await;
        let url = bridge.connect_url(&backend.url("/frame"), None);
        let held: Vec<_> = futures_util::future::join_all((0..3).map(|_| connect(&url))).await;
        let (status, body) = refused(&url).await;
        assert_eq!(status, 503);
        assert!(body.contains("--max-connections"), "{body}");
        drop(held);
        // Slots come back when connections end.
        let mut again = None;
        for _ in 0..50 {
            if let Ok((c, _)) = try_connect(&url).await {
                again = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(again.is_some());

        let bridge = Bridge::for_backend(&backend, &["--max-connections-per-ip", "2"]).await;
        let url = bridge.connect_url(&backend.url("/frame"), None);
        let _a = connect(&url).await;
        let _b = connect(&url).await;
        let (status, body) = refused(&url).await;
        assert_eq!(status, 429);
        assert!(body.contains("--max-connections-per-ip"), "{body}");
    })
    .await;
}

#[tokio::test]
async fn a_client_over_the_message_rate_is_closed_with_1008_when_the_action_is_close() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(
            &backend,
            &[
                "--max-messages-per-second",
                "20",
                "--rate-limit-action",
                "close",
            ],
        )
        .await;
        let mut client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        for i in 0..200 {
            if futures_util::SinkExt::send(
                &mut client,
                tokio_tungstenite::tungstenite::Message::text(i.to_string()),
            )
            .await
            .is_err()
            {
                break;
            }
        }
        let close = expect_close(&mut client).await;
        assert_eq!(close.code, CloseCode::Policy);
        assert!(close.reason.contains("rate"), "{}", close.reason);
        let d = backend.wait_for("/disconnect", 1).await;
        assert_eq!(d[0].header("x-ws-proxy-close-cause"), Some("rate-limited"));
        // Final: the disconnect POST comes after every frame POST of the connection.
        let frames = backend.requests("/frame");
        assert!(
            frames.len() >= 20 && frames.len() < 200,
            "{} frames posted",
            frames.len()
        );
        // What was posted is a gapless prefix.
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.seq(), Some(i as u64));
        }
    })
    .await;
}

/// A TLS backend offering h2 and http/1.1 by ALPN, recording the protocol version of each
/// request.
async fn tls_backend(
    pki: &TestPki,
) -> (
    std::net::SocketAddr,
    Arc<std::sync::Mutex<Vec<axum::http::Version>>>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(pki.chain_der(), pki.key_der())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = bind_ephemeral().await;
    let addr = listener.local_addr().unwrap();
    let versions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&versions);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        seen.lock().unwrap().push(request.version());
                        async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, versions)
}

#[tokio::test]
async fn tls_backends_that_offer_h2_get_http2_and_backend_ca_is_trusted() {
    bounded(async {
        websocket_bridge::install_crypto_provider();
        let pki = TestPki::new();
        let (addr, versions) = tls_backend(&pki).await;
        let files = pki.write("backend-ca");
        let allow = format!(r"https://localhost:{}/.*", addr.port());
        let bridge = Bridge::start(&[
            "--allowlist",
            &allow,
            "--backend-ca",
            files.root.to_str().unwrap(),
        ])
        .await;
        let frame = format!("https://localhost:{}/frame", addr.port());
        let mut client = connect(&bridge.connect_url(&frame, None)).await;
        for i in 0..3 {
            send_text(&mut client, &i.to_string()).await;
        }
        for _ in 0..100 {
            if versions.lock().unwrap().len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let versions = versions.lock().unwrap().clone();
        assert_eq!(versions.len(), 3, "{versions:?}");
        assert!(
            versions.iter().all(|v| *v == axum::http::Version::HTTP_2),
            "{versions:?}"
        );
    })
    .await;
}
