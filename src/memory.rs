//! Giving memory back after a burst. When many connections close, the allocator keeps the pages
//! their state used: glibc returns free memory at the top of a heap by itself, not free pages
//! between live allocations, and each worker thread has its heaps. [`Trimmer`] decides, from
//! the open-connection count sampled once a second, when a burst has gone, and [`trim`] asks
//! the allocator to return every free page.

/// Connections a burst must have left (and at least half of its peak) before a trim.
const BURST: usize = 256;

/// When to trim: after the open count fell by at least [`BURST`] and by half from its high mark
/// since the last trim.
#[derive(Debug, Default)]
pub struct Trimmer {
    high: usize,
}

impl Trimmer {
    /// One sample: `peak`, the most open since the last sample; `open`, open now. True when the
    /// memory should be trimmed now.
    pub fn sample(&mut self, peak: usize, open: usize) -> bool {
        self.high = self.high.max(peak).max(open);
        if self.high >= open + BURST && open <= self.high / 2 {
            self.high = open;
            return true;
        }
        false
    }
}

/// Returns the allocator's free pages to the system (glibc's `malloc_trim`; a no-op elsewhere).
/// It walks every heap: call it from a blocking thread, after bursts, not per request.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reads and updates the allocator's own state, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_follows_a_burst_that_went_not_a_small_dip() {
        let mut t = Trimmer::default();
        assert!(!t.sample(100, 100));
        assert!(!t.sample(120, 10), "a dip of fewer than BURST connections");
        assert!(!t.sample(5000, 4000), "still more than half open");
        assert!(!t.sample(4000, 2600));
        assert!(t.sample(2600, 2400), "the burst went: at most half of its peak left");
        assert!(!t.sample(2400, 2300), "no second trim without a new burst");
        assert!(!t.sample(2300, 1300));
        assert!(t.sample(1300, 1100), "half of the new high mark (2400) is gone");
    }
}
