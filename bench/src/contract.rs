//! What the bench must know about each kind of bridge it can measure: how to start it, how it
//! says it is ready, how clients address it and how backends find the callback URL.
//!
//! Two contracts are known:
//!
//! - [`Kind::Ours`]: this repository's `websocket-bridge`. Started on `127.0.0.1:0`; it prints
//!   `websocket-bridge listening address=HOST:PORT` when ready. Frame POSTs carry
//!   `x-ws-proxy-send: {base-url}/{id}`; callback POSTs are answered 202. Its per-client rate
//!   and per-IP limits are turned off and its connection cap raised to 20,000. It has
//!   channels: for the fanout scenario it also gets `--publish-address` on a port the bench
//!   reserved, and a connect hook (`c=`) whose answer joins each client to the channel. It
//!   has a cluster mode: for the cluster scenario each node also gets `--redis-url` (the
//!   bench's own redis-server) and `--node-id node-N`, and is ready once it has also logged
//!   `cluster: joined`. It has routes: for the websocket-over-http scenarios it also gets
//!   `--route /woh/=http://BACKEND/woh/,protocol=websocket-over-http`, so a client opening
//!   `ws://BRIDGE/woh/echo` is served by the backend's `POST /woh/echo` in Pushpin's protocol.
//! - [`Kind::Fermyon`]: the original `fermyon/websocket-bridge`, which this project replaces.
//!   It needs `--address` and `--base-url` up front and prints nothing when ready, so the bench
//!   reserves a free port (binds `127.0.0.1:0`, notes the port, closes it), starts it there and
//!   waits until the port accepts. Frame POSTs carry `ws-bridge-send: {base-url}send/{id}`;
//!   callback POSTs are answered 200. It has no rate, per-IP or connection limits to turn off.
//!   It requires a disconnect URL (`d=`) in the connect URL. It has no channels and no
//!   publish API, so it cannot run the fanout scenario; no cluster mode and no routes either.
//!
//! Both get the same connect URL (`/connect?f=FRAME&d=DISCONNECT`), so both do the same work
//! per connection. Only the contract is described here, none of the original's code is used.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::BoxError;
use crate::client::percent_encode;

/// The kind of bridge behind a binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// This repository's bridge.
    Ours,
    /// The original fermyon/websocket-bridge.
    Fermyon,
}

/// `--bridge-kind` / `--peer-kind`: a contract, or `auto` to tell it from the binary's help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KindChoice {
    /// Tell from the binary's `--help`.
    Auto,
    /// This repository's bridge.
    Ours,
    /// The original fermyon/websocket-bridge.
    Fermyon,
}

impl KindChoice {
    /// The chosen kind, `None` for `auto`.
    pub(crate) fn kind(self) -> Option<Kind> {
        match self {
            Self::Auto => None,
            Self::Ours => Some(Kind::Ours),
            Self::Fermyon => Some(Kind::Fermyon),
        }
    }
}

/// How a started bridge tells the bench it is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ready {
    /// A `websocket-bridge listening address=…` line on stderr names the bound address.
    ListeningLine,
    /// Nothing is printed: the bench polls the port it chose until it accepts.
    PortAccepts(SocketAddr),
}

/// Our bridge's default `--max-message-size`.
const DEFAULT_MAX_MESSAGE: usize = 1 << 20;

/// The log line a cluster node prints once it has joined through Redis.
pub(crate) const CLUSTER_JOINED: &str = "cluster: joined";

/// What a scenario asks of the bridge beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Needs {
    /// Largest message the scenario sends, in bytes (0: the bench's small messages).
    pub(crate) max_message_bytes: usize,
    /// A publish API listener (channels), on a port the bench reserves.
    pub(crate) publish: bool,
    /// Run as a node of a cluster (cluster scenario).
    pub(crate) cluster: Option<ClusterNode>,
    /// A websocket-over-http route [`WOH_ROUTE`] to this backend's `/woh/` (woh-* scenarios).
    pub(crate) woh_backend: Option<SocketAddr>,
}

/// The route path of the websocket-over-http scenarios; the backend serves the same path.
pub(crate) const WOH_ROUTE: &str = "/woh/";

/// `--route` binding [`WOH_ROUTE`] to `backend`'s `/woh/` in Pushpin's protocol.
pub(crate) fn woh_route(backend: SocketAddr) -> String {
    format!("{WOH_ROUTE}=http://{backend}{WOH_ROUTE},protocol=websocket-over-http")
}

/// One node of the bench's cluster: where its Redis listens and its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClusterNode {
    /// The loopback port of the bench's redis-server.
    pub(crate) redis_port: u16,
    /// `--node-id node-{number}`.
    pub(crate) number: usize,
}

/// How to start a bridge: its flags, how it says it is ready, and where its publish API
/// listens when one was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommandLine {
    pub(crate) args: Vec<String>,
    pub(crate) ready: Ready,
    /// `--publish-address`, a reserved port.
    pub(crate) publish: Option<SocketAddr>,
    /// A log line that must also appear (after the listening line) before it is ready.
    pub(crate) ready_after: Option<&'static str>,
    /// The `RUST_LOG` it runs with.
    pub(crate) log_filter: &'static str,
}

impl CommandLine {
    /// Whether the bridge was given a port the bench reserved, which another process may
    /// have taken in the meantime: a failed start is then worth another try.
    pub(crate) fn uses_reserved_ports(&self) -> bool {
        matches!(self.ready, Ready::PortAccepts(_)) || self.publish.is_some()
    }
}

impl Kind {
    /// Tells the kind from the binary's `--help`: the original documents `ws-bridge-send` and
    /// `--group-by-host`; ours documents `x-ws-proxy-*` headers and `--max-messages-per-second`.
    pub(crate) fn detect(binary: &Path) -> Result<Self, BoxError> {
        let output = std::process::Command::new(binary)
            .arg("--help")
            .output()
            .map_err(|e| format!("cannot run {} --help: {e}", binary.display()))?;
        let help = String::from_utf8_lossy(&output.stdout);
        Self::from_help(&help).ok_or_else(|| {
            format!(
                "cannot tell which bridge {} is from its --help: pass --bridge-kind/--peer-kind",
                binary.display()
            )
            .into()
        })
    }

    fn from_help(help: &str) -> Option<Self> {
        if help.contains("--group-by-host") || help.contains("ws-bridge-send") {
            Some(Self::Fermyon)
        } else if help.contains("--max-messages-per-second") || help.contains("x-ws-proxy") {
            Some(Self::Ours)
        } else {
            None
        }
    }

    /// Short name for tables and JSON.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Fermyon => "fermyon",
        }
    }

    /// The frame POST header that carries the connection's callback URL.
    pub(crate) fn callback_header(self) -> &'static str {
        match self {
            Self::Ours => "x-ws-proxy-send",
            Self::Fermyon => "ws-bridge-send",
        }
    }

    /// Whether the bridge has channels and a publish API.
    pub(crate) fn has_channels(self) -> bool {
        match self {
            Self::Ours => true,
            Self::Fermyon => false,
        }
    }

    /// Whether the bridge has a cluster mode (nodes sharing a Redis).
    pub(crate) fn has_cluster(self) -> bool {
        match self {
            Self::Ours => true,
            Self::Fermyon => false,
        }
    }

    /// Whether the bridge has `--route` and websocket-over-http routes.
    pub(crate) fn has_routes(self) -> bool {
        match self {
            Self::Ours => true,
            Self::Fermyon => false,
        }
    }

    /// The URL a client opens so that its messages go to `frame_url` and its end is reported
    /// to `disconnect_url`.
    pub(crate) fn connect_url(
        self,
        bridge: SocketAddr,
        frame_url: &str,
        disconnect_url: &str,
    ) -> String {
        // Both kinds take the same query today; the match keeps the place to say otherwise.
        match self {
            Self::Ours | Self::Fermyon => format!(
                "ws://{bridge}/connect?f={}&d={}",
                percent_encode(frame_url),
                percent_encode(disconnect_url)
            ),
        }
    }

    /// The connect URL with a connect hook (`c=`), which the bridge calls before answering
    /// the handshake; `None` for a bridge without connect hooks.
    pub(crate) fn connect_url_with_hook(
        self,
        bridge: SocketAddr,
        frame_url: &str,
        disconnect_url: &str,
        hook_url: &str,
    ) -> Option<String> {
        match self {
            Self::Ours => Some(format!(
                "{}&c={}",
                self.connect_url(bridge, frame_url, disconnect_url),
                percent_encode(hook_url)
            )),
            Self::Fermyon => None,
        }
    }

    /// Command-line flags that start the bridge with `allowlist` admitting the bench backend,
    /// how to tell it is ready and where its publish API listens. `reserved` gives a free
    /// loopback port, for listeners that cannot be on port 0 (the original's, and ours'
    /// publish API, whose address the bench must know without reading the bridge's logs).
    pub(crate) fn command_line(
        self,
        allowlist: &str,
        needs: Needs,
        mut reserved: impl FnMut() -> Result<SocketAddr, BoxError>,
    ) -> Result<CommandLine, BoxError> {
        match self {
            Self::Ours => {
                let mut args: Vec<String> = [
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
                    "5s",
                ]
                .map(str::to_owned)
                .to_vec();
                if needs.max_message_bytes >= DEFAULT_MAX_MESSAGE {
                    // Its default limit is 1 MiB: give large messages room (headroom x2).
                    args.push("--max-message-size".to_owned());
                    args.push((2 * needs.max_message_bytes).to_string());
                }
                let publish = if needs.publish {
                    let addr = reserved()?;
                    args.push("--publish-address".to_owned());
                    args.push(addr.to_string());
                    Some(addr)
                } else {
                    None
                };
                if let Some(node) = needs.cluster {
                    args.extend([
                        "--redis-url".to_owned(),
                        format!("redis://127.0.0.1:{}/", node.redis_port),
                        "--node-id".to_owned(),
                        format!("node-{}", node.number),
                    ]);
                }
                if let Some(backend) = needs.woh_backend {
                    args.extend(["--route".to_owned(), woh_route(backend)]);
                }
                Ok(CommandLine {
                    args,
                    ready: Ready::ListeningLine,
                    publish,
                    ready_after: needs.cluster.map(|_| CLUSTER_JOINED),
                    log_filter: if needs.cluster.is_some() {
                        "warn,websocket_bridge::server=info,websocket_bridge::cluster=info"
                    } else {
                        self.rust_log()
                    },
                })
            }
            Self::Fermyon if needs.publish => {
                Err("the original has no channels and no publish API".into())
            }
            Self::Fermyon if needs.cluster.is_some() => {
                Err("the original has no cluster mode".into())
            }
            Self::Fermyon if needs.woh_backend.is_some() => {
                Err("the original has no routes".into())
            }
            Self::Fermyon => {
                let addr = reserved()?;
                let args = vec![
                    "--address".to_owned(),
                    addr.to_string(),
                    "--base-url".to_owned(),
                    format!("http://{addr}/"),
                    "--allowlist".to_owned(),
                    allowlist.to_owned(),
                ];
                Ok(CommandLine {
                    args,
                    ready: Ready::PortAccepts(addr),
                    publish: None,
                    ready_after: None,
                    log_filter: self.rust_log(),
                })
            }
        }
    }

    /// The flags as documentation (JSON `config.sides[].flags`).
    pub(crate) fn flags_summary(self) -> &'static str {
        match self {
            Self::Ours => {
                "--address 127.0.0.1:0 --allowlist http://127\\.0\\.0\\.1:PORT/.* \
                 --max-messages-per-second 0 --max-connections-per-ip 0 --max-connections 20000 \
                 --shutdown-grace 5s (large: --max-message-size twice the largest message; \
                 fanout: --publish-address 127.0.0.1:RESERVED; cluster: --publish-address \
                 127.0.0.1:RESERVED --redis-url redis://127.0.0.1:REDIS/ --node-id node-N and \
                 websocket_bridge::cluster=info; woh-*: --route \
                 /woh/=http://127.0.0.1:PORT/woh/,protocol=websocket-over-http, woh-downstream \
                 also --publish-address 127.0.0.1:RESERVED); RUST_LOG=warn,websocket_bridge::server=info"
            }
            Self::Fermyon => {
                "--address 127.0.0.1:RESERVED --base-url http://127.0.0.1:RESERVED/ \
                 --allowlist http://127\\.0\\.0\\.1:PORT/.*; RUST_LOG=warn"
            }
        }
    }

    /// The `RUST_LOG` the bridge runs with: warnings, plus ours' listening line.
    pub(crate) fn rust_log(self) -> &'static str {
        match self {
            Self::Ours => "warn,websocket_bridge::server=info",
            Self::Fermyon => "warn",
        }
    }
}

/// One column of the comparison: a bridge binary and its contract.
#[derive(Clone, Debug)]
pub(crate) struct Side {
    /// `A` (the bridge under development) or `B` (the peer).
    pub(crate) label: &'static str,
    pub(crate) binary: PathBuf,
    pub(crate) kind: Kind,
    /// First line of `BIN --version`.
    pub(crate) version: String,
}

impl Side {
    /// A side for `binary`, detecting its kind unless given.
    pub(crate) fn new(
        label: &'static str,
        binary: PathBuf,
        kind: Option<Kind>,
    ) -> Result<Self, BoxError> {
        if !binary.is_file() {
            return Err(format!("{} does not exist", binary.display()).into());
        }
        let kind = match kind {
            Some(kind) => kind,
            None => Kind::detect(&binary)?,
        };
        let version = std::process::Command::new(&binary)
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Ok(Self {
            label,
            binary,
            kind,
            version,
        })
    }

    /// `A (ours)`.
    pub(crate) fn title(&self) -> String {
        format!("{} ({})", self.label, self.kind.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart_by_their_help() {
        assert_eq!(
            Kind::from_help("--group-by-host  send the backend hostname"),
            Some(Kind::Fermyon)
        );
        assert_eq!(
            Kind::from_help("--max-messages-per-second <RATE>"),
            Some(Kind::Ours)
        );
        assert_eq!(Kind::from_help("usage: cat [FILE]"), None);
    }

    #[test]
    fn both_kinds_get_frame_and_disconnect_urls() {
        let bridge = SocketAddr::from(([127, 0, 0, 1], 8080));
        for kind in [Kind::Ours, Kind::Fermyon] {
            assert_eq!(
                kind.connect_url(bridge, "http://127.0.0.1:9/sink", "http://127.0.0.1:9/d"),
                "ws://127.0.0.1:8080/connect?f=http%3A%2F%2F127.0.0.1%3A9%2Fsink&d=http%3A%2F%2F127.0.0.1%3A9%2Fd"
            );
        }
    }

    #[test]
    fn the_original_gets_a_reserved_port_and_base_url() {
        let reserved = SocketAddr::from(([127, 0, 0, 1], 41234));
        let line = Kind::Fermyon
            .command_line("x", Needs::default(), || Ok(reserved))
            .expect("a command line");
        assert_eq!(line.ready, Ready::PortAccepts(reserved));
        assert!(line.uses_reserved_ports());
        assert!(
            line.args
                .windows(2)
                .any(|w| w[0] == "--base-url" && w[1] == "http://127.0.0.1:41234/")
        );
        let ours = Kind::Ours
            .command_line("x", Needs::default(), || Err("unused".into()))
            .expect("a command line");
        assert_eq!(ours.ready, Ready::ListeningLine);
        assert!(!ours.uses_reserved_ports());
        assert!(ours.args.contains(&"127.0.0.1:0".to_owned()));
    }

    #[test]
    fn only_ours_gets_a_publish_api_and_a_connect_hook() {
        let reserved = SocketAddr::from(([127, 0, 0, 1], 41235));
        let needs = Needs {
            publish: true,
            ..Needs::default()
        };
        let ours = Kind::Ours
            .command_line("x", needs, || Ok(reserved))
            .expect("a command line");
        assert_eq!(ours.publish, Some(reserved));
        assert!(ours.uses_reserved_ports());
        assert!(
            ours.args
                .windows(2)
                .any(|w| w[0] == "--publish-address" && w[1] == "127.0.0.1:41235")
        );
        assert!(
            Kind::Fermyon
                .command_line("x", needs, || Ok(reserved))
                .is_err()
        );
        let bridge = SocketAddr::from(([127, 0, 0, 1], 8080));
        assert_eq!(
            Kind::Ours
                .connect_url_with_hook(bridge, "http://h/f", "http://h/d", "http://h/c")
                .as_deref(),
            Some(
                "ws://127.0.0.1:8080/connect?f=http%3A%2F%2Fh%2Ff&d=http%3A%2F%2Fh%2Fd&c=http%3A%2F%2Fh%2Fc"
            )
        );
        assert_eq!(
            Kind::Fermyon.connect_url_with_hook(bridge, "f", "d", "c"),
            None
        );
        assert!(Kind::Ours.has_channels() && !Kind::Fermyon.has_channels());
    }

    #[test]
    fn a_cluster_node_names_its_redis_and_waits_to_join() {
        let reserved = SocketAddr::from(([127, 0, 0, 1], 41236));
        let needs = Needs {
            publish: true,
            cluster: Some(ClusterNode {
                redis_port: 6390,
                number: 2,
            }),
            ..Needs::default()
        };
        let line = Kind::Ours
            .command_line("x", needs, || Ok(reserved))
            .expect("a command line");
        assert!(
            line.args
                .windows(2)
                .any(|w| w[0] == "--redis-url" && w[1] == "redis://127.0.0.1:6390/")
        );
        assert!(
            line.args
                .windows(2)
                .any(|w| w[0] == "--node-id" && w[1] == "node-2")
        );
        assert_eq!(line.ready_after, Some(CLUSTER_JOINED));
        assert!(line.log_filter.contains("websocket_bridge::cluster=info"));
        assert!(
            Kind::Fermyon
                .command_line(
                    "x",
                    Needs {
                        cluster: needs.cluster,
                        ..Needs::default()
                    },
                    || Ok(reserved)
                )
                .is_err()
        );
        assert!(Kind::Ours.has_cluster() && !Kind::Fermyon.has_cluster());
    }

    #[test]
    fn only_ours_gets_a_websocket_over_http_route() {
        let backend = SocketAddr::from(([127, 0, 0, 1], 9000));
        let needs = Needs {
            woh_backend: Some(backend),
            ..Needs::default()
        };
        let line = Kind::Ours
            .command_line("x", needs, || Err("unused".into()))
            .expect("a command line");
        assert!(line.args.windows(2).any(|w| w[0] == "--route"
            && w[1] == "/woh/=http://127.0.0.1:9000/woh/,protocol=websocket-over-http"));
        assert!(
            Kind::Fermyon
                .command_line("x", needs, || Err("unused".into()))
                .is_err()
        );
        assert!(Kind::Ours.has_routes() && !Kind::Fermyon.has_routes());
    }
}
