//! Channel names: 1-128 characters of `A-Z a-z 0-9 . _ : @ -`, one or a comma-separated list
//! (`x-ws-proxy-subscribe: room-1, user:42`). Shared by the answer headers the backend sends,
//! the callback API and the publish API, so all three accept the same names.

use std::fmt;
use std::sync::Arc;

/// Longest channel name.
pub(crate) const MAX_NAME: usize = 128;

/// A valid channel name: 1-128 characters of `A-Z a-z 0-9 . _ : @ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ChannelName(Arc<str>);

/// A channel name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("channel name {0:?} is not 1-{MAX_NAME} characters of letters, digits and . _ : @ -")]
pub(crate) struct BadName(String);

impl ChannelName {
    pub(crate) fn parse(name: &str) -> Result<Self, BadName> {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME
            && name.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-')
            });
        if valid {
            Ok(ChannelName(name.into()))
        } else {
            Err(BadName(name.chars().take(MAX_NAME + 8).collect()))
        }
    }

    /// A comma-separated list of names (`x-ws-proxy-subscribe: room-1, user:42`).
    pub(crate) fn parse_list(list: &str) -> Result<Vec<Self>, BadName> {
        list.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(ChannelName::parse)
            .collect()
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names_are_checked() {
        for good in ["room-1", "user:42", "a.b_c@d", &"x".repeat(128)] {
            assert!(ChannelName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(129)] {
            assert!(ChannelName::parse(bad).is_err(), "{bad}");
        }
        let list = ChannelName::parse_list("room-1, user:42,,").unwrap_or_default();
        assert_eq!(list, vec![name("room-1"), name("user:42")]);
        assert!(ChannelName::parse_list("ok, not ok").is_err());
    }
}
