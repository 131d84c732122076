//! SSRF defences for `--deny-private-networks`: which IP addresses a backend request may never
//! reach, a check of a backend URL at handshake time, and a DNS resolver for the backend client
//! that drops forbidden addresses, so the address that is used is always one that was checked
//! (no DNS rebinding between check and use). Owns no sockets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// Whether `ip` is in a range a backend request must never reach under
/// `--deny-private-networks`: unspecified, loopback, private (RFC 1918), link-local (cloud
/// metadata services live at 169.254.169.254), CGNAT (100.64/10), IETF protocol assignments,
/// benchmarking, multicast, reserved and broadcast ranges; for IPv6 also unique-local
/// (fc00::/7, which holds AWS's fd00:ec2::254), link-local, site-local, multicast, discard,
/// documentation, Teredo (2001::/32) and local-use NAT64 (64:ff9b:1::/48), whose IPv4 side
/// the bridge cannot see, and IPv4 addresses embedded in IPv4-mapped, IPv4-compatible, NAT64
/// (64:ff9b::/96) and 6to4 (2002::/16) addresses.
pub(crate) fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..=127).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || a >= 240 // reserved 240.0.0.0/4
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_forbidden_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (first == 0x0100 && ip.segments()[1..4] == [0, 0, 0]) // discard 100::/64
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation 2001:db8::/32
        || (first == 0x2001 && ip.segments()[1] == 0) // Teredo 2001::/32 (tunnels to any IPv4)
        || (first == 0x0064 && ip.segments()[1] == 0xff9b && ip.segments()[2] == 1) // local-use NAT64 64:ff9b:1::/48
}

/// The IPv4 address carried inside an IPv6 address, for the forms that route to IPv4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(tail); // IPv4-compatible ::a.b.c.d (deprecated)
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail); // NAT64 64:ff9b::/96
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        )); // 6to4 2002::/16
    }
    None
}

/// Why a backend URL is refused under `--deny-private-networks` (403).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("it has no host")]
    NoHost,
    #[error("its host {host} does not resolve ({reason})")]
    Unresolvable {
        host: String,
        reason: std::io::Error,
    },
    #[error("its host resolves to no address")]
    NoAddress,
    #[error(
        "its host resolves to {0}, a private, loopback or link-local address, which this bridge refuses (--deny-private-networks)"
    )]
    Private(IpAddr),
}

/// Resolves a backend URL's host and checks every address.
pub(crate) async fn check_url(url: &Url) -> Result<(), Refused> {
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(Host::Domain(domain)) => tokio::net::lookup_host((domain, port))
            .await
            .map_err(|reason| Refused::Unresolvable {
                host: domain.to_owned(),
                reason,
            })?
            .map(|a| a.ip())
            .collect(),
        None => return Err(Refused::NoHost),
    };
    if addrs.is_empty() {
        return Err(Refused::NoAddress);
    }
    match addrs.into_iter().find(|ip| is_forbidden(*ip)) {
        Some(bad) => Err(Refused::Private(bad)),
        None => Ok(()),
    }
}

/// A DNS resolver for the backend client that drops forbidden addresses, so a name that
/// resolved to a public address at the handshake cannot be rebound to a private one later.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_forbidden(a.ip()))
                .collect();
            if resolved.is_empty() {
                return Err(format!(
                    "{host} resolves only to addresses refused by --deny-private-networks"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(resolved.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(s: &str) -> bool {
        is_forbidden(s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }

    #[test]
    fn private_and_special_ranges_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:db8::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::1",
        ] {
            assert!(forbidden(ip), "{ip} must be forbidden");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2001:4860:4860::8888",
            "2001:1::1",
        ] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }

    #[tokio::test]
    async fn the_guarded_resolver_drops_private_addresses_at_request_time() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap_or_else(|e| panic!("{e}"));
        let result = GuardedResolver.resolve(name).await;
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("--deny-private-networks"), "{message}");
    }
}
