//! The real `websocket-bridge` binary as a child process, for tests that need a process:
//! signals, resident memory and CPU time from `/proc`, file-descriptor limits.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::client::connect_url;

/// The real `websocket-bridge` binary on 127.0.0.1:0, its stderr drained into memory.
pub struct RealBridge {
    /// Killed when dropped (`kill_on_drop`), so a failing test leaves no process behind.
    pub child: Child,
    pub pid: u32,
    pub addr: String,
    /// The `websocket-bridge listening` line.
    pub startup: String,
    pub log: Arc<Mutex<Vec<String>>>,
    drain: JoinHandle<()>,
}

impl RealBridge {
    /// Starts the binary with `args` (`--address 127.0.0.1:0` is added), optionally under
    /// `ulimit -n max_open_files`, and waits for its `websocket-bridge listening` line.
    pub async fn spawn(args: &[&str], max_open_files: Option<u32>) -> RealBridge {
        Self::spawn_logging(args, max_open_files, "info").await
    }

    /// Like [`RealBridge::spawn`], with a `RUST_LOG` filter.
    pub async fn spawn_logging(
        args: &[&str],
        max_open_files: Option<u32>,
        rust_log: &str,
    ) -> RealBridge {
        let binary = env!("CARGO_BIN_EXE_websocket-bridge");
        let command = match max_open_files {
            None => Command::new(binary),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary);
                sh
            }
        };
        Self::start(command, args, rust_log).await
    }

    /// Starts the binary with `args` under a soft and a hard open-files limit: through
    /// util-linux's `prlimit`, or a shell's `ulimit -S`/`-H` where `prlimit` is missing.
    pub async fn spawn_with_open_files(args: &[&str], soft: u64, hard: u64) -> RealBridge {
        let binary = env!("CARGO_BIN_EXE_websocket-bridge");
        let has_prlimit = std::process::Command::new("prlimit")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let command = if has_prlimit {
            let mut prlimit = Command::new("prlimit");
            prlimit.arg(format!("--nofile={soft}:{hard}")).arg(binary);
            prlimit
        } else {
            // Soft first: lowering the hard limit below the soft one would fail.
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!(
                    "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
                ))
                .arg(binary);
            sh
        };
        Self::start(command, args, "info").await
    }

    async fn start(mut command: Command, args: &[&str], rust_log: &str) -> RealBridge {
        let mut child = command
            .args(["--address", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut early = Vec::new();
        let (addr, startup) = loop {
            let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await
                .expect("no `listening` line within 20 s")
                .unwrap()
                .unwrap_or_else(|| panic!("bridge exited early; stderr: {early:#?}"));
            if let Some(addr) = listening_address(&line) {
                break (addr, line);
            }
            early.push(line);
        };
        // Keep draining the log so the bridge never blocks on a full pipe.
        let log = Arc::new(Mutex::new(early));
        let sink = Arc::clone(&log);
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        RealBridge {
            child,
            pid,
            addr,
            startup,
            log,
            drain,
        }
    }

    /// `ws://…/connect?f=…&d=…` with both URLs query-encoded.
    pub fn connect_url(&self, frame: &str, disconnect: Option<&str>) -> String {
        connect_url(&self.addr, frame, disconnect)
    }

    pub fn lines_containing(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub async fn wait_for_line(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.lines_containing(needle) == 0 {
            assert!(
                Instant::now() < deadline,
                "no log line containing {needle:?} within {within:?}; log: {:#?}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn memory(&self) -> Memory {
        Memory::of(self.pid)
    }

    /// User + system CPU time used so far, in clock ticks (fields 14 and 15 of
    /// `/proc/{pid}/stat`).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        // The command name (field 2) is in parentheses and may contain spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `fields[0]` is field 3 (state), so field N is `fields[N - 3]`.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .count()
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit status.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.pid.to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the bridge exits after SIGTERM")
            .unwrap()
    }

    /// A copy of every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Kills the process (if still running) and returns its whole stderr.
    pub async fn stop(mut self) -> Vec<String> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.drain).await;
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// The address in a `websocket-bridge listening address=…` log line; `None` for other lines.
pub fn listening_address(line: &str) -> Option<String> {
    if !line.contains("websocket-bridge listening") {
        return None;
    }
    let start = line.find("address=")? + "address=".len();
    line[start..].split_whitespace().next().map(str::to_owned)
}

/// Resident memory of a process, from `/proc/{pid}/status`.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`: resident now, in bytes.
    pub rss: u64,
    /// `VmHWM`: the peak resident size so far, in bytes.
    pub peak: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| -> u64 {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"));
            let kib: u64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap();
            kib * 1024
        };
        Memory {
            rss: field("VmRSS:"),
            peak: field("VmHWM:"),
        }
    }
}
