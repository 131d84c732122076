//! Cluster mode's configuration ([`ClusterConfig`]): the Redis server(s) the nodes share, this
//! node's id ([`NodeId`]), how long a silent node lives, and how long a callback forwarded to
//! another node may take. Without `--redis-url` there is no cluster and nothing changes.

use std::fmt;
use std::time::Duration;

use super::ConfigError;
use super::cli::Cli;

/// Longest node id.
pub(crate) const MAX_NODE_ID: usize = 32;

/// A node's id: 1-32 characters of `a-z 0-9 -`; it is the first part of the callback tokens
/// this node hands out (`{node}.{uuid}`), so any node can tell where a connection lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct NodeId(String);

impl NodeId {
    pub(crate) fn parse(id: &str) -> Option<Self> {
        let valid = !id.is_empty()
            && id.len() <= MAX_NODE_ID
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        valid.then(|| NodeId(id.to_owned()))
    }

    /// 12 random hex digits.
    pub(crate) fn random() -> Self {
        let bytes = uuid::Uuid::new_v4();
        NodeId(bytes.simple().to_string()[..12].to_owned())
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Redis the nodes share (URLs may hold a password: never logged whole).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum RedisTarget {
    /// One server: `redis://` or `rediss://`.
    Server(String),
    /// A Redis Cluster, through these seed nodes (`redis://` or `rediss://` each).
    Cluster(Vec<String>),
}

/// What cluster mode needs.
#[derive(Clone)]
pub(crate) struct ClusterConfig {
    /// `--redis-url`, once or more.
    pub(crate) redis: RedisTarget,
    /// `--node-id`, or a random one.
    pub(crate) node: NodeId,
    /// `--node-timeout`: a node whose heartbeat is this old is dead.
    pub(crate) node_timeout: Duration,
    /// `--forward-timeout`: time for a callback forwarded to the owning node to be answered.
    pub(crate) forward_timeout: Duration,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redis = match &self.redis {
            RedisTarget::Server(_) => "server".to_owned(),
            RedisTarget::Cluster(seeds) => format!("cluster ({} seeds)", seeds.len()),
        };
        f.debug_struct("ClusterConfig")
            .field("redis", &redis)
            .field("node", &self.node)
            .field("node_timeout", &self.node_timeout)
            .field("forward_timeout", &self.forward_timeout)
            .finish_non_exhaustive()
    }
}

pub(super) fn cluster_config(cli: &Cli) -> Result<Option<ClusterConfig>, ConfigError> {
    if cli.redis_url.is_empty() {
        if cli.node_id.is_some() {
            return Err(ConfigError::Cluster(
                "--node-id was given without --redis-url: a node id only means something in a cluster".to_owned(),
            ));
        }
        return Ok(None);
    }
    let mut seeds = Vec::new();
    let mut cluster = cli.redis_url.len() > 1;
    for url in &cli.redis_url {
        let (plain, marked) = redis_url(url)?;
        cluster |= marked;
        seeds.push(plain);
    }
    let redis = match (cluster, seeds.pop()) {
        (false, Some(url)) => RedisTarget::Server(url),
        (_, last) => {
            seeds.extend(last);
            RedisTarget::Cluster(seeds)
        }
    };
    let node = match cli.node_id.as_deref() {
        Some(id) => NodeId::parse(id).ok_or_else(|| {
            ConfigError::Cluster(format!(
                "--node-id {id:?} is not 1-{MAX_NODE_ID} characters of a-z, 0-9 and -"
            ))
        })?,
        None => NodeId::random(),
    };
    if cli.node_timeout < Duration::from_secs(1) {
        return Err(ConfigError::Cluster(
            "--node-timeout must be at least 1s".to_owned(),
        ));
    }
    Ok(Some(ClusterConfig {
        redis,
        node,
        node_timeout: cli.node_timeout,
        forward_timeout: cli.forward_timeout,
    }))
}

/// One `--redis-url`: the URL the Redis client takes, and whether it names a Redis Cluster
/// (`redis+cluster://`, `rediss+cluster://`).
fn redis_url(url: &str) -> Result<(String, bool), ConfigError> {
    let parsed = url::Url::parse(url).map_err(|e| {
        ConfigError::Cluster(format!(
            "--redis-url is not a URL ({e}); use redis://HOST:PORT/"
        ))
    })?;
    let (scheme, cluster) = match parsed.scheme() {
        "redis" | "rediss" => return Ok((url.to_owned(), false)),
        "redis+cluster" => ("redis", true),
        "rediss+cluster" => ("rediss", true),
        other => {
            return Err(ConfigError::Cluster(format!(
                "--redis-url scheme {other:?} is not redis://, rediss://, redis+cluster:// or rediss+cluster://"
            )));
        }
    };
    let rest = &url[parsed.scheme().len()..];
    Ok((format!("{scheme}{rest}"), cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_name_a_server_or_a_cluster() {
        assert_eq!(
            redis_url("redis://127.0.0.1:6379/").ok(),
            Some(("redis://127.0.0.1:6379/".to_owned(), false))
        );
        assert_eq!(
            redis_url("rediss+cluster://:pw@r.example:7000/").ok(),
            Some(("rediss://:pw@r.example:7000/".to_owned(), true))
        );
        assert!(redis_url("http://r.example/").is_err());
        assert!(redis_url("not a url").is_err());
    }

    #[test]
    fn node_ids_are_checked() {
        assert!(NodeId::parse("node-1").is_some());
        assert!(NodeId::parse("").is_none());
        assert!(NodeId::parse("Node").is_none());
        assert!(NodeId::parse("a.b").is_none());
        assert!(NodeId::parse(&"a".repeat(33)).is_none());
        let random = NodeId::random();
        assert_eq!(random.as_str().len(), 12);
        assert!(NodeId::parse(random.as_str()).is_some());
    }
}
