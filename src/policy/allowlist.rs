//! Which backend URLs a client may name.
//!
//! Owns the parsing of client-supplied backend URLs ([`parse_backend_url`]) and the operator's
//! allowlist ([`Allowlist`]): anchored regular expressions matched against the whole
//! normalised URL, and host suffixes matched against the parsed host of https URLs. The URL
//! that was checked is the URL that is requested: callers keep the parsed [`Url`] and never
//! re-parse the client's string. Deny-all when nothing is configured.

use regex::Regex;
use url::{Host, Url};

/// An allowlist entry that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    /// The regular expression does not compile.
    #[error("--allowlist {pattern:?}: not a valid regular expression ({reason})")]
    Regex { pattern: String, reason: String },
    /// The host suffix is empty or not a domain name.
    #[error("--host-suffix-allowlist {suffix:?}: {reason}")]
    Suffix { suffix: String, reason: String },
}

/// Why a client-supplied backend URL was rejected before the allowlist was consulted (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    /// Not an absolute URL.
    #[error("is not an absolute URL ({0})")]
    Unparsable(String),
    /// A scheme other than http or https.
    #[error("has scheme {0:?}; only http and https backends are supported")]
    Scheme(String),
    /// `user:password@` in the URL.
    #[error("contains user info (user:password@); put credentials elsewhere")]
    UserInfo,
    /// No host.
    #[error("has no host")]
    NoHost,
    /// The path holds an encoded `/`, `\\` or `.`, or a `;` path parameter: many servers
    /// decode or strip these after routing, so `/ws/..%2fadmin` or `/ws/..;/admin` would reach
    /// a path outside the one the allowlist admitted.
    #[error(
        "has {0} in its path, which many servers turn into a path outside the allowed one; remove it (operator: --allow-encoded-paths admits such paths)"
    )]
    AmbiguousPath(&'static str),
}

/// Parses a backend URL named by a client and checks the properties every backend URL must
/// have, whatever the allowlist says.
pub(crate) fn parse_backend_url(raw: &str) -> Result<Url, UrlError> {
    let url = Url::parse(raw.trim()).map_err(|e| UrlError::Unparsable(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(url.scheme().to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::UserInfo);
    }
    if url.host().is_none() {
        return Err(UrlError::NoHost);
    }
    Ok(url)
}

/// Refuses paths holding an encoded `/` (`%2F`), `\\` (`%5C`) or `.` (`%2E`), or a `;`
/// (a path parameter, as in `/ws/..;/admin`, which Java servers strip before routing).
pub(crate) fn check_path(url: &Url) -> Result<(), UrlError> {
    let path = url.path().as_bytes();
    if path.contains(&b';') {
        return Err(UrlError::AmbiguousPath("a `;` path parameter"));
    }
    for window in path.windows(3).filter(|w| w[0] == b'%') {
        let what = match (window[1], window[2].to_ascii_lowercase()) {
            (b'2', b'f') => "an encoded `/` (%2F)",
            (b'5', b'c') => "an encoded `\\` (%5C)",
            (b'2', b'e') => "an encoded `.` (%2E)",
            _ => continue,
        };
        return Err(UrlError::AmbiguousPath(what));
    }
    Ok(())
}

/// A `--host-suffix-allowlist` entry: a domain and the one port it admits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostSuffix {
    /// Lower-case domain without a leading or trailing dot.
    domain: String,
    /// The entry's port, or 443: a suffix must not open every TLS service of its hosts.
    port: u16,
}

impl std::fmt::Display for HostSuffix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.port == 443 {
            write!(f, ".{}", self.domain)
        } else {
            write!(f, ".{}:{}", self.domain, self.port)
        }
    }
}

/// The operator's allowlist.
#[derive(Debug, Default)]
pub(crate) struct Allowlist {
    /// Patterns as the operator wrote them, compiled wrapped in `^(?:…)$`.
    patterns: Vec<(String, Regex)>,
    host_suffixes: Vec<HostSuffix>,
    /// `--allow-encoded-paths`: admit paths that [`check_path`] refuses.
    encoded_paths: bool,
}

impl Allowlist {
    /// Compiles the `--allowlist` patterns and checks the `--host-suffix-allowlist` entries.
    pub(crate) fn new(
        patterns: &[String],
        host_suffixes: &[String],
    ) -> Result<Self, AllowlistError> {
        let patterns = patterns
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| {
                Regex::new(&format!("^(?:{p})$"))
                    .map(|re| (p.clone(), re))
                    .map_err(|e| AllowlistError::Regex {
                        pattern: p.clone(),
                        reason: last_line(&e.to_string()),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let host_suffixes = host_suffixes
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| normalise_suffix(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Allowlist {
            patterns,
            host_suffixes,
            encoded_paths: false,
        })
    }

    /// Admits backend paths with encoded separators or `;` parameters (`--allow-encoded-paths`).
    pub(crate) fn with_encoded_paths(mut self, allowed: bool) -> Self {
        self.encoded_paths = allowed;
        self
    }

    /// Parses a client-supplied backend URL and checks what every backend URL must satisfy
    /// whatever the patterns say (scheme, no user info, an unambiguous path). A URL that
    /// passes may still be refused by [`Allowlist::allows`].
    pub(crate) fn parse(&self, raw: &str) -> Result<Url, UrlError> {
        let url = parse_backend_url(raw)?;
        if !self.encoded_paths {
            check_path(&url)?;
        }
        Ok(url)
    }

    /// The host suffixes, normalised (`.domain`, or `.domain:port` for a port other than 443).
    #[cfg(test)]
    fn host_suffixes(&self) -> Vec<String> {
        self.host_suffixes.iter().map(ToString::to_string).collect()
    }

    /// True when no entry is configured: every URL is refused.
    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty() && self.host_suffixes.is_empty()
    }

    /// Number of configured entries (patterns plus host suffixes).
    pub(crate) fn len(&self) -> usize {
        self.patterns.len() + self.host_suffixes.len()
    }

    /// Whether `url` (already parsed by [`parse_backend_url`]) may be used as a backend.
    ///
    /// Patterns match the URL's normalised serialisation as a whole; host suffixes admit https
    /// URLs whose parsed domain equals the suffix or ends with `.` + suffix, on the entry's
    /// port (443 unless the entry names one).
    pub(crate) fn allows(&self, url: &Url) -> bool {
        let serialised = url.as_str();
        if self.patterns.iter().any(|(_, re)| re.is_match(serialised)) {
            return true;
        }
        if url.scheme() != "https" {
            return false;
        }
        let Some(Host::Domain(host)) = url.host() else {
            return false;
        };
        let host = host.trim_end_matches('.');
        let port = url.port_or_known_default();
        self.host_suffixes.iter().any(|suffix| {
            port == Some(suffix.port)
                && (host == suffix.domain
                    || host
                        .strip_suffix(suffix.domain.as_str())
                        .is_some_and(|rest| rest.ends_with('.')))
        })
    }
}

/// The last non-empty line of a multi-line message (regex errors end with the diagnosis).
fn last_line(message: &str) -> String {
    message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message)
        .trim()
        .to_owned()
}

fn normalise_suffix(raw: &str) -> Result<HostSuffix, AllowlistError> {
    let err = |reason: &str| AllowlistError::Suffix {
        suffix: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let (name, port) = match raw.trim().rsplit_once(':') {
        Some((name, port)) => (
            name,
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err("the port after `:` must be a number from 1 to 65535"))?,
        ),
        None => (raw.trim(), 443),
    };
    let trimmed = name.trim_start_matches('.').trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(err("must name a domain, e.g. .example.com"));
    }
    // Parse through the URL parser so the suffix is normalised (case, IDNA) exactly as hosts are.
    let parsed = Url::parse(&format!("https://{trimmed}/"))
        .map_err(|e| err(&format!("not a domain name ({e})")))?;
    match parsed.host() {
        Some(Host::Domain(d)) if d == trimmed.to_ascii_lowercase() || !trimmed.is_ascii() => {
            Ok(HostSuffix {
                domain: d.to_owned(),
                port,
            })
        }
        Some(Host::Domain(_)) => Err(err("not a plain domain name")),
        _ => Err(err("must be a domain name, not an IP address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str], suffixes: &[&str]) -> Allowlist {
        let p: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        let s: Vec<String> = suffixes.iter().map(|s| s.to_string()).collect();
        match Allowlist::new(&p, &s) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        }
    }

    fn allows(a: &Allowlist, raw: &str) -> bool {
        parse_backend_url(raw).is_ok_and(|u| a.allows(&u))
    }

    #[test]
    fn patterns_are_anchored() {
        let a = list(&[r"https://a\.example/.*"], &[]);
        assert!(allows(&a, "https://a.example/frames"));
        assert!(!allows(&a, "https://evil.example/?u=https://a.example/"));
        assert!(!allows(&a, "https://a.example.evil.example/"));
        assert!(!allows(&a, "http://a.example/"));
    }

    #[test]
    fn alternation_cannot_escape_the_anchors() {
        let a = list(&[r"https://a\.example/x|https://b\.example/y"], &[]);
        assert!(allows(&a, "https://b.example/y"));
        assert!(!allows(&a, "https://b.example/y/more"));
        assert!(!allows(&a, "https://evil.example/?https://a.example/x"));
    }

    #[test]
    fn empty_allowlist_refuses_everything() {
        let a = list(&[], &[]);
        assert!(a.is_empty());
        assert!(!allows(&a, "https://a.example/"));
        assert!(!allows(&a, "http://127.0.0.1/"));
    }

    #[test]
    fn host_suffix_matches_the_parsed_host_on_a_label_boundary() {
        let a = list(&[], &[".example.com"]);
        assert!(allows(&a, "https://api.example.com/frames"));
        assert!(allows(&a, "https://example.com/frames"));
        assert!(allows(&a, "https://API.Example.COM./x"));
        assert!(!allows(&a, "https://evilexample.com/"));
        assert!(!allows(&a, "https://example.com.evil.net/"));
        assert!(!allows(&a, "https://evil.net/?h=api.example.com"));
        assert!(!allows(&a, "https://evil.net/#.example.com"));
        assert!(!allows(&a, "http://api.example.com/"), "https only");
        // `@` makes everything before it user info, which is refused outright.
        assert!(parse_backend_url("https://api.example.com@evil.net/").is_err());
        assert!(!allows(&a, "https://evil.net\\.example.com/"));
    }

    #[test]
    fn host_suffixes_admit_port_443_unless_they_name_a_port() {
        let a = list(&[], &[".example.com", "api.example.org:8443"]);
        assert!(allows(&a, "https://x.example.com/"));
        assert!(allows(&a, "https://x.example.com:443/"));
        assert!(!allows(&a, "https://x.example.com:8443/"));
        assert!(!allows(&a, "https://x.example.com:22/"));
        assert!(allows(&a, "https://api.example.org:8443/"));
        assert!(!allows(&a, "https://api.example.org/"));
        assert_eq!(a.host_suffixes(), [".example.com", ".api.example.org:8443"]);
        assert!(Allowlist::new(&[], &[".example.com:0".into()]).is_err());
        assert!(Allowlist::new(&[], &[".example.com:https".into()]).is_err());
    }

    #[test]
    fn encoded_separators_and_path_parameters_are_refused() {
        let a = list(&[r"https://api\.example\.com/ws/.*"], &[]);
        for bad in [
            "https://api.example.com/ws/..%2fadmin",
            "https://api.example.com/ws/..%2Fadmin",
            "https://api.example.com/ws/..%5cadmin",
            "https://api.example.com/ws/a%2e/admin",
            "https://api.example.com/ws/..;/admin",
            "https://api.example.com/ws/x;jsessionid=1",
        ] {
            assert!(
                matches!(a.parse(bad), Err(UrlError::AmbiguousPath(_))),
                "{bad} must be refused"
            );
        }
        // The query may hold anything; dot segments, encoded or not, are resolved by the
        // parser, so the allowlist sees where they lead.
        assert!(a.parse("https://api.example.com/ws/f?next=%2Fa;b").is_ok());
        for dots in [
            "https://api.example.com/ws/../admin",
            "https://api.example.com/ws/%2e%2e/admin",
        ] {
            let url = a.parse(dots);
            assert_eq!(url.as_ref().map(|u| u.path()), Ok("/admin"), "{dots}");
            assert!(url.is_ok_and(|u| !a.allows(&u)));
        }
        let open = list(&[r"https://api\.example\.com/ws/.*"], &[]).with_encoded_paths(true);
        assert!(open.parse("https://api.example.com/ws/..%2fadmin").is_ok());
    }

    #[test]
    fn backend_urls_are_checked() {
        assert!(matches!(
            parse_backend_url("not a url"),
            Err(UrlError::Unparsable(_))
        ));
        assert!(matches!(
            parse_backend_url("ftp://a.example/"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            parse_backend_url("https://u:p@a.example/"),
            Err(UrlError::UserInfo)
        ));
        assert!(matches!(
            parse_backend_url("https://u@a.example/"),
            Err(UrlError::UserInfo)
        ));
        assert!(parse_backend_url("http://127.0.0.1:9/f").is_ok());
    }

    #[test]
    fn bad_entries_are_config_errors() {
        assert!(Allowlist::new(&["(".into()], &[]).is_err());
        assert!(Allowlist::new(&[], &[".".into()]).is_err());
        assert!(Allowlist::new(&[], &["127.0.0.1".into()]).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn allowlist(patterns: &[&str], suffixes: &[&str]) -> Allowlist {
        let p: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        let s: Vec<String> = suffixes.iter().map(|s| s.to_string()).collect();
        Allowlist::new(&p, &s).unwrap_or_else(|e| panic!("{e}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn backend_url_parsing_never_panics_and_only_admits_http(raw in "\\PC{0,80}") {
            if let Ok(url) = parse_backend_url(&raw) {
                prop_assert!(url.scheme() == "http" || url.scheme() == "https");
                prop_assert!(url.username().is_empty() && url.password().is_none());
                prop_assert!(url.host().is_some());
            }
        }

        #[test]
        fn anchored_patterns_never_match_other_hosts(
            host in "[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,8}){0,2}",
            tail in "[a-zA-Z0-9/?=&.%:_-]{0,40}",
        ) {
            let list = allowlist(&[r"https://a\.example/.*"], &[]);
            prop_assume!(host != "a.example");
            for candidate in [
                format!("https://{host}/?u=https://a.example/{tail}"),
                format!("https://{host}/https://a.example/{tail}"),
                format!("https://a.example.{host}/{tail}"),
                format!("http://a.example/{tail}"),
            ] {
                if let Ok(url) = parse_backend_url(&candidate) {
                    prop_assert!(!list.allows(&url), "{candidate} must be refused");
                }
            }
            let good = format!("https://a.example/{tail}");
            if let Ok(url) = parse_backend_url(&good) {
                prop_assert_eq!(list.allows(&url), url.host_str() == Some("a.example"));
            }
        }

        #[test]
        fn host_suffixes_match_on_label_boundaries_of_the_parsed_host(
            label in "[a-z0-9]{1,10}",
            junk in "[a-zA-Z0-9/?=&.#@:_-]{0,30}",
        ) {
            let list = allowlist(&[], &[".example.com"]);
            let sub = format!("https://{label}.example.com/{junk}");
            if let Ok(url) = parse_backend_url(&sub) {
                prop_assert_eq!(list.allows(&url), url.host_str().is_some_and(|h| h.ends_with(".example.com")));
            }
            for bad in [
                format!("https://{label}example.com/"),
                format!("https://example.com.{label}/"),
                format!("https://{label}.test/{junk}.example.com"),
            ] {
                if let Ok(url) = parse_backend_url(&bad) {
                    let host = url.host_str().unwrap_or_default().to_owned();
                    prop_assert_eq!(list.allows(&url), host == "example.com" || host.ends_with(".example.com"), "{}", bad);
                }
            }
        }
    }
}
