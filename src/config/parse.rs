//! Parsers of flag values: byte sizes, durations, listen addresses and the base URL. Each
//! error says what was expected; the caller adds the flag's name. Pure functions, except
//! [`resolve_address`], which may ask the system resolver for a host name.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use url::Url;

/// A flag value that does not parse; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

/// The first non-empty line of a (possibly multi-line) message.
pub(crate) fn first_line(message: &str) -> String {
    message
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message)
        .trim()
        .to_owned()
}

/// Resolves `HOST:PORT` (an address, or a name through the system resolver) to the first
/// address it names.
pub(crate) fn resolve_address(value: &str) -> Result<SocketAddr, ValueError> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut addrs = value
        .to_socket_addrs()
        .map_err(|e| ValueError(format!("expected HOST:PORT, e.g. 127.0.0.1:8080 ({e})")))?;
    addrs
        .next()
        .ok_or_else(|| ValueError("the host resolves to no address".into()))
}

/// A `--base-url`: an absolute http(s) URL without user info, query or fragment, with no
/// trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl(Url);

impl BaseUrl {
    /// Checks a `--base-url` value.
    pub(crate) fn parse(value: &str) -> Result<BaseUrl, ValueError> {
        let err = |reason: &str| ValueError(reason.to_owned());
        let mut url = Url::parse(value.trim())
            .map_err(|e| ValueError(format!("not an absolute URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("the scheme must be http or https"));
        }
        if url.host_str().is_none() {
            return Err(err("a host is required"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err("user info is not allowed"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(err("a query or fragment is not allowed"));
        }
        let trimmed = url.path().trim_end_matches('/').to_owned();
        url.set_path(&trimmed);
        Ok(BaseUrl(url))
    }

    /// `http(s)://{address}`: the base URL of a bridge reached at its own listening address.
    pub(crate) fn of_address(tls: bool, address: SocketAddr) -> BaseUrl {
        let scheme = if tls { "https" } else { "http" };
        BaseUrl(
            Url::parse(&format!("{scheme}://{address}"))
                .expect("an IP address and a port make a valid URL"),
        )
    }

    /// The URL without a trailing slash; callback URLs are this plus `/{id}`.
    pub(crate) fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }

    /// The path callback URLs live under (no trailing slash; empty at the root).
    pub(crate) fn path(&self) -> &str {
        self.0.path().trim_end_matches('/')
    }
}

/// Parses a byte count with an optional binary (`KiB`, `MiB`, `GiB`) or decimal (`KB`, `MB`,
/// `GB`) suffix.
pub(crate) fn parse_size(value: &str) -> Result<usize, ValueError> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: usize = digits.parse().map_err(|_| {
        ValueError(format!(
            "{value:?} is not a byte count (e.g. 1048576 or 1MiB)"
        ))
    })?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(ValueError(format!(
                "unknown size unit {other:?} (use B, KiB, MiB or GiB)"
            )));
        }
    };
    n.checked_mul(multiplier)
        .ok_or_else(|| ValueError(format!("{value:?} is too large")))
}

/// Longest number in a duration: 999,999,999 years is far beyond any setting, and the bound
/// keeps every sum far from `u64::MAX` seconds, where humantime 2.4 panics instead of
/// reporting an overflow (found by `fuzz/fuzz_targets/small_values.rs`:
/// `18446744073709551615s 500ms 500ms`).
const MAX_DURATION_DIGITS: usize = 9;
/// Longest duration text; with [`MAX_DURATION_DIGITS`] it bounds the sum of all terms.
const MAX_DURATION_LEN: usize = 256;

/// Parses a duration such as `10s`, `250ms` or `1m 30s`.
pub(crate) fn parse_duration(value: &str) -> Result<Duration, ValueError> {
    let longest_number = value
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest_number > MAX_DURATION_DIGITS || value.len() > MAX_DURATION_LEN {
        return Err(ValueError(format!(
            "{value:?} is too large a duration (at most {MAX_DURATION_DIGITS} digits per number, {MAX_DURATION_LEN} characters)"
        )));
    }
    humantime::parse_duration(value.trim()).map_err(|e| {
        ValueError(format!(
            "{value:?} is not a duration such as 10s or 500ms ({e})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("512 KiB"), Ok(524_288));
        assert_eq!(parse_size("2KB"), Ok(2_000));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1 parsec").is_err());
    }

    #[test]
    fn durations_parse_and_huge_ones_are_refused() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("18446744073709551615s 500ms 500ms").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn base_url_loses_its_trailing_slash() {
        let url = |s: &str| BaseUrl::parse(s).map(|u| u.as_str().to_owned()).ok();
        assert_eq!(
            url("https://bridge.example/ws/").as_deref(),
            Some("https://bridge.example/ws")
        );
        assert_eq!(
            url("https://bridge.example/").as_deref(),
            Some("https://bridge.example")
        );
        assert_eq!(
            url("https://bridge.example:8443").as_deref(),
            Some("https://bridge.example:8443")
        );
        assert!(BaseUrl::parse("ftp://bridge.example").is_err());
        assert!(BaseUrl::parse("https://u:p@bridge.example").is_err());
        assert!(BaseUrl::parse("https://bridge.example/?q=1").is_err());
        let base = BaseUrl::parse("https://bridge.example/ws/").ok();
        assert_eq!(base.as_ref().map(BaseUrl::path), Some("/ws"));
        let root = BaseUrl::of_address(
            false,
            "127.0.0.1:9".parse().unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!((root.as_str(), root.path()), ("http://127.0.0.1:9", ""));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn size_parsing_never_panics(raw in "\\PC{0,20}") {
            let _ = parse_size(&raw);
        }
    }
}
