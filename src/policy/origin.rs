//! Origin checks against cross-site WebSocket hijacking: `--allowed-origin` entries (exact
//! origins, or `*.example.com` patterns) and the check of a handshake's `Origin` header. Owns
//! no I/O.

use url::Url;

/// An `--allowed-origin` entry that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--allowed-origin {entry:?}: {reason}")]
pub struct OriginError {
    entry: String,
    reason: String,
}

/// The origins allowed to open WebSocket connections. Empty: any origin (no check).
#[derive(Debug, Default, Clone)]
pub(crate) struct OriginPolicy {
    /// Exact origins, serialised as `scheme://host[:port]` (default port omitted).
    exact: Vec<String>,
    /// `(scheme, domain)` of `[scheme://]*.domain` patterns: subdomains of `domain`.
    patterns: Vec<(Option<String>, String)>,
}

impl OriginPolicy {
    /// Parses `--allowed-origin` entries.
    pub(crate) fn new(entries: &[String]) -> Result<Self, OriginError> {
        let mut policy = OriginPolicy::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let err = |reason: &str| OriginError {
                entry: entry.to_owned(),
                reason: reason.to_owned(),
            };
            let (scheme, rest) = match entry.split_once("://") {
                Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
                None => (None, entry),
            };
            if let Some(domain) = rest.strip_prefix("*.") {
                let domain = domain.trim_end_matches('/').to_ascii_lowercase();
                if domain.is_empty() || domain.contains(['/', '*', ':', '@']) {
                    return Err(err(
                        "a pattern looks like *.example.com or https://*.example.com",
                    ));
                }
                policy.patterns.push((scheme, domain));
            } else {
                if scheme.is_none() {
                    return Err(err(
                        "give a full origin such as https://app.example.com, or a pattern such as *.example.com",
                    ));
                }
                let url = Url::parse(entry).map_err(|e| err(&format!("not an origin ({e})")))?;
                if url.path() != "/" || url.query().is_some() || url.host().is_none() {
                    return Err(err(
                        "an origin has no path or query: https://app.example.com",
                    ));
                }
                policy.exact.push(url.origin().ascii_serialization());
            }
        }
        Ok(policy)
    }

    /// Whether any entry is configured (otherwise every origin is accepted).
    pub(crate) fn is_enabled(&self) -> bool {
        !self.exact.is_empty() || !self.patterns.is_empty()
    }

    /// Whether a handshake with this `Origin` header may proceed.
    pub(crate) fn allows(&self, origin: Option<&str>) -> bool {
        if !self.is_enabled() {
            return true;
        }
        let Some(url) = origin.and_then(|o| Url::parse(o.trim()).ok()) else {
            return false;
        };
        let serialised = url.origin().ascii_serialization();
        if self.exact.contains(&serialised) {
            return true;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        self.patterns.iter().any(|(scheme, domain)| {
            scheme.as_deref().is_none_or(|s| s == url.scheme())
                && host
                    .strip_suffix(domain.as_str())
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OriginPolicy {
        let e: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        OriginPolicy::new(&e).unwrap_or_default()
    }

    #[test]
    fn exact_and_pattern_origins() {
        let p = policy(&[
            "https://app.example.com",
            "*.trusted.example",
            "https://*.secure.example",
        ]);
        assert!(p.allows(Some("https://app.example.com")));
        assert!(p.allows(Some("https://APP.example.com:443")));
        assert!(!p.allows(Some("http://app.example.com")));
        assert!(!p.allows(Some("https://app.example.com.evil.net")));
        assert!(p.allows(Some("http://a.trusted.example")));
        assert!(p.allows(Some("https://x.y.trusted.example:8443")));
        assert!(!p.allows(Some("https://trusted.example")));
        assert!(!p.allows(Some("https://eviltrusted.example")));
        assert!(p.allows(Some("https://a.secure.example")));
        assert!(!p.allows(Some("http://a.secure.example")));
        assert!(!p.allows(None));
        assert!(!p.allows(Some("null")));
    }

    #[test]
    fn no_entries_means_no_check() {
        assert!(policy(&[]).allows(None));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "*.",
            "*.a/b",
        ] {
            assert!(OriginPolicy::new(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn origin_checks_never_panic(entry in "[a-z*.:/]{0,30}", origin in "\\PC{0,40}") {
            if let Ok(policy) = OriginPolicy::new(&[entry]) {
                let _ = policy.allows(Some(&origin));
                let _ = policy.allows(None);
            }
        }
    }
}
