//! The keep-alive connections of one upstream server, kept in a small LIFO pool, and the
//! exchanges in flight on it. A response body holds a [`Lease`] on the pool and hands its
//! connection back when it has been read to the end; a body dropped early takes its connection
//! down with it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Idle connections older than this are closed rather than reused: upstream servers close idle
/// keep-alive connections on their own schedule, and a request sent on one that is closing fails.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// Idle connections kept per server.
const MAX_IDLE: usize = 256;

/// A connection a pool can keep.
pub trait Reusable {
    /// Still open, with nothing unasked sent by the server.
    fn is_open(&self) -> bool;
}

/// The connections of one upstream server: the idle ones, oldest first, and a count of the
/// exchanges in flight.
pub struct Pool<C> {
    idle: Mutex<VecDeque<(Box<C>, Instant)>>,
    inflight: AtomicUsize,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Self {
            idle: Mutex::new(VecDeque::new()),
            inflight: AtomicUsize::new(0),
        }
    }
}

impl<C: Reusable> Pool<C> {
    /// Counts an exchange in flight until the [`Lease`] drops.
    pub fn begin(self: &Arc<Self>) -> Lease<C> {
        self.inflight.fetch_add(1, Relaxed);
        Lease(self.clone())
    }

    /// Exchanges in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Relaxed)
    }

    /// The most recently used idle connection that is still open.
    pub fn take(&self) -> Option<Box<C>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop_back() {
            if conn.is_open() && since.elapsed() < MAX_IDLE_AGE {
                return Some(conn);
            }
        }
        None
    }

    pub fn put(&self, conn: Box<C>) {
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

/// An exchange in flight on a pool's server, until dropped. A thin pointer: a response body
/// carries it, and every request's future carries the body type.
pub struct Lease<C: Reusable>(Arc<Pool<C>>);

impl<C: Reusable> Lease<C> {
    /// Takes back a connection that can carry another request.
    pub fn put(&self, conn: Box<C>) {
        self.0.put(conn);
    }
}

impl<C: Reusable> Drop for Lease<C> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}
