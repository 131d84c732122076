//! `idle`: memory per open connection and the handshake rate; and [`Fleet`], many connections
//! opened by this process or by client shards (child processes of the bench), which the
//! growth scenario reuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout_at};

use super::{Ctx, Settings, join_bounded, mark, stop_bridge, targets};
use crate::BoxError;
use crate::client::{Counter, Ws, open_many, paced};
use crate::contract::Needs;
use crate::report::{Metric, ScenarioResult};

/// Connections one bench process opens itself by default; beyond it, child shards open them.
const SHARD_THRESHOLD: usize = 15_000;
/// Connections per child shard by default.
const PER_SHARD: usize = 10_000;
/// Upper bound on opening the connections and on a shard's life.
const OPEN_BOUND: Duration = Duration::from_secs(120);

/// `idle`: opens many connections, then measures the bridge's resident memory per
/// connection and the handshake rate.
pub(crate) async fn idle(ctx: &Ctx<'_>) -> Result<ScenarioResult, BoxError> {
    let s = ctx.settings;
    let mut bridge = ctx.start_bridge("idle", Needs::default()).await?;
    let url = ctx.connect_url(&bridge, "/sink");
    let n = s.idle_connections;
    sleep(Duration::from_millis(300)).await;
    let rss_before = bridge.rss_kib()?;
    let cpu_before = bridge.cpu_seconds()?;
    let overflows_before = listen_overflows();
    let nothing = AtomicU64::new(0);
    mark(ctx, &mut bridge, "idle", "start", &nothing).await?;

    let started = Instant::now();
    let fleet = Fleet::open(s, &url, n, None, None).await;
    let open_seconds = started.elapsed().as_secs_f64();
    let fleet = match fleet {
        Ok(fleet) => fleet,
        Err(e) => {
            stop_bridge(bridge).await;
            return Err(e);
        }
    };
    mark(ctx, &mut bridge, "idle", "end", &nothing).await?;
    let cpu_after = bridge.cpu_seconds()?;
    let overflows = listen_overflows()
        .zip(overflows_before)
        .map(|(after, before)| after.saturating_sub(before));
    // Let the bridge finish whatever each new connection started (tasks, first polls).
    sleep(Duration::from_secs(1)).await;
    let rss_after = bridge.rss_kib()?;
    let (opened, failed, processes) = (fleet.opened, fleet.failed, fleet.processes);
    let last_error = fleet.last_error.clone();
    fleet.release().await;
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
                &format!("RSS per connection at {n}"),
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
            "client_processes": processes,
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

/// How a [`Fleet`]'s connections send messages, if they do.
pub(super) struct Pace {
    /// Interval between one connection's messages, in microseconds; in-process senders read
    /// it before each wait, so changing it changes their pace (shards take it at start).
    pub(super) interval_us: Arc<AtomicU64>,
    pub(super) payload: Bytes,
    /// Messages sent and connections lost by in-process senders (shards keep their own).
    pub(super) counters: [Counter; 2],
}

impl Pace {
    fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us.load(Ordering::Relaxed))
    }
}

/// Many connections to one connect URL, held by this process or by client shards.
pub(super) struct Fleet {
    holder: Holder,
    pub(super) opened: usize,
    pub(super) failed: usize,
    pub(super) last_error: Option<String>,
    /// 1: this process; more: that many child processes.
    pub(super) processes: usize,
}

/// Who holds a fleet's connections.
enum Holder {
    Idle(Vec<Ws>),
    Paced {
        stop: watch::Sender<bool>,
        tasks: JoinSet<()>,
    },
    Shards(Vec<Child>),
}

impl Fleet {
    /// Opens `n` connections to `url` (`--handshake-concurrency` in flight), in this process
    /// or spread over `processes` shards (default: `--client-processes`), and, with `pace`,
    /// starts sending on each, spread evenly over one interval.
    pub(super) async fn open(
        s: &Settings,
        url: &str,
        n: usize,
        processes: Option<usize>,
        pace: Option<Pace>,
    ) -> Result<Self, BoxError> {
        let processes = match processes.unwrap_or(s.client_processes) {
            0 if n <= SHARD_THRESHOLD => 1,
            0 => n.div_ceil(PER_SHARD),
            chosen => chosen,
        };
        if processes > 1 {
            let interval = pace.as_ref().map_or(Duration::ZERO, Pace::interval);
            let size = pace.as_ref().map_or(0, |p| p.payload.len());
            let (children, opened, failed) =
                open_in_shards(url, n, processes, s.handshake_concurrency, interval, size).await?;
            return Ok(Self {
                holder: Holder::Shards(children),
                opened,
                failed,
                last_error: None,
                processes,
            });
        }
        let deadline = Instant::now() + OPEN_BOUND;
        let (open, failed, last_error) =
            open_many(url, n, s.handshake_concurrency, true, deadline).await;
        let opened = open.len();
        let holder = match pace {
            None => Holder::Idle(open),
            Some(pace) => {
                let (stop, stopped) = watch::channel(false);
                let interval = pace.interval();
                let mut tasks = JoinSet::new();
                for (i, ws) in open.into_iter().enumerate() {
                    tasks.spawn(paced(
                        ws,
                        pace.payload.clone(),
                        Arc::clone(&pace.interval_us),
                        interval.mul_f64(i as f64 / opened.max(1) as f64),
                        stopped.clone(),
                        pace.counters.clone(),
                    ));
                }
                Holder::Paced { stop, tasks }
            }
        };
        Ok(Self {
            holder,
            opened,
            failed,
            last_error,
            processes: 1,
        })
    }

    /// Stops the senders and resets every connection: dropped here, or the shards told to
    /// exit (stdin closed).
    pub(super) async fn release(self) {
        match self.holder {
            Holder::Idle(open) => drop(open),
            Holder::Paced { stop, mut tasks } => {
                let _ = stop.send(true);
                join_bounded(&mut tasks, Instant::now() + Duration::from_secs(5)).await;
            }
            Holder::Shards(children) => {
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
    interval: Duration,
    size: usize,
) -> Result<(Vec<Child>, usize, usize), BoxError> {
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
                &format!("{}s", OPEN_BOUND.as_secs()),
                "--shard-interval-us",
                &interval.as_micros().to_string(),
                "--size",
                &size.to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no shard stdout")?;
        readers.push(BufReader::new(stdout).lines());
        children.push(child);
    }
    let deadline = Instant::now() + OPEN_BOUND;
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
