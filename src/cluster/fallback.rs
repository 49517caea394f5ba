//! Why a call did not use Redis, and the `cluster_fallback_total` counters by that reason.

use prometheus_client::metrics::counter::Counter;

/// Why a call did not use Redis (the `reason` of `cluster_fallback_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Redis did not answer within the timeout.
    Timeout,
    /// No connection (refused, dropped, not yet made).
    Unreachable,
    /// Redis answered with an error.
    Error,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Timeout => "timeout",
            Fallback::Unreachable => "unreachable",
            Fallback::Error => "error",
        }
    }

    pub(super) fn of(e: &redis::RedisError) -> Self {
        if e.is_timeout() {
            Fallback::Timeout
        } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            Fallback::Unreachable
        } else {
            Fallback::Error
        }
    }
}

/// The `cluster_fallback_total` counters, one per reason.
#[derive(Clone, Default)]
pub struct FallbackCounters {
    pub timeout: Counter,
    pub unreachable: Counter,
    pub error: Counter,
}
