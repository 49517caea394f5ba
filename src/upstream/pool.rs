//! Upstream connections: HTTP/1.1 keep-alive connections to one server, opened on demand and
//! kept in a small LIFO pool. A response body hands its connection back when it has been read to
//! the end; a body dropped early takes its connection down with it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::InflightGuard;
use crate::config::ServerAddr;
use crate::http::body::{Body, BoxError};

/// Idle connections older than this are closed rather than reused: upstream servers close idle
/// keep-alive connections on their own schedule, and a request sent on one that is closing fails.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// Idle connections kept per server.
const MAX_IDLE: usize = 256;

pub type Sender = SendRequest<Body>;

/// Why no connection could be opened.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Handshake(hyper::Error),
    /// The connection closed before the request could be sent.
    Closed,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "HTTP/1.1 handshake failed: {e}"),
            ConnectError::Closed => f.write_str("connection closed before the request was sent"),
        }
    }
}

/// The idle connections of one upstream server.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl Pool {
    /// The most recently used idle connection that is still open.
    pub fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((tx, since)) = idle.pop() {
            if !tx.is_closed() && since.elapsed() < MAX_IDLE_AGE {
                return Some(tx);
            }
        }
        None
    }

    pub fn put(&self, tx: Sender) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_IDLE {
            // the oldest go first
            idle.remove(0);
        }
        idle.push((tx, Instant::now()));
    }

    /// Closes every idle connection (the server went down).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Opens a new HTTP/1.1 connection (TCP_NODELAY, upgrades allowed for WebSockets).
pub async fn connect(addr: &ServerAddr, timeout: Duration) -> Result<Sender, ConnectError> {
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
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(tx)
}

/// An upstream response body that returns its connection to the pool once read to the end.
/// It also holds the server's in-flight count until the body is done.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<(Sender, Arc<Pool>)>,
    _inflight: InflightGuard,
}

impl PooledBody {
    pub fn new(inner: Incoming, tx: Sender, inflight: InflightGuard) -> Self {
        let pool = inflight.server().pool.clone();
        Self {
            inner,
            conn: Some((tx, pool)),
            _inflight: inflight,
        }
    }

    fn release(&mut self) {
        if let Some((tx, pool)) = self.conn.take() {
            pool.put(tx);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // a broken body: the connection is not reusable
                this.conn = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // read to the end (or empty from the start): reusable; else the connection closes
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
