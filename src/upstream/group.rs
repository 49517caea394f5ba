//! An upstream: a named group of servers, the server list kept as discovery finds it (servers
//! that stay keep their health and pools), and the choice of a server per request (round
//! robin, least connections, or a sticky hash of the client IP).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use arc_swap::ArcSwap;

use super::health;
use super::server::Server;
use crate::config::{Balance, ServerAddr, UpstreamSpec};

pub struct Upstream {
    pub spec: UpstreamSpec,
    /// The servers now: server names (`backend:8000`) are resolved to every address they have,
    /// again on each health-check interval (docker's `--scale` adds and removes replicas).
    servers: ArcSwap<Vec<Arc<Server>>>,
    rr: AtomicUsize,
}

impl Upstream {
    /// An upstream with no servers yet ([`Upstream::start`] resolves them).
    pub(super) fn new(spec: UpstreamSpec) -> Arc<Self> {
        Arc::new(Self {
            spec,
            servers: ArcSwap::from_pointee(Vec::new()),
            rr: AtomicUsize::new(0),
        })
    }

    /// The servers as they are now (one load per request: indexes refer to this list).
    pub fn servers(&self) -> Arc<Vec<Arc<Server>>> {
        self.servers.load_full()
    }

    /// Replaces the server list, keeping the servers (health, pools) whose address stays.
    pub(crate) fn set_servers(&self, addrs: Vec<std::net::SocketAddr>) {
        let current = self.servers.load_full();
        if current.len() == addrs.len() && current.iter().zip(&addrs).all(|(s, a)| s.addr == ServerAddr::Ip(*a)) {
            return;
        }
        let next: Vec<Arc<Server>> = addrs
            .iter()
            .map(|a| {
                current
                    .iter()
                    .find(|s| s.addr == ServerAddr::Ip(*a))
                    .cloned()
                    .unwrap_or_else(|| {
                        let s = Arc::new(Server::new(ServerAddr::Ip(*a), self.spec.health.is_some()));
                        health::spawn(&s, self.spec.health.as_ref());
                        s
                    })
            })
            .collect();
        if !current.is_empty() {
            tracing::info!(upstream = %self.spec.name, servers = ?addrs, "upstream servers changed");
        }
        self.servers.store(Arc::new(next));
    }

    /// Picks a server of `servers` (from [`Upstream::servers`]) for a request from `client`,
    /// skipping the ones already `tried` and those that are down; `None` when none is left.
    pub fn pick(&self, servers: &[Arc<Server>], client: IpAddr, tried: &[usize]) -> Option<usize> {
        let n = servers.len();
        let candidate = |i: &usize| !tried.contains(i) && servers[*i].available();
        match self.spec.balance {
            Balance::RoundRobin => {
                let start = self.rr.fetch_add(1, Relaxed);
                (0..n).map(|k| (start + k) % n).find(candidate)
            }
            Balance::LeastConn => {
                // ties go round robin, so equal servers share the load
                let start = self.rr.fetch_add(1, Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(candidate)
                    .min_by_key(|i| servers[*i].inflight())
            }
            Balance::IpHash => {
                // rendezvous hashing: a client keeps its server while that server is up, and
                // only the clients of a server that goes down move
                let key = ip_key(client);
                (0..n).filter(candidate).max_by_key(|i| mix(key ^ servers[*i].hash))
            }
        }
    }
}

fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u64,
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            (x as u64) ^ ((x >> 64) as u64).rotate_left(17)
        }
    }
}

/// splitmix64's finaliser: a cheap, well-spread 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn spec(balance: Balance, n: u16) -> UpstreamSpec {
        UpstreamSpec {
            name: "u".into(),
            servers: (0..n)
                .map(|i| ServerAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 9000 + i))))
                .collect(),
            balance,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            retries: 1,
            health: None,
            hosts_file: None,
        }
    }

    fn upstream(balance: Balance, n: u16) -> Upstream {
        let spec = spec(balance, n);
        let servers: Vec<Arc<Server>> = spec
            .servers
            .iter()
            .map(|a| Arc::new(Server::new(a.clone(), false)))
            .collect();
        Upstream {
            servers: ArcSwap::from_pointee(servers),
            spec,
            rr: AtomicUsize::new(0),
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn round_robin_cycles_and_skips_down_and_tried() {
        let u = upstream(Balance::RoundRobin, 3);
        let picks: Vec<usize> = (0..6).map(|_| u.pick(&u.servers(), IP, &[]).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        u.servers()[1].record_failure(1);
        let picks: Vec<usize> = (0..4).map(|_| u.pick(&u.servers(), IP, &[]).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert_eq!(u.pick(&u.servers(), IP, &[0, 2]), None);
    }

    #[test]
    fn least_conn_prefers_the_idle_server() {
        let u = upstream(Balance::LeastConn, 2);
        let _busy = u.servers()[0].begin();
        for _ in 0..4 {
            assert_eq!(u.pick(&u.servers(), IP, &[]), Some(1));
        }
    }

    #[test]
    fn ip_hash_is_sticky_and_spreads() {
        let u = upstream(Balance::IpHash, 4);
        let mut seen = std::collections::HashSet::new();
        for i in 0..64u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i));
            let first = u.pick(&u.servers(), ip, &[]).unwrap();
            assert_eq!(u.pick(&u.servers(), ip, &[]), Some(first));
            seen.insert(first);
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn active_checks_take_out_and_bring_back() {
        let s = Server::new(ServerAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 1))), true);
        s.record_check(false, 2, 2);
        assert!(s.is_up());
        s.record_check(false, 2, 2);
        assert!(!s.is_up());
        s.record_check(true, 2, 2);
        assert!(!s.is_up());
        s.record_check(true, 2, 2);
        assert!(s.is_up());
    }
}
