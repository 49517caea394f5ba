//! The gateway's shared state: the current config snapshot (swapped whole on reload) and the
//! facts about the running listeners that handlers need. Long-lived parts (upstreams) hang off
//! the snapshot and are carried from one snapshot to the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::config::snapshot::Snapshot;

pub struct State {
    snapshot: ArcSwap<Snapshot>,
    generation: AtomicU64,
    /// The HTTPS listener's port, for redirects from the plain listener (0 = none).
    https_port: AtomicU16,
}

impl State {
    /// Builds the first snapshot (generation 1). Must run inside the runtime.
    pub fn new(config: Arc<Config>) -> Arc<Self> {
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(Snapshot::build(config, None, 1)),
            generation: AtomicU64::new(1),
            https_port: AtomicU16::new(0),
        })
    }

    /// The snapshot a request should use from start to end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Swaps in a new config; returns its generation.
    pub fn apply(&self, config: Arc<Config>) -> u64 {
        let generation = self.generation.fetch_add(1, Relaxed) + 1;
        let previous = self.snapshot.load_full();
        let next = Snapshot::build(config, Some(&previous), generation);
        self.snapshot.store(Arc::new(next));
        generation
    }

    pub fn https_port(&self) -> Option<u16> {
        match self.https_port.load(Relaxed) {
            0 => None,
            p => Some(p),
        }
    }

    pub fn set_https_port(&self, port: Option<u16>) {
        self.https_port.store(port.unwrap_or(0), Relaxed);
    }
}
