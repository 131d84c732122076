//! The bridge under test, run as a child process: ours (the `websocket-bridge` release binary)
//! or a peer such as the original fermyon/websocket-bridge, as [`crate::contract`] describes.
//!
//! [`Bridge::start`] launches it on loopback (directly or under `valgrind --tool=callgrind`),
//! waits until it is ready (its listening line, or its port accepting) and keeps draining its
//! stderr (forwarding a few warnings). [`Bridge::cpu_seconds`] and [`Bridge::rss_kib`] read
//! `/proc/PID/stat` and `/proc/PID/status`; [`Bridge::callgrind_dump`] asks callgrind for a
//! dump and returns the instructions it counted since the previous one; [`Bridge::stop`] sends
//! SIGTERM and waits, bounded, for the exit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

use crate::BoxError;
use crate::contract::{CommandLine, Needs, Ready, Side};

/// How long the bridge may take to be ready.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The same under valgrind, which starts programs far more slowly.
const START_TIMEOUT_CALLGRIND: Duration = Duration::from_secs(120);
/// How long [`Bridge::stop`] waits for the process to exit before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Warning and error lines of the bridge copied to our stderr, per bridge process.
const FORWARDED_LINES: u64 = 3;
/// Attempts at starting a bridge on a reserved port (another process may take it first).
const PORT_ATTEMPTS: usize = 3;

/// How to start one bridge process.
pub(crate) struct Launch<'a> {
    pub(crate) side: &'a Side,
    /// Allowlist pattern admitting the bench backend.
    pub(crate) allowlist: &'a str,
    pub(crate) needs: Needs,
    pub(crate) clock_ticks: f64,
    /// Run under callgrind, writing its dumps into this directory.
    pub(crate) callgrind: Option<&'a Path>,
    /// Names this run's callgrind files, e.g. `A-upstream-r1`.
    pub(crate) tag: &'a str,
}

/// Where a bridge run under callgrind writes its dumps.
struct CallgrindFiles {
    /// `--callgrind-out-file` without the `%p`: dumps are `{prefix}.{pid}.out.{n}`.
    prefix: PathBuf,
    dumps: u32,
}

/// A running bridge process.
pub(crate) struct Bridge {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    /// Its publish API, when the scenario asked for one.
    publish: Option<SocketAddr>,
    clock_ticks: f64,
    warnings: Arc<AtomicU64>,
    callgrind: Option<CallgrindFiles>,
}

impl Bridge {
    /// Starts the bridge `launch` describes, on loopback, and waits until it is ready.
    pub(crate) async fn start(launch: &Launch<'_>) -> Result<Self, BoxError> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match Self::start_once(launch).await {
                Ok(bridge) => return Ok(bridge),
                // Only a bridge on a reserved port is worth another try: the port may have
                // been taken between reserving and binding it.
                Err((e, retry)) if retry => last_error = Some(e),
                Err((e, _)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| "the bridge did not start".into()))
    }

    async fn start_once(launch: &Launch<'_>) -> Result<Self, (BoxError, bool)> {
        let kind = launch.side.kind;
        let line = kind
            .command_line(launch.allowlist, launch.needs, reserve_port)
            .map_err(|e| (e, false))?;
        let retry = line.uses_reserved_ports();
        let CommandLine {
            args,
            ready,
            publish,
            ready_after,
            log_filter,
        } = line;
        let callgrind = launch.callgrind.map(|dir| CallgrindFiles {
            prefix: dir.join(launch.tag),
            dumps: 0,
        });
        let mut command = match &callgrind {
            None => Command::new(&launch.side.binary),
            Some(files) => {
                let mut valgrind = Command::new("valgrind");
                valgrind.args([
                    "--tool=callgrind".to_owned(),
                    "--compress-strings=no".to_owned(),
                    "--compress-pos=no".to_owned(),
                    format!("--callgrind-out-file={}.%p.out", files.prefix.display()),
                ]);
                valgrind.arg(&launch.side.binary);
                valgrind
            }
        };
        command
            .args(&args)
            .env("RUST_LOG", log_filter)
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
        let program = launch.side.binary.display();
        let mut child = command
            .spawn()
            .map_err(|e| (format!("cannot start {program}: {e}").into(), false))?;
        let pid = child
            .id()
            .ok_or_else(|| ("the bridge exited at once".into(), false))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| ("no stderr pipe".into(), false))?;
        let mut lines = BufReader::new(stderr).lines();
        let timeout = if callgrind.is_some() {
            START_TIMEOUT_CALLGRIND
        } else {
            START_TIMEOUT
        };
        let warnings = Arc::new(AtomicU64::new(0));
        let addr = match ready {
            Ready::ListeningLine => {
                let addr = tokio::time::timeout(timeout, async {
                    let addr = listening_line(&mut lines).await?;
                    if let Some(line) = ready_after {
                        wait_for_line(&mut lines, line).await?;
                    }
                    Ok::<_, std::io::Error>(addr)
                })
                .await
                .map_err(|_| {
                    (
                        format!(
                            "{program} did not print its listening line{} in time",
                            ready_after.map_or(String::new(), |l| format!(" and {l:?}"))
                        )
                        .into(),
                        false,
                    )
                })?
                .map_err(|e| (e.into(), retry))?;
                drain(lines, Arc::clone(&warnings));
                addr
            }
            Ready::PortAccepts(addr) => {
                drain(lines, Arc::clone(&warnings));
                tokio::time::timeout(timeout, port_accepts(&mut child, addr))
                    .await
                    .map_err(|_| {
                        (
                            format!("{program} did not accept on {addr} in time").into(),
                            false,
                        )
                    })?
                    .map_err(|e| (e, retry))?;
                addr
            }
        };
        Ok(Self {
            child,
            pid,
            addr,
            publish,
            clock_ticks: launch.clock_ticks,
            warnings,
            callgrind,
        })
    }

    /// The address the bridge listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the bridge's publish API listens, if it was started with one.
    pub(crate) fn publish_addr(&self) -> Option<SocketAddr> {
        self.publish
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

    /// Under callgrind: dumps the counts gathered since the previous dump (or the start) and
    /// returns their instruction total (`Ir`) and the dump file. Callgrind zeroes its
    /// counters at each dump, so the dump taken at a window's end covers the window.
    pub(crate) async fn callgrind_dump(&mut self) -> Result<(u64, PathBuf), BoxError> {
        let Some(files) = &mut self.callgrind else {
            return Err("the bridge does not run under callgrind".into());
        };
        let run = Command::new("callgrind_control")
            .args(["-d", &self.pid.to_string()])
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .map_err(|_| "callgrind_control -d took over 60 s")??;
        if !output.status.success() {
            return Err(format!(
                "callgrind_control -d failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        files.dumps += 1;
        let path = PathBuf::from(format!(
            "{}.{}.out.{}",
            files.prefix.display(),
            self.pid,
            files.dumps
        ));
        // The dump is written by the bridge's process; give it a moment to appear whole.
        for _ in 0..100 {
            let total = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| callgrind_total(&text));
            if let Some(ir) = total {
                return Ok((ir, path));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("no complete callgrind dump at {}", path.display()).into())
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

/// A free loopback port: bound on `127.0.0.1:0` and closed again, for a listener whose port
/// the bench must know in advance.
fn reserve_port() -> Result<SocketAddr, BoxError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| format!("cannot reserve a loopback port: {e}"))?;
    Ok(listener.local_addr()?)
}

/// Reads stderr until the listening line and returns the address it names.
async fn listening_line(lines: &mut Lines<BufReader<ChildStderr>>) -> std::io::Result<SocketAddr> {
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
}

/// Reads stderr until a line containing `wanted` (a later readiness line, such as a cluster
/// node's `cluster: joined`).
async fn wait_for_line(
    lines: &mut Lines<BufReader<ChildStderr>>,
    wanted: &str,
) -> std::io::Result<()> {
    while let Some(line) = lines.next_line().await? {
        let line = strip_ansi(&line);
        if line.contains(wanted) {
            return Ok(());
        }
        if line.contains("WARN") || line.contains("ERROR") {
            eprintln!("bridge: {line}");
        }
    }
    Err(std::io::Error::other(format!(
        "the bridge exited before logging {wanted:?} (see its output above)"
    )))
}

/// Polls `addr` until it accepts a connection; fails if the bridge exits first.
async fn port_accepts(child: &mut Child, addr: SocketAddr) -> Result<(), BoxError> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(format!("the bridge exited before accepting on {addr}: {status}").into());
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keeps draining the bridge's stderr in a task, counting warnings and forwarding the first
/// few: a full pipe would block the bridge's logging, and so the bridge.
fn drain(mut lines: Lines<BufReader<ChildStderr>>, counter: Arc<AtomicU64>) {
    tokio::spawn(async move {
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
}

/// The instruction total of a callgrind dump: its `totals:` (or `summary:`) line.
fn callgrind_total(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .rev()
        .find(|line| line.starts_with("totals:") || line.starts_with("summary:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
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
    fn callgrind_totals_are_read() {
        let dump = "events: Ir\nsummary: 128719\nfn=main\n1 5\ntotals: 128719\n";
        assert_eq!(callgrind_total(dump), Some(128_719));
        assert_eq!(callgrind_total("events: Ir\n"), None);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let (ticks, _) = clock_ticks();
        assert!(process_cpu_seconds("/proc/self/stat", ticks).is_ok_and(|s| s >= 0.0));
    }
}
