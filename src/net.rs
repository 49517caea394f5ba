//! Listening sockets, for every listener of the process: bound with SO_REUSEPORT (a new gateway
//! process can bind the same addresses while the old one drains), and accepted with a pause
//! when the process runs out of file descriptors or memory, where a loop that retried at once
//! would spin a core while the backlog waits.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

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
