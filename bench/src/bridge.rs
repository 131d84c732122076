//! The bridge under test: the real `websocket-bridge` release binary, run as a child process.
//!
//! [`Bridge::start`] launches it on `127.0.0.1:0`, reads the bound address from its
//! `websocket-bridge listening` log line and keeps draining its stderr (forwarding a few
//! warnings). [`Bridge::cpu_seconds`] and [`Bridge::rss_kib`] read `/proc/PID/stat` and
//! `/proc/PID/status`; [`Bridge::stop`] sends SIGTERM and waits, bounded, for a clean exit.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::BoxError;

/// How long the bridge may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The bridge's own drain budget on SIGTERM (passed as `--shutdown-grace`).
const SHUTDOWN_GRACE: &str = "5s";
/// How long [`Bridge::stop`] waits for the process to exit before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Warning and error lines of the bridge copied to our stderr, per bridge process.
const FORWARDED_LINES: u64 = 10;

/// A running bridge process.
pub(crate) struct Bridge {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    clock_ticks: f64,
    warnings: Arc<AtomicU64>,
}

impl Bridge {
    /// Starts `binary` listening on an ephemeral loopback port with `allowlist` and every
    /// per-client limit that would throttle a benchmark turned off.
    pub(crate) async fn start(
        binary: &Path,
        allowlist: &str,
        clock_ticks: f64,
    ) -> Result<Self, BoxError> {
        let mut command = Command::new(binary);
        command
            .args([
                "--address",
                "127.0.0.1:0",
                "--allowlist",
                allowlist,
                "--max-messages-per-second",
                "0",
                "--max-connections-per-ip",
                "0",
                "--max-connections",
                "20000",
                "--shutdown-grace",
                SHUTDOWN_GRACE,
            ])
            .env("RUST_LOG", "warn,websocket_bridge::server=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Settings from the caller's environment would silently change what is measured.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WS_BRIDGE_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id().ok_or("the bridge exited at once")?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let mut lines = BufReader::new(stderr).lines();

        let addr = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                let line = strip_ansi(&line);
                if line.contains("websocket-bridge listening") {
                    return parse_address(&line)
                        .ok_or_else(|| std::io::Error::other(format!("no address= in: {line}")));
                }
                eprintln!("bridge: {line}");
            }
            Err(std::io::Error::other(
                "the bridge exited before listening (see its output above)",
            ))
        })
        .await
        .map_err(|_| "the bridge did not print its listening line within 15 s")??;

        let warnings = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&warnings);
        tokio::spawn(async move {
            // Keep draining: a full pipe would block the bridge's logging, and so the bridge.
            while let Ok(Some(line)) = lines.next_line().await {
                let line = strip_ansi(&line);
                if line.contains("WARN") || line.contains("ERROR") {
                    let seen = counter.fetch_add(1, Ordering::Relaxed);
                    if seen < FORWARDED_LINES {
                        eprintln!("bridge: {line}");
                    }
                }
            }
        });

        Ok(Self {
            child,
            pid,
            addr,
            clock_ticks,
            warnings,
        })
    }

    /// The address the bridge listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bridge's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// User plus system CPU time the bridge has used so far, in seconds.
    pub(crate) fn cpu_seconds(&self) -> Result<f64, BoxError> {
        let (user, system) = self.cpu_times()?;
        Ok(user + system)
    }

    /// User and system CPU time the bridge has used so far, in seconds.
    pub(crate) fn cpu_times(&self) -> Result<(f64, f64), BoxError> {
        process_cpu_times(&format!("/proc/{}/stat", self.pid), self.clock_ticks)
    }

    /// The bridge's resident set size (`VmRSS`), in KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64, BoxError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .ok_or_else(|| "no VmRSS in /proc/PID/status".into())
    }

    /// Sends SIGTERM, waits for the bridge to drain and exit (SIGKILL after a bound) and
    /// returns how it ended, plus the count of warning lines it logged.
    pub(crate) async fn stop(mut self) -> Result<(String, u64), BoxError> {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let outcome = match sent {
            Ok(status) if status.success() => {
                match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
                    Ok(status) => format!("exited after SIGTERM: {}", status?),
                    Err(_) => {
                        self.child.kill().await?;
                        "did not exit within 10 s of SIGTERM: killed".to_owned()
                    }
                }
            }
            _ => {
                self.child.kill().await?;
                "kill -TERM failed: killed".to_owned()
            }
        };
        Ok((outcome, self.warnings.load(Ordering::Relaxed)))
    }
}

/// User plus system CPU seconds of the process whose `/proc/PID/stat` is at `path`.
pub(crate) fn process_cpu_seconds(path: &str, clock_ticks: f64) -> Result<f64, BoxError> {
    let (user, system) = process_cpu_times(path, clock_ticks)?;
    Ok(user + system)
}

/// User and system CPU seconds (`utime`, `stime`; every thread, live or exited) of the
/// process whose `/proc/PID/stat` is at `path`.
pub(crate) fn process_cpu_times(path: &str, clock_ticks: f64) -> Result<(f64, f64), BoxError> {
    let stat = std::fs::read_to_string(path)?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' comes field 3 (state); utime is field 14 and stime field 15.
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok((utime as f64 / clock_ticks, stime as f64 / clock_ticks))
}

/// Clock ticks per second for `/proc` CPU times: `getconf CLK_TCK`, or 100 (Linux's
/// `USER_HZ` everywhere in practice) when that cannot be run. The second value says which.
pub(crate) fn clock_ticks() -> (f64, &'static str) {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .map_or((100.0, "assumed 100 (getconf failed)"), |ticks| {
            (ticks, "getconf CLK_TCK")
        })
}

/// Removes ANSI escape sequences (`ESC [ ... letter`) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `address=HOST:PORT` field of the listening line.
fn parse_address(line: &str) -> Option<SocketAddr> {
    let start = line.find("address=")? + "address=".len();
    line[start..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_is_parsed_with_or_without_colour() {
        let plain = "2026-11-29T12:09:18Z  INFO websocket_bridge::server: websocket-bridge listening address=127.0.0.1:38399 base_url=http://127.0.0.1:38399 tls=false";
        assert_eq!(
            parse_address(&strip_ansi(plain)),
            Some(SocketAddr::from(([127, 0, 0, 1], 38399)))
        );
        let coloured = "\u{1b}[32m INFO\u{1b}[0m websocket-bridge listening \u{1b}[3maddress\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:9 \u{1b}[3mtls\u{1b}[0m";
        assert_eq!(
            parse_address(&strip_ansi(coloured)),
            Some(SocketAddr::from(([127, 0, 0, 1], 9)))
        );
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let (ticks, _) = clock_ticks();
        assert!(process_cpu_seconds("/proc/self/stat", ticks).is_ok_and(|s| s >= 0.0));
    }
}
