//! `websocket-bridge-bench`: a load benchmark for the `websocket-bridge` release binary, alone
//! or side by side with another bridge (the original fermyon/websocket-bridge).
//!
//! The bench runs each bridge as a separate process (ours: `target/release/websocket-bridge`,
//! built first with `cargo build --release --bin websocket-bridge` unless `--no-build`; the
//! peer: `--peer BIN`), an in-process hyper backend, and WebSocket clients, all on loopback.
//! Scenarios: `upstream` (client -> backend messages), `roundtrip` (client -> backend ->
//! callback POST -> client, closed loop), `downstream` (callback POSTs -> clients), `idle`
//! (memory per open connection and handshake rate), `growth` (CPU per message with 10,000
//! active connections against 64), `large` (64 KiB and 1 MiB messages both ways), `fanout`
//! (publications to a channel of 10,000 members: CPU per delivery, publish-to-last-delivery
//! latency, completeness), `fanout-by-callbacks` (the same fanout as one callback POST per
//! member), `cluster` (three nodes on the bench's own redis-server: callbacks through
//! another node, a channel across the nodes), `woh-upstream`, `woh-roundtrip` and
//! `woh-downstream` (the first three over a websocket-over-http route, printed beside them)
//! and `direct` (the same POSTs straight to the backend: the ceiling). With `--peer`, every scenario runs
//! A, B, A, B, ... (`--rounds`), and the table shows each side's median and runs and A/B.
//! With `--callgrind`, bridges run under valgrind and the message scenarios report
//! instructions per message.
//!
//! Layout: [`contract`] knows each bridge's command line and URLs; [`bridge`] runs and
//! measures one bridge process; [`backend`] is the in-process backend; [`client`] the
//! WebSocket clients, HTTP posters and client shards; [`member`] the light channel members of
//! the fanout scenarios; [`scenarios`] the scenarios;
//! [`report`] folds runs into medians and prints the table. CPU figures are the bridge's own
//! user + system time from `/proc/PID/stat`; memory is its `VmRSS`.

mod backend;
mod bridge;
mod client;
mod contract;
mod events;
mod member;
mod redis;
mod report;
mod scenarios;
mod verdict;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use crate::backend::Backend;
use crate::client::ShardWork;
use crate::contract::{KindChoice, Side};
use crate::report::{Column, Machine, ScenarioResult, Summary, format_value};
use crate::scenarios::{Ctx, Settings};

/// The error type of the bench: anything printable.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Load benchmark for websocket-bridge: drives the real release binary on loopback, alone or
/// side by side with another bridge (--peer).
///
/// Before measuring, it runs `cargo build --release --bin websocket-bridge` in the workspace
/// (skip with --no-build) and then starts target/release/websocket-bridge (or --bridge PATH)
/// afresh for each scenario, on loopback with rate and per-IP limits off. With --peer BIN,
/// each scenario runs A (ours), B (the peer), A, B, ... for --rounds rounds, and the table
/// shows each side's median (and every run) and the ratio A/B. The bridge, the in-process
/// backend and the clients share this machine's cores: CPU per message (the bridge's utime +
/// stime from /proc/PID/stat) is the bridge's own and changes little with sharing; rates and
/// latencies are what the shared cores allow. Only loopback is used.
#[derive(Parser, Debug)]
#[command(name = "websocket-bridge-bench", version, verbatim_doc_comment)]
struct Args {
    /// Scenarios to run: `all` or a comma-separated list of upstream, roundtrip, downstream,
    /// woh-upstream, woh-roundtrip, woh-downstream, idle, growth, large, fanout,
    /// fanout-by-callbacks, cluster, direct. Under --callgrind, `all` means upstream,
    /// roundtrip, downstream (fanout and the woh-* scenarios may be named too).
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Concurrent WebSocket clients (and HTTP posters) in upstream, roundtrip, downstream and
    /// direct; the few connections of growth.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Message size in bytes (all scenarios but large).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measurement window per scenario (`10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before each measurement window, not counted.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Runs of each scenario per side; with --peer they alternate A, B, A, B, ...
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Connections opened in the idle scenario.
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// WebSocket handshakes in flight at once while opening connections (split among client
    /// processes).
    #[arg(long, default_value_t = 256)]
    handshake_concurrency: usize,
    /// Client processes opening the idle and growth connections: 0 picks one (this process)
    /// up to 15,000 connections and one child per 10,000 beyond; N > 1 spreads them over N
    /// child processes of the bench.
    #[arg(long, default_value_t = 0)]
    client_processes: usize,
    /// Active connections in the growth scenario's second window.
    #[arg(long, default_value_t = 10_000)]
    growth_connections: usize,
    /// Total messages per second in both growth windows, paced.
    #[arg(long, default_value_t = 5_000.0)]
    growth_rate: f64,
    /// Clients (and posters) in the large-message scenario.
    #[arg(long, default_value_t = 8)]
    large_connections: usize,
    /// Members of the channel in the fanout scenarios, held by this process (each one open
    /// file).
    #[arg(long, default_value_t = 10_000)]
    fanout_members: usize,
    /// Publications per second in the fanout scenarios, over --warmup then --duration
    /// (fanout-by-callbacks goes slower when one publication's POSTs take longer).
    #[arg(long, default_value_t = 20.0)]
    fanout_rate: f64,
    /// Members of the cluster scenario's channel, spread evenly over its three nodes (each one
    /// open file in the bench).
    #[arg(long, default_value_t = 3_000)]
    cluster_members: usize,
    /// Publications per second in the cluster scenario's channel part, over --warmup then
    /// --duration.
    #[arg(long, default_value_t = 20.0)]
    cluster_rate: f64,
    /// Where to write the results as JSON [default: bench/results.json in the workspace].
    #[arg(long)]
    json: Option<PathBuf>,
    /// The bridge measured as side A [default: target/release/websocket-bridge in the
    /// workspace].
    #[arg(long)]
    bridge: Option<PathBuf>,
    /// Contract of --bridge: auto (from its --help), ours or fermyon.
    #[arg(long, value_enum, default_value_t = KindChoice::Auto)]
    bridge_kind: KindChoice,
    /// Another bridge binary, measured as side B in the same run (e.g. the original
    /// fermyon/websocket-bridge built outside the repository).
    #[arg(long)]
    peer: Option<PathBuf>,
    /// Contract of --peer: auto (from its --help), ours or fermyon.
    #[arg(long, value_enum, default_value_t = KindChoice::Auto)]
    peer_kind: KindChoice,
    /// Run the bridges under `valgrind --tool=callgrind` and report instructions (Ir) per
    /// message for upstream, roundtrip and downstream, from dumps taken at each window's
    /// start and end (valgrind slows a bridge ~50x: use fewer connections and longer windows).
    #[arg(long)]
    callgrind: bool,
    /// Where --callgrind writes its dumps (`{side}-{scenario}-r{round}.{pid}.out.{n}`; dump 2
    /// is the window) [default: target/bench-callgrind in the workspace].
    #[arg(long)]
    callgrind_dir: Option<PathBuf>,
    /// Do not run `cargo build --release --bin websocket-bridge` first.
    #[arg(long)]
    no_build: bool,
    /// Shell command run at the start and end of each measurement window, with
    /// BENCH_BRIDGE_PID, BENCH_SCENARIO, BENCH_SIDE (A|B) and BENCH_EVENT (start|end) set;
    /// for profilers such as perf.
    #[arg(long)]
    window_hook: Option<String>,
    /// Internal: run as a client shard, opening connections to this URL.
    #[arg(long, hide = true)]
    client_shard: Option<String>,
    /// Internal: connections a client shard opens.
    #[arg(long, hide = true, default_value_t = 0)]
    shard_count: usize,
    /// Internal: longest time a client shard lives.
    #[arg(long, hide = true, default_value = "120s", value_parser = parse_duration)]
    shard_hold: Duration,
    /// Internal: microseconds between one shard connection's messages (0: idle).
    #[arg(long, hide = true, default_value_t = 0)]
    shard_interval_us: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("websocket-bridge-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match &args.client_shard {
        Some(url) => runtime.block_on(client::run_shard(
            url,
            ShardWork {
                count: args.shard_count,
                in_flight: args.handshake_concurrency,
                hold: args.shard_hold,
                interval: Duration::from_micros(args.shard_interval_us),
                size: args.size,
            },
        )),
        None => runtime.block_on(run(&args)),
    };
    // Client tasks still parked on sockets must not delay the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("websocket-bridge-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this package's directory.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The workspace's target directory (`CARGO_TARGET_DIR` if set).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// One side's runs of one scenario, before folding.
#[derive(Default)]
struct Runs {
    results: Vec<ScenarioResult>,
    errors: Vec<String>,
    unavailable: Option<String>,
}

async fn run(args: &Args) -> Result<(), BoxError> {
    let scenarios = parse_scenarios(&args.scenarios, args.callgrind)?;
    if args.connections == 0 || args.idle_connections == 0 || args.large_connections == 0 {
        return Err(
            "--connections, --idle-connections and --large-connections must be at least 1".into(),
        );
    }
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let root = workspace_root();
    if !args.no_build {
        build_bridge(&root)?;
    }
    let ours = args
        .bridge
        .clone()
        .unwrap_or_else(|| target_dir(&root).join("release/websocket-bridge"));
    let mut sides = vec![Side::new("A", ours, args.bridge_kind.kind()).map_err(|e| {
        format!("side A: {e} (run `cargo build --release` first, or pass --bridge)")
    })?];
    if let Some(peer) = &args.peer {
        sides.push(
            Side::new("B", peer.clone(), args.peer_kind.kind())
                .map_err(|e| format!("--peer: {e}"))?,
        );
    }
    let callgrind = if args.callgrind {
        let dir = args
            .callgrind_dir
            .clone()
            .unwrap_or_else(|| scenarios::default_callgrind_dir(&target_dir(&root)));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        check_valgrind()?;
        Some(dir)
    } else {
        None
    };
    let ticks = bridge::clock_ticks();
    let machine = Machine::collect(&root, ticks);
    let settings = Settings {
        connections: args.connections,
        size: args.size,
        duration: args.duration,
        warmup: args.warmup,
        idle_connections: args.idle_connections,
        handshake_concurrency: args.handshake_concurrency,
        client_processes: args.client_processes,
        growth_connections: args.growth_connections,
        growth_rate: args.growth_rate,
        large_connections: args.large_connections,
        fanout_members: args.fanout_members,
        fanout_rate: args.fanout_rate,
        cluster_members: args.cluster_members,
        cluster_rate: args.cluster_rate,
        clock_ticks: ticks.0,
        callgrind,
        window_hook: args.window_hook.clone(),
    };
    let sharing = format!(
        "the bridge, the backend and the clients share this machine's {} cores ({}); \
         rates are what that sharing allows, CPU per message is the bridge process's own",
        machine.nproc, machine.cpu_model
    );
    eprintln!("websocket-bridge-bench: {sharing}");
    for side in &sides {
        eprintln!(
            "websocket-bridge-bench: side {}: {} ({}, {})",
            side.label,
            side.binary.display(),
            side.kind.name(),
            side.version
        );
    }
    eprintln!(
        "websocket-bridge-bench: commit {}{}, {} connections x {} B, {} s windows after {} s warm-up, {} round(s){}",
        machine.git_commit,
        if machine.git_dirty { " (dirty)" } else { "" },
        settings.connections,
        settings.size,
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64(),
        args.rounds,
        if settings.callgrind.is_some() {
            ", under callgrind"
        } else {
            ""
        },
    );

    let backend = Backend::start().await?;
    // runs[side][scenario]
    let mut runs: Vec<Vec<Runs>> = sides
        .iter()
        .map(|_| scenarios.iter().map(|_| Runs::default()).collect())
        .collect();
    for (index, name) in scenarios.iter().enumerate() {
        eprintln!("[{name}] {}", describe(name, &settings));
        for round in 1..=args.rounds {
            for (side_index, side) in sides.iter().enumerate() {
                let slot = &mut runs[side_index][index];
                if *name == "direct" && side_index > 0 {
                    continue; // no bridge involved: once per round is enough
                }
                if let Some(reason) = scenarios::unavailable(name, side, &settings) {
                    slot.unavailable = Some(reason);
                    continue;
                }
                let ctx = Ctx {
                    settings: &settings,
                    side,
                    backend: &backend,
                    round,
                };
                let started = std::time::Instant::now();
                let outcome = match *name {
                    "upstream" => scenarios::upstream(&ctx).await,
                    "roundtrip" => scenarios::roundtrip(&ctx).await,
                    "downstream" => scenarios::downstream(&ctx).await,
                    "idle" => scenarios::idle(&ctx).await,
                    "growth" => scenarios::growth(&ctx).await,
                    "large" => scenarios::large(&ctx).await,
                    "fanout" => scenarios::fanout(&ctx).await,
                    "fanout-by-callbacks" => scenarios::fanout_by_callbacks(&ctx).await,
                    "cluster" => scenarios::cluster(&ctx).await,
                    "woh-upstream" => scenarios::woh_upstream(&ctx).await,
                    "woh-roundtrip" => scenarios::woh_roundtrip(&ctx).await,
                    "woh-downstream" => scenarios::woh_downstream(&ctx).await,
                    _ => scenarios::direct(&settings, &backend).await,
                };
                let who = format!("[{name} {} round {round}/{}]", side.title(), args.rounds);
                match outcome {
                    Ok(result) => {
                        let summary: Vec<String> = result
                            .metrics
                            .iter()
                            .map(|m| format!("{} {} {}", m.name, format_value(m.value), m.unit))
                            .collect();
                        eprintln!(
                            "{who} done in {:.1} s: {}",
                            started.elapsed().as_secs_f64(),
                            summary.join(", ")
                        );
                        slot.results.push(result);
                    }
                    Err(e) => {
                        eprintln!("{who} FAILED: {e}");
                        slot.errors.push(e.to_string());
                    }
                }
            }
        }
    }

    let summaries: Vec<Vec<Summary>> = runs
        .into_iter()
        .map(|side_runs| {
            side_runs
                .into_iter()
                .zip(&scenarios)
                .filter(|(runs, name)| {
                    **name != "direct" || !runs.results.is_empty() || !runs.errors.is_empty()
                })
                .map(|(runs, name)| match runs.unavailable {
                    Some(reason) => Summary::unavailable(name, reason),
                    None => Summary::fold(name, &runs.results, runs.errors),
                })
                .collect()
        })
        .collect();
    let columns: Vec<Column<'_>> = sides
        .iter()
        .zip(&summaries)
        .map(|(side, summaries)| Column {
            title: side.title(),
            summaries,
        })
        .collect();
    print!("{}", report::table(&columns[0], columns.get(1)));
    println!();
    let verdicts = verdict::judge(&columns[0], columns.get(1));
    if !verdicts.is_empty() {
        println!(
            "issue 12's targets, side A judged (against side B where the target is relative):"
        );
        print!("{}", verdict::table(&verdicts));
        println!();
    }
    let beside = report::beside(&columns[0], &scenarios::BESIDE_SEED);
    if !beside.is_empty() {
        println!(
            "websocket-over-http beside the seed protocol, side {}, same run:",
            sides[0].label
        );
        print!("{}", report::beside_table(&columns[0].title, &beside));
        println!();
    }
    println!("note: {sharing}.");
    println!(
        "note: values are medians of {} run(s), each run's value in brackets; CPU time from /proc/PID/stat (utime + stime) at {} ticks/s ({}).",
        args.rounds, ticks.0, ticks.1
    );
    for side in &sides {
        println!(
            "note: side {}: {} ({}, {}).",
            side.label,
            side.binary.display(),
            side.kind.name(),
            side.version
        );
    }
    if let Some(dir) = &settings.callgrind {
        println!(
            "note: callgrind dumps in {} (`.2` covers the window; see docs/PERFORMANCE.md for callgrind_annotate).",
            dir.display()
        );
    }

    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| root.join("bench/results.json"));
    write_json(
        &json_path, args, &settings, &machine, &sharing, &sides, &columns, &beside, &verdicts,
    )?;
    eprintln!("websocket-bridge-bench: wrote {}", json_path.display());
    let failed: usize = summaries
        .iter()
        .flatten()
        .map(|summary| summary.errors.len())
        .sum();
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} run(s) failed").into())
    }
}

fn describe(name: &str, s: &Settings) -> String {
    let window = format!(
        "{} s warm-up + {} s",
        s.warmup.as_secs_f64(),
        s.duration.as_secs_f64()
    );
    match name {
        "upstream" => format!(
            "{} clients stream {} B binary messages to the backend; {window}",
            s.connections, s.size
        ),
        "roundtrip" => format!(
            "{} clients in a closed loop through the callback URL, {} B; {window}",
            s.connections, s.size
        ),
        "downstream" => format!(
            "{} posters send {} B to {} clients' callback URLs; {window}",
            s.connections, s.size, s.connections
        ),
        "woh-upstream" => format!(
            "{} clients stream {} B binary messages over a websocket-over-http route (/woh/sink); {window}",
            s.connections, s.size
        ),
        "woh-roundtrip" => format!(
            "{} clients in a closed loop over a websocket-over-http route, the reply in the answer body (/woh/echo), {} B; {window}",
            s.connections, s.size
        ),
        "woh-downstream" => format!(
            "{} posters publish {} B to {} websocket-over-http clients, each subscribed by GRIP to its own channel; {window}",
            s.connections, s.size, s.connections
        ),
        "idle" => format!(
            "opening {} idle connections, {} handshakes in flight",
            s.idle_connections, s.handshake_concurrency
        ),
        "growth" => format!(
            "{} msg/s of {} B paced over {} connections, then over {}; {window} each",
            s.growth_rate, s.size, s.connections, s.growth_connections
        ),
        "large" => format!(
            "{} clients, 64 KiB then 1 MiB messages, upstream then downstream; {window} each",
            s.large_connections
        ),
        "fanout" => format!(
            "{} channel members, {}/s publications of {} B through the publish API; {window}",
            s.fanout_members, s.fanout_rate, s.size
        ),
        "fanout-by-callbacks" => format!(
            "{} members, up to {}/s publications of {} B as one callback POST per member ({} posters); {window}",
            s.fanout_members, s.fanout_rate, s.size, s.connections
        ),
        "cluster" => format!(
            "redis-server + 3 nodes: {} posters send {} B to clients on node 1 through node 1, then node 2; \
             {} members over 3 nodes, {}/s publications through node 1; then fanout on 1 node; {window} each",
            s.connections, s.size, s.cluster_members, s.cluster_rate
        ),
        _ => format!(
            "{} keep-alive posters send {} B straight to the backend (no bridge); {window}",
            s.connections, s.size
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn write_json(
    path: &Path,
    args: &Args,
    settings: &Settings,
    machine: &Machine,
    sharing: &str,
    sides: &[Side],
    columns: &[Column<'_>],
    beside: &[report::Beside],
    verdicts: &[verdict::Verdict],
) -> Result<(), BoxError> {
    let side_json = |side: &Side| {
        json!({
            "label": side.label,
            "kind": side.kind.name(),
            "binary": side.binary.display().to_string(),
            "version": side.version,
            "flags": side.kind.flags_summary(),
        })
    };
    let mut comparison = Vec::new();
    if let [a, b] = columns {
        for summary in a.summaries {
            let Some(other) = b.summaries.iter().find(|o| o.name == summary.name) else {
                continue;
            };
            for metric in &summary.metrics {
                if let Some(theirs) = other.metrics.iter().find(|m| m.name == metric.name) {
                    comparison.push(json!({
                        "scenario": summary.name,
                        "metric": metric.name,
                        "unit": metric.unit,
                        "a": metric.value,
                        "b": theirs.value,
                        "a_over_b": metric.value / theirs.value,
                    }));
                }
            }
        }
    }
    let document = json!({
        "tool": "websocket-bridge-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine,
        "config": {
            "scenarios": args.scenarios,
            "rounds": args.rounds,
            "connections": settings.connections,
            "size_bytes": settings.size,
            "duration_seconds": settings.duration.as_secs_f64(),
            "warmup_seconds": settings.warmup.as_secs_f64(),
            "idle_connections": settings.idle_connections,
            "handshake_concurrency": settings.handshake_concurrency,
            "client_processes": settings.client_processes,
            "growth_connections": settings.growth_connections,
            "growth_rate": settings.growth_rate,
            "large_connections": settings.large_connections,
            "fanout_members": settings.fanout_members,
            "fanout_rate": settings.fanout_rate,
            "cluster_members": settings.cluster_members,
            "cluster_rate": settings.cluster_rate,
            "callgrind_dir": settings.callgrind.as_ref().map(|d| d.display().to_string()),
            "bridge_binary": sides[0].binary.display().to_string(),
            "bridge_flags": sides[0].kind.flags_summary(),
            "sides": sides.iter().map(side_json).collect::<Vec<_>>(),
        },
        "note": sharing,
        // Side A's medians, in the shape older readers (bench/plot.py) expect.
        "scenarios": columns[0].summaries,
        "peer": sides.get(1).zip(columns.get(1)).map(|(side, column)| {
            let mut peer = side_json(side);
            peer["scenarios"] = json!(column.summaries);
            peer
        }),
        "comparison": comparison,
        // Issue 12's targets judged from both columns (medians and round by round).
        "targets": verdicts,
        // Side A's websocket-over-http scenarios beside its seed-protocol ones.
        "beside_seed": beside,
    });
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")?;
    Ok(())
}

/// Runs `cargo build --release --bin websocket-bridge` in the workspace, output to stderr.
fn build_bridge(root: &Path) -> Result<(), BoxError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("websocket-bridge-bench: cargo build --release --bin websocket-bridge");
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "websocket-bridge",
            "--bin",
            "websocket-bridge",
        ])
        .current_dir(root)
        .stdout(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the bridge failed: {status}").into())
    }
}

/// Fails early, with a hint, when valgrind or callgrind_control is missing.
fn check_valgrind() -> Result<(), BoxError> {
    for tool in ["valgrind", "callgrind_control"] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Err(format!("--callgrind needs {tool} (install valgrind)").into());
        }
    }
    Ok(())
}

fn parse_scenarios(list: &str, callgrind: bool) -> Result<Vec<&'static str>, String> {
    if list.trim() == "all" {
        return Ok(if callgrind {
            scenarios::CALLGRIND.to_vec()
        } else {
            scenarios::ALL.to_vec()
        });
    }
    let mut chosen = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let known = scenarios::ALL
            .iter()
            .find(|known| **known == name)
            .ok_or_else(|| {
                format!(
                    "unknown scenario {name:?}: use all or some of {}",
                    scenarios::ALL.join(",")
                )
            })?;
        if !chosen.contains(known) {
            chosen.push(*known);
        }
    }
    if chosen.is_empty() {
        return Err("no scenario given".to_owned());
    }
    Ok(chosen)
}

/// `10s`, `500ms`, `1.5s`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (try 10s or 500ms)"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1e3,
        "m" | "min" => number * 60.0,
        other => return Err(format!("unknown duration unit {other:?} (use ms, s or m)")),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("duration must be positive: {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn scenario_lists_parse() {
        assert_eq!(parse_scenarios("all", false), Ok(scenarios::ALL.to_vec()));
        assert_eq!(
            parse_scenarios("all", true),
            Ok(vec!["upstream", "roundtrip", "downstream"])
        );
        assert_eq!(
            parse_scenarios("idle, direct,idle", false),
            Ok(vec!["idle", "direct"])
        );
        assert!(parse_scenarios("sideways", false).is_err());
    }
}
