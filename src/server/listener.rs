//! The client-facing listeners' accept loops and connection caps: over `max_connections` (or
//! `max_connections_per_ip`), a new connection is closed at once without stalling the others.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use super::conn;
use crate::http::client_ip::canonical;
use crate::http::context::ConnInfo;
use crate::state::State;

/// Counts open client connections, for `max_connections`, `max_connections_per_ip`, and
/// draining at shutdown.
#[derive(Default)]
pub struct ConnTracker {
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    drained: Notify,
}

impl ConnTracker {
    /// A slot for one more connection, unless `max` are open.
    pub fn try_acquire(self: &Arc<Self>, max: usize) -> Option<ConnSlot> {
        let prev = self.open.fetch_add(1, Relaxed);
        if prev >= max {
            self.release();
            return None;
        }
        Some(ConnSlot {
            tracker: self.clone(),
            ip: None,
        })
    }

    /// Open connections from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        self.per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }

    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    fn release(&self) {
        if self.open.fetch_sub(1, Relaxed) == 1 {
            self.drained.notify_waiters();
        }
    }

    /// Waits until no connection is open.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One open connection; frees its slot when dropped.
pub struct ConnSlot {
    tracker: Arc<ConnTracker>,
    ip: Option<IpAddr>,
}

impl ConnSlot {
    /// Counts this connection against `ip`; false when `ip` already has `max` open.
    pub fn bind_ip(&mut self, ip: IpAddr, max: usize) -> bool {
        let mut map = self.tracker.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n as usize >= max {
            if *n == 0 {
                map.remove(&ip);
            }
            return false;
        }
        *n += 1;
        self.ip = Some(ip);
        true
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut map = self.tracker.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        self.tracker.release();
    }
}

/// Accepts connections until `stop` turns true, each served on its own task. On stop, the
/// connections already waiting in the backlog are taken and served before the socket closes
/// (with SO_REUSEPORT, closing it with connections queued would reset them).
pub async fn accept_loop(listener: TcpListener, tls: bool, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = crate::net::accept(&listener) => accepted,
            _ = stop.changed() => break,
        };
        admit(&state, stream, peer, tls);
    }
    while let Some(Ok((stream, peer))) = futures_util::FutureExt::now_or_never(listener.accept()) {
        admit(&state, stream, peer, tls);
    }
}

/// Applies the connection caps and starts serving an accepted connection.
fn admit(state: &Arc<State>, stream: TcpStream, peer: SocketAddr, tls: bool) {
    let snap = state.snapshot();
    let server = &snap.config.server;
    let Some(mut slot) = state.tracker.try_acquire(server.max_connections) else {
        tracing::debug!(%peer, "max_connections reached: connection closed");
        return;
    };
    // per-client cap; a trusted proxy's connections count against the clients it names
    let peer_ip = canonical(peer.ip());
    if !server.trusted_proxies.contains(peer_ip) && !slot.bind_ip(peer_ip, server.max_connections_per_ip) {
        tracing::debug!(%peer, "max_connections_per_ip reached: connection closed");
        return;
    }
    let _ = stream.set_nodelay(true);
    let info = ConnInfo::new(peer, stream.local_addr().unwrap_or(peer), tls);
    tokio::spawn(conn::serve(state.clone(), stream, info, slot));
}
