//! One upstream server: its address, its pool of idle connections, its health (active checks
//! and passive failures) and its load (exchanges in flight).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::config::ServerAddr;
use crate::proto::h1::pool::{Lease, Pool};
use crate::proto::h1::upstream::Conn;

/// Without active health checks, a server taken out by failed requests is tried again after this.
const PASSIVE_RETRY_AFTER: Duration = Duration::from_secs(10);

/// One upstream server: address, pool, health and load.
pub struct Server {
    pub addr: ServerAddr,
    pub label: Arc<str>,
    pub pool: Arc<Pool<Conn>>,
    pub(super) hash: u64,
    active_checks: bool,
    up: AtomicBool,
    /// Consecutive failed requests (passive health).
    req_fails: AtomicU32,
    /// Consecutive failed / passed active checks.
    check_fails: AtomicU32,
    check_passes: AtomicU32,
    /// When it was taken out, in ms since `epoch`.
    down_at_ms: AtomicU64,
    epoch: Instant,
}

impl Server {
    pub(super) fn new(addr: ServerAddr, active_checks: bool) -> Self {
        let label = addr.to_string();
        Self {
            hash: label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            }),
            addr,
            label: label.into(),
            pool: Arc::new(Pool::default()),
            active_checks,
            up: AtomicBool::new(true),
            req_fails: AtomicU32::new(0),
            check_fails: AtomicU32::new(0),
            check_passes: AtomicU32::new(0),
            down_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Up, or (without active checks) down long enough to deserve another try.
    pub(super) fn available(&self) -> bool {
        self.is_up()
            || (!self.active_checks
                && self.epoch.elapsed().as_millis() as u64
                    >= self.down_at_ms.load(Relaxed) + PASSIVE_RETRY_AFTER.as_millis() as u64)
    }

    pub fn inflight(&self) -> usize {
        self.pool.inflight()
    }

    /// Counts a request in flight until the [`Lease`] drops; its connection goes back to
    /// this server's pool through it.
    pub fn begin(&self) -> Lease<Conn> {
        self.pool.begin()
    }

    /// A request got a response from this server.
    pub fn record_success(&self) {
        self.req_fails.store(0, Relaxed);
        if !self.active_checks && !self.is_up() {
            self.set_up(true, "a request succeeded");
        }
    }

    /// A request could not connect, or the connection broke before a response.
    pub fn record_failure(&self, max_fails: u32) {
        self.check_passes.store(0, Relaxed);
        let fails = self.req_fails.fetch_add(1, Relaxed) + 1;
        if fails >= max_fails && self.is_up() {
            self.set_up(false, &format!("{fails} failed requests"));
        } else if !self.active_checks && !self.is_up() {
            // a retry after PASSIVE_RETRY_AFTER failed: wait again
            self.down_at_ms.store(self.epoch.elapsed().as_millis() as u64, Relaxed);
        }
    }

    /// The result of an active health check.
    pub fn record_check(&self, ok: bool, fails: u32, passes: u32) {
        if ok {
            self.check_fails.store(0, Relaxed);
            let n = self.check_passes.fetch_add(1, Relaxed) + 1;
            if !self.is_up() && n >= passes {
                self.set_up(true, &format!("{n} passed health checks"));
            }
        } else {
            self.check_passes.store(0, Relaxed);
            let n = self.check_fails.fetch_add(1, Relaxed) + 1;
            if self.is_up() && n >= fails {
                self.set_up(false, &format!("{n} failed health checks"));
            }
        }
    }

    fn set_up(&self, up: bool, why: &str) {
        if self.up.swap(up, Relaxed) == up {
            return;
        }
        if up {
            self.check_passes.store(0, Relaxed);
            self.req_fails.store(0, Relaxed);
            tracing::info!(server = %self.label, "upstream server is up again: {why}");
        } else {
            self.down_at_ms.store(self.epoch.elapsed().as_millis() as u64, Relaxed);
            self.pool.clear();
            tracing::warn!(server = %self.label, "upstream server is down: {why}");
        }
    }
}
