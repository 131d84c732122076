//! What the bench must know about each kind of bridge it can measure: how to start it, how it
//! says it is ready, how clients address it and how backends find the callback URL.
//!
//! Two contracts are known:
//!
//! - [`Kind::Ours`]: this repository's `websocket-bridge`. Started on `127.0.0.1:0`; it prints
//!   `websocket-bridge listening address=HOST:PORT` when ready. Frame POSTs carry
//!   `x-ws-proxy-send: {base-url}/{id}`; callback POSTs are answered 202. Its per-client rate
//!   and per-IP limits are turned off and its connection cap raised to 20,000.
//! - [`Kind::Fermyon`]: the original `fermyon/websocket-bridge`, which this project replaces.
//!   It needs `--address` and `--base-url` up front and prints nothing when ready, so the bench
//!   reserves a free port (binds `127.0.0.1:0`, notes the port, closes it), starts it there and
//!   waits until the port accepts. Frame POSTs carry `ws-bridge-send: {base-url}send/{id}`;
//!   callback POSTs are answered 200. It has no rate, per-IP or connection limits to turn off.
//!   It requires a disconnect URL (`d=`) in the connect URL.
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

/// What a scenario asks of the bridge beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Needs {
    /// Largest message the scenario sends, in bytes (0: the bench's small messages).
    pub(crate) max_message_bytes: usize,
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

    /// Command-line flags that start the bridge with `allowlist` admitting the bench backend,
    /// and how to tell it is ready. `reserved` is a free loopback port, used by kinds that
    /// cannot listen on port 0.
    pub(crate) fn command_line(
        self,
        allowlist: &str,
        needs: Needs,
        reserved: impl FnOnce() -> Result<SocketAddr, BoxError>,
    ) -> Result<(Vec<String>, Ready), BoxError> {
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
                Ok((args, Ready::ListeningLine))
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
                Ok((args, Ready::PortAccepts(addr)))
            }
        }
    }

    /// The flags as documentation (JSON `config.sides[].flags`).
    pub(crate) fn flags_summary(self) -> &'static str {
        match self {
            Self::Ours => {
                "--address 127.0.0.1:0 --allowlist http://127\\.0\\.0\\.1:PORT/.* \
                 --max-messages-per-second 0 --max-connections-per-ip 0 --max-connections 20000 \
                 --shutdown-grace 5s (large: --max-message-size twice the largest message); RUST_LOG=warn,websocket_bridge::server=info"
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
        let (args, ready) = Kind::Fermyon
            .command_line("x", Needs::default(), || Ok(reserved))
            .expect("a command line");
        assert_eq!(ready, Ready::PortAccepts(reserved));
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--base-url" && w[1] == "http://127.0.0.1:41234/")
        );
        let (ours, ready) = Kind::Ours
            .command_line("x", Needs::default(), || Err("unused".into()))
            .expect("a command line");
        assert_eq!(ready, Ready::ListeningLine);
        assert!(ours.contains(&"127.0.0.1:0".to_owned()));
    }
}
