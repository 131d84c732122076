//! TLS with a certificate chain generated inside the test (root -> intermediate -> leaf):
//! wss:// for the client and an https callback URL.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::pki::TestPki;
use common::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn wss_and_https_callbacks_work_with_a_certificate_chain() {
    bounded(async {
        websocket_bridge::install_crypto_provider();
        let pki = TestPki::new();
        let files = pki.write("tls");

        let backend = Backend::start().await;
        let allow = backend.allowlist();
        let bridge =
            Bridge::start(&[&["--allowlist", &allow][..], &files.tls_flags()].concat()).await;

        // wss:// client trusting only the root.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.root_der()).unwrap();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let tcp = tcp_connect(bridge.addr).await;
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        let url = format!(
            "wss://localhost:{}/connect?f={}&d={}",
            bridge.addr.port(),
            encode(&backend.url("/frame")),
            encode(&backend.url("/disconnect"))
        );
        let (mut client, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        send_text(&mut client, "over tls").await;
        let frame = &backend.wait_for("/frame", 1).await[0];
        assert_eq!(frame.body, "over tls");
        let callback = frame.header("x-ws-proxy-send").unwrap().to_owned();
        assert!(
            callback.starts_with(&format!("https://127.0.0.1:{}/", bridge.addr.port())),
            "{callback}"
        );

        // https callback from a client that trusts only the root.
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pki.root_pem.as_bytes()).unwrap()])
            .build()
            .unwrap();
        let r = http
            .post(&callback)
            .header("content-type", "text/plain")
            .body("back over https")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(
            next_message(&mut client).await,
            Message::text("back over https")
        );

        client.close(None).await.unwrap();
        backend.wait_for("/disconnect", 1).await;
    })
    .await;
}
