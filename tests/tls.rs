//! TLS with a certificate chain generated inside the test (root -> intermediate -> leaf):
//! wss:// for the client and an https callback URL.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

struct Pki {
    root_pem: String,
    chain_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_params = || {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    };
    let root = CertifiedIssuer::self_signed(ca_params(), KeyPair::generate().unwrap()).unwrap();
    let intermediate =
        CertifiedIssuer::signed_by(ca_params(), KeyPair::generate().unwrap(), &root).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &intermediate)
        .unwrap();
    Pki {
        root_pem: root.pem(),
        chain_pem: format!("{}{}", leaf.pem(), intermediate.pem()),
        key_pem: leaf_key.serialize_pem(),
    }
}

#[tokio::test]
async fn wss_and_https_callbacks_work_with_a_certificate_chain() {
    bounded(async {
        websocket_bridge::install_crypto_provider();
        let pki = pki();
        let dir = std::env::temp_dir().join(format!("ws-bridge-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("chain.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &pki.chain_pem).unwrap();
        std::fs::write(&key, &pki.key_pem).unwrap();

        let backend = Backend::start().await;
        let allow = backend.allowlist();
        let bridge = Bridge::start(&[
            "--allowlist",
            &allow,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
        .await;

        // wss:// client trusting only the root.
        let mut roots = rustls::RootCertStore::empty();
        let root_der = rustls_pki_types::CertificateDer::from_pem_slice(pki.root_pem.as_bytes());
        roots.add(root_der.unwrap()).unwrap();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let tcp = TcpStream::connect(bridge.addr).await.unwrap();
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
