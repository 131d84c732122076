//! A property test of the callback API over a real bridge: random bodies and content types
//! POSTed to a callback URL get 202, 400 or 413, and the client receives exactly the accepted
//! messages. (The parsers' own property tests are unit tests beside each parser.)

#![allow(clippy::unwrap_used)]

mod common;

use proptest::prelude::*;

/// Random bodies and content types POSTed to a real bridge's callback URL: the answer is 202,
/// 400 (text that is not UTF-8) or 413 (too large), and the client receives exactly the
/// accepted messages, as text or binary as the content type says.
#[test]
fn the_callback_api_handles_arbitrary_bodies() {
    use common::*;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (bridge, client, callback) = runtime.block_on(async {
        let backend = Backend::start().await;
        let bridge = Bridge::for_backend(&backend, &["--max-message-size", "256"]).await;
        let mut client = bridge.client(&backend, "/frame", None).await;
        send_text(&mut client, "hi").await;
        let callback = backend.callback_url("/frame").await;
        (bridge, client, callback)
    });
    let http = http_client();
    let client = tokio::sync::Mutex::new(client);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(128));
    runner
        .run(
            &(proptest::collection::vec(any::<u8>(), 0..300), "(text/plain|text/html; charset=utf-8|application/json|application/octet-stream|TEXT/X|)"),
            |(body, content_type)| {
                runtime.block_on(async {
                    let mut request = http.post(&callback).body(body.clone());
                    if !content_type.is_empty() {
                        request = request.header("content-type", &content_type);
                    }
                    let status = request.send().await.unwrap().status().as_u16();
                    let text = content_type.to_ascii_lowercase().starts_with("text/");
                    let expected = if body.len() > 256 {
                        413
                    } else if text && std::str::from_utf8(&body).is_err() {
                        400
                    } else {
                        202
                    };
                    assert_eq!(status, expected, "{content_type:?} {} bytes", body.len());
                    if status == 202 {
                        let got = next_message(&mut *client.lock().await).await;
                        let want = if text {
                            tokio_tungstenite::tungstenite::Message::text(String::from_utf8(body).unwrap())
                        } else {
                            tokio_tungstenite::tungstenite::Message::binary(body)
                        };
                        assert_eq!(got, want);
                    }
                });
                Ok(())
            },
        )
        .unwrap();
    drop(bridge);
}
