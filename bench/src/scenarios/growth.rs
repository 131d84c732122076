//! `growth`: does a message cost the bridge more when many connections are active?
//!
//! Two windows against one bridge process, at the same total message rate
//! (`--growth-rate`, paced, so neither window saturates anything):
//!
//! 1. `--connections` clients (64) share the rate;
//! 2. then the fleet grows to `--growth-connections` (10,000) and all of them share it, each
//!    sending every `growth_connections / growth_rate` seconds.
//!
//! The figure is bridge CPU per message in each window and their ratio. Connections beyond
//! what one process may hold are opened by client shards (`--client-processes`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::time::Instant;

use super::idle::{Fleet, Pace};
use super::{Ctx, Window, measure, stop_bridge};
use crate::BoxError;
use crate::client::{Counter, read};
use crate::contract::Needs;
use crate::report::{Metric, ScenarioResult};

/// `growth`: bridge CPU per message with few and with many active connections, same rate.
pub(crate) async fn growth(ctx: &Ctx<'_>) -> Result<ScenarioResult, BoxError> {
    let s = ctx.settings;
    let few = s.connections;
    let many = s.growth_connections.max(few + 1);
    if !(s.growth_rate.is_finite() && s.growth_rate > 0.0) {
        return Err("--growth-rate must be positive".into());
    }
    let mut bridge = ctx.start_bridge("growth", Needs::default()).await?;
    // Messages sent and connections lost by the in-process senders.
    let counters = [Counter::default(), Counter::default()];
    let outcome = async {
        let url = ctx.connect_url(&bridge, "/sink");
        let payload = Bytes::from(vec![0xA5; s.size]);
        let interval = Arc::new(AtomicU64::new(interval_us(few, s.growth_rate)));
        let pace = || Pace {
            interval_us: Arc::clone(&interval),
            payload: payload.clone(),
            counters: counters.clone(),
        };
        let counted = &ctx.backend.stats().sink_messages;

        // The first fleet stays in this process: its pace changes when the fleet grows.
        let first = Fleet::open(s, &url, few, Some(1), Some(pace())).await?;
        if first.opened < few {
            return Err(format!(
                "only {} of {few} connections opened: {}",
                first.opened,
                first.last_error.clone().unwrap_or_default()
            )
            .into());
        }
        let t0 = Instant::now() + s.warmup;
        let at_few = measure(ctx, &mut bridge, "growth", counted, t0, t0 + s.duration).await?;

        interval.store(interval_us(many, s.growth_rate), Ordering::Relaxed);
        let opening = Instant::now();
        let second = Fleet::open(s, &url, many - few, None, Some(pace())).await?;
        let open_seconds = opening.elapsed().as_secs_f64();
        let opened = few + second.opened;
        if opened < many {
            // A smaller fleet would be measured under the wrong name.
            return Err(format!(
                "only {opened} of {many} connections opened: {}",
                second.last_error.clone().unwrap_or_default()
            )
            .into());
        }
        // Every new connection starts within one interval; then warm up as usual.
        let settle = s.warmup + Duration::from_secs_f64(many as f64 / s.growth_rate);
        let t0 = Instant::now() + settle;
        let at_many = measure(ctx, &mut bridge, "growth", counted, t0, t0 + s.duration).await?;
        let rss_kib = bridge.rss_kib().ok();
        let processes = second.processes;
        second.release().await;
        first.release().await;
        Ok::<_, BoxError>((at_few, at_many, opened, open_seconds, rss_kib, processes))
    }
    .await;
    let stopped = stop_bridge(bridge).await;
    let (at_few, at_many, opened, open_seconds, rss_kib, processes) = outcome?;
    let few_us = at_few.bridge_us_per_event();
    let many_us = at_many.bridge_us_per_event();
    Ok(ScenarioResult {
        name: "growth".to_owned(),
        metrics: vec![
            Metric::info(&format!("messages/s with {few}"), at_few.rate(), "msg/s"),
            Metric::info(&format!("bridge CPU per message at {few}"), few_us, "us"),
            Metric::info(&format!("messages/s with {many}"), at_many.rate(), "msg/s"),
            Metric::info(&format!("bridge CPU per message at {many}"), many_us, "us"),
            Metric::info(
                &format!("CPU per message, {many} vs {few}"),
                many_us / few_us,
                "x",
            ),
        ],
        details: json!({
            "rate_asked_msg_per_s": s.growth_rate,
            "paced_rate_held": held(&at_few, s.growth_rate) && held(&at_many, s.growth_rate),
            "window_few": at_few.details(),
            "window_many": at_many.details(),
            "connections_opened": opened,
            "opening_seconds": open_seconds,
            "client_processes_for_growth": processes,
            "bridge_rss_kib_at_many": rss_kib,
            "bridge": stopped,
            "messages_sent_in_process": read(&counters[0]),
            "connections_lost_in_process": read(&counters[1]),
        }),
    })
}

/// Microseconds between one connection's messages when `connections` share `rate` msg/s.
fn interval_us(connections: usize, rate: f64) -> u64 {
    (connections as f64 * 1e6 / rate).round().max(1.0) as u64
}

/// Whether a window saw at least 90 % of the paced rate (else the figure is not at that rate).
fn held(window: &Window, rate: f64) -> bool {
    window.rate() >= 0.9 * rate
}
