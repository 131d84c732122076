//! Cluster mode: three real bridge processes on real Redis (issue 14), each test twice: on one
//! `redis-server`, and on a Redis Cluster of three masters. Any node
//! answers any callback with the owner's answer, channel publications reach members on every
//! node once and in order, a node killed with SIGKILL has its connections reported by a
//! survivor, and a Redis outage stops only cross-node traffic, which resumes by itself.
//!
//! Each test starts its own Redis on free ports; without `redis-server` installed the tests
//! print `SKIPPED` (under CI they fail: `.ci/run` installs it).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::real::RealBridge;
use common::redis::{Redis, RedisKind};
use common::*;
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// The cluster tests run processes in real time and wait for heartbeats to expire.
const CLUSTER_TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One bridge node: the process and its publish listener's base URL.
struct Node {
    bridge: RealBridge,
    publish: String,
}

impl Node {
    /// Starts node `node-{n}` on `redis` with `--node-timeout 2s`, a publish listener and
    /// `extra` flags, and waits until it joined the cluster.
    async fn start(redis: &Redis, backend: &Backend, n: usize, extra: &[&str]) -> Node {
        let publish_address = format!("127.0.0.1:{}", free_port());
        let node_id = format!("node-{n}");
        let redis_flags = redis.flags();
        let allowlist = backend.allowlist();
        let mut args = vec![
            "--allowlist",
            allowlist.as_str(),
            "--node-id",
            node_id.as_str(),
            "--node-timeout",
            "2s",
            "--publish-address",
            publish_address.as_str(),
        ];
        args.extend(redis_flags.iter().map(String::as_str));
        args.extend_from_slice(extra);
        let bridge = RealBridge::spawn(&args, None).await;
        bridge
            .wait_for_line("cluster: joined", Duration::from_secs(10))
            .await;
        Node {
            bridge,
            publish: format!("http://{publish_address}"),
        }
    }

    /// `callback` (a callback URL handed out by any node) sent to this node instead.
    fn via(&self, callback: &str) -> String {
        let rest = callback
            .strip_prefix("http://")
            .expect("an http:// callback URL");
        let path = &rest[rest.find('/').expect("a path in the callback URL")..];
        format!("http://{}{path}", self.bridge.addr)
    }

    /// A client on this node whose frames go to `frame`; returns it and its callback URL
    /// (learnt from its first frame POST).
    async fn client(&self, backend: &Backend, frame: &str) -> (Client, String) {
        let url = self
            .bridge
            .connect_url(&backend.url(frame), Some(&backend.url("/gone")));
        let mut client = connect(&url).await;
        send_text(&mut client, "hello").await;
        let callback = backend.callback_url(frame).await;
        (client, callback)
    }
}

/// Redis of `kind` and three nodes; node `n` gets the flags `extra[n - 1]` besides the common
/// ones.
async fn three_nodes(
    backend: &Backend,
    kind: RedisKind,
    extra: [&[&str]; 3],
) -> Option<(Redis, Vec<Node>)> {
    let redis = Redis::start(kind).await?;
    let mut nodes = Vec::new();
    for (n, extra) in (1..=3).zip(extra) {
        nodes.push(Node::start(&redis, backend, n, extra).await);
    }
    Some((redis, nodes))
}

/// A message's payload as text (callback POSTs without a content type arrive as binary).
fn text_of(message: Message) -> String {
    match message {
        Message::Text(text) => text.to_string(),
        Message::Binary(bytes) => String::from_utf8(bytes.to_vec()).expect("UTF-8 payload"),
        other => panic!("expected a data message, got {other:?}"),
    }
}

/// Acceptance 1: a callback POSTed to each of the three nodes reaches a client on node 1 in
/// order; GET and channel sub-resources work through any node; 503 with Retry-After comes
/// back from the owner (node 3) when its queue is full; after the close, every node answers 404.
async fn any_node_serves_any_callback_with_the_owners_answer(kind: RedisKind) {
    bounded_for(CLUSTER_TEST_TIMEOUT, async {
        let backend = Backend::start().await;
        let Some((_redis, nodes)) = three_nodes(&backend, kind, [&[], &[], &["--send-queue", "2"]]).await else {
            return;
        };
        let http = http_client();
        let (mut client, callback) = nodes[0].client(&backend, "/frame").await;
        let token = callback.rsplit('/').next().unwrap();
        assert!(token.starts_with("node-1."), "the token names its node: {token}");

        // One caller that waits for each answer: its messages arrive in order, whichever node
        // it goes through.
        for round in 0..10 {
            for (n, node) in nodes.iter().enumerate() {
                let answer = http
                    .post(node.via(&callback))
                    .body(format!("{round}-via-node-{}", n + 1))
                    .send()
                    .await
                    .unwrap();
                let status = answer.status();
                let body = answer.text().await.unwrap();
                assert_eq!(status, StatusCode::ACCEPTED, "via node {}: {body}", n + 1);
            }
        }
        for round in 0..10 {
            for n in 1..=3 {
                assert_eq!(
                    text_of(next_message(&mut client).await),
                    format!("{round}-via-node-{n}")
                );
            }
        }

        // GET through node 3 is the owner's description; PUT/DELETE of a channel through node 2.
        let described = http.get(nodes[2].via(&callback)).send().await.unwrap();
        assert_eq!(described.status(), StatusCode::OK);
        let described: serde_json::Value =
            serde_json::from_slice(&described.bytes().await.unwrap()).unwrap();
        assert_eq!(described["channels"], serde_json::json!([]), "{described}");
        let joined = http
            .put(format!("{}/channels/room", nodes[1].via(&callback)))
            .send()
            .await
            .unwrap();
        assert_eq!(joined.status(), StatusCode::NO_CONTENT);
        let described = http.get(nodes[2].via(&callback)).send().await.unwrap();
        let described: serde_json::Value =
            serde_json::from_slice(&described.bytes().await.unwrap()).unwrap();
        assert_eq!(described["channels"], serde_json::json!(["room"]), "{described}");
        let bad = http
            .put(format!("{}/channels/no%20spaces", nodes[1].via(&callback)))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "the owner's 400");

        // A forged token routes nowhere: 404 on every node, for a known node and an unknown one.
        let forged = callback.replace(
            &token[token.len() - 12..],
            if token.ends_with("000000000000") {
                "111111111111"
            } else {
                "000000000000"
            },
        );
        let unknown_node = callback.replace("node-1.", "node-9.");
        for node in &nodes {
            for url in [&forged, &unknown_node] {
                let answer = http.post(node.via(url)).body("x").send().await.unwrap();
                assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{url} via {}", node.bridge.addr);
            }
        }

        // A raw client on node 3 (`--send-queue 2`) that completes the handshake and never
        // reads: its socket buffers fill, then its queue, and node 3's 503 comes back through
        // node 2.
        let mut sleeper = tcp_connect(nodes[2].bridge.addr.parse().unwrap()).await;
        let head = format!(
            "GET /connect?f={}&d={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            encode(&backend.url("/sleeper")),
            encode(&backend.url("/sleeper-gone")),
        );
        sleeper.write_all(head.as_bytes()).await.unwrap();
        sleeper
            .write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
            .await
            .unwrap();
        let sleeper_callback = backend.callback_url("/sleeper").await;
        let chunk = "x".repeat(64 * 1024);
        let mut full = None;
        for _ in 0..2000 {
            let answer = http
                .post(nodes[1].via(&sleeper_callback))
                .body(chunk.clone())
                .send()
                .await
                .unwrap();
            match answer.status() {
                StatusCode::ACCEPTED => {}
                StatusCode::SERVICE_UNAVAILABLE => {
                    full = Some(answer);
                    break;
                }
                other => panic!("unexpected {other} before the queue filled"),
            }
        }
        let full = full.expect("503 once the owner's queue is full");
        assert!(full.headers().contains_key("retry-after"), "{full:?}");
        let body = full.text().await.unwrap();
        assert!(body.contains("queue"), "the owner's message: {body}");
        drop(sleeper);

        // After the close, every node answers 404.
        client.close(None).await.unwrap();
        expect_close_reply(&mut client).await;
        let gone = backend.wait_for("/gone", 1).await;
        assert!(gone.iter().any(|r| r.header("x-ws-proxy-send") == Some(callback.as_str())));
        for node in &nodes {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let status = http.post(node.via(&callback)).body("late").send().await.unwrap().status();
                if status == StatusCode::NOT_FOUND {
                    break;
                }
                assert!(Instant::now() < deadline, "still {status} via {}", node.bridge.addr);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let status = http.get(node.via(&callback)).send().await.unwrap().status();
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
    })
    .await;
}

/// Acceptance 2: members on all three nodes; 1,000 publishes through node 2 reach every member
/// once and in order.
async fn a_channel_spans_the_nodes_in_publish_order(kind: RedisKind) {
    bounded_for(CLUSTER_TEST_TIMEOUT, async {
        let backend = Backend::start().await;
        let Some((_redis, nodes)) = three_nodes(&backend, kind, [&[]; 3]).await else {
            return;
        };
        let http = http_client();
        let mut readers = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            // Two members on each node, joined through different nodes.
            for k in 0..2 {
                let (mut member, callback) = node.client(&backend, &format!("/m{n}{k}")).await;
                let through = &nodes[(n + k) % 3];
                let joined = http
                    .put(format!("{}/channels/room", through.via(&callback)))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(joined.status(), StatusCode::NO_CONTENT);
                readers.push(tokio::spawn(async move {
                    for i in 0..1000 {
                        assert_eq!(text_of(next_message(&mut member).await), format!("{i}"));
                    }
                    member
                }));
            }
        }
        // One client outside the channel.
        let (mut outsider, _) = nodes[0].client(&backend, "/outsider").await;

        for i in 0..1000 {
            let answer = http
                .post(format!("{}/channels/room", nodes[1].publish))
                .header("content-type", "text/plain")
                .body(format!("{i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK, "publish {i}");
        }
        let mut members = Vec::new();
        for reader in readers {
            members.push(reader.await.unwrap());
        }
        // Exactly once: a marker sent to each member afterwards is the next thing it reads.
        let end = http
            .post(format!("{}/channels/room", nodes[2].publish))
            .header("content-type", "text/plain")
            .body("end")
            .send()
            .await
            .unwrap();
        assert_eq!(end.status(), StatusCode::OK);
        for member in &mut members {
            assert_eq!(text_of(next_message(member).await), "end");
        }
        // The outsider got nothing: a message sent to it through its callback is its first.
        let outsider_callback = backend.callback_url("/outsider").await;
        let sent = http
            .post(nodes[2].via(&outsider_callback))
            .body("only this")
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), StatusCode::ACCEPTED);
        assert_eq!(text_of(next_message(&mut outsider).await), "only this");
    })
    .await;
}

/// Waits until node 3's Redis hash holds `count` records and (with few enough of them for
/// `HGETALL` to come back whole) `HGETALL` shows `text`.
async fn wait_for_records(redis: &Redis, count: usize, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = redis.command("HLEN {wsb}:conns:node-3").await;
        let records = redis.command("HGETALL {wsb}:conns:node-3").await;
        if held.trim() == format!(":{count}") && records.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "HLEN {{wsb}}:conns:node-3 = {held:?} (want {count}), records {records:?} (want {text:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Acceptance 3: node 3 killed with SIGKILL while it holds 100 connections: a survivor sends
/// 100 disconnect POSTs (1006, cause `node-lost`, initiator `bridge`, one per connection), and
/// the callbacks then answer 404 on the survivors. A websocket-over-http connection on node 3
/// gets its `DISCONNECT` event from a survivor, with its `Connection-Id` and the `Meta-*` value
/// its backend set last.
async fn a_killed_nodes_connections_are_reported_by_a_survivor(kind: RedisKind) {
    bounded_for(CLUSTER_TEST_TIMEOUT, async {
        // A websocket-over-http backend at /woh/room: OPEN answered with OPEN and a meta value,
        // a client message with a new meta value, anything else with nothing.
        let backend = Backend::builder()
            .on(
                "/woh/room",
                Reply::with(|request, _| {
                    let open = request.body.starts_with(b"OPEN");
                    let user = match &request.body[..] {
                        b if b.starts_with(b"OPEN") => "alice",
                        b if b.starts_with(b"TEXT") => "bob",
                        _ => "",
                    };
                    (
                        [
                            ("content-type", "application/websocket-events"),
                            ("set-meta-user", user),
                        ],
                        if open { "OPEN\r\n" } else { "" },
                    )
                }),
            )
            .start()
            .await;
        let route = format!("/woh/={},protocol=websocket-over-http", backend.url("/woh"));
        let flags: &[&str] = &["--route", &route];
        let Some((redis, mut nodes)) = three_nodes(&backend, kind, [flags; 3]).await else {
            return;
        };
        let mut woh_client = connect(&format!("ws://{}/woh/room", nodes[2].bridge.addr)).await;
        // Its record follows the meta values: the one set by the OPEN answer, then this one.
        send_text(&mut woh_client, "rename me").await;
        wait_for_records(&redis, 1, "bob").await;
        let mut clients = Vec::new();
        for _ in 0..100 {
            let url = nodes[2]
                .bridge
                .connect_url(&backend.url("/frame"), Some(&backend.url("/gone")));
            let mut client = connect(&url).await;
            send_text(&mut client, "hello").await;
            clients.push(client);
        }
        let callbacks: HashSet<String> = backend
            .wait_for("/frame", 100)
            .await
            .iter()
            .map(|r| r.header("x-ws-proxy-send").unwrap().to_owned())
            .collect();
        assert_eq!(callbacks.len(), 100);
        // Node 3 records its connections in Redis a moment after they open.
        wait_for_records(&redis, 101, "").await;

        let killed_at = Instant::now();
        let victim = nodes.remove(2);
        let _ = victim.bridge.stop().await;
        let gone = backend.wait_for("/gone", 100).await;
        let reported_after = killed_at.elapsed();
        assert!(
            reported_after < Duration::from_secs(2 + 8),
            "reported {reported_after:?} after the kill (--node-timeout 2s)"
        );
        let mut reported = HashSet::new();
        let mut request_ids = HashSet::new();
        for post in &gone {
            assert_eq!(post.header("x-ws-proxy-close-code"), Some("1006"));
            assert_eq!(post.header("x-ws-proxy-close-cause"), Some("node-lost"));
            assert_eq!(post.header("x-ws-proxy-close-initiator"), Some("bridge"));
            reported.insert(post.header("x-ws-proxy-send").unwrap().to_owned());
            request_ids.insert(post.header("x-ws-proxy-request-id").unwrap().to_owned());
        }
        assert_eq!(
            reported, callbacks,
            "one disconnect POST per connection of node 3"
        );
        assert_eq!(
            request_ids.len(),
            100,
            "each with its connection's request id"
        );
        // The websocket-over-http connection's backend gets its DISCONNECT, as from its node.
        let woh = backend.wait_for("/woh/room", 3).await;
        assert_eq!(&woh[2].body[..], b"DISCONNECT\r\n");
        assert_eq!(
            woh[2].header("connection-id"),
            woh[0].header("connection-id")
        );
        assert_eq!(woh[1].header("meta-user"), Some("alice"));
        assert_eq!(woh[2].header("meta-user"), Some("bob"));
        assert_eq!(
            woh[2].header("content-type"),
            Some("application/websocket-events")
        );

        let http = http_client();
        for callback in &callbacks {
            for node in &nodes {
                let status = http
                    .post(node.via(callback))
                    .body("x")
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "{callback} via {}",
                    node.bridge.addr
                );
            }
        }
        let left = redis.command("EXISTS {wsb}:conns:node-3").await;
        assert_eq!(
            left.trim(),
            ":0",
            "the dead node's record is gone once reported"
        );
        drop(clients);
        drop(woh_client);
    })
    .await;
}

/// Acceptance 4: Redis killed and restarted while clients stay connected: local traffic never
/// stops, cross-node callbacks and publishes answer 503 with Retry-After meanwhile, and
/// cross-node traffic resumes by itself.
async fn a_redis_outage_stops_only_cross_node_traffic(kind: RedisKind) {
    bounded_for(CLUSTER_TEST_TIMEOUT, async {
        let backend = Backend::start().await;
        let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics_flag = metrics.to_string();
        let node_2_flags = ["--metrics-address", metrics_flag.as_str()];
        let Some((mut redis, nodes)) = three_nodes(&backend, kind, [&[], &node_2_flags, &[]]).await
        else {
            return;
        };
        let http = http_client();
        let (mut client, callback) = nodes[0].client(&backend, "/frame").await;
        let joined = http
            .put(format!("{}/channels/room", nodes[0].via(&callback)))
            .send()
            .await
            .unwrap();
        assert_eq!(joined.status(), StatusCode::NO_CONTENT);
        let through_node_2 = http
            .post(nodes[1].via(&callback))
            .body("before")
            .send()
            .await
            .unwrap();
        assert_eq!(through_node_2.status(), StatusCode::ACCEPTED);
        assert_eq!(text_of(next_message(&mut client).await), "before");
        let before = scrape(metrics).await;
        assert_eq!(sample(&before, "ws_bridge_cluster_redis_up"), 1.0);
        assert_eq!(
            sample(
                &before,
                "ws_bridge_cluster_forwards_total{outcome=\"answered\"}"
            ),
            1.0
        );
        assert!(
            before.contains("ws_bridge_cluster_forward_duration_seconds_count 1"),
            "{before}"
        );

        redis.kill().await;
        nodes[1]
            .bridge
            .wait_for_line("cluster: Redis unreachable", Duration::from_secs(10))
            .await;

        // Local traffic goes on: frames reach the backend, node 1's callbacks and publishes
        // reach the client.
        for i in 0..20 {
            send_text(&mut client, &format!("up {i}")).await;
            let local = http
                .post(&callback)
                .body(format!("down {i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                local.status(),
                StatusCode::ACCEPTED,
                "local callback during the outage"
            );
            assert_eq!(
                text_of(next_message(&mut client).await),
                format!("down {i}")
            );
        }
        let frames = backend.wait_for("/frame", 21).await;
        let bodies: Vec<String> = frames[1..]
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        assert_eq!(
            bodies,
            (0..20).map(|i| format!("up {i}")).collect::<Vec<_>>()
        );

        // Cross-node: 503 with Retry-After, never a silent loss.
        let cross = http
            .post(nodes[1].via(&callback))
            .body("lost?")
            .send()
            .await
            .unwrap();
        assert_eq!(cross.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(cross.headers().contains_key("retry-after"));
        let published = http
            .post(format!("{}/channels/room", nodes[1].publish))
            .header("content-type", "text/plain")
            .body("lost?")
            .send()
            .await
            .unwrap();
        assert_eq!(published.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(published.headers().contains_key("retry-after"));
        let during = scrape(metrics).await;
        assert_eq!(sample(&during, "ws_bridge_cluster_redis_up"), 0.0);
        assert_eq!(
            sample(&during, "ws_bridge_cluster_redis_transitions_total"),
            1.0
        );
        assert!(
            sample(
                &during,
                "ws_bridge_cluster_forwards_total{outcome=\"redis-down\"}"
            ) >= 1.0,
            "{during}"
        );

        // Redis returns: cross-node callbacks and publications resume by themselves.
        redis.restart().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = http
                .post(nodes[1].via(&callback))
                .body("after")
                .send()
                .await
                .unwrap()
                .status();
            if status == StatusCode::ACCEPTED {
                break;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(
                Instant::now() < deadline,
                "cross-node callbacks did not resume"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(text_of(next_message(&mut client).await), "after");
        nodes[1]
            .bridge
            .wait_for_line("cluster: Redis reachable again", Duration::from_secs(10))
            .await;
        wait_for_sample(metrics, "ws_bridge_cluster_redis_up", 1.0).await;
        assert_eq!(
            sample(
                &scrape(metrics).await,
                "ws_bridge_cluster_redis_transitions_total"
            ),
            2.0
        );
        nodes[0]
            .bridge
            .wait_for_line("cluster: Redis reachable again", Duration::from_secs(10))
            .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut sent = 0;
        loop {
            // Until node 1 has resubscribed, a publication may reach no member: send numbered
            // ones until one arrives, then check that the next ones arrive in order.
            let answer = http
                .post(format!("{}/channels/room", nodes[1].publish))
                .header("content-type", "text/plain")
                .body(format!("p{sent}"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            sent += 1;
            if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(
                Duration::from_millis(200),
                futures_util::StreamExt::next(&mut client),
            )
            .await
            {
                let first: usize = text.trim_start_matches('p').parse().unwrap();
                for i in first + 1..sent {
                    assert_eq!(text_of(next_message(&mut client).await), format!("p{i}"));
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "publications across nodes did not resume"
            );
        }
        // Each node notices by itself (at its next heartbeat) that Redis is back.
        nodes[2]
            .bridge
            .wait_for_line("cluster: Redis reachable again", Duration::from_secs(10))
            .await;
        for i in 0..10 {
            let answer = http
                .post(format!("{}/channels/room", nodes[2].publish))
                .header("content-type", "text/plain")
                .body(format!("q{i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
        }
        for i in 0..10 {
            assert_eq!(text_of(next_message(&mut client).await), format!("q{i}"));
        }
    })
    .await;
}

#[tokio::test]
async fn any_node_serves_any_callback_with_the_owners_answer_on_one_server() {
    any_node_serves_any_callback_with_the_owners_answer(RedisKind::Server).await;
}

#[tokio::test]
async fn any_node_serves_any_callback_with_the_owners_answer_on_a_redis_cluster() {
    any_node_serves_any_callback_with_the_owners_answer(RedisKind::Cluster).await;
}

#[tokio::test]
async fn a_channel_spans_the_nodes_in_publish_order_on_one_server() {
    a_channel_spans_the_nodes_in_publish_order(RedisKind::Server).await;
}

#[tokio::test]
async fn a_channel_spans_the_nodes_in_publish_order_on_a_redis_cluster() {
    a_channel_spans_the_nodes_in_publish_order(RedisKind::Cluster).await;
}

#[tokio::test]
async fn a_killed_nodes_connections_are_reported_by_a_survivor_on_one_server() {
    a_killed_nodes_connections_are_reported_by_a_survivor(RedisKind::Server).await;
}

#[tokio::test]
async fn a_killed_nodes_connections_are_reported_by_a_survivor_on_a_redis_cluster() {
    a_killed_nodes_connections_are_reported_by_a_survivor(RedisKind::Cluster).await;
}

#[tokio::test]
async fn a_redis_outage_stops_only_cross_node_traffic_on_one_server() {
    a_redis_outage_stops_only_cross_node_traffic(RedisKind::Server).await;
}

#[tokio::test]
async fn a_redis_outage_stops_only_cross_node_traffic_on_a_redis_cluster() {
    a_redis_outage_stops_only_cross_node_traffic(RedisKind::Cluster).await;
}
