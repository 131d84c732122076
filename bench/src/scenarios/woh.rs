//! `woh-upstream`, `woh-roundtrip` and `woh-downstream`: the message-rate scenarios over a
//! websocket-over-http route (Pushpin's protocol), to be read beside the seed protocol's
//! `upstream`, `roundtrip` and `downstream` of the same run.
//!
//! The bridge gets `--route /woh/=http://BACKEND/woh/,protocol=websocket-over-http`; clients
//! open `ws://BRIDGE/woh/{sink,echo,subscribe}` and the backend's `/woh/*` handlers answer
//! (see [`crate::backend`]: OPEN is answered with GRIP on, so the backend's messages carry
//! the `m:` prefix the bridge strips).
//!
//! - `woh-upstream`: the clients and pacing of `upstream` (`--connections` clients, each
//!   writing 32 messages per flush as fast as backpressure allows) on `/woh/sink`. The bridge
//!   keeps one request in flight per connection and sends what arrives meanwhile as one
//!   batch, so the figure beside CPU per message is backend requests per message.
//! - `woh-roundtrip`: the closed loop of `roundtrip` on `/woh/echo`: the reply rides in the
//!   answer to the request that carried the message (no callback POST). One message is in
//!   flight per connection, so nothing is batched: the latency is that of a lone message.
//! - `woh-downstream`: like `downstream` (one HTTP request per message, `--connections`
//!   posters each feeding one client back to back), but through the publish API: client `i`
//!   is subscribed to channel `bench-{i}` by a `c:` subscribe control message in its OPEN
//!   answer, and poster `i` sends `POST /channels/bench-{i}` on `--publish-address`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::{StatusCode, Uri};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use super::{
    BATCH, Ctx, GRACE, Window, count_messages, join_bounded, measure, open_clients, round_trips,
    stop_bridge, stream_messages,
};
use crate::BoxError;
use crate::bridge::Bridge;
use crate::client::{Counter, Poster, Ws, connect, open_many_with, read};
use crate::contract::{Needs, WOH_ROUTE};
use crate::report::{Metric, ScenarioResult, quantile};

/// Targets from issue 15.
pub(crate) mod targets {
    /// Bridge CPU per upstream message on a websocket-over-http route when batches form,
    /// microseconds.
    pub(crate) const UPSTREAM_CPU_US: f64 = 5.0;
}

/// The websocket-over-http scenarios and the seed scenario each is read beside.
pub(crate) const BESIDE_SEED: [(&str, &str); 3] = [
    ("woh-upstream", "upstream"),
    ("woh-roundtrip", "roundtrip"),
    ("woh-downstream", "downstream"),
];

/// The route to the backend, and a publish API for `publish`.
fn needs(ctx: &Ctx<'_>, publish: bool) -> Needs {
    Needs {
        woh_backend: Some(ctx.backend.addr()),
        publish,
        ..Needs::default()
    }
}

/// `ws://BRIDGE/woh/{tail}`.
fn url(bridge: &Bridge, tail: &str) -> String {
    format!("ws://{}{WOH_ROUTE}{tail}", bridge.addr())
}

/// Measures the window like [`measure`] and also counts the backend's `/woh/*` requests in it.
async fn measure_with_requests(
    ctx: &Ctx<'_>,
    bridge: &mut Bridge,
    scenario: &str,
    count: &AtomicU64,
    (t0, t1): (Instant, Instant),
) -> Result<(Window, u64), BoxError> {
    let requests = &ctx.backend.stats().woh_requests;
    let sampled = async {
        sleep_until(t0).await;
        let before = read(requests);
        sleep_until(t1).await;
        read(requests) - before
    };
    let (window, requests) = tokio::join!(measure(ctx, bridge, scenario, count, t0, t1), sampled);
    Ok((window?, requests))
}

/// Backend requests per event, and bridge cores busy: what every woh scenario adds.
fn load_metrics(window: &Window, requests: u64, per: &str) -> [Metric; 2] {
    [
        Metric::info(
            &format!("backend requests per {per}"),
            requests as f64 / window.events,
            "req",
        ),
        Metric::info(
            "bridge cores busy",
            window.bridge_cpu / window.seconds,
            "cores",
        ),
    ]
}

/// `woh-upstream`: `upstream`'s streaming clients on `/woh/sink`.
pub(crate) async fn woh_upstream(ctx: &Ctx<'_>) -> Result<ScenarioResult, BoxError> {
    let s = ctx.settings;
    let stats = ctx.backend.stats();
    let bad_before = read(&stats.woh_bad_bodies);
    let mut bridge = ctx.start_bridge("woh-upstream", needs(ctx, false)).await?;
    let clients = open_clients(
        &url(&bridge, "sink"),
        s.connections,
        s.handshake_concurrency,
    )
    .await?;
    let t0 = Instant::now() + s.warmup;
    let t1 = t0 + s.duration;
    let sent = Counter::default();
    let errors = Counter::default();
    let mut tasks = JoinSet::new();
    for ws in clients {
        tasks.spawn(stream_messages(
            ws,
            s.payload(),
            BATCH,
            t1,
            [Arc::clone(&sent), Arc::clone(&errors)],
        ));
    }
    let measured = measure_with_requests(
        ctx,
        &mut bridge,
        "woh-upstream",
        &stats.woh_messages,
        (t0, t1),
    )
    .await;
    join_bounded(&mut tasks, t1 + GRACE).await;
    let stopped = stop_bridge(bridge).await;
    let (window, requests) = measured?;
    let mut metrics = vec![
        Metric::info("messages/s (at backend)", window.rate(), "msg/s"),
        window.cost(
            "bridge CPU per message",
            "bridge instructions per message",
            Some(targets::UPSTREAM_CPU_US),
        ),
    ];
    metrics.extend(load_metrics(&window, requests, "message"));
    Ok(ScenarioResult {
        name: "woh-upstream".to_owned(),
        metrics,
        details: json!({
            "window": window.details(),
            "backend_requests_in_window": requests,
            "messages_written_by_clients": read(&sent),
            "client_errors": read(&errors),
            "bad_event_bodies": read(&stats.woh_bad_bodies) - bad_before,
            "bridge": stopped,
        }),
    })
}

/// `woh-roundtrip`: `roundtrip`'s closed loop on `/woh/echo`, the reply in the answer body.
pub(crate) async fn woh_roundtrip(ctx: &Ctx<'_>) -> Result<ScenarioResult, BoxError> {
    let s = ctx.settings;
    let stats = ctx.backend.stats();
    let bad_before = read(&stats.woh_bad_bodies);
    let mut bridge = ctx.start_bridge("woh-roundtrip", needs(ctx, false)).await?;
    let clients = open_clients(
        &url(&bridge, "echo"),
        s.connections,
        s.handshake_concurrency,
    )
    .await?;
    let t0 = Instant::now() + s.warmup;
    let t1 = t0 + s.duration;
    let completed = Counter::default();
    let mut tasks = JoinSet::new();
    for ws in clients {
        tasks.spawn(round_trips(ws, s.payload(), t0, t1, Arc::clone(&completed)));
    }
    let measured =
        measure_with_requests(ctx, &mut bridge, "woh-roundtrip", &completed, (t0, t1)).await;
    let outcomes = join_bounded(&mut tasks, t1 + GRACE + Duration::from_secs(1)).await;
    let stopped = stop_bridge(bridge).await;
    let (window, requests) = measured?;

    let mut latencies = Vec::new();
    let mut client_errors = 0;
    for (mut samples, errored) in outcomes {
        latencies.append(&mut samples);
        client_errors += u64::from(errored);
    }
    latencies.sort_unstable();
    let ms = |q: f64| quantile(&latencies, q).as_secs_f64() * 1e3;
    let mut metrics = vec![
        Metric::info("round trips/s", window.rate(), "rt/s"),
        window.cost(
            "bridge CPU per round trip",
            "bridge instructions per round trip",
            None,
        ),
    ];
    if ctx.callgrind() {
        metrics.push(Metric::info("latency p99 (under valgrind)", ms(0.99), "ms"));
    } else {
        metrics.extend([
            Metric::info("latency p50", ms(0.5), "ms"),
            Metric::info("latency p99", ms(0.99), "ms"),
            Metric::info("latency p99.9", ms(0.999), "ms"),
        ]);
    }
    metrics.extend(load_metrics(&window, requests, "round trip"));
    Ok(ScenarioResult {
        name: "woh-roundtrip".to_owned(),
        metrics,
        details: json!({
            "window": window.details(),
            "backend_requests_in_window": requests,
            "latency_samples": latencies.len(),
            "latency_max_ms": latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            "client_errors": client_errors,
            "bad_event_bodies": read(&stats.woh_bad_bodies) - bad_before,
            "bridge": stopped,
        }),
    })
}

/// What the publishers of `woh-downstream` saw.
#[derive(Default)]
struct Publishes {
    /// Answered 200 with one recipient.
    delivered: Counter,
    /// Answered 200 with no recipient (the subscription had not taken effect yet).
    unheard: Counter,
    /// Members evicted as slow consumers, per the answers.
    evicted: Counter,
    /// Answered 503 and tried again after 1 ms.
    busy: Counter,
    /// Any other outcome.
    failed: Counter,
}

/// `woh-downstream`: one poster per client publishes to the client's own channel.
pub(crate) async fn woh_downstream(ctx: &Ctx<'_>) -> Result<ScenarioResult, BoxError> {
    let s = ctx.settings;
    let mut bridge = ctx.start_bridge("woh-downstream", needs(ctx, true)).await?;
    let outcome = publish_to_members(ctx, &mut bridge).await;
    let stopped = stop_bridge(bridge).await;
    let (window, requests, publishes, received) = outcome?;
    let mut metrics = vec![
        Metric::info("messages/s (at clients)", window.rate(), "msg/s"),
        window.cost(
            "bridge CPU per message",
            "bridge instructions per message",
            None,
        ),
    ];
    metrics.extend(load_metrics(&window, requests, "message"));
    Ok(ScenarioResult {
        name: "woh-downstream".to_owned(),
        metrics,
        details: json!({
            "window": window.details(),
            "backend_requests_in_window": requests,
            "publishes_delivered_200": read(&publishes.delivered),
            "publishes_without_recipient": read(&publishes.unheard),
            "members_evicted": read(&publishes.evicted),
            "publishes_503": read(&publishes.busy),
            "publishes_failed": read(&publishes.failed),
            "messages_received_total": received,
            "connections": s.connections,
            "bridge": stopped,
        }),
    })
}

/// Opens the subscribed clients, publishes and measures; the caller stops the bridge.
async fn publish_to_members(
    ctx: &Ctx<'_>,
    bridge: &mut Bridge,
) -> Result<(Window, u64, Arc<Publishes>, u64), BoxError> {
    let s = ctx.settings;
    let publish = bridge
        .publish_addr()
        .ok_or("the bridge has no publish API")?;
    let members = open_members(bridge, s.connections, s.handshake_concurrency).await?;
    let t0 = Instant::now() + s.warmup;
    let t1 = t0 + s.duration;
    let stop = t1 + GRACE;
    let received = Counter::default();
    let received_bytes = Counter::default();
    let publishes = Arc::new(Publishes::default());
    let mut tasks = JoinSet::new();
    for (i, ws) in members {
        tasks.spawn(count_messages(
            ws,
            stop,
            [Arc::clone(&received), Arc::clone(&received_bytes)],
        ));
        let path: Uri = format!("/channels/{}", channel(i)).parse()?;
        tasks.spawn(publish_messages(
            Poster::new(publish),
            path,
            s.payload(),
            t1,
            Arc::clone(&publishes),
        ));
    }
    let measured = measure_with_requests(ctx, bridge, "woh-downstream", &received, (t0, t1)).await;
    join_bounded(&mut tasks, stop + GRACE).await;
    let (window, requests) = measured?;
    Ok((window, requests, publishes, read(&received)))
}

/// Client `i`'s channel.
fn channel(i: usize) -> String {
    format!("bench-{i}")
}

/// Opens `count` clients on `/woh/subscribe?channel=bench-{i}`, each with its index.
async fn open_members(
    bridge: &Bridge,
    count: usize,
    in_flight: usize,
) -> Result<Vec<(usize, Ws)>, BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let base: Arc<str> = Arc::from(url(bridge, "subscribe?channel=").as_str());
    let deadline = Instant::now() + Duration::from_secs(30);
    let (open, failed, last_error) = open_many_with(count, in_flight, deadline, move || {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let url = format!("{base}{}", channel(i));
        async move { Ok((i, connect(&url, false).await?)) }
    })
    .await;
    if failed > 0 {
        return Err(format!(
            "{failed} of {count} members could not connect: {}",
            last_error.unwrap_or_default()
        )
        .into());
    }
    Ok(open)
}

/// Publishes `payload` to `path` back to back until `end`; a 503 backs off 1 ms, a failure
/// 10 ms.
async fn publish_messages(
    mut poster: Poster,
    path: Uri,
    payload: Bytes,
    end: Instant,
    publishes: Arc<Publishes>,
) {
    while Instant::now() < end {
        let outcome = timeout_at(
            end,
            poster.exchange(
                &path,
                "application/octet-stream",
                Some("application/json"),
                payload.clone(),
            ),
        )
        .await;
        match outcome {
            Ok(Ok((StatusCode::OK, answer))) => {
                let counts: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
                let count = |key: &str| counts.get(key).and_then(serde_json::Value::as_u64);
                let counter = if count("recipients").unwrap_or(0) > 0 {
                    &publishes.delivered
                } else {
                    &publishes.unheard
                };
                counter.fetch_add(1, Ordering::Relaxed);
                publishes
                    .evicted
                    .fetch_add(count("evicted").unwrap_or(0), Ordering::Relaxed);
            }
            Ok(Ok((StatusCode::SERVICE_UNAVAILABLE, _))) => {
                publishes.busy.fetch_add(1, Ordering::Relaxed);
                sleep(Duration::from_millis(1)).await;
            }
            Ok(_) => {
                publishes.failed.fetch_add(1, Ordering::Relaxed);
                sleep(Duration::from_millis(10)).await;
            }
            Err(_) => return,
        }
    }
}
