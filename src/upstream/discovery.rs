//! Server discovery: an upstream server written as a name (`backend:8000`) stands for every
//! address the name resolves to, so `docker compose up --scale backend=3` spreads load over
//! three replicas. Names are resolved at start and again on each health-check interval (5 s
//! without checks); servers that stay keep their health and pools. `server.hosts_file`, in
//! `/etc/hosts` format, answers before DNS (re-read each time).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::group::Upstream;
use crate::config::{ServerAddr, UpstreamSpec};

/// Re-resolution period without active health checks.
const DEFAULT_EVERY: Duration = Duration::from_secs(5);

/// Every address of every server of `spec`, in the order written (a name's addresses sorted),
/// without repeats (blocking: DNS).
pub fn resolve_all(spec: &UpstreamSpec) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for s in &spec.servers {
        let found = match s {
            ServerAddr::Ip(a) => vec![*a],
            ServerAddr::Name(host, port) => {
                let mut found = resolve(host, *port, spec.hosts_file.as_deref());
                if found.is_empty() {
                    tracing::warn!(upstream = %spec.name, server = %s, "server name does not resolve");
                }
                found.sort();
                found
            }
        };
        for a in found {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

fn resolve(host: &str, port: u16, hosts_file: Option<&Path>) -> Vec<SocketAddr> {
    if let Some(path) = hosts_file {
        let from_file = hosts_lookup(&std::fs::read_to_string(path).unwrap_or_default(), host);
        if !from_file.is_empty() {
            return from_file.into_iter().map(|ip| SocketAddr::new(ip, port)).collect();
        }
    }
    (host, port).to_socket_addrs().map(|a| a.collect()).unwrap_or_default()
}

/// The addresses `/etc/hosts`-format `text` gives `host`.
fn hosts_lookup(text: &str, host: &str) -> Vec<IpAddr> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let ip: IpAddr = parts.next()?.parse().ok()?;
            parts.any(|n| n.eq_ignore_ascii_case(host)).then_some(ip)
        })
        .collect()
}

/// Re-resolves the upstream's names until it is dropped (nothing to do for plain addresses).
pub(super) fn spawn(upstream: &Arc<Upstream>) {
    if !upstream.spec.servers.iter().any(|s| matches!(s, ServerAddr::Name(..))) {
        return;
    }
    let every = upstream.spec.health.as_ref().map_or(DEFAULT_EVERY, |h| h.interval);
    let weak = Arc::downgrade(upstream);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(up) = weak.upgrade() else { break };
            let spec = up.spec.clone();
            let Ok(addrs) = tokio::task::spawn_blocking(move || resolve_all(&spec)).await else {
                break;
            };
            // a failed lookup keeps the servers we have rather than dropping them all
            if !addrs.is_empty() {
                up.set_servers(addrs);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files() {
        let text = "127.0.0.1 localhost\n# comment\n10.0.0.2 backend other\n10.0.0.3\tbackend # replica 2\n";
        assert_eq!(
            hosts_lookup(text, "backend"),
            vec!["10.0.0.2".parse::<IpAddr>().unwrap(), "10.0.0.3".parse().unwrap()]
        );
        assert_eq!(hosts_lookup(text, "BACKEND").len(), 2);
        assert!(hosts_lookup(text, "missing").is_empty());
    }

    #[test]
    fn names_resolve_to_every_address() {
        let addrs = resolve("localhost", 8000, None);
        assert!(
            addrs.iter().all(|a| a.port() == 8000 && a.ip().is_loopback()),
            "{addrs:?}"
        );
        assert!(!addrs.is_empty());
    }
}
