//! The Prometheus endpoint on its own listener: scraped before and after real traffic, the
//! counters move as they should.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn counters_move_as_traffic_flows() {
    bounded(async {
        let backend = Backend::start().await;
        let allow = backend.allowlist();
        let (bridge, metrics) =
            Bridge::start_with_metrics(&["--allowlist", &allow, "--send-queue", "1"]).await;
        let before = scrape(metrics).await;
        assert_eq!(sample(&before, "ws_bridge_connections_open"), 0.0);

        let mut client = bridge.client(&backend, "/frame", Some("/disconnect")).await;
        send_text(&mut client, "one").await;
        send_text(&mut client, "two").await;
        let callback = backend.wait_for("/frame", 2).await[0]
            .header("x-ws-proxy-send")
            .unwrap()
            .to_owned();
        let http = http_client();
        assert_eq!(
            http.post(&callback)
                .body("12345")
                .send()
                .await
                .unwrap()
                .status(),
            202
        );
        assert_eq!(
            next_message(&mut client).await,
            Message::binary(b"12345".to_vec())
        );
        assert_eq!(
            http.post(bridge.http("/00000000-0000-4000-8000-000000000000"))
                .body("x")
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        let (status, _) = refused(&bridge.connect_url("http://elsewhere.example/", None)).await;
        assert_eq!(status, 403);

        let during = scrape(metrics).await;
        assert_eq!(sample(&during, "ws_bridge_connections_open"), 1.0);
        assert_eq!(sample(&during, "ws_bridge_connections_opened_total"), 1.0);
        assert_eq!(sample(&during, "ws_bridge_messages_in_total"), 2.0);
        assert_eq!(sample(&during, "ws_bridge_bytes_in_total"), 6.0);
        assert_eq!(sample(&during, "ws_bridge_messages_out_total"), 1.0);
        assert_eq!(sample(&during, "ws_bridge_bytes_out_total"), 5.0);
        assert_eq!(
            sample(
                &during,
                "ws_bridge_callback_responses_total{status=\"202\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(
                &during,
                "ws_bridge_callback_responses_total{status=\"404\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(
                &during,
                "ws_bridge_connect_refusals_total{reason=\"allowlist\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(
                &during,
                "ws_bridge_backend_request_duration_seconds_count{kind=\"frame\"}"
            ),
            2.0
        );

        client.close(None).await.unwrap();
        backend.wait_for("/disconnect", 1).await;
        // The disconnect is counted once the task has finished.
        wait_for_sample(metrics, "ws_bridge_connections_open", 0.0).await;
        let after = scrape(metrics).await;
        assert_eq!(sample(&after, "ws_bridge_connections_open"), 0.0);
        assert_eq!(
            sample(
                &after,
                "ws_bridge_connections_closed_total{cause=\"client-close\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(
                &after,
                "ws_bridge_backend_request_duration_seconds_count{kind=\"disconnect\"}"
            ),
            1.0
        );
    })
    .await;
}

/// The retry's backoff runs under paused time.
#[tokio::test(start_paused = true)]
async fn retries_failures_and_queue_full_are_counted() {
    bounded(async {
        let backend = Backend::builder()
            .on("/always503", Reply::status(503))
            .start()
            .await;
        let allow = backend.allowlist();
        let (bridge, metrics) = Bridge::start_with_metrics(&[
            "--allowlist",
            &allow,
            "--backend-retries",
            "1",
            "--send-queue",
            "1",
        ])
        .await;
        let mut client = bridge.client(&backend, "/always503", None).await;
        send_text(&mut client, "x").await;
        expect_close(&mut client).await;
        let text = scrape(metrics).await;
        assert_eq!(
            sample(&text, "ws_bridge_backend_retries_total{kind=\"frame\"}"),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                "ws_bridge_backend_failures_total{kind=\"frame\",reason=\"status\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                "ws_bridge_connections_closed_total{cause=\"backend-error\"}"
            ),
            1.0
        );

        // A client that never reads: its one-message queue fills.
        let mut quiet = bridge.client(&backend, "/frame", None).await;
        send_text(&mut quiet, "hi").await;
        let callback = backend.callback_url("/frame").await;
        let http = http_client();
        let mut saw_503 = false;
        for _ in 0..200 {
            if http
                .post(&callback)
                .body(vec![0u8; 256 * 1024])
                .send()
                .await
                .unwrap()
                .status()
                == 503
            {
                saw_503 = true;
                break;
            }
        }
        assert!(saw_503);
        let text = scrape(metrics).await;
        assert!(sample(&text, "ws_bridge_queue_full_total") >= 1.0, "{text}");
        assert!(sample(&text, "ws_bridge_callback_responses_total{status=\"503\"}") >= 1.0);
    })
    .await;
}
