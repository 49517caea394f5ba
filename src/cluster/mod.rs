//! Cluster mode: several gateways sharing state through the stack's Redis (`[cluster]`). One
//! [`Cluster`] per config, long-lived across reloads while `[cluster]` is unchanged: a
//! multiplexed connection that reconnects by itself (redis `ConnectionManager`), a heartbeat that
//! tells whether Redis answers and which nodes were seen, a pub/sub listener that turns the
//! cluster's announcements into local events, and bounded calls for the others to build on:
//! global rate limits (`limit`), the ACME lease (`lock`), values encrypted with the cluster
//! secret (`seal`). Redis being slow or gone never blocks a caller past its timeout; callers
//! fall back to their local state.

mod conn;
mod direct;
mod fallback;
mod limit;
pub mod lock;
pub mod seal;

pub use conn::{Cluster, ClusterView, ProbeError, probe};
pub use fallback::{Fallback, FallbackCounters};
