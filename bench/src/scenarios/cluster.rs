//! `cluster`: what cluster mode costs. The bench starts its own `redis-server` on a free
//! loopback port and three nodes of our bridge on it (`--redis-url`, `--node-id node-N`,
//! `--publish-address`), each ready once it has logged both its listening line and
//! `cluster: joined`. Every CPU figure is summed over the processes that do the work, read
//! from `/proc/PID/stat` of each, and each part is shown too.
//!
//! 1. **Callbacks through another node.** `--connections` (64) clients connect to node 1 and
//!    learn their callback URLs (token `{node}.{uuid}`) through `/hello`. Then one poster per
//!    client POSTs `--size` byte messages back to back, as in `downstream`: first to node 1
//!    itself (one node doing the work, Redis on but not on the path), then to node 2, which
//!    forwards each through Redis to node 1 and relays its answer. Each for `--warmup` then
//!    `--duration`. Figures: messages/s at the clients; CPU per message of node 1 + node 2 +
//!    redis-server; POST latency p50/p99; the ratio of the two CPU figures.
//! 2. **A channel across three nodes.** `--cluster-members` (3,000) members, spread evenly
//!    over the three nodes, join one channel through the connect hook; publications of
//!    `--size` bytes go at `--cluster-rate` (20/s) through node 1's publish API, which
//!    PUBLISHes each to Redis once, and Redis hands it to the three nodes. Figures: CPU per
//!    delivery of the three nodes + redis-server; Redis CPU per publication; publish to
//!    last delivery p50/p99; deliveries missing, duplicated or out of order (all must be 0).
//! 3. **The same fanout on one node**: the `fanout` scenario with the same members and rate
//!    on a bridge without Redis, for the ratio.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::{StatusCode, Uri};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};

use super::fanout::{
    Book, DRAIN_BOUND, FILES_HEADROOM, OPEN_BOUND, STAMP, Verdict, listen, message,
    open_files_limit,
};
use super::{
    Ctx, GRACE, Settings, clients_with_callbacks, count_messages, join_bounded,
    machine_busy_seconds, stop_bridge,
};
use crate::BoxError;
use crate::bridge::{Bridge, process_cpu_seconds};
use crate::client::{Counter, Poster, open_many_with, read};
use crate::contract::{ClusterNode, Needs};
use crate::member::Member;
use crate::redis::{RedisCounts, RedisServer};
use crate::report::{Metric, ScenarioResult, quantile};

/// Nodes in the cluster.
const NODES: usize = 3;
/// The channel every member joins.
const CHANNEL: &str = "bench-cluster";
/// Tries of one callback POST answered 503, 1 ms apart, before it counts as failed.
const TRIES_503: usize = 1000;
/// How long Redis's idle CPU (heartbeats, its own timers) is measured before the channel
/// part, to take it out of the CPU per publication.
const IDLE_SPAN: Duration = Duration::from_secs(3);

/// `cluster`: callbacks through another node, and a channel across three nodes.
pub(crate) async fn cluster(ctx: &Ctx<'_>) -> Result<ScenarioResult, BoxError> {
    let s = ctx.settings;
    if s.cluster_members < NODES {
        return Err(format!("--cluster-members must be at least {NODES}").into());
    }
    if !(s.cluster_rate.is_finite() && s.cluster_rate > 0.0) {
        return Err("--cluster-rate must be positive".into());
    }
    if let Some(limit) = open_files_limit()
        && s.cluster_members + s.connections + FILES_HEADROOM > limit
    {
        return Err(format!(
            "--cluster-members {} needs about {} open files in the bench; its limit is {limit}",
            s.cluster_members,
            s.cluster_members + s.connections + FILES_HEADROOM
        )
        .into());
    }
    let redis = RedisServer::start(s.clock_ticks).await?;
    let mut nodes = Vec::with_capacity(NODES);
    for number in 1..=NODES {
        let needs = Needs {
            publish: true,
            cluster: Some(ClusterNode {
                redis_port: redis.port(),
                number,
            }),
            ..Needs::default()
        };
        match ctx
            .start_bridge(&format!("cluster-node{number}"), needs)
            .await
        {
            Ok(node) => nodes.push(node),
            Err(e) => {
                stop_all(nodes, redis).await;
                return Err(format!("node {number}: {e}").into());
            }
        }
    }
    let cluster = Cluster {
        redis,
        nodes,
        ticks: s.clock_ticks,
    };
    let callbacks = callbacks(ctx, &cluster).await;
    let channel = match &callbacks {
        Ok(_) => Some(channel(ctx, &cluster).await),
        Err(_) => None,
    };
    let stopped = stop_all(cluster.nodes, cluster.redis).await;
    let (direct, forwarded) = callbacks?;
    let channel = channel.ok_or("not run")??;

    // The same fanout on one node without Redis: the `fanout` scenario's own code.
    let single_settings = Settings {
        fanout_members: s.cluster_members,
        fanout_rate: s.cluster_rate,
        ..s.clone()
    };
    let single_ctx = Ctx {
        settings: &single_settings,
        ..*ctx
    };
    let single = super::fanout(&single_ctx).await?;
    let pick = |name: &str| {
        single
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map_or(f64::NAN, |m| m.value)
    };
    let single_cpu = pick("bridge CPU per delivery");

    let mut metrics = Vec::new();
    metrics.extend(direct.metrics("via node 1", &["node 1", "node 2", "redis"]));
    metrics.extend(forwarded.metrics("via node 2", &["node 1", "node 2", "redis"]));
    metrics.push(Metric::info(
        "via node 2 / via node 1: CPU per message",
        forwarded.span.total_us() / direct.span.total_us(),
        "x",
    ));
    metrics.extend(channel.metrics());
    metrics.extend([
        Metric::info("1 node (fanout): CPU per delivery", single_cpu, "us"),
        Metric::info(
            "1 node (fanout): publish to last delivery p50",
            pick("publish to last delivery p50"),
            "ms",
        ),
        Metric::info(
            "1 node (fanout): publish to last delivery p99",
            pick("publish to last delivery p99"),
            "ms",
        ),
        Metric::info(
            "3 nodes / 1 node: CPU per delivery",
            channel.span.total_us() / single_cpu,
            "x",
        ),
    ]);
    Ok(ScenarioResult {
        name: "cluster".to_owned(),
        metrics,
        details: json!({
            "nodes": NODES,
            "callbacks_via_node_1": direct.details(),
            "callbacks_via_node_2": forwarded.details(),
            "channel_3_nodes": channel.details,
            "channel_3_nodes_window": channel.span.details(&["node 1", "node 2", "node 3", "redis"]),
            "fanout_1_node": { "metrics": single.metrics, "details": single.details },
            "processes": stopped,
        }),
    })
}

/// Stops the nodes (SIGTERM, drained) and then Redis; how each ended.
async fn stop_all(nodes: Vec<Bridge>, redis: RedisServer) -> serde_json::Value {
    let mut ended = Vec::new();
    for node in nodes {
        ended.push(stop_bridge(node).await);
    }
    json!({ "nodes": ended, "redis": redis.stop().await })
}

/// The processes of the cluster.
struct Cluster {
    redis: RedisServer,
    nodes: Vec<Bridge>,
    ticks: f64,
}

/// CPU times of some of the cluster's processes and Redis's counters at one instant.
struct Reading {
    at: Instant,
    count: u64,
    /// Per part: the first `n` nodes, then redis-server.
    cpu: Vec<f64>,
    bench: f64,
    busy: f64,
    redis: RedisCounts,
    /// redis-server's CPU seconds from schedstat (nanosecond resolution).
    redis_scheduled: f64,
}

impl Cluster {
    /// Reads the CPU time of the first `nodes` nodes and of redis-server, and `count`.
    async fn read(&self, nodes: usize, count: &AtomicU64) -> Result<Reading, BoxError> {
        let redis = self.redis.counts().await?;
        let mut cpu = Vec::with_capacity(nodes + 1);
        for node in &self.nodes[..nodes] {
            cpu.push(node.cpu_seconds()?);
        }
        cpu.push(self.redis.cpu_seconds()?);
        let redis_scheduled = self.redis.scheduled_seconds()?;
        Ok(Reading {
            at: Instant::now(),
            count: read(count),
            cpu,
            bench: process_cpu_seconds("/proc/self/stat", self.ticks)?,
            busy: machine_busy_seconds(self.ticks).unwrap_or(f64::NAN),
            redis,
            redis_scheduled,
        })
    }
}

/// What happened between two readings.
struct Span {
    seconds: f64,
    events: f64,
    /// CPU seconds per part.
    cpu: Vec<f64>,
    bench_cpu: f64,
    /// CPU seconds of every other process on the machine: noise.
    others_cpu: f64,
    redis_commands: u64,
    redis_publishes: u64,
    redis_publish_usec: u64,
    /// redis-server's CPU seconds by schedstat.
    redis_scheduled: f64,
}

impl Span {
    fn between(a: &Reading, b: &Reading) -> Self {
        let cpu: Vec<f64> = a.cpu.iter().zip(&b.cpu).map(|(x, y)| y - x).collect();
        let bench_cpu = b.bench - a.bench;
        Self {
            seconds: (b.at - a.at).as_secs_f64(),
            events: b.count.saturating_sub(a.count) as f64,
            others_cpu: ((b.busy - a.busy) - cpu.iter().sum::<f64>() - bench_cpu).max(0.0),
            cpu,
            bench_cpu,
            redis_commands: b.redis.commands.saturating_sub(a.redis.commands),
            redis_publishes: b.redis.publishes.saturating_sub(a.redis.publishes),
            redis_publish_usec: b.redis.publish_usec.saturating_sub(a.redis.publish_usec),
            redis_scheduled: b.redis_scheduled - a.redis_scheduled,
        }
    }

    fn per_event_us(&self, seconds: f64) -> f64 {
        if self.events == 0.0 {
            f64::NAN
        } else {
            seconds * 1e6 / self.events
        }
    }

    /// CPU of every part per event, microseconds.
    fn total_us(&self) -> f64 {
        self.per_event_us(self.cpu.iter().sum())
    }

    /// Redis CPU per event, microseconds (Redis is the last part).
    fn redis_us(&self) -> f64 {
        self.per_event_us(self.cpu.last().copied().unwrap_or(f64::NAN))
    }

    fn warn_if_noisy(&self, what: &str) {
        let others = self.others_cpu / self.seconds;
        if others > 0.2 {
            eprintln!(
                "[cluster] warning: other processes used {others:.2} cores during {what}: rates and latencies are disturbed"
            );
        }
    }

    fn details(&self, parts: &[&str]) -> serde_json::Value {
        let cpu: serde_json::Map<String, serde_json::Value> = parts
            .iter()
            .zip(&self.cpu)
            .map(|(name, seconds)| ((*name).to_owned(), json!(seconds)))
            .collect();
        json!({
            "window_seconds": self.seconds,
            "events": self.events,
            "cpu_seconds": cpu,
            "cores_busy_total": self.cpu.iter().sum::<f64>() / self.seconds,
            "bench_cores_busy": self.bench_cpu / self.seconds,
            "other_processes_cores_busy": self.others_cpu / self.seconds,
            "redis_commands": self.redis_commands,
            "redis_publishes": self.redis_publishes,
            "redis_publish_usec": self.redis_publish_usec,
            "redis_cpu_seconds_schedstat": self.redis_scheduled,
        })
    }
}

/// One phase of the callback part: POSTs through one node.
struct CallbackPhase {
    span: Span,
    latencies: Vec<Duration>,
    accepted: u64,
    retried_503: u64,
    failed: u64,
}

impl CallbackPhase {
    fn metrics(&self, via: &str, parts: &[&str]) -> Vec<Metric> {
        let ms = |q: f64| {
            if self.latencies.is_empty() {
                f64::NAN
            } else {
                quantile(&self.latencies, q).as_secs_f64() * 1e3
            }
        };
        let mut metrics = vec![
            Metric::info(
                &format!("{via}: messages/s"),
                self.span.events / self.span.seconds,
                "msg/s",
            ),
            Metric::info(
                &format!("{via}: CPU per message, all parts"),
                self.span.total_us(),
                "us",
            ),
        ];
        for (name, seconds) in parts.iter().zip(&self.span.cpu) {
            metrics.push(Metric::info(
                &format!("{via}: {name} CPU per message"),
                self.span.per_event_us(*seconds),
                "us",
            ));
        }
        metrics.extend([
            Metric::info(&format!("{via}: POST p50"), ms(0.5), "ms"),
            Metric::info(&format!("{via}: POST p99"), ms(0.99), "ms"),
        ]);
        metrics
    }

    fn details(&self) -> serde_json::Value {
        json!({
            "window": self.span.details(&["node 1", "node 2", "redis"]),
            "posts_accepted_2xx": self.accepted,
            "posts_retried_503": self.retried_503,
            "posts_failed": self.failed,
            "latency_samples": self.latencies.len(),
            "latency_max_ms": self.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            "redis_publishes_per_message": self.span.redis_publishes as f64 / self.span.events,
            "redis_cpu_per_message_us": self.span.redis_us(),
            "redis_cpu_per_message_us_schedstat": self.span.per_event_us(self.span.redis_scheduled),
        })
    }
}

/// Part 1: clients on node 1, callbacks POSTed through node 1 and then through node 2.
async fn callbacks(
    ctx: &Ctx<'_>,
    cluster: &Cluster,
) -> Result<(CallbackPhase, CallbackPhase), BoxError> {
    let s = ctx.settings;
    let owner = &cluster.nodes[0];
    let pairs = clients_with_callbacks(ctx, owner, s.connections).await?;
    let received = Counter::default();
    let received_bytes = Counter::default();
    // Counted until both phases are over; the tasks are aborted then.
    let stop = Instant::now() + (s.warmup + s.duration + Duration::from_secs(5)) * 2;
    let mut receivers = JoinSet::new();
    let mut paths = Vec::with_capacity(pairs.len());
    for (ws, path) in pairs {
        receivers.spawn(count_messages(
            ws,
            stop,
            [Arc::clone(&received), Arc::clone(&received_bytes)],
        ));
        paths.push(path);
    }
    let direct = post_phase(ctx, cluster, &paths, owner.addr(), &received).await;
    let forwarded = match &direct {
        Ok(_) => Some(post_phase(ctx, cluster, &paths, cluster.nodes[1].addr(), &received).await),
        Err(_) => None,
    };
    receivers.abort_all();
    let direct = direct?;
    let forwarded = forwarded.ok_or("not run")??;
    if forwarded.accepted == 0 {
        return Err("no callback POST through node 2 was accepted".into());
    }
    Ok((direct, forwarded))
}

/// POSTs to every path through `via`, back to back, for a warm-up and a window.
async fn post_phase(
    ctx: &Ctx<'_>,
    cluster: &Cluster,
    paths: &[Uri],
    via: SocketAddr,
    received: &AtomicU64,
) -> Result<CallbackPhase, BoxError> {
    let s = ctx.settings;
    let t0 = Instant::now() + s.warmup;
    let t1 = t0 + s.duration;
    let [accepted, retried, failed] = <[Counter; 3]>::default();
    let mut posters = JoinSet::new();
    for path in paths {
        posters.spawn(post_timed(
            Poster::new(via),
            path.clone(),
            s.payload(),
            (t0, t1),
            [
                Arc::clone(&accepted),
                Arc::clone(&retried),
                Arc::clone(&failed),
            ],
        ));
    }
    sleep_until(t0).await;
    let a = cluster.read(2, received).await;
    sleep_until(t1).await;
    let b = cluster.read(2, received).await;
    // A forwarded POST may take up to --forward-timeout (2 s) to be answered.
    let outcomes = join_bounded(&mut posters, t1 + GRACE + Duration::from_secs(3)).await;
    let span = Span::between(&a?, &b?);
    span.warn_if_noisy("a callback window");
    let mut latencies: Vec<Duration> = outcomes.into_iter().flatten().collect();
    latencies.sort_unstable();
    Ok(CallbackPhase {
        span,
        latencies,
        accepted: read(&accepted),
        retried_503: read(&retried),
        failed: read(&failed),
    })
}

/// POSTs `payload` to `path` back to back until `window.1`; returns the latencies of the
/// POSTs that started at or after `window.0` and were answered 2xx by `window.1`.
/// `counters`: answered 2xx, answered 503 (retried after 1 ms), failed.
async fn post_timed(
    mut poster: Poster,
    path: Uri,
    payload: Bytes,
    (t0, t1): (Instant, Instant),
    counters: [Counter; 3],
) -> Vec<Duration> {
    let [accepted, retried, failed] = counters;
    let mut samples = Vec::with_capacity(32 * 1024);
    let mut tries_503 = 0;
    while Instant::now() < t1 {
        let start = Instant::now();
        let outcome = poster
            .post(&path, "application/octet-stream", payload.clone())
            .await;
        let end = Instant::now();
        match outcome {
            Ok(status) if status.is_success() => {
                accepted.fetch_add(1, Ordering::Relaxed);
                tries_503 = 0;
                if start >= t0 && end <= t1 {
                    samples.push(end - start);
                }
            }
            Ok(StatusCode::SERVICE_UNAVAILABLE) if tries_503 < TRIES_503 => {
                retried.fetch_add(1, Ordering::Relaxed);
                tries_503 += 1;
                sleep(Duration::from_millis(1)).await;
            }
            _ => {
                failed.fetch_add(1, Ordering::Relaxed);
                tries_503 = 0;
                sleep(Duration::from_millis(10)).await;
            }
        }
    }
    samples
}

/// What the channel part measured.
struct ChannelPhase {
    span: Span,
    /// redis-server's CPU seconds per second with the nodes idle (schedstat).
    redis_idle_cores: f64,
    last: Vec<Duration>,
    verdict: Verdict,
    published_in_window: usize,
    details: serde_json::Value,
}

impl ChannelPhase {
    fn metrics(&self) -> Vec<Metric> {
        let ms = |q: f64| {
            if self.last.is_empty() {
                f64::NAN
            } else {
                quantile(&self.last, q).as_secs_f64() * 1e3
            }
        };
        let span = &self.span;
        let mut metrics = vec![Metric::info(
            "3 nodes: CPU per delivery, all parts",
            span.total_us(),
            "us",
        )];
        for (name, seconds) in ["node 1", "node 2", "node 3", "redis"]
            .iter()
            .zip(&span.cpu)
        {
            metrics.push(Metric::info(
                &format!("3 nodes: {name} CPU per delivery"),
                span.per_event_us(*seconds),
                "us",
            ));
        }
        let per_publication = |seconds: f64| seconds * 1e6 / self.published_in_window as f64;
        metrics.extend([
            // At 20 publications/s Redis's share is a few 10 ms ticks of /proc/PID/stat:
            // schedstat's nanoseconds say more, once its idle work is taken out.
            Metric::info(
                "3 nodes: redis CPU per publication above idle (schedstat)",
                per_publication(span.redis_scheduled - self.redis_idle_cores * span.seconds),
                "us",
            ),
            Metric::info(
                "3 nodes: redis time in PUBLISH per call (commandstats)",
                span.redis_publish_usec as f64 / span.redis_publishes.max(1) as f64,
                "us",
            ),
            Metric::info("3 nodes: publish to last delivery p50", ms(0.5), "ms"),
            Metric::info("3 nodes: publish to last delivery p99", ms(0.99), "ms"),
            Metric::at_most(
                "3 nodes: deliveries missing",
                self.verdict.missing as f64,
                "msgs",
                0.0,
            ),
            Metric::at_most(
                "3 nodes: deliveries duplicated",
                self.verdict.duplicates as f64,
                "msgs",
                0.0,
            ),
            Metric::at_most(
                "3 nodes: deliveries out of order",
                self.verdict.out_of_order as f64,
                "msgs",
                0.0,
            ),
            Metric::info("3 nodes: deliveries/s", span.events / span.seconds, "msg/s"),
            Metric::info(
                "3 nodes: publications/s",
                self.published_in_window as f64 / span.seconds,
                "pub/s",
            ),
        ]);
        metrics
    }
}

/// Part 2: members spread over the three nodes in one channel, publications through node 1.
async fn channel(ctx: &Ctx<'_>, cluster: &Cluster) -> Result<ChannelPhase, BoxError> {
    let s = ctx.settings;
    let members = s.cluster_members;
    let backend = ctx.backend;
    let hook = backend.url(&format!("/subscribe?channel={CHANNEL}"));
    let mut urls = Vec::with_capacity(NODES);
    for node in &cluster.nodes {
        urls.push(
            ctx.side
                .kind
                .connect_url_with_hook(
                    node.addr(),
                    &backend.url("/sink"),
                    &backend.url("/disconnect"),
                    &hook,
                )
                .ok_or("this bridge has no connect hook")?,
        );
    }
    let urls: Arc<[String]> = urls.into();
    let idle_from = cluster.redis.scheduled_seconds()?;
    let idle_start = Instant::now();
    sleep(IDLE_SPAN).await;
    let redis_idle_cores =
        (cluster.redis.scheduled_seconds()? - idle_from) / idle_start.elapsed().as_secs_f64();
    let redis_memory_before = cluster.redis.used_memory().await?;
    let next = Arc::new(AtomicUsize::new(0));
    let opening = Instant::now();
    // Member i joins node i mod 3: an even spread.
    let (open, failed, last_error) = open_many_with(
        members,
        s.handshake_concurrency,
        opening + OPEN_BOUND,
        move || {
            let url = urls[next.fetch_add(1, Ordering::Relaxed) % NODES].clone();
            async move { Member::connect(&url).await }
        },
    )
    .await;
    let open_seconds = opening.elapsed().as_secs_f64();
    if failed > 0 {
        return Err(format!(
            "{failed} of {members} members could not join: {}",
            last_error.unwrap_or_default()
        )
        .into());
    }
    let capacity = (s.cluster_rate * (s.warmup + s.duration).as_secs_f64()).ceil() as usize + 1;
    let book = Arc::new(Book::new(capacity));
    let stop = Arc::new(Notify::new());
    let mut listeners = JoinSet::new();
    for member in open {
        listeners.spawn(listen(member, Arc::clone(&book), Arc::clone(&stop), None));
    }
    let outcome = publish_and_measure(ctx, cluster, &book, capacity).await;
    // With each member's record on its node (what another node needs to report its end),
    // written by then.
    let redis_memory_with_members = cluster.redis.used_memory().await;
    stop.notify_waiters();
    let tallies = join_bounded(&mut listeners, Instant::now() + Duration::from_secs(5)).await;
    let (span, first_measured, published, answers) = outcome?;
    let redis_memory_with_members = redis_memory_with_members?;
    let verdict = Verdict::of(&tallies, members, published);

    let mut last = Vec::new();
    let mut incomplete = 0;
    for seq in first_measured..published {
        if book.delivered(seq) < members as u64 {
            incomplete += 1;
            continue;
        }
        let sent = book.sent_ns[seq].load(Ordering::Relaxed);
        last.push(Duration::from_nanos(
            book.last_ns[seq]
                .load(Ordering::Relaxed)
                .saturating_sub(sent),
        ));
    }
    last.sort_unstable();
    let mut answer_times: Vec<Duration> = answers.iter().map(|(d, _)| *d).collect();
    answer_times.sort_unstable();
    let answer_ms = |q: f64| {
        if answer_times.is_empty() {
            f64::NAN
        } else {
            quantile(&answer_times, q).as_secs_f64() * 1e3
        }
    };
    let short = answers.iter().filter(|(_, n)| *n < NODES as u64).count();
    let published_in_window = published - first_measured;
    let details = json!({
        "members": members,
        "members_per_node": members.div_ceil(NODES),
        "channel": CHANNEL,
        "message_bytes": s.size.max(STAMP),
        "rate_asked_per_second": s.cluster_rate,
        "publications": published,
        "publications_in_window": published_in_window,
        "publications_incomplete_in_window": incomplete,
        "publish_answer_ms": { "p50": answer_ms(0.5), "p99": answer_ms(0.99), "max": answer_ms(1.0) },
        "answers_short_of_all_nodes": short,
        "publish_to_last_delivery_ms_max": last.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        "members_reporting": tallies.len(),
        "members_lost": verdict.lost,
        "member_lost_example": verdict.lost_example,
        "unexpected_frames": verdict.unexpected,
        "open_seconds": open_seconds,
        "redis_idle_cores_schedstat": redis_idle_cores,
        "redis_used_memory_bytes": { "before_members": redis_memory_before, "with_members": redis_memory_with_members },
        "redis_bytes_per_member": (redis_memory_with_members as f64 - redis_memory_before as f64) / members as f64,
        "node_rss_kib_with_members": cluster.nodes.iter().map(|n| n.rss_kib().ok()).collect::<Vec<_>>(),
    });
    Ok(ChannelPhase {
        span,
        redis_idle_cores,
        last,
        verdict,
        published_in_window,
        details,
    })
}

/// Publishes at `--cluster-rate` through node 1 for a warm-up and a window, then waits for
/// the last publication to reach every member. Returns the window (deliveries of the
/// window's publications), the first publication in it, the number published, and each
/// publication's answer time and node count.
async fn publish_and_measure(
    ctx: &Ctx<'_>,
    cluster: &Cluster,
    book: &Book,
    capacity: usize,
) -> Result<(Span, usize, usize, Vec<(Duration, u64)>), BoxError> {
    let s = ctx.settings;
    let members = s.cluster_members;
    let mut poster = Poster::new(
        cluster.nodes[0]
            .publish_addr()
            .ok_or("node 1 has no publish API")?,
    );
    let path: Uri = format!("/channels/{CHANNEL}").parse()?;
    let interval = Duration::from_secs_f64(1.0 / s.cluster_rate);
    let start = Instant::now() + Duration::from_millis(100);
    let t0 = start + s.warmup;
    let t1 = t0 + s.duration;
    let nothing = AtomicU64::new(0);
    let mut window_start = None;
    let mut published = 0;
    let mut answers = Vec::with_capacity(capacity);
    for seq in 0..capacity {
        let due = start + interval.mul_f64(seq as f64);
        if due >= t1 || Instant::now() >= t1 {
            break;
        }
        sleep_until(due).await;
        if window_start.is_none() && Instant::now() >= t0 {
            window_start = Some((seq, cluster.read(NODES, &nothing).await?));
        }
        let sent = book.now_ns();
        book.sent_ns[seq].store(sent, Ordering::Relaxed);
        let (status, answer) = poster
            .exchange(
                &path,
                "application/octet-stream",
                Some("application/json"),
                message(s.size, seq, sent),
            )
            .await?;
        let took = Duration::from_nanos(book.now_ns().saturating_sub(sent));
        if status != StatusCode::OK {
            return Err(format!(
                "publication {seq}: the publish API answered {status}: {}",
                String::from_utf8_lossy(&answer).trim()
            )
            .into());
        }
        let counts: serde_json::Value = serde_json::from_slice(&answer)?;
        let nodes = counts
            .get("nodes")
            .and_then(serde_json::Value::as_u64)
            .ok_or("no `nodes` in the publish answer: is the node in cluster mode?")?;
        if window_start.is_some() {
            answers.push((took, nodes));
        }
        published = seq + 1;
    }
    let Some((first_measured, start_reading)) = window_start else {
        return Err("no publication was sent inside the measurement window".into());
    };
    let drain_until = Instant::now() + DRAIN_BOUND;
    while !book.complete(0..published, members) && Instant::now() < drain_until {
        sleep(Duration::from_millis(1)).await;
    }
    let end_reading = cluster.read(NODES, &nothing).await?;
    let mut span = Span::between(&start_reading, &end_reading);
    span.events = (first_measured..published)
        .map(|seq| book.delivered(seq) as f64)
        .sum();
    span.warn_if_noisy("the channel window");
    Ok((span, first_measured, published, answers))
}
