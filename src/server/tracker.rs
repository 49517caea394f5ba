//! Connection caps: counts open client connections for `max_connections`,
//! `max_connections_per_ip`, and draining at shutdown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

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
