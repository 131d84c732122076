//! The bench's own `redis-server` for the cluster scenario: started on a free loopback port
//! without persistence (`--save '' --appendonly no`), measured like a bridge (CPU time from
//! `/proc/PID/stat`) and asked for its counters (`INFO`) over a bare RESP connection, so the
//! bench needs no Redis client library.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use crate::BoxError;
use crate::bridge::process_cpu_seconds;

/// How long redis-server may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`RedisServer::stop`] waits for the exit before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `INFO` answer read.
const MAX_INFO: usize = 256 * 1024;

/// A running redis-server, killed when dropped.
pub(crate) struct RedisServer {
    child: Child,
    pid: u32,
    port: u16,
    clock_ticks: f64,
}

/// Counters from `INFO stats` and `INFO commandstats` at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RedisCounts {
    /// `total_commands_processed`.
    pub(crate) commands: u64,
    /// Calls of `PUBLISH` (`cmdstat_publish:calls`).
    pub(crate) publishes: u64,
    /// Time Redis spent in those calls, by its own clock (`cmdstat_publish:usec`): the
    /// command itself, without reading the request or writing the answers.
    pub(crate) publish_usec: u64,
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`) on a free loopback port and waits until it
    /// answers PING.
    pub(crate) async fn start(clock_ticks: f64) -> Result<Self, BoxError> {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot reserve a loopback port for redis-server: {e}"))?
            .port();
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it installed?): {e}"))?;
        let pid = child.id().ok_or("redis-server exited at once")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(format!("redis-server exited before answering: {status}").into());
            }
            if let Ok(answer) = command(port, &["PING"]).await
                && answer.starts_with(b"+PONG")
            {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("redis-server did not answer on port {port} in time").into());
            }
            sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            child,
            pid,
            port,
            clock_ticks,
        })
    }

    /// Its loopback port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// User plus system CPU seconds it has used so far.
    pub(crate) fn cpu_seconds(&self) -> Result<f64, BoxError> {
        process_cpu_seconds(&format!("/proc/{}/stat", self.pid), self.clock_ticks)
    }

    /// CPU seconds its threads have run so far, summed from `/proc/PID/task/*/schedstat`
    /// (nanoseconds, where `/proc/PID/stat` counts 10 ms ticks: Redis's share of a slow
    /// publication rate is a few ticks at most).
    pub(crate) fn scheduled_seconds(&self) -> Result<f64, BoxError> {
        let mut nanos = 0u64;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let path = task?.path().join("schedstat");
            // A thread may end between listing and reading: skip it.
            if let Ok(text) = std::fs::read_to_string(path) {
                nanos += text
                    .split_whitespace()
                    .next()
                    .and_then(|ns| ns.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Ok(nanos as f64 / 1e9)
    }

    /// The memory Redis holds for data (`used_memory` of `INFO memory`), in bytes.
    pub(crate) async fn used_memory(&self) -> Result<u64, BoxError> {
        let memory = command(self.port, &["INFO", "memory"]).await?;
        info_field(&memory, "used_memory").ok_or_else(|| "no used_memory in INFO memory".into())
    }

    /// Its command counters now (`INFO` itself counts as one command).
    pub(crate) async fn counts(&self) -> Result<RedisCounts, BoxError> {
        let stats = command(self.port, &["INFO", "stats"]).await?;
        let commandstats = command(self.port, &["INFO", "commandstats"]).await?;
        Ok(RedisCounts {
            commands: info_field(&stats, "total_commands_processed").unwrap_or(0),
            publishes: publish_stat(&commandstats, "calls").unwrap_or(0),
            publish_usec: publish_stat(&commandstats, "usec").unwrap_or(0),
        })
    }

    /// Stops it with SIGTERM (it saves nothing), SIGKILL after a bound.
    pub(crate) async fn stop(mut self) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => format!("exited after SIGTERM: {status}"),
            Ok(Err(e)) => format!("error waiting for it: {e}"),
            Err(_) => {
                let _ = self.child.kill().await;
                "did not exit within 5 s of SIGTERM: killed".to_owned()
            }
        }
    }
}

/// Sends one command on a fresh connection and returns the raw answer: a simple string, an
/// error, or a bulk string's whole body.
async fn command(port: u16, words: &[&str]) -> Result<Vec<u8>, BoxError> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut request = format!("*{}\r\n", words.len());
    for word in words {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut chunk)).await??;
        if n == 0 {
            return Err("redis-server closed the connection".into());
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer_complete(&answer) {
            return Ok(answer);
        }
        if answer.len() > MAX_INFO {
            return Err("redis-server's answer is too long".into());
        }
    }
}

/// Whether `answer` holds one whole RESP simple string, error or bulk string.
fn answer_complete(answer: &[u8]) -> bool {
    let Some(line_end) = answer.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    match answer.first() {
        Some(b'$') => std::str::from_utf8(&answer[1..line_end])
            .ok()
            .and_then(|len| len.parse::<i64>().ok())
            .is_some_and(|len| len < 0 || answer.len() >= line_end + 2 + len as usize + 2),
        Some(_) => true,
        None => false,
    }
}

/// The value of `key:value` in an `INFO` answer.
fn info_field(info: &[u8], key: &str) -> Option<u64> {
    String::from_utf8_lossy(info).lines().find_map(|line| {
        line.strip_prefix(key)?
            .strip_prefix(':')?
            .trim()
            .parse()
            .ok()
    })
}

/// `{field}=N` of `cmdstat_publish:` in an `INFO commandstats` answer (0 before any PUBLISH).
fn publish_stat(info: &[u8], field: &str) -> Option<u64> {
    let text = String::from_utf8_lossy(info);
    let Some(line) = text
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_publish:"))
    else {
        return Some(0);
    };
    line.split(',')
        .find_map(|pair| pair.strip_prefix(field)?.strip_prefix('='))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_answers_are_known_complete() {
        assert!(answer_complete(b"+PONG\r\n"));
        assert!(!answer_complete(b"+PON"));
        assert!(!answer_complete(b"$10\r\nabc"));
        assert!(answer_complete(b"$3\r\nabc\r\n"));
        assert!(answer_complete(b"$-1\r\n"));
    }

    #[test]
    fn info_fields_are_read() {
        let stats =
            b"$60\r\n# Stats\r\ntotal_connections_received:3\r\ntotal_commands_processed:42\r\n";
        assert_eq!(info_field(stats, "total_commands_processed"), Some(42));
        let commandstats = b"# Commandstats\r\ncmdstat_publish:calls=17,usec=30,usec_per_call=1.76,rejected_calls=0\r\ncmdstat_ping:calls=2\r\n";
        assert_eq!(publish_stat(commandstats, "calls"), Some(17));
        assert_eq!(publish_stat(commandstats, "usec"), Some(30));
        assert_eq!(publish_stat(b"# Commandstats\r\n", "calls"), Some(0));
    }
}
