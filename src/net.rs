//! Listening sockets, for every listener of the process: bound with SO_REUSEPORT (a new gateway
//! process can bind the same addresses while the old one drains), and accepted with a pause
//! when the process runs out of file descriptors or memory, where a loop that retried at once
//! would spin a core while the backlog waits; and the count of open client connections, for
//! `max_connections`, `max_connections_per_ip` and draining at shutdown.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How long the accept loop waits after an error that is not one connection's.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Binds a listening TCP socket (SO_REUSEADDR + SO_REUSEPORT, backlog 1024).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// The next connection. Errors that concern one connection only (it went away before it was
/// taken) are skipped; any other (out of descriptors, out of memory) is logged and waited out
/// for [`ACCEPT_BACKOFF`] before the next try.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                tracing::error!(listener = ?listener.local_addr().ok(), "accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Errors that concern one connection only (it went away before we took it).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    )
}

/// Counts open client connections, for `max_connections`, `max_connections_per_ip`, and
/// draining at shutdown.
#[derive(Default)]
pub struct ConnTracker {
    open: AtomicUsize,
    /// The most open at once since [`ConnTracker::take_peak`] last asked.
    peak: AtomicUsize,
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
        self.peak.fetch_max(prev + 1, Relaxed);
        Some(ConnSlot {
            tracker: self.clone(),
            ip: None,
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// The most connections open at once since the last call (or since the start).
    pub fn take_peak(&self) -> usize {
        self.peak.swap(self.open(), Relaxed)
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
