//! Real Redis for the cluster tests: a `redis-server` process on a free loopback port
//! ([`RedisServer`]), or a Redis Cluster of three masters ([`RedisCluster`], made with
//! `redis-cli --cluster create`); both can be killed (an outage) and started again on the same
//! ports, and are killed when dropped. [`Redis`] is either, with the bridge flags that reach it.
//! Missing `redis-server` makes the constructors return `None` (the test prints `SKIPPED`),
//! except under CI (`CI` set), where it fails: `.ci/run` installs Debian's `redis-server`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::{free_port, scratch_dir};

/// Which Redis a test runs against.
#[derive(Debug, Clone, Copy)]
pub enum RedisKind {
    Server,
    Cluster,
}

/// One redis-server or a Redis Cluster.
pub enum Redis {
    Server(Box<RedisServer>),
    Cluster(RedisCluster),
}

impl Redis {
    /// Starts one of `kind`; `None` when redis-server is not installed (outside CI).
    pub async fn start(kind: RedisKind) -> Option<Redis> {
        Some(match kind {
            RedisKind::Server => Redis::Server(Box::new(RedisServer::start().await?)),
            RedisKind::Cluster => Redis::Cluster(RedisCluster::start().await?),
        })
    }

    /// The bridge's `--redis-url` flags: the server's URL, or two seeds of the cluster (one
    /// in the `redis+cluster://` form, one plain: several URLs also mean a cluster).
    pub fn flags(&self) -> Vec<String> {
        match self {
            Redis::Server(server) => vec!["--redis-url".into(), server.url()],
            Redis::Cluster(cluster) => vec![
                "--redis-url".into(),
                format!("redis+cluster://127.0.0.1:{}/", cluster.servers[0].port),
                "--redis-url".into(),
                cluster.servers[1].url(),
            ],
        }
    }

    /// Runs one command where its key lives and returns the raw reply.
    pub async fn command(&self, command: &str) -> String {
        match self {
            Redis::Server(server) => server.command(command).await,
            Redis::Cluster(cluster) => {
                for server in &cluster.servers {
                    let reply = server.command(command).await;
                    if !reply.starts_with("-MOVED") {
                        return reply;
                    }
                }
                panic!("no node of the Redis Cluster serves {command:?}")
            }
        }
    }

    /// Kills every server: an outage.
    pub async fn kill(&mut self) {
        match self {
            Redis::Server(server) => server.kill().await,
            Redis::Cluster(cluster) => {
                for server in &mut cluster.servers {
                    server.kill().await;
                }
            }
        }
    }

    /// Starts every server again and waits until it serves.
    pub async fn restart(&mut self) {
        match self {
            Redis::Server(server) => server.restart().await,
            Redis::Cluster(cluster) => {
                for server in &mut cluster.servers {
                    server.restart().await;
                }
                cluster.wait_until_ok().await;
            }
        }
    }
}

/// A Redis Cluster of three masters on loopback, no replicas.
pub struct RedisCluster {
    pub servers: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers (their cluster state in a scratch directory, so a
    /// restart keeps the slots), joins them with `redis-cli --cluster create` and waits for
    /// `cluster_state:ok`.
    pub async fn start() -> Option<RedisCluster> {
        if !installed() {
            return None;
        }
        let dir = scratch_dir("redis-cluster");
        let mut servers = Vec::new();
        for _ in 0..3 {
            // The cluster bus listens on port + 10000.
            let port = loop {
                let port = free_port();
                if port < 55_000
                    && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
                {
                    break port;
                }
            };
            let conf = dir.join(format!("nodes-{port}.conf"));
            let mut server = RedisServer {
                port,
                child: None,
                extra: vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    conf.display().to_string(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                    "--dir".into(),
                    dir.display().to_string(),
                ],
                _dir: Some(dir.clone()),
            };
            server.restart().await;
            servers.push(server);
        }
        let addresses: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = RedisCluster { servers };
        cluster.wait_until_ok().await;
        Some(cluster)
    }

    /// Waits until every server reports `cluster_state:ok`.
    pub async fn wait_until_ok(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for server in &self.servers {
            loop {
                if server
                    .command("CLUSTER INFO")
                    .await
                    .contains("cluster_state:ok")
                {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the Redis Cluster is not ok within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn installed() -> bool {
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
    }
    installed
}

/// A running (or stopped) redis-server.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Flags besides the port and no persistence (cluster mode).
    extra: Vec<String>,
    /// Where a cluster node keeps its state.
    _dir: Option<PathBuf>,
}

impl RedisServer {
    /// Starts redis-server on a free port (no persistence); `None` when it is not installed.
    pub async fn start() -> Option<RedisServer> {
        if !installed() {
            return None;
        }
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            extra: Vec::new(),
            _dir: None,
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
            .args(&self.extra)
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
