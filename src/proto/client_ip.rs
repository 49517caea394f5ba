//! Who the client is: the connection's remote address, unless that address is a trusted proxy
//! (`server.trusted_proxies`), in which case the right-most address of `X-Forwarded-For` that is
//! not itself a trusted proxy. A client can prepend anything to `X-Forwarded-For`; only the hops
//! our own proxies appended are believed.

use std::net::IpAddr;

use http::HeaderValue;
use ipnet::IpNet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a request that came from `remote`.
    pub fn client_ip(&self, remote: IpAddr, xff: Option<&HeaderValue>) -> IpAddr {
        let remote = canonical(remote);
        if self.nets.is_empty() || !self.contains(remote) {
            return remote;
        }
        let Some(list) = xff.and_then(|v| v.to_str().ok()) else {
            return remote;
        };
        let mut client = remote;
        for hop in list.rsplit(',') {
            match parse_hop(hop.trim()) {
                Some(ip) => {
                    client = ip;
                    if !self.contains(ip) {
                        break;
                    }
                }
                // garbage in the header: trust nothing beyond the last good hop
                None => break,
            }
        }
        client
    }
}

/// An address as `X-Forwarded-For` writes it: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:80`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    None
}

/// IPv4-mapped IPv6 addresses as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses `10.0.0.0/8` or a plain address (a /32 or /128).
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let t = TrustedProxies::new(vec![parse_net("10.0.0.0/8").unwrap()]);
        let xff = HeaderValue::from_static("1.1.1.1");
        assert_eq!(t.client_ip(ip("203.0.113.9"), Some(&xff)), ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), Some(&xff)),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn trusted_peers_give_the_rightmost_untrusted_hop() {
        let t = TrustedProxies::new(vec![
            parse_net("10.0.0.0/8").unwrap(),
            parse_net("192.168.1.1").unwrap(),
        ]);
        let xff = HeaderValue::from_static("6.6.6.6, 203.0.113.9, 192.168.1.1, 10.1.2.3");
        assert_eq!(t.client_ip(ip("10.0.0.1"), Some(&xff)), ip("203.0.113.9"));
        let xff = HeaderValue::from_static("[2001:db8::1]:443");
        assert_eq!(t.client_ip(ip("10.0.0.1"), Some(&xff)), ip("2001:db8::1"));
        let xff = HeaderValue::from_static("evil, 10.9.9.9");
        assert_eq!(t.client_ip(ip("10.0.0.1"), Some(&xff)), ip("10.9.9.9"));
        assert_eq!(t.client_ip(ip("10.0.0.1"), None), ip("10.0.0.1"));
        assert_eq!(
            t.client_ip(ip("::ffff:10.0.0.1"), Some(&HeaderValue::from_static("1.2.3.4"))),
            ip("1.2.3.4")
        );
    }
}
