//! A real `redis-server` process on a free loopback port, for the cluster tests: started,
//! killed (as an outage) and started again on the same port; killed when dropped. Missing
//! `redis-server` makes [`RedisServer::start`] return `None` (the test prints `SKIPPED`), except
//! under CI (`CI` set), where it fails: `.ci/run` installs Debian's `redis-server`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::free_port;

/// A running (or stopped) redis-server.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts redis-server on a free port (no persistence); `None` when it is not installed.
    pub async fn start() -> Option<RedisServer> {
        let installed = std::process::Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed; .ci/run installs it (apt-get install redis-server)"
            );
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let mut server = RedisServer {
            port: free_port(),
            child: None,
        };
        server.restart().await;
        Some(server)
    }

    /// `redis://127.0.0.1:{port}/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL): an outage.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts the server (again) on its port and waits until it answers PING.
    pub async fn restart(&mut self) {
        self.kill().await;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.answers().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server on port {} does not answer PING within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answers(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && stream.read_exact(&mut reply).await.is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl RedisServer {
    /// Runs one command (inline form) and returns the raw reply, e.g. `:100\r\n` for HLEN.
    pub async fn command(&self, command: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to redis-server");
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .expect("write to redis-server");
        let mut reply = vec![0u8; 4096];
        let n = stream
            .read(&mut reply)
            .await
            .expect("read from redis-server");
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }
}
