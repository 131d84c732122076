//! `websocket-bridge-bench`: a load benchmark for the `websocket-bridge` release binary.
//!
//! The bench runs the real bridge as a separate process (`target/release/websocket-bridge`,
//! built first with `cargo build --release --bin websocket-bridge` unless `--no-build`), an
//! in-process hyper backend, and WebSocket clients, all on loopback, and measures five
//! scenarios: `upstream` (client -> backend messages), `roundtrip` (client -> backend ->
//! callback POST -> client, closed loop), `downstream` (callback POSTs -> clients), `idle`
//! (memory per open connection and handshake rate) and `direct` (the same POSTs straight to
//! the backend: the ceiling). CPU figures are the bridge's own user + system time from
//! `/proc/PID/stat`; memory is its `VmRSS`. It prints a table to stdout, progress to stderr,
//! and writes every figure with facts about the machine to a JSON file that
//! `bench/plot.py` turns into `docs/bench.svg`.

mod backend;
mod bridge;
mod client;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use crate::backend::Backend;
use crate::report::{Machine, ScenarioResult, format_value};
use crate::scenarios::Settings;

/// The error type of the bench: anything printable.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ALL_SCENARIOS: [&str; 5] = ["upstream", "roundtrip", "downstream", "idle", "direct"];

/// Load benchmark for websocket-bridge: drives the real release binary on loopback.
///
/// Before measuring, it runs `cargo build --release --bin websocket-bridge` in the workspace
/// (skip with --no-build) and then starts target/release/websocket-bridge (or --bridge PATH)
/// afresh for each scenario, on 127.0.0.1:0 with rate and per-IP limits off. The bridge, the
/// in-process backend and the clients share this machine's cores: CPU per message (the
/// bridge's utime + stime from /proc/PID/stat) is the bridge's own and changes little with
/// sharing; rates and latencies are what the shared cores allow. Only loopback is used.
#[derive(Parser, Debug)]
#[command(name = "websocket-bridge-bench", version, verbatim_doc_comment)]
struct Args {
    /// Scenarios to run: `all` or a comma-separated list of upstream, roundtrip, downstream,
    /// idle, direct.
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Concurrent WebSocket clients (and HTTP posters) in upstream, roundtrip, downstream and
    /// direct.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measurement window per scenario (`10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before each measurement window, not counted.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Connections opened in the idle scenario (above 15,000 they are opened by child
    /// processes of the bench, 10,000 each).
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// WebSocket handshakes in flight at once while opening connections.
    #[arg(long, default_value_t = 256)]
    handshake_concurrency: usize,
    /// Where to write the results as JSON [default: bench/results.json in the workspace].
    #[arg(long)]
    json: Option<PathBuf>,
    /// The bridge binary [default: target/release/websocket-bridge in the workspace].
    #[arg(long)]
    bridge: Option<PathBuf>,
    /// Do not run `cargo build --release --bin websocket-bridge` first.
    #[arg(long)]
    no_build: bool,
    /// Shell command run at the start and end of each measurement window, with
    /// BENCH_BRIDGE_PID, BENCH_SCENARIO and BENCH_EVENT (start|end) set; for profilers, e.g.
    /// --bridge a wrapper that execs valgrind --tool=callgrind and
    /// --window-hook 'callgrind_control -d $BENCH_BRIDGE_PID'.
    #[arg(long)]
    window_hook: Option<String>,
    /// Internal: run as a client shard of the idle scenario, opening connections to this URL.
    #[arg(long, hide = true)]
    client_shard: Option<String>,
    /// Internal: connections a client shard opens.
    #[arg(long, hide = true, default_value_t = 0)]
    shard_count: usize,
    /// Internal: longest time a client shard lives.
    #[arg(long, hide = true, default_value = "120s", value_parser = parse_duration)]
    shard_hold: Duration,
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
            args.shard_count,
            args.handshake_concurrency,
            args.shard_hold,
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

async fn run(args: &Args) -> Result<(), BoxError> {
    let scenarios = parse_scenarios(&args.scenarios)?;
    if args.connections == 0 || args.idle_connections == 0 {
        return Err("--connections and --idle-connections must be at least 1".into());
    }
    let root = workspace_root();
    if !args.no_build {
        build_bridge(&root)?;
    }
    let bridge_binary = args.bridge.clone().unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| root.join("target"), PathBuf::from)
            .join("release/websocket-bridge")
    });
    if !bridge_binary.is_file() {
        return Err(format!(
            "{} does not exist: run `cargo build --release` first",
            bridge_binary.display()
        )
        .into());
    }
    let ticks = bridge::clock_ticks();
    let machine = Machine::collect(&root, ticks);
    let settings = Settings {
        connections: args.connections,
        size: args.size,
        duration: args.duration,
        warmup: args.warmup,
        idle_connections: args.idle_connections,
        handshake_concurrency: args.handshake_concurrency,
        bridge_binary,
        clock_ticks: ticks.0,
        window_hook: args.window_hook.clone(),
    };
    let sharing = format!(
        "the bridge, the backend and the clients share this machine's {} cores ({}); \
         rates are what that sharing allows, CPU per message is the bridge process's own",
        machine.nproc, machine.cpu_model
    );
    eprintln!("websocket-bridge-bench: {sharing}");
    eprintln!(
        "websocket-bridge-bench: bridge {}, commit {}{}, {} connections x {} B, {} s windows after {} s warm-up",
        settings.bridge_binary.display(),
        machine.git_commit,
        if machine.git_dirty { " (dirty)" } else { "" },
        settings.connections,
        settings.size,
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64(),
    );

    let backend = Backend::start().await?;
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for name in &scenarios {
        eprintln!("[{name}] {}", describe(name, &settings));
        let started = std::time::Instant::now();
        let outcome = match *name {
            "upstream" => scenarios::upstream(&settings, &backend).await,
            "roundtrip" => scenarios::roundtrip(&settings, &backend).await,
            "downstream" => scenarios::downstream(&settings, &backend).await,
            "idle" => scenarios::idle(&settings, &backend).await,
            _ => scenarios::direct(&settings, &backend).await,
        };
        match outcome {
            Ok(result) => {
                let summary: Vec<String> = result
                    .metrics
                    .iter()
                    .map(|m| format!("{} {} {}", m.name, format_value(m.value), m.unit))
                    .collect();
                eprintln!(
                    "[{name}] done in {:.1} s: {}",
                    started.elapsed().as_secs_f64(),
                    summary.join(", ")
                );
                results.push(result);
            }
            Err(e) => {
                eprintln!("[{name}] FAILED: {e}");
                failures.push(json!({ "scenario": name, "error": e.to_string() }));
            }
        }
    }

    print!("{}", report::table(&results));
    println!();
    println!("note: {sharing}.");
    println!(
        "note: CPU time from /proc/PID/stat (utime + stime) at {} ticks/s ({}).",
        ticks.0, ticks.1
    );

    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| root.join("bench/results.json"));
    write_json(
        &json_path, args, &settings, &machine, &sharing, &results, &failures,
    )?;
    eprintln!("websocket-bridge-bench: wrote {}", json_path.display());
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} scenario(s) failed", failures.len()).into())
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
        "idle" => format!(
            "opening {} idle connections, {} handshakes in flight",
            s.idle_connections, s.handshake_concurrency
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
    results: &[ScenarioResult],
    failures: &[serde_json::Value],
) -> Result<(), BoxError> {
    let document = json!({
        "tool": "websocket-bridge-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine,
        "config": {
            "scenarios": args.scenarios,
            "connections": settings.connections,
            "size_bytes": settings.size,
            "duration_seconds": settings.duration.as_secs_f64(),
            "warmup_seconds": settings.warmup.as_secs_f64(),
            "idle_connections": settings.idle_connections,
            "handshake_concurrency": settings.handshake_concurrency,
            "bridge_binary": settings.bridge_binary.display().to_string(),
            "bridge_flags": "--address 127.0.0.1:0 --allowlist http://127\\.0\\.0\\.1:PORT/.* --max-messages-per-second 0 --max-connections-per-ip 0 --max-connections 20000 --shutdown-grace 5s",
        },
        "note": sharing,
        "scenarios": results,
        "failures": failures,
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

fn parse_scenarios(list: &str) -> Result<Vec<&'static str>, String> {
    if list.trim() == "all" {
        return Ok(ALL_SCENARIOS.to_vec());
    }
    let mut chosen = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let known = ALL_SCENARIOS
            .iter()
            .find(|known| **known == name)
            .ok_or_else(|| {
                format!(
                    "unknown scenario {name:?}: use all or some of {}",
                    ALL_SCENARIOS.join(",")
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
        assert_eq!(parse_scenarios("all"), Ok(ALL_SCENARIOS.to_vec()));
        assert_eq!(
            parse_scenarios("idle, direct,idle"),
            Ok(vec!["idle", "direct"])
        );
        assert!(parse_scenarios("sideways").is_err());
    }
}
