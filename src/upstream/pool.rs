//! Upstream connections: HTTP/1.1 keep-alive connections to one server, opened on demand and
//! kept in a small LIFO pool. A response body hands its connection back when it has been read to
//! the end; a body dropped early takes its connection down with it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::config::ServerAddr;
use crate::proto::h1::upstream::Conn;

/// Idle connections older than this are closed rather than reused: upstream servers close idle
/// keep-alive connections on their own schedule, and a request sent on one that is closing fails.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// Idle connections kept per server.
const MAX_IDLE: usize = 256;

/// Why no connection could be opened.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    /// The connection closed before the request could be sent.
    Closed,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Closed => f.write_str("connection closed before the request was sent"),
        }
    }
}

/// The idle connections of one upstream server, oldest first.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<VecDeque<(Box<Conn>, Instant)>>,
}

impl Pool {
    /// The most recently used idle connection that is still open.
    pub fn take(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop_back() {
            if conn.is_open() && since.elapsed() < MAX_IDLE_AGE {
                return Some(conn);
            }
        }
        None
    }

    pub fn put(&self, conn: Box<Conn>) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // the oldest go first: past their age, closed by the server (else they would sit in
        // CLOSE_WAIT under the busy top of the stack), or over the count
        while let Some((oldest, since)) = idle.front()
            && (idle.len() >= MAX_IDLE || now.duration_since(*since) >= MAX_IDLE_AGE || !oldest.is_open())
        {
            idle.pop_front();
        }
        idle.push_back((conn, now));
    }

    /// Closes every idle connection (the server went down).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Opens a new connection (TCP_NODELAY).
pub async fn connect(addr: &ServerAddr, timeout: Duration) -> Result<Box<Conn>, ConnectError> {
    let stream = tokio::time::timeout(timeout, async {
        match addr {
            ServerAddr::Ip(a) => TcpStream::connect(*a).await,
            ServerAddr::Name(host, port) => TcpStream::connect((host.as_str(), *port)).await,
        }
    })
    .await
    .map_err(|_| ConnectError::Timeout)?
    .map_err(ConnectError::Io)?;
    let _ = stream.set_nodelay(true);
    Ok(Conn::new(stream))
}
