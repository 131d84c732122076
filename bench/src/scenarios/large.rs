//! `large`: 64 KiB and 1 MiB messages through one bridge process, four windows in turn:
//! upstream (clients stream to the backend, one message per flush) and downstream (the bench
//! POSTs to the clients' callback URLs back to back), each at both sizes, with
//! `--large-connections` clients. Reports MB/s (10^6 bytes) and bridge CPU per MiB.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{
    Ctx, GRACE, Window, clients_with_callbacks, count_messages, join_bounded, measure,
    open_clients, post_messages, stop_bridge, stream_messages,
};
use crate::BoxError;
use crate::bridge::Bridge;
use crate::client::{Counter, Poster};
use crate::contract::Needs;
use crate::report::{Metric, ScenarioResult};

/// The message sizes measured, with their labels.
const SIZES: [(usize, &str); 2] = [(64 << 10, "64 KiB"), (1 << 20, "1 MiB")];
const MIB: f64 = (1 << 20) as f64;

/// Which way the messages go.
#[derive(Clone, Copy)]
enum Direction {
    Upstream,
    Downstream,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Downstream => "downstream",
        }
    }
}

/// `large`: throughput and CPU per MiB for large messages both ways.
pub(crate) async fn large(ctx: &Ctx<'_>) -> Result<ScenarioResult, BoxError> {
    let needs = Needs {
        max_message_bytes: SIZES.iter().map(|(size, _)| *size).max().unwrap_or(0),
        ..Needs::default()
    };
    let mut bridge = ctx.start_bridge("large", needs).await?;
    let outcome = async {
        let mut metrics = Vec::new();
        let mut details = serde_json::Map::new();
        for direction in [Direction::Upstream, Direction::Downstream] {
            for (size, label) in SIZES {
                let window = match direction {
                    Direction::Upstream => upstream(ctx, &mut bridge, size).await?,
                    Direction::Downstream => downstream(ctx, &mut bridge, size).await?,
                };
                let name = format!("{} {label}", direction.name());
                metrics.push(Metric::info(
                    &format!("{name}: throughput"),
                    window.rate() / 1e6,
                    "MB/s",
                ));
                metrics.push(Metric::info(
                    &format!("{name}: bridge CPU per MiB"),
                    cpu_ms_per_mib(&window),
                    "ms",
                ));
                details.insert(name, window.details());
            }
        }
        Ok::<_, BoxError>((metrics, details))
    }
    .await;
    let stopped = stop_bridge(bridge).await;
    let (metrics, mut details) = outcome?;
    details.insert("bridge".to_owned(), stopped);
    details.insert(
        "connections".to_owned(),
        json!(ctx.settings.large_connections),
    );
    Ok(ScenarioResult {
        name: "large".to_owned(),
        metrics,
        details: serde_json::Value::Object(details),
    })
}

/// Bridge CPU milliseconds per MiB carried (the window's events are bytes).
fn cpu_ms_per_mib(window: &Window) -> f64 {
    if window.events == 0.0 {
        f64::NAN
    } else {
        window.bridge_cpu * 1e3 / (window.events / MIB)
    }
}

/// One upstream window: fresh clients stream `size`-byte messages to `/sink`; the backend
/// counts the bytes.
async fn upstream(ctx: &Ctx<'_>, bridge: &mut Bridge, size: usize) -> Result<Window, BoxError> {
    let s = ctx.settings;
    let url = ctx.connect_url(bridge, "/sink");
    let clients = open_clients(&url, s.large_connections, s.handshake_concurrency).await?;
    let payload = Bytes::from(vec![0xA5; size]);
    let t0 = Instant::now() + s.warmup;
    let t1 = t0 + s.duration;
    let counters = [Counter::default(), Counter::default()];
    let mut tasks = JoinSet::new();
    for ws in clients {
        tasks.spawn(stream_messages(
            ws,
            payload.clone(),
            1,
            t1,
            counters.clone(),
        ));
    }
    let bytes = &ctx.backend.stats().sink_bytes;
    let window = measure(ctx, bridge, "large", bytes, t0, t1).await;
    join_bounded(&mut tasks, t1 + GRACE).await;
    window
}

/// One downstream window: fresh clients learn their callback URLs, then one poster per
/// client POSTs `size`-byte bodies back to back; the clients count the bytes.
async fn downstream(ctx: &Ctx<'_>, bridge: &mut Bridge, size: usize) -> Result<Window, BoxError> {
    let s = ctx.settings;
    let pairs = clients_with_callbacks(ctx, bridge, s.large_connections).await?;
    let payload = Bytes::from(vec![0xA5; size]);
    let t0 = Instant::now() + s.warmup;
    let t1 = t0 + s.duration;
    let stop = t1 + GRACE;
    let [messages, bytes] = [Counter::default(), Counter::default()];
    let answers = [Counter::default(), Counter::default(), Counter::default()];
    let mut tasks = JoinSet::new();
    for (ws, callback) in pairs {
        tasks.spawn(count_messages(
            ws,
            stop,
            [Arc::clone(&messages), Arc::clone(&bytes)],
        ));
        tasks.spawn(post_messages(
            Poster::new(bridge.addr()),
            callback,
            payload.clone(),
            t1,
            answers.clone(),
        ));
    }
    let window = measure(ctx, bridge, "large", &bytes, t0, t1).await;
    join_bounded(&mut tasks, stop + GRACE).await;
    window
}
