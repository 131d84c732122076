//! The publish API's configuration ([`PublishConfig`]): where it listens, the secrets a
//! publisher must present, and how large a request may be. A listener that is not on a
//! loopback address must have a secret: the bridge refuses to start otherwise.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::cli::Cli;
use super::parse::resolve_address;
use super::{ConfigError, read_secrets, value_error};

/// What the publish listener needs.
#[derive(Clone)]
pub(crate) struct PublishConfig {
    /// `--publish-address`; `None`: no publish API.
    pub(crate) address: Option<SocketAddr>,
    /// `--publish-secret` and `--publish-secret-file`; empty: no authorization asked.
    pub(crate) secrets: Vec<Vec<u8>>,
    /// Largest publish request body.
    pub(crate) max_body: usize,
    /// Largest message in a publication (`--max-message-size`).
    pub(crate) max_message_size: usize,
    /// Time for a whole request body to arrive (`--handshake-timeout`).
    pub(crate) body_timeout: Duration,
}

impl fmt::Debug for PublishConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishConfig")
            .field("address", &self.address)
            .field("secrets", &self.secrets.len())
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

pub(super) fn publish_config(cli: &Cli) -> Result<PublishConfig, ConfigError> {
    let address = match cli.publish_address.as_deref() {
        Some(raw) => Some(resolve_address(raw).map_err(value_error("--publish-address", raw))?),
        None => None,
    };
    let secrets = read_secrets(
        ("--publish-secret", "--publish-secret-file"),
        &cli.publish_secret,
        &cli.publish_secret_file,
    )?;
    if let Some(address) = address
        && !address.ip().is_loopback()
        && secrets.is_empty()
    {
        return Err(ConfigError::PublishWithoutSecret(address));
    }
    Ok(PublishConfig {
        address,
        secrets,
        max_body: cli.max_publish_size,
        max_message_size: cli.max_message_size,
        body_timeout: cli.handshake_timeout,
    })
}
