//! The scenarios. Each one that involves a bridge starts a fresh bridge process (so one
//! scenario's allocations, connections and backlog cannot colour the next), warms up, takes a
//! snapshot of the counters and of the bridge's CPU time, runs for the measurement window,
//! takes a second snapshot, then resets its clients and stops the bridge with SIGTERM. Every
//! loop is bounded by the window's end plus a short grace.
//!
//! This file holds what every scenario shares ([`Ctx`], [`Snapshot`], [`Window`],
//! [`measure`]) and the message-rate scenarios `upstream`, `roundtrip`, `downstream` and
//! `direct`; `idle`, `growth`, `large`, `fanout` (with `fanout-by-callbacks`) and `cluster`
//! have their own modules, as do the websocket-over-http scenarios `woh-upstream`,
//! `woh-roundtrip` and `woh-downstream` (module `woh`), which reuse this file's clients.
//!
//! Under `--callgrind` the bridge runs under `valgrind --tool=callgrind`; [`measure`] then
//! dumps callgrind's counts at the window's start and end, and the message-rate scenarios
//! report instructions per message instead of CPU time (which valgrind inflates ~50x).

mod cluster;
mod fanout;
mod growth;
mod idle;
mod large;
mod woh;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::{StatusCode, Uri};
use serde_json::json;
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::Message;

pub(crate) use self::cluster::cluster;
pub(crate) use self::fanout::{fanout, fanout_by_callbacks};
pub(crate) use self::growth::growth;
pub(crate) use self::idle::idle;
pub(crate) use self::large::large;
pub(crate) use self::woh::{BESIDE_SEED, woh_downstream, woh_roundtrip, woh_upstream};
use crate::BoxError;
use crate::backend::Backend;
use crate::bridge::{Bridge, Launch, process_cpu_seconds};
use crate::client::{Counter, Poster, Ws, open_many, read};
use crate::contract::{Needs, Side};
use crate::report::{Metric, ScenarioResult, quantile};

/// Every scenario, in the order `all` runs them.
pub(crate) const ALL: [&str; 13] = [
    "upstream",
    "roundtrip",
    "downstream",
    "woh-upstream",
    "woh-roundtrip",
    "woh-downstream",
    "idle",
    "growth",
    "large",
    "fanout",
    "fanout-by-callbacks",
    "cluster",
    "direct",
];

/// The scenarios that report instructions per message under `--callgrind` (what `all` means
/// there).
pub(crate) const CALLGRIND: [&str; 3] = ["upstream", "roundtrip", "downstream"];

/// Scenarios that also report instructions under `--callgrind`, when named: `fanout` needs a
/// low `--fanout-rate` under valgrind; the websocket-over-http ones are not in the seed
/// comparison with the original.
const CALLGRIND_WHEN_NAMED: [&str; 4] =
    ["fanout", "woh-upstream", "woh-roundtrip", "woh-downstream"];

/// Issue 12's absolute targets (its relative ones, against the original, are judged in
/// `verdict`).
pub(crate) mod targets {
    /// Bridge CPU per upstream message, microseconds.
    pub(crate) const UPSTREAM_CPU_US: f64 = 10.0;
    /// Bridge CPU per downstream message, microseconds.
    pub(crate) const DOWNSTREAM_CPU_US: f64 = 10.0;
    /// Round-trip latency p99 at 64 connections, milliseconds.
    pub(crate) const ROUNDTRIP_P99_MS: f64 = 5.0;
    /// Resident memory per idle connection at 10,000 connections, KiB.
    pub(crate) const IDLE_KIB: f64 = 8.0;
    /// WebSocket handshakes per second while opening the idle connections.
    pub(crate) const HANDSHAKES_PER_SECOND: f64 = 20_000.0;
}

/// Time after the window for clients to notice the end and stop.
const GRACE: Duration = Duration::from_millis(300);
/// Messages written before each flush by a streaming client of small messages.
const BATCH: usize = 32;

/// What every scenario needs.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) connections: usize,
    pub(crate) size: usize,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) idle_connections: usize,
    pub(crate) handshake_concurrency: usize,
    /// Client processes for the idle and growth scenarios (0: one up to 15,000 connections,
    /// then one per 10,000).
    pub(crate) client_processes: usize,
    /// Connections of the growth scenario's large phase.
    pub(crate) growth_connections: usize,
    /// Total messages per second in both phases of the growth scenario.
    pub(crate) growth_rate: f64,
    /// Clients (and posters) of the large-message scenario.
    pub(crate) large_connections: usize,
    /// Members of the fanout scenarios' channel.
    pub(crate) fanout_members: usize,
    /// Publications per second in the fanout scenarios.
    pub(crate) fanout_rate: f64,
    /// Members of the cluster scenario's channel, spread over its three nodes.
    pub(crate) cluster_members: usize,
    /// Publications per second in the cluster scenario.
    pub(crate) cluster_rate: f64,
    pub(crate) clock_ticks: f64,
    /// Run bridges under callgrind, writing dumps here.
    pub(crate) callgrind: Option<PathBuf>,
    /// A shell command run at the start and end of each measurement window (profiling).
    pub(crate) window_hook: Option<String>,
}

impl Settings {
    fn payload(&self) -> Bytes {
        Bytes::from(vec![0xA5; self.size])
    }
}

/// Why `side` cannot run `scenario` with these settings, if it cannot: printed as `n/a`.
pub(crate) fn unavailable(scenario: &str, side: &Side, s: &Settings) -> Option<String> {
    if s.callgrind.is_some()
        && !CALLGRIND.contains(&scenario)
        && !CALLGRIND_WHEN_NAMED.contains(&scenario)
    {
        return Some("not measured under --callgrind".to_owned());
    }
    if scenario == "fanout" && !side.kind.has_channels() {
        return Some(format!(
            "{} has no channels or publish API (see fanout-by-callbacks)",
            side.kind.name()
        ));
    }
    if scenario.starts_with("woh-") && !side.kind.has_routes() {
        return Some(format!(
            "{} has no routes (websocket-over-http)",
            side.kind.name()
        ));
    }
    if scenario == "cluster" && !side.kind.has_cluster() {
        return Some(format!("{} has no cluster mode", side.kind.name()));
    }
    None
}

/// One run of one scenario against one bridge.
pub(crate) struct Ctx<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) side: &'a Side,
    pub(crate) backend: &'a Backend,
    /// 1-based round number, for file names.
    pub(crate) round: usize,
}

impl Ctx<'_> {
    /// Starts this side's bridge for `scenario`, after telling the backend its callback header.
    async fn start_bridge(&self, scenario: &str, needs: Needs) -> Result<Bridge, BoxError> {
        self.backend
            .set_callback_header(self.side.kind.callback_header());
        let allowlist = self.backend.allowlist();
        let tag = format!("{}-{scenario}-r{}", self.side.label, self.round);
        Bridge::start(&Launch {
            side: self.side,
            allowlist: &allowlist,
            needs,
            clock_ticks: self.settings.clock_ticks,
            callgrind: self.settings.callgrind.as_deref(),
            tag: &tag,
        })
        .await
    }

    /// The URL a client opens to have its messages POSTed to the backend's `route`.
    fn connect_url(&self, bridge: &Bridge, route: &str) -> String {
        self.side.kind.connect_url(
            bridge.addr(),
            &self.backend.url(route),
            &self.backend.url("/disconnect"),
        )
    }

    fn callgrind(&self) -> bool {
        self.settings.callgrind.is_some()
    }
}

/// Counters and CPU times at one instant.
#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    count: f64,
    bridge_user: f64,
    bridge_system: f64,
    bench_cpu: f64,
    machine_busy: f64,
}

impl Snapshot {
    fn take(bridge: Option<&Bridge>, count: &AtomicU64, ticks: f64) -> Result<Self, BoxError> {
        let (bridge_user, bridge_system) = bridge.map_or(Ok((0.0, 0.0)), Bridge::cpu_times)?;
        Ok(Self {
            at: Instant::now(),
            count: read(count) as f64,
            bridge_user,
            bridge_system,
            bench_cpu: process_cpu_seconds("/proc/self/stat", ticks)?,
            machine_busy: machine_busy_seconds(ticks).unwrap_or(f64::NAN),
        })
    }

    /// Halfway between two snapshots: the best estimate of the instant a hook acted on,
    /// somewhere between them (a callgrind dump takes a fraction of a second).
    fn midpoint(a: &Self, b: &Self) -> Self {
        let mid = |x: f64, y: f64| (x + y) / 2.0;
        Self {
            at: a.at + (b.at - a.at) / 2,
            count: mid(a.count, b.count),
            bridge_user: mid(a.bridge_user, b.bridge_user),
            bridge_system: mid(a.bridge_system, b.bridge_system),
            bench_cpu: mid(a.bench_cpu, b.bench_cpu),
            machine_busy: mid(a.machine_busy, b.machine_busy),
        }
    }
}

/// What happened between two snapshots.
struct Window {
    seconds: f64,
    events: f64,
    bridge_cpu: f64,
    bridge_system: f64,
    bench_cpu: f64,
    /// CPU time of every other process on the machine in the window: noise.
    others_cpu: f64,
    /// Instructions the bridge executed in the window (under callgrind).
    instructions: Option<u64>,
    /// The callgrind dump that covers the window.
    dump: Option<PathBuf>,
    /// Time the end-of-window hooks took (dumps are not instant).
    hook_seconds: f64,
}

impl Window {
    fn between(a: &Snapshot, b: &Snapshot) -> Self {
        let bridge_cpu = (b.bridge_user + b.bridge_system) - (a.bridge_user + a.bridge_system);
        Self {
            seconds: (b.at - a.at).as_secs_f64(),
            events: (b.count - a.count).max(0.0),
            bridge_cpu,
            bridge_system: b.bridge_system - a.bridge_system,
            bench_cpu: b.bench_cpu - a.bench_cpu,
            others_cpu: ((b.machine_busy - a.machine_busy)
                - bridge_cpu
                - (b.bench_cpu - a.bench_cpu))
                .max(0.0),
            instructions: None,
            dump: None,
            hook_seconds: 0.0,
        }
    }

    /// Warns when other processes took a noticeable share of the machine in the window.
    fn warn_if_noisy(&self, scenario: &str) {
        let others = self.others_cpu / self.seconds;
        if others > 0.2 {
            eprintln!(
                "[{scenario}] warning: other processes used {others:.2} cores during the window: rates and latencies are disturbed"
            );
        }
    }

    fn rate(&self) -> f64 {
        self.events / self.seconds
    }

    /// Bridge CPU per event in microseconds (NaN without events).
    fn bridge_us_per_event(&self) -> f64 {
        if self.events == 0.0 {
            f64::NAN
        } else {
            self.bridge_cpu * 1e6 / self.events
        }
    }

    /// Instructions per event (NaN without a callgrind count or events).
    fn instructions_per_event(&self) -> f64 {
        match self.instructions {
            Some(ir) if self.events > 0.0 => ir as f64 / self.events,
            _ => f64::NAN,
        }
    }

    /// The cost metric of a message-rate scenario: bridge CPU per event with its target (if
    /// any), or under callgrind the instructions per event.
    fn cost(&self, cpu_name: &str, ir_name: &str, target_us: Option<f64>) -> Metric {
        match target_us {
            _ if self.instructions.is_some() => {
                Metric::info(ir_name, self.instructions_per_event(), "Ir")
            }
            Some(target) => Metric::at_most(cpu_name, self.bridge_us_per_event(), "us", target),
            None => Metric::info(cpu_name, self.bridge_us_per_event(), "us"),
        }
    }

    /// The kernel's part of the bridge CPU per event (none under callgrind, which slows only
    /// user space).
    fn kernel_cost(&self) -> Option<Metric> {
        (self.instructions.is_none() && self.events > 0.0).then(|| {
            Metric::info(
                crate::verdict::KERNEL_METRIC,
                self.bridge_system * 1e6 / self.events,
                "us",
            )
        })
    }

    fn details(&self) -> serde_json::Value {
        json!({
            "window_seconds": self.seconds,
            "events": self.events,
            "bridge_cpu_seconds": self.bridge_cpu,
            "bridge_system_cpu_seconds": self.bridge_system,
            "bridge_system_share": self.bridge_system / self.bridge_cpu,
            "bench_cpu_seconds": self.bench_cpu,
            "bridge_cores_busy": self.bridge_cpu / self.seconds,
            "bench_cores_busy": self.bench_cpu / self.seconds,
            "other_processes_cores_busy": self.others_cpu / self.seconds,
            "callgrind_instructions": self.instructions,
            "callgrind_dump": self.dump.as_ref().map(|p| p.display().to_string()),
            "end_hook_seconds": self.hook_seconds,
        })
    }
}

/// Measures one window, `t0..t1`, of `count`: waits for `t0`, marks the start, waits for
/// `t1`, marks the end. Each mark runs the hooks (a callgrind dump under `--callgrind`, then
/// `--window-hook`) between two snapshots and keeps their midpoint.
async fn measure(
    ctx: &Ctx<'_>,
    bridge: &mut Bridge,
    scenario: &str,
    count: &AtomicU64,
    t0: Instant,
    t1: Instant,
) -> Result<Window, BoxError> {
    sleep_until(t0).await;
    let (a, _, _) = mark(ctx, bridge, scenario, "start", count).await?;
    sleep_until(t1).await;
    let (b, dump, hook_seconds) = mark(ctx, bridge, scenario, "end", count).await?;
    let mut window = Window::between(&a, &b);
    if let Some((ir, path)) = dump {
        window.instructions = Some(ir);
        window.dump = Some(path);
    }
    window.hook_seconds = hook_seconds;
    window.warn_if_noisy(scenario);
    Ok(window)
}

/// One end of a window: snapshot, hooks, snapshot. Returns the midpoint, the callgrind dump
/// taken (instructions since the previous dump, and its file) and how long the hooks took.
async fn mark(
    ctx: &Ctx<'_>,
    bridge: &mut Bridge,
    scenario: &str,
    event: &str,
    count: &AtomicU64,
) -> Result<(Snapshot, Option<(u64, PathBuf)>, f64), BoxError> {
    let ticks = ctx.settings.clock_ticks;
    let before = Snapshot::take(Some(bridge), count, ticks)?;
    let dump = if ctx.callgrind() {
        Some(bridge.callgrind_dump().await?)
    } else {
        None
    };
    window_hook(ctx, bridge, scenario, event).await;
    let after = Snapshot::take(Some(bridge), count, ticks)?;
    let hook_seconds = (after.at - before.at).as_secs_f64();
    Ok((Snapshot::midpoint(&before, &after), dump, hook_seconds))
}

/// Runs `--window-hook` (if any) through `sh -c` with `BENCH_BRIDGE_PID`, `BENCH_SCENARIO`,
/// `BENCH_SIDE` (`A` or `B`) and `BENCH_EVENT` (`start` or `end`) set, waiting at most 30 s
/// for it. Meant for profilers such as perf.
async fn window_hook(ctx: &Ctx<'_>, bridge: &Bridge, scenario: &str, event: &str) {
    let Some(command) = &ctx.settings.window_hook else {
        return;
    };
    let run = Command::new("sh")
        .args(["-c", command])
        .env("BENCH_BRIDGE_PID", bridge.pid().to_string())
        .env("BENCH_SCENARIO", scenario)
        .env("BENCH_SIDE", ctx.side.label)
        .env("BENCH_EVENT", event)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => eprintln!("[{scenario}] window hook ({event}) exited with {status}"),
        Ok(Err(e)) => eprintln!("[{scenario}] window hook ({event}) could not run: {e}"),
        Err(_) => eprintln!("[{scenario}] window hook ({event}) took over 30 s: abandoned"),
    }
}

/// Busy CPU time of the whole machine so far (all of `/proc/stat`'s `cpu` line but idle and
/// iowait), in seconds.
fn machine_busy_seconds(ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy as f64 / ticks)
}

/// Opens `count` streaming clients to `url`, failing if any cannot connect.
async fn open_clients(url: &str, count: usize, in_flight: usize) -> Result<Vec<Ws>, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (open, failed, last_error) = open_many(url, count, in_flight, false, deadline).await;
    if failed > 0 {
        return Err(format!(
            "{failed} of {count} clients could not connect: {}",
            last_error.unwrap_or_default()
        )
        .into());
    }
    Ok(open)
}

/// Waits for client tasks to finish, bounded; stragglers are aborted.
async fn join_bounded<T: 'static>(tasks: &mut JoinSet<T>, until: Instant) -> Vec<T> {
    let mut done = Vec::new();
    while let Ok(Some(joined)) = timeout_at(until, tasks.join_next()).await {
        if let Ok(value) = joined {
            done.push(value);
        }
    }
    tasks.abort_all();
    done
}

async fn stop_bridge(bridge: Bridge) -> serde_json::Value {
    match bridge.stop().await {
        Ok((outcome, warnings)) => json!({ "stop": outcome, "warning_lines": warnings }),
        Err(e) => json!({ "stop": format!("error: {e}") }),
    }
}

/// `upstream`: every client streams messages as fast as backpressure allows; the backend
/// counts the frame POSTs.
pub(crate) async fn upstream(ctx: &Ctx<'_>) -> Result<ScenarioResult, BoxError> {
    let s = ctx.settings;
    let mut bridge = ctx.start_bridge("upstream", Needs::default()).await?;
    let url = ctx.connect_url(&bridge, "/sink");
    let clients = open_clients(&url, s.connections, s.handshake_concurrency).await?;
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
    let counted = &ctx.backend.stats().sink_messages;
    let window = measure(ctx, &mut bridge, "upstream", counted, t0, t1).await;
    join_bounded(&mut tasks, t1 + GRACE).await;
    let stopped = stop_bridge(bridge).await;
    let window = window?;
    Ok(ScenarioResult {
        name: "upstream".to_owned(),
        metrics: vec![
            Metric::info("messages/s (at backend)", window.rate(), "msg/s"),
            window.cost(
                "bridge CPU per message",
                "bridge instructions per message",
                Some(targets::UPSTREAM_CPU_US),
            ),
            Metric::info(
                "bridge cores busy",
                window.bridge_cpu / window.seconds,
                "cores",
            ),
        ]
        .into_iter()
        .chain(window.kernel_cost())
        .collect(),
        details: json!({
            "window": window.details(),
            "messages_written_by_clients": read(&sent),
            "client_errors": read(&errors),
            "bridge": stopped,
        }),
    })
}

/// Writes `payload` as binary messages, `batch` per flush, until `end`. `counters` are the
/// messages written and the errors met.
async fn stream_messages(
    mut ws: Ws,
    payload: Bytes,
    batch: usize,
    end: Instant,
    counters: [Counter; 2],
) {
    let [sent, errors] = counters;
    while Instant::now() < end {
        let written = async {
            for _ in 0..batch {
                ws.feed(Message::Binary(payload.clone())).await?;
            }
            ws.flush().await
        };
        match timeout_at(end, written).await {
            Ok(Ok(())) => {
                sent.fetch_add(batch as u64, Ordering::Relaxed);
            }
            Ok(Err(_)) => {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => return,
        }
    }
    // Dropping `ws` resets the connection (SO_LINGER 0): nothing queued is POSTed later.
}

/// `roundtrip`: closed loop of send, backend POSTs the body back through the callback URL,
/// client receives it, repeat.
pub(crate) async fn roundtrip(ctx: &Ctx<'_>) -> Result<ScenarioResult, BoxError> {
    let s = ctx.settings;
    let mut bridge = ctx.start_bridge("roundtrip", Needs::default()).await?;
    let url = ctx.connect_url(&bridge, "/echo");
    let clients = open_clients(&url, s.connections, s.handshake_concurrency).await?;
    let t0 = Instant::now() + s.warmup;
    let t1 = t0 + s.duration;
    let completed = Counter::default();
    let mut tasks = JoinSet::new();
    for ws in clients {
        tasks.spawn(round_trips(ws, s.payload(), t0, t1, Arc::clone(&completed)));
    }
    let failures_before = read(&ctx.backend.stats().callbacks_failed);
    let window = measure(ctx, &mut bridge, "roundtrip", &completed, t0, t1).await;
    let outcomes = join_bounded(&mut tasks, t1 + GRACE + Duration::from_secs(1)).await;
    let stopped = stop_bridge(bridge).await;
    let window = window?;

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
    metrics.extend(window.kernel_cost());
    if ctx.callgrind() {
        // Latencies under valgrind say nothing about the bridge's.
        metrics.push(Metric::info("latency p99 (under valgrind)", ms(0.99), "ms"));
    } else {
        metrics.extend([
            Metric::info("latency p50", ms(0.5), "ms"),
            Metric::at_most("latency p99", ms(0.99), "ms", targets::ROUNDTRIP_P99_MS),
            Metric::info("latency p99.9", ms(0.999), "ms"),
            Metric::info(
                "bridge cores busy",
                window.bridge_cpu / window.seconds,
                "cores",
            ),
        ]);
    }
    Ok(ScenarioResult {
        name: "roundtrip".to_owned(),
        metrics,
        details: json!({
            "window": window.details(),
            "latency_samples": latencies.len(),
            "latency_max_ms": latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            "client_errors": client_errors,
            "callback_failures": read(&ctx.backend.stats().callbacks_failed) - failures_before,
            "bridge": stopped,
        }),
    })
}

/// One client's closed loop. Returns the latencies of round trips that started at or after
/// `t0` and ended by `t1`, and whether the loop ended on an error.
async fn round_trips(
    mut ws: Ws,
    payload: Bytes,
    t0: Instant,
    t1: Instant,
    completed: Counter,
) -> (Vec<Duration>, bool) {
    let stop = t1 + GRACE;
    let mut samples = Vec::with_capacity(16 * 1024);
    loop {
        let start = Instant::now();
        if start >= t1 {
            return (samples, false);
        }
        let exchange = async {
            ws.send(Message::Binary(payload.clone())).await?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(_))) => return Ok(()),
                    Some(Ok(_)) => {} // pings, pongs
                    Some(Err(e)) => return Err(e),
                    None => {
                        return Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed);
                    }
                }
            }
        };
        match timeout_at(stop, exchange).await {
            Ok(Ok(())) => {
                let end = Instant::now();
                if start >= t0 && end <= t1 {
                    samples.push(end - start);
                    completed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Err(_)) => return (samples, true),
            Err(_) => return (samples, false),
        }
    }
}

/// Opens `count` clients through `/hello` and returns each with the path of its callback URL.
async fn clients_with_callbacks(
    ctx: &Ctx<'_>,
    bridge: &Bridge,
    count: usize,
) -> Result<Vec<(Ws, Uri)>, BoxError> {
    let url = ctx.connect_url(bridge, "/hello");
    let clients = open_clients(&url, count, ctx.settings.handshake_concurrency).await?;
    // Each client says hello; the backend sends it its callback URL through that URL.
    let hello_deadline = Instant::now() + Duration::from_secs(30);
    let mut hellos = JoinSet::new();
    for ws in clients {
        hellos.spawn(timeout_at(hello_deadline, hello(ws)));
    }
    let mut pairs = Vec::with_capacity(count);
    while let Some(joined) = hellos.join_next().await {
        let within = joined.map_err(|e| format!("hello task: {e}"))?;
        pairs.push(within.map_err(|_| "no hello reply within 30 s")??);
    }
    Ok(pairs)
}

/// `downstream`: the bench POSTs to every client's callback URL as fast as the bridge
/// accepts; the clients count what they receive.
pub(crate) async fn downstream(ctx: &Ctx<'_>) -> Result<ScenarioResult, BoxError> {
    let s = ctx.settings;
    let mut bridge = ctx.start_bridge("downstream", Needs::default()).await?;
    let pairs = match clients_with_callbacks(ctx, &bridge, s.connections).await {
        Ok(pairs) => pairs,
        Err(e) => {
            stop_bridge(bridge).await;
            return Err(e);
        }
    };
    let t0 = Instant::now() + s.warmup;
    let t1 = t0 + s.duration;
    let stop = t1 + GRACE;
    let received = Counter::default();
    let received_bytes = Counter::default();
    let [accepted, queue_full, failed] = <[Counter; 3]>::default();
    let mut tasks = JoinSet::new();
    for (ws, callback) in pairs {
        tasks.spawn(count_messages(
            ws,
            stop,
            [Arc::clone(&received), Arc::clone(&received_bytes)],
        ));
        tasks.spawn(post_messages(
            Poster::new(bridge.addr()),
            callback,
            s.payload(),
            t1,
            [
                Arc::clone(&accepted),
                Arc::clone(&queue_full),
                Arc::clone(&failed),
            ],
        ));
    }
    let window = measure(ctx, &mut bridge, "downstream", &received, t0, t1).await;
    join_bounded(&mut tasks, stop + GRACE).await;
    let stopped = stop_bridge(bridge).await;
    let window = window?;
    Ok(ScenarioResult {
        name: "downstream".to_owned(),
        metrics: vec![
            Metric::info("messages/s (at clients)", window.rate(), "msg/s"),
            window.cost(
                "bridge CPU per message",
                "bridge instructions per message",
                Some(targets::DOWNSTREAM_CPU_US),
            ),
            Metric::info(
                "bridge cores busy",
                window.bridge_cpu / window.seconds,
                "cores",
            ),
        ]
        .into_iter()
        .chain(window.kernel_cost())
        .collect(),
        details: json!({
            "window": window.details(),
            "callbacks_accepted_2xx": read(&accepted),
            "callbacks_queue_full_503": read(&queue_full),
            "callbacks_failed": read(&failed),
            "messages_received_total": read(&received),
            "bridge": stopped,
        }),
    })
}

/// Sends `hello` and returns the connection with the path of its callback URL, which the
/// backend sends back as the connection's first message.
async fn hello(mut ws: Ws) -> Result<(Ws, Uri), BoxError> {
    ws.send(Message::text("hello")).await?;
    while let Some(message) = ws.next().await {
        let text = match message? {
            Message::Text(text) => text.as_str().to_owned(),
            Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            _ => continue,
        };
        let path = text
            .strip_prefix("http://")
            .and_then(|rest| rest.find('/').map(|slash| &rest[slash..]))
            .ok_or_else(|| format!("not a callback URL: {text}"))?;
        return Ok((ws, path.parse()?));
    }
    Err("the connection closed before the hello reply".into())
}

/// Counts binary messages (`counters[0]`) and their bytes (`counters[1]`) until `stop`.
async fn count_messages(mut ws: Ws, stop: Instant, counters: [Counter; 2]) {
    let [messages, bytes] = counters;
    while let Ok(Some(Ok(message))) = timeout_at(stop, ws.next()).await {
        if let Message::Binary(data) = message {
            messages.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
}

/// POSTs `payload` to `path` back to back until `end`. `counters` are 2xx answers, 503 and
/// any other outcome; a 503 (queue full) backs off 1 ms, a failure 10 ms.
async fn post_messages(
    mut poster: Poster,
    path: Uri,
    payload: Bytes,
    end: Instant,
    counters: [Counter; 3],
) {
    let [accepted, queue_full, failed] = counters;
    while Instant::now() < end {
        let outcome = timeout_at(
            end,
            poster.post(&path, "application/octet-stream", payload.clone()),
        )
        .await;
        match outcome {
            Ok(Ok(status)) if status.is_success() => {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(StatusCode::SERVICE_UNAVAILABLE)) => {
                queue_full.fetch_add(1, Ordering::Relaxed);
                sleep(Duration::from_millis(1)).await;
            }
            Ok(_) => {
                failed.fetch_add(1, Ordering::Relaxed);
                sleep(Duration::from_millis(10)).await;
            }
            Err(_) => return,
        }
    }
}

/// `direct`: the same POSTs straight to the backend, no bridge: the loopback HTTP ceiling
/// of this machine with this client and server.
pub(crate) async fn direct(s: &Settings, backend: &Backend) -> Result<ScenarioResult, BoxError> {
    let t0 = Instant::now() + s.warmup;
    let t1 = t0 + s.duration;
    let path: Uri = "/sink".parse()?;
    let [accepted, unavailable, failed] = <[Counter; 3]>::default();
    let mut tasks = JoinSet::new();
    for _ in 0..s.connections {
        tasks.spawn(post_messages(
            Poster::new(backend.addr()),
            path.clone(),
            s.payload(),
            t1,
            [
                Arc::clone(&accepted),
                Arc::clone(&unavailable),
                Arc::clone(&failed),
            ],
        ));
    }
    let counted = &backend.stats().sink_messages;
    sleep_until(t0).await;
    let a = Snapshot::take(None, counted, s.clock_ticks)?;
    sleep_until(t1).await;
    let b = Snapshot::take(None, counted, s.clock_ticks)?;
    join_bounded(&mut tasks, t1 + GRACE).await;
    let window = Window::between(&a, &b);
    window.warn_if_noisy("direct");
    Ok(ScenarioResult {
        name: "direct".to_owned(),
        metrics: vec![
            Metric::info("requests/s (no bridge)", window.rate(), "req/s"),
            Metric::info(
                "bench CPU per request (client + backend)",
                window.bench_cpu * 1e6 / window.events.max(1.0),
                "us",
            ),
        ],
        details: json!({
            "window": window.details(),
            "answered_2xx": read(&accepted),
            "answered_503": read(&unavailable),
            "failed": read(&failed),
        }),
    })
}

/// Where callgrind dumps go unless `--callgrind-dir` says otherwise.
pub(crate) fn default_callgrind_dir(target: &Path) -> PathBuf {
    target.join("bench-callgrind")
}
