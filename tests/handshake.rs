//! `GET /connect` refusals over real sockets: allowlist (anchored, deny-all, host suffix),
//! header and query forms, bad URLs, conflicts, plain GETs; and the health endpoints.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test]
async fn without_an_allowlist_everything_is_refused_with_403() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::start(&[]).await;
        let (status, body) = refused(&bridge.connect_url(&backend.url("/frame"), None)).await;
        assert_eq!(status, 403);
        assert!(body.contains("no allowlist"), "{body}");
        assert!(body.contains("--allowlist"), "{body}");
        bridge.shutdown().await;
        assert!(backend.requests("/frame").is_empty());
    })
    .await;
}

#[tokio::test]
async fn allowlist_matching_is_anchored_to_the_whole_url() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let sneaky = format!(
            "http://127.0.0.2:{}/?u={}",
            backend.addr.port(),
            backend.url("/frame")
        );
        let (status, body) = refused(&bridge.connect_url(&sneaky, None)).await;
        assert_eq!(status, 403);
        assert!(
            body.contains("frame URL") && body.contains("query parameter f"),
            "{body}"
        );

        // The disconnect URL is checked too, and named in the refusal.
        let url = bridge.connect_url(&backend.url("/frame"), Some("http://evil.example/d"));
        let (status, body) = refused(&url).await;
        assert_eq!(status, 403);
        assert!(
            body.contains("disconnect URL") && body.contains("query parameter d"),
            "{body}"
        );

        // The real thing is accepted.
        connect(&bridge.connect_url(&backend.url("/frame"), Some(&backend.url("/d")))).await;
    })
    .await;
}

#[tokio::test]
async fn urls_may_come_in_headers_and_conflicts_are_400() {
    bounded(async {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;

        let mut request = format!("ws://{}/connect", bridge.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "x-ws-proxy-on-frame",
            backend.url("/frame").parse().unwrap(),
        );
        request.headers_mut().insert(
            "x-ws-proxy-on-disconnect",
            backend.url("/disconnect").parse().unwrap(),
        );
        let (mut client, _) = try_connect(request).await.unwrap();
        send_text(&mut client, "via headers").await;
        assert_eq!(backend.wait_for("/frame", 1).await[0].body, "via headers");
        drop(client);
        backend.wait_for("/disconnect", 1).await;

        // Query and header naming different frame URLs.
        let mut request = bridge
            .connect_url(&backend.url("/frame"), None)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "x-ws-proxy-on-frame",
            backend.url("/other").parse().unwrap(),
        );
        let (status, body) = refused(request).await;
        assert_eq!(status, 400);
        assert!(body.contains("given twice"), "{body}");
        // Header with a URL outside the allowlist: 403 naming the header.
        let mut request = format!("ws://{}/connect", bridge.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "x-ws-proxy-on-frame",
            "https://evil.example/".parse().unwrap(),
        );
        let (status, body) = refused(request).await;
        assert_eq!(status, 403);
        assert!(body.contains("header x-ws-proxy-on-frame"), "{body}");
    })
    .await;
}

#[tokio::test]
async fn malformed_requests_get_400_with_a_message() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let base = format!("ws://{}/connect", bridge.addr);
        let cases = [
            (base.clone(), "missing frame URL"),
            (format!("{base}?f=not%20a%20url"), "not an absolute URL"),
            (
                format!("{base}?f={}", encode("ftp://127.0.0.1/x")),
                "scheme",
            ),
            (
                format!(
                    "{base}?f={}",
                    encode(&format!("http://user:pw@{}/frame", backend.addr))
                ),
                "user info",
            ),
        ];
        for (url, expected) in cases {
            let (status, body) = refused(&url).await;
            assert_eq!(status, 400, "{url}");
            assert!(body.contains(expected), "{url}: {body}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_plain_get_gets_426_with_a_message() {
    bounded(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &[]).await;
        let http = http_client();
        let url = bridge
            .connect_url(&backend.url("/frame"), None)
            .replacen("ws://", "http://", 1);
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 426);
        assert_eq!(r.headers()["upgrade"], "websocket");
        assert!(r.text().await.unwrap().contains("WebSocket"));
        // Health endpoints.
        assert_eq!(
            http.get(bridge.http("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            http.get(bridge.http("/readyz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            http.get(bridge.http("/nope/x/y"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
    })
    .await;
}

#[tokio::test]
async fn host_suffix_allowlist_uses_the_parsed_host() {
    bounded(async {
        // Suffix entries admit https only; refusals happen before any request is made, so
        // these hosts need not exist.
        let bridge = Bridge::start(&["--host-suffix-allowlist", ".example.com"]).await;
        for bad in [
            "https://evilexample.com/f",
            "https://example.com.evil.net/f",
            "https://evil.net/?h=api.example.com",
            "http://api.example.com/f",
        ] {
            let (status, body) = refused(&bridge.connect_url(bad, None)).await;
            assert_eq!(status, 403, "{bad}: {body}");
        }
        // An allowed host passes the allowlist: the handshake completes (the backend itself is
        // never contacted until a message is sent).
        let client = connect(&bridge.connect_url("https://api.example.com/frames", None)).await;
        drop(client);
    })
    .await;
}
