//! The five scenarios. Each one that involves the bridge starts a fresh bridge process (so
//! one scenario's allocations, connections and backlog cannot colour the next), warms up,
//! takes a snapshot of the counters and of the bridge's CPU time, runs for the measurement
//! window, takes a second snapshot, then resets its clients and stops the bridge with SIGTERM.
//! Every loop is bounded by the window's end plus a short grace.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::{StatusCode, Uri};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::BoxError;
use crate::backend::Backend;
use crate::bridge::{Bridge, process_cpu_seconds};
use crate::client::{Counter, Poster, Ws, connect_url, open_many, read};
use crate::report::{Metric, ScenarioResult, quantile};

/// Targets from the issue.
pub(crate) mod targets {
    /// Bridge CPU per upstream message, microseconds.
    pub(crate) const UPSTREAM_CPU_US: f64 = 8.0;
    /// Bridge CPU per downstream message, microseconds.
    pub(crate) const DOWNSTREAM_CPU_US: f64 = 6.0;
    /// Bridge CPU per round trip, microseconds.
    pub(crate) const ROUNDTRIP_CPU_US: f64 = 16.0;
    /// Round-trip latency p99, milliseconds.
    pub(crate) const ROUNDTRIP_P99_MS: f64 = 5.0;
    /// Resident memory per idle connection at 10,000 connections, KiB.
    pub(crate) const IDLE_KIB: f64 = 6.0;
    /// WebSocket handshakes per second while opening the idle connections.
    pub(crate) const HANDSHAKES_PER_SECOND: f64 = 20_000.0;
}

/// Idle connections one bench process opens itself; beyond it, child shards open them.
const SHARD_THRESHOLD: usize = 15_000;
/// Idle connections per child shard.
const PER_SHARD: usize = 10_000;
/// Upper bound on opening the idle connections and on a shard's life.
const IDLE_OPEN_BOUND: Duration = Duration::from_secs(120);
/// Time after the window for clients to notice the end and stop.
const GRACE: Duration = Duration::from_millis(300);
/// Messages written before each flush by a streaming client.
const BATCH: usize = 32;

/// What every scenario needs.
pub(crate) struct Settings {
    pub(crate) connections: usize,
    pub(crate) size: usize,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) idle_connections: usize,
    pub(crate) handshake_concurrency: usize,
    pub(crate) bridge_binary: PathBuf,
    pub(crate) clock_ticks: f64,
    /// A shell command run at the start and end of each measurement window (profiling).
    pub(crate) window_hook: Option<String>,
}

impl Settings {
    fn payload(&self) -> Bytes {
        Bytes::from(vec![0xA5; self.size])
    }
}

/// Counters and CPU times at one instant.
struct Snapshot {
    at: Instant,
    count: u64,
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
            count: read(count),
            bridge_user,
            bridge_system,
            bench_cpu: process_cpu_seconds("/proc/self/stat", ticks)?,
            machine_busy: machine_busy_seconds(ticks).unwrap_or(f64::NAN),
        })
    }
}

/// What happened between two snapshots.
struct Window {
    seconds: f64,
    events: u64,
    bridge_cpu: f64,
    bridge_system: f64,
    bench_cpu: f64,
    /// CPU time of every other process on the machine in the window: noise.
    others_cpu: f64,
}

impl Window {
    fn between(a: &Snapshot, b: &Snapshot) -> Self {
        Self {
            seconds: (b.at - a.at).as_secs_f64(),
            events: b.count - a.count,
            bridge_cpu: (b.bridge_user + b.bridge_system) - (a.bridge_user + a.bridge_system),
            bridge_system: b.bridge_system - a.bridge_system,
            bench_cpu: b.bench_cpu - a.bench_cpu,
            others_cpu: ((b.machine_busy - a.machine_busy)
                - ((b.bridge_user + b.bridge_system) - (a.bridge_user + a.bridge_system))
                - (b.bench_cpu - a.bench_cpu))
                .max(0.0),
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
        self.events as f64 / self.seconds
    }

    /// Bridge CPU per event in microseconds (NaN without events).
    fn bridge_us_per_event(&self) -> f64 {
        if self.events == 0 {
            f64::NAN
        } else {
            self.bridge_cpu * 1e6 / self.events as f64
        }
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
        })
    }
}

/// Runs `--window-hook` (if any) through `sh -c` with `BENCH_BRIDGE_PID`, `BENCH_SCENARIO`
/// and `BENCH_EVENT` (`start` or `end`) set, waiting at most 30 s for it. Meant for
/// profilers: `callgrind_control -d $BENCH_BRIDGE_PID` dumps exactly the window.
async fn window_hook(s: &Settings, bridge: &Bridge, scenario: &str, event: &str) {
    let Some(command) = &s.window_hook else {
        return;
    };
    let run = Command::new("sh")
        .args(["-c", command])
        .env("BENCH_BRIDGE_PID", bridge.pid().to_string())
        .env("BENCH_SCENARIO", scenario)
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
pub(crate) async fn upstream(s: &Settings, backend: &Backend) -> Result<ScenarioResult, BoxError> {
    let bridge = Bridge::start(&s.bridge_binary, &backend.allowlist(), s.clock_ticks).await?;
    let url = connect_url(bridge.addr(), &backend.url("/sink"));
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
            t1,
            Arc::clone(&sent),
            Arc::clone(&errors),
        ));
    }
    sleep_until(t0).await;
    window_hook(s, &bridge, "upstream", "start").await;
    let a = Snapshot::take(Some(&bridge), &backend.stats().requests, s.clock_ticks)?;
    sleep_until(t1).await;
    window_hook(s, &bridge, "upstream", "end").await;
    let b = Snapshot::take(Some(&bridge), &backend.stats().requests, s.clock_ticks)?;
    join_bounded(&mut tasks, t1 + GRACE).await;
    let window = Window::between(&a, &b);
    window.warn_if_noisy("upstream");
    let stopped = stop_bridge(bridge).await;
    Ok(ScenarioResult {
        name: "upstream".to_owned(),
        metrics: vec![
            Metric::info("messages/s (at backend)", window.rate(), "msg/s"),
            Metric::at_most(
                "bridge CPU per message",
                window.bridge_us_per_event(),
                "us",
                targets::UPSTREAM_CPU_US,
            ),
            Metric::info(
                "bridge cores busy",
                window.bridge_cpu / window.seconds,
                "cores",
            ),
        ],
        details: json!({
            "window": window.details(),
            "messages_written_by_clients": read(&sent),
            "client_errors": read(&errors),
            "bridge": stopped,
        }),
    })
}

/// Writes `payload` as binary messages in batches until `end`.
async fn stream_messages(mut ws: Ws, payload: Bytes, end: Instant, sent: Counter, errors: Counter) {
    while Instant::now() < end {
        let batch = async {
            for _ in 0..BATCH {
                ws.feed(Message::Binary(payload.clone())).await?;
            }
            ws.flush().await
        };
        match timeout_at(end, batch).await {
            Ok(Ok(())) => {
                sent.fetch_add(BATCH as u64, Ordering::Relaxed);
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
pub(crate) async fn roundtrip(s: &Settings, backend: &Backend) -> Result<ScenarioResult, BoxError> {
    let bridge = Bridge::start(&s.bridge_binary, &backend.allowlist(), s.clock_ticks).await?;
    let url = connect_url(bridge.addr(), &backend.url("/echo"));
    let clients = open_clients(&url, s.connections, s.handshake_concurrency).await?;
    let t0 = Instant::now() + s.warmup;
    let t1 = t0 + s.duration;
    let completed = Counter::default();
    let mut tasks = JoinSet::new();
    for ws in clients {
        tasks.spawn(round_trips(ws, s.payload(), t0, t1, Arc::clone(&completed)));
    }
    let callbacks_before = read(&backend.stats().callbacks_failed);
    sleep_until(t0).await;
    window_hook(s, &bridge, "roundtrip", "start").await;
    let a = Snapshot::take(Some(&bridge), &completed, s.clock_ticks)?;
    sleep_until(t1).await;
    window_hook(s, &bridge, "roundtrip", "end").await;
    let b = Snapshot::take(Some(&bridge), &completed, s.clock_ticks)?;
    let outcomes = join_bounded(&mut tasks, t1 + GRACE + Duration::from_secs(1)).await;
    let window = Window::between(&a, &b);
    window.warn_if_noisy("roundtrip");
    let stopped = stop_bridge(bridge).await;

    let mut latencies = Vec::new();
    let mut client_errors = 0;
    for (mut samples, errored) in outcomes {
        latencies.append(&mut samples);
        client_errors += u64::from(errored);
    }
    latencies.sort_unstable();
    let ms = |q: f64| quantile(&latencies, q).as_secs_f64() * 1e3;
    Ok(ScenarioResult {
        name: "roundtrip".to_owned(),
        metrics: vec![
            Metric::info("round trips/s", window.rate(), "rt/s"),
            Metric::at_most(
                "bridge CPU per round trip",
                window.bridge_us_per_event(),
                "us",
                targets::ROUNDTRIP_CPU_US,
            ),
            Metric::info("latency p50", ms(0.5), "ms"),
            Metric::at_most("latency p99", ms(0.99), "ms", targets::ROUNDTRIP_P99_MS),
            Metric::info("latency p99.9", ms(0.999), "ms"),
            Metric::info(
                "bridge cores busy",
                window.bridge_cpu / window.seconds,
                "cores",
            ),
        ],
        details: json!({
            "window": window.details(),
            "latency_samples": latencies.len(),
            "latency_max_ms": latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            "client_errors": client_errors,
            "callback_failures": read(&backend.stats().callbacks_failed) - callbacks_before,
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

/// `downstream`: the bench POSTs to every client's callback URL as fast as the bridge
/// accepts; the clients count what they receive.
pub(crate) async fn downstream(
    s: &Settings,
    backend: &Backend,
) -> Result<ScenarioResult, BoxError> {
    let bridge = Bridge::start(&s.bridge_binary, &backend.allowlist(), s.clock_ticks).await?;
    let url = connect_url(bridge.addr(), &backend.url("/hello"));
    let clients = open_clients(&url, s.connections, s.handshake_concurrency).await?;

    // Each client says hello; the backend's 200 answer carries its callback URL back to it.
    let hello_deadline = Instant::now() + Duration::from_secs(15);
    let mut hellos = JoinSet::new();
    for ws in clients {
        hellos.spawn(timeout_at(hello_deadline, hello(ws)));
    }
    let mut pairs = Vec::with_capacity(s.connections);
    while let Some(joined) = hellos.join_next().await {
        let within = joined.map_err(|e| format!("hello task: {e}"))?;
        pairs.push(within.map_err(|_| "no hello reply within 15 s")??);
    }

    let t0 = Instant::now() + s.warmup;
    let t1 = t0 + s.duration;
    let stop = t1 + GRACE;
    let received = Counter::default();
    let accepted = Counter::default();
    let queue_full = Counter::default();
    let failed = Counter::default();
    let mut tasks = JoinSet::new();
    for (ws, callback) in pairs {
        tasks.spawn(count_messages(ws, stop, Arc::clone(&received)));
        tasks.spawn(post_messages(
            Poster::new(bridge.addr()),
            callback,
            s.payload(),
            t1,
            StatusCode::ACCEPTED,
            [
                Arc::clone(&accepted),
                Arc::clone(&queue_full),
                Arc::clone(&failed),
            ],
        ));
    }
    sleep_until(t0).await;
    window_hook(s, &bridge, "downstream", "start").await;
    let a = Snapshot::take(Some(&bridge), &received, s.clock_ticks)?;
    sleep_until(t1).await;
    window_hook(s, &bridge, "downstream", "end").await;
    let b = Snapshot::take(Some(&bridge), &received, s.clock_ticks)?;
    join_bounded(&mut tasks, stop + GRACE).await;
    let window = Window::between(&a, &b);
    window.warn_if_noisy("downstream");
    let stopped = stop_bridge(bridge).await;
    Ok(ScenarioResult {
        name: "downstream".to_owned(),
        metrics: vec![
            Metric::info("messages/s (at clients)", window.rate(), "msg/s"),
            Metric::at_most(
                "bridge CPU per message",
                window.bridge_us_per_event(),
                "us",
                targets::DOWNSTREAM_CPU_US,
            ),
            Metric::info(
                "bridge cores busy",
                window.bridge_cpu / window.seconds,
                "cores",
            ),
        ],
        details: json!({
            "window": window.details(),
            "callbacks_accepted_202": read(&accepted),
            "callbacks_queue_full_503": read(&queue_full),
            "callbacks_failed": read(&failed),
            "messages_received_total": read(&received),
            "bridge": stopped,
        }),
    })
}

/// Sends `hello` and returns the connection with the path of its callback URL.
async fn hello(mut ws: Ws) -> Result<(Ws, Uri), BoxError> {
    ws.send(Message::text("hello")).await?;
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message? {
            let path = text
                .as_str()
                .strip_prefix("http://")
                .and_then(|rest| rest.find('/').map(|slash| &rest[slash..]))
                .ok_or_else(|| format!("not a callback URL: {text}"))?;
            return Ok((ws, path.parse()?));
        }
    }
    Err("the connection closed before the hello reply".into())
}

/// Counts binary messages received until `stop`.
async fn count_messages(mut ws: Ws, stop: Instant, received: Counter) {
    while let Ok(Some(Ok(message))) = timeout_at(stop, ws.next()).await {
        if message.is_binary() {
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// POSTs `payload` to `path` back to back until `end`. `counters` are `expected`, 503 and
/// any other outcome; a 503 (queue full) backs off 1 ms, a failure 10 ms.
async fn post_messages(
    mut poster: Poster,
    path: Uri,
    payload: Bytes,
    end: Instant,
    expected: StatusCode,
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
            Ok(Ok(status)) if status == expected => {
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

/// `idle`: opens many connections, then measures the bridge's resident memory per
/// connection and the handshake rate.
pub(crate) async fn idle(s: &Settings, backend: &Backend) -> Result<ScenarioResult, BoxError> {
    let bridge = Bridge::start(&s.bridge_binary, &backend.allowlist(), s.clock_ticks).await?;
    let url = connect_url(bridge.addr(), &backend.url("/sink"));
    let n = s.idle_connections;
    sleep(Duration::from_millis(300)).await;
    let rss_before = bridge.rss_kib()?;
    let cpu_before = bridge.cpu_seconds()?;
    let overflows_before = listen_overflows();
    window_hook(s, &bridge, "idle", "start").await;

    let started = Instant::now();
    let (holder, opened, failed, last_error, shards) = if n <= SHARD_THRESHOLD {
        let (open, failed, last_error) = open_many(
            &url,
            n,
            s.handshake_concurrency,
            true,
            started + IDLE_OPEN_BOUND,
        )
        .await;
        let opened = open.len();
        (Holder::InProcess(open), opened, failed, last_error, 1)
    } else {
        let shards = n.div_ceil(PER_SHARD);
        let (children, opened, failed) =
            open_in_shards(&url, n, shards, s.handshake_concurrency).await?;
        (Holder::Shards(children), opened, failed, None, shards)
    };
    let open_seconds = started.elapsed().as_secs_f64();
    window_hook(s, &bridge, "idle", "end").await;
    let cpu_after = bridge.cpu_seconds()?;
    let overflows = listen_overflows()
        .zip(overflows_before)
        .map(|(after, before)| after.saturating_sub(before));
    // Let the bridge finish whatever each new connection started (tasks, first polls).
    sleep(Duration::from_secs(1)).await;
    let rss_after = bridge.rss_kib()?;
    holder.release().await;
    let stopped = stop_bridge(bridge).await;
    if opened == 0 {
        return Err(format!(
            "no idle connection could be opened: {}",
            last_error.unwrap_or_default()
        )
        .into());
    }
    let kib_per_connection = rss_after.saturating_sub(rss_before) as f64 / opened as f64;
    let handshakes_per_second = opened as f64 / open_seconds;
    Ok(ScenarioResult {
        name: "idle".to_owned(),
        metrics: vec![
            Metric::at_most(
                &format!("RSS per connection at {opened}"),
                kib_per_connection,
                "KiB",
                targets::IDLE_KIB,
            ),
            Metric::at_least(
                "handshakes/s",
                handshakes_per_second,
                "/s",
                targets::HANDSHAKES_PER_SECOND,
            ),
            Metric::info(
                "bridge CPU per handshake",
                (cpu_after - cpu_before) * 1e6 / opened as f64,
                "us",
            ),
            Metric::info(
                "listen queue overflows while opening",
                overflows.map_or(f64::NAN, |n| n as f64),
                "drops",
            ),
        ],
        details: json!({
            "requested": n,
            "opened": opened,
            "failed": failed,
            "last_error": last_error,
            "client_processes": shards,
            "handshakes_in_flight": s.handshake_concurrency,
            "open_seconds": open_seconds,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "bridge_cpu_seconds_opening": cpu_after - cpu_before,
            "tcp_listen_overflows": overflows,
            "bridge": stopped,
        }),
    })
}

/// The kernel's count of connections dropped because a listener's accept queue was full
/// (`TcpExt: ListenOverflows` in `/proc/net/netstat`, for the whole network namespace). A
/// dropped handshake is retried by the client's kernel after about a second.
fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut tcp_ext = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let names = tcp_ext.next()?.split_whitespace();
    let values = tcp_ext.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
}

/// Who holds the idle connections.
enum Holder {
    InProcess(Vec<Ws>),
    Shards(Vec<tokio::process::Child>),
}

impl Holder {
    /// Resets every connection: dropped here, or the shards told to exit (stdin closed).
    async fn release(self) {
        match self {
            Self::InProcess(open) => drop(open),
            Self::Shards(children) => {
                for mut child in children {
                    drop(child.stdin.take());
                    if tokio::time::timeout(Duration::from_secs(10), child.wait())
                        .await
                        .is_err()
                    {
                        let _ = child.kill().await;
                    }
                }
            }
        }
    }
}

/// Starts `shards` child processes of this binary in `--client-shard` mode and waits until
/// each has opened its share. Returns the children and the opened and failed counts.
async fn open_in_shards(
    url: &str,
    n: usize,
    shards: usize,
    in_flight: usize,
) -> Result<(Vec<tokio::process::Child>, usize, usize), BoxError> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::with_capacity(shards);
    let mut readers = Vec::with_capacity(shards);
    for i in 0..shards {
        let count = n / shards + usize::from(i < n % shards);
        let mut child = Command::new(&exe)
            .args([
                "--client-shard",
                url,
                "--shard-count",
                &count.to_string(),
                "--handshake-concurrency",
                &in_flight.div_ceil(shards).to_string(),
                "--shard-hold",
                &format!("{}s", IDLE_OPEN_BOUND.as_secs()),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no shard stdout")?;
        readers.push(BufReader::new(stdout).lines());
        children.push(child);
    }
    let deadline = Instant::now() + IDLE_OPEN_BOUND;
    let (mut opened, mut failed) = (0, 0);
    for lines in &mut readers {
        let line = timeout_at(deadline, lines.next_line())
            .await
            .map_err(|_| "a client shard did not report in time")??
            .ok_or("a client shard exited without reporting")?;
        let mut fields = line.split_whitespace().skip(1);
        opened += fields
            .next()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        failed += fields
            .next()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
    }
    Ok((children, opened, failed))
}

/// `direct`: the same POSTs straight to the backend, no bridge: the loopback HTTP ceiling
/// of this machine with this client and server.
pub(crate) async fn direct(s: &Settings, backend: &Backend) -> Result<ScenarioResult, BoxError> {
    let t0 = Instant::now() + s.warmup;
    let t1 = t0 + s.duration;
    let path: Uri = "/sink".parse()?;
    let accepted = Counter::default();
    let unavailable = Counter::default();
    let failed = Counter::default();
    let mut tasks = JoinSet::new();
    for _ in 0..s.connections {
        tasks.spawn(post_messages(
            Poster::new(backend.addr()),
            path.clone(),
            s.payload(),
            t1,
            StatusCode::NO_CONTENT,
            [
                Arc::clone(&accepted),
                Arc::clone(&unavailable),
                Arc::clone(&failed),
            ],
        ));
    }
    sleep_until(t0).await;
    let a = Snapshot::take(None, &backend.stats().requests, s.clock_ticks)?;
    sleep_until(t1).await;
    let b = Snapshot::take(None, &backend.stats().requests, s.clock_ticks)?;
    join_bounded(&mut tasks, t1 + GRACE).await;
    let window = Window::between(&a, &b);
    window.warn_if_noisy("direct");
    Ok(ScenarioResult {
        name: "direct".to_owned(),
        metrics: vec![
            Metric::info("requests/s (no bridge)", window.rate(), "req/s"),
            Metric::info(
                "bench CPU per request (client + backend)",
                window.bench_cpu * 1e6 / window.events.max(1) as f64,
                "us",
            ),
        ],
        details: json!({
            "window": window.details(),
            "answered_204": read(&accepted),
            "answered_503": read(&unavailable),
            "failed": read(&failed),
        }),
    })
}
