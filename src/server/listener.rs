//! The client-facing listeners' accept loops and connection caps: over `max_connections` (or
//! `max_connections_per_ip`), a new connection is closed at once without stalling the others.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::conn;
use crate::http::context::ConnInfo;
use crate::pipeline::state::State;
use crate::proto::client_ip::canonical;

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
    let Some(mut slot) = state.connections().try_acquire(server.max_connections) else {
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
    conn::start(state, stream, info, slot);
}
