//! Listening sockets and their accept loops. Sockets are bound with SO_REUSEPORT so a new
//! gateway process can bind the same addresses while the old one drains (zero-downtime restart).
//! Over `max_connections`, a new connection is closed at once without stalling the others.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;

use super::conn;
use crate::http::context::ConnInfo;
use crate::state::State;

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

/// Counts open client connections, for `max_connections` and for draining at shutdown.
#[derive(Default)]
pub struct ConnTracker {
    open: AtomicUsize,
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
        Some(ConnSlot(self.clone()))
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
pub struct ConnSlot(Arc<ConnTracker>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Accepts connections until shutdown, each served on its own task.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    tracker: Arc<ConnTracker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // out of file descriptors or memory: back off instead of spinning
                tracing::error!(listener = ?local, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let max = state.snapshot().config.server.max_connections;
        let Some(slot) = tracker.try_acquire(max) else {
            tracing::debug!(%peer, "max_connections reached: connection closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            peer,
            local: stream.local_addr().unwrap_or(peer),
            tls: tls.is_some(),
        };
        tokio::spawn(conn::serve(
            state.clone(),
            stream,
            info,
            tls.clone(),
            shutdown.clone(),
            slot,
        ));
    }
}

/// Errors that concern one connection only (it went away before we took it).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    )
}
