//! Who the client is, behind proxies the operator trusts (`--trusted-proxy`), and the
//! forwarding headers the bridge sends on the client's behalf.
//!
//! When the TCP peer is a trusted proxy, the client is the right-most address of
//! `X-Forwarded-For` (or, without it, of `Forwarded: for=`) that is not itself a trusted
//! proxy; otherwise the client is the peer, and whatever forwarding headers it sent are
//! ignored. The address found here is what per-IP limits, logs and the `X-Forwarded-For` sent
//! to backends use. Owns no I/O.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderValue, header};

/// A `--trusted-proxy` entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--trusted-proxy {entry:?}: {reason} (expected an address or CIDR block, e.g. 10.0.0.0/8 or fd00::/8)"
)]
pub struct TrustedProxyError {
    entry: String,
    reason: &'static str,
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(entry: &str) -> Result<Cidr, TrustedProxyError> {
        let err = |reason| TrustedProxyError {
            entry: entry.to_owned(),
            reason,
        };
        let (address, prefix) = match entry.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (entry.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| err("not an IP address"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| err("the prefix length is out of range"))?,
        };
        if mask(network, prefix) != network {
            return Err(err("the address has bits set beyond the prefix length"));
        }
        Ok(Cidr { network, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `ip` with every bit beyond the first `prefix` cleared.
pub(crate) fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    }
}

/// The operator's trusted proxies.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<Cidr>,
}

/// The client as the bridge sees it, and the scheme and host it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientOrigin {
    /// The client's address (the peer's, unless a trusted proxy forwarded it).
    pub(crate) ip: IpAddr,
    /// The scheme the client used: the trusted proxy's `X-Forwarded-Proto`, or the bridge's own.
    pub(crate) proto: &'static str,
    /// The host the client asked for: the trusted proxy's `X-Forwarded-Host`, or `Host`.
    pub(crate) host: Option<HeaderValue>,
}

impl TrustedProxies {
    /// Parses the `--trusted-proxy` entries.
    pub(crate) fn new(entries: &[String]) -> Result<Self, TrustedProxyError> {
        let nets = entries
            .iter()
            .filter(|e| !e.trim().is_empty())
            .map(|e| Cidr::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies { nets })
    }

    /// The entries, normalised, for `--check-config`.
    #[cfg(test)]
    fn entries(&self) -> Vec<String> {
        self.nets.iter().map(ToString::to_string).collect()
    }

    /// Whether `ip` is a trusted proxy.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }

    /// Who sent this request: see the module documentation.
    pub(crate) fn client(&self, peer: SocketAddr, tls: bool, headers: &HeaderMap) -> ClientOrigin {
        let own_proto = if tls { "https" } else { "http" };
        let own_host = headers.get(header::HOST).cloned();
        if !self.trusts(peer.ip()) {
            return ClientOrigin {
                ip: peer.ip().to_canonical(),
                proto: own_proto,
                host: own_host,
            };
        }
        let chain = forwarded_for(headers);
        // Right to left: the first hop not run by the operator is the client. If every hop
        // is trusted, the left-most one is the farthest the bridge can see.
        let ip = chain
            .iter()
            .rev()
            .find(|ip| !self.trusts(**ip))
            .or(chain.first())
            .copied()
            .unwrap_or(peer.ip())
            .to_canonical();
        let proto = match last_value(headers, "x-forwarded-proto") {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            Some(p) if p.eq_ignore_ascii_case("http") => "http",
            _ => own_proto,
        };
        let host = last_value(headers, "x-forwarded-host")
            .and_then(|h| HeaderValue::from_str(h).ok())
            .or(own_host);
        ClientOrigin { ip, proto, host }
    }
}

/// The addresses of `X-Forwarded-For`, or else of `Forwarded: for=`, left to right. An entry
/// that is not an address (`unknown`, an obfuscated name) ends the usable chain there, as
/// everything to its left is unverifiable.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<&str> = values(headers, "x-forwarded-for").collect();
    let raw: Vec<&str> = if xff.is_empty() {
        values(headers, header::FORWARDED.as_str())
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    key.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| value.trim().trim_matches('"'))
                })
            })
            .collect()
    } else {
        xff
    };
    let parsed: Vec<Option<IpAddr>> = raw.iter().map(|entry| parse_node(entry)).collect();
    let usable_from = parsed
        .iter()
        .rposition(Option::is_none)
        .map_or(0, |i| i + 1);
    parsed[usable_from..].iter().flatten().copied().collect()
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:567`, `::1`, `[::1]`, `[::1]:567`.
fn parse_node(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse().ok())
}

/// Comma-separated elements of every value of a header, trimmed, in order.
fn values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The right-most element of a header: the one the nearest proxy wrote.
fn last_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    values(headers, name).last()
}

/// Request headers that carry a claim about the client's address, scheme, host or port.
/// Never forwarded as a client sent them: the bridge sets `X-Forwarded-For`, `-Proto` and
/// `-Host` itself.
pub(crate) fn is_forwarding_header(name: &str) -> bool {
    name.starts_with("x-forwarded-")
        || matches!(
            name,
            "forwarded"
                | "x-real-ip"
                | "true-client-ip"
                | "x-client-ip"
                | "x-cluster-client-ip"
                | "cf-connecting-ip"
                | "fastly-client-ip"
                | "x-original-forwarded-for"
                | "client-ip"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        TrustedProxies::new(&entries).unwrap_or_else(|e| panic!("{e}"))
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), 40000)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("host", "bridge.example"),
        ]);
        let c = p.client(peer("203.0.113.9"), false, &h);
        assert_eq!(c.ip, ip("203.0.113.9"));
        assert_eq!(c.proto, "http");
        assert_eq!(c.host, Some(HeaderValue::from_static("bridge.example")));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8", "192.168.1.1"]);
        // The client forged the left-most entry; the proxies appended the real hops.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "192.168.1.1"),
            ("x-forwarded-proto", "http, https"),
            ("x-forwarded-host", "chat.example"),
        ]);
        let c = p.client(peer("10.1.2.3"), false, &h);
        assert_eq!(c.ip, ip("198.51.100.7"));
        assert_eq!(c.proto, "https");
        assert_eq!(c.host, Some(HeaderValue::from_static("chat.example")));
        // All hops trusted: the left-most one.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 192.168.1.1")]);
        assert_eq!(p.client(peer("10.1.2.3"), true, &h).ip, ip("10.9.9.9"));
        // No header at all: the proxy itself.
        assert_eq!(
            p.client(peer("10.1.2.3"), true, &HeaderMap::new()).ip,
            ip("10.1.2.3")
        );
        // Garbage ends the usable chain.
        let h = headers(&[("x-forwarded-for", "unknown, 10.9.9.9")]);
        assert_eq!(p.client(peer("10.1.2.3"), true, &h).ip, ip("10.9.9.9"));
    }

    #[test]
    fn forwarded_for_is_read_when_x_forwarded_for_is_absent() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\"",
        )]);
        assert_eq!(
            p.client(peer("10.0.0.1"), false, &h).ip,
            ip("2001:db8:cafe::17")
        );
        let h = headers(&[("forwarded", "For=\"198.51.100.1:1234\";by=10.0.0.1")]);
        assert_eq!(p.client(peer("10.0.0.1"), false, &h).ip, ip("198.51.100.1"));
    }

    #[test]
    fn cidr_entries_are_checked() {
        assert!(TrustedProxies::new(&["10.0.0.0/8".into(), "::1".into()]).is_ok());
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "nope", "::/129", "10.0.0.0/x"] {
            assert!(TrustedProxies::new(&[bad.into()]).is_err(), "{bad}");
        }
        let p = proxies(&["fd00::/8", "127.0.0.1"]);
        assert!(p.trusts(ip("fd12::1")));
        assert!(p.trusts(ip("::ffff:127.0.0.1")));
        assert!(!p.trusts(ip("127.0.0.2")));
        assert_eq!(p.entries(), ["fd00::/8", "127.0.0.1/32"]);
        assert!(proxies(&["0.0.0.0/0"]).trusts(ip("8.8.8.8")));
    }

    #[test]
    fn masks_keep_the_prefix() {
        assert_eq!(mask(ip("2001:db8:1:2:3:4:5:6"), 64), ip("2001:db8:1:2::"));
        assert_eq!(mask(ip("10.1.2.3"), 8), ip("10.0.0.0"));
        assert_eq!(mask(ip("10.1.2.3"), 0), ip("0.0.0.0"));
        assert_eq!(mask(ip("10.1.2.3"), 32), ip("10.1.2.3"));
    }

    #[test]
    fn forwarding_headers_are_recognised() {
        for name in [
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-port",
            "x-forwarded-host",
            "x-real-ip",
            "true-client-ip",
        ] {
            assert!(is_forwarding_header(name), "{name}");
        }
        assert!(!is_forwarding_header("cookie"));
    }
}
