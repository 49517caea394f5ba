//! Upstreams: the servers behind a name ([`group`]: the list and the choice of a server per
//! request), each server's pool, health and load ([`server`], [`pool`], [`health`]), and the
//! names resolved to servers ([`discovery`]). An upstream is long-lived state: a reload that
//! leaves its config unchanged keeps it, with its health and pools.

pub mod discovery;
pub mod group;
pub mod health;
pub mod pool;
pub mod server;

use std::sync::Arc;

pub use group::Upstream;
pub use server::Server;

use crate::config::UpstreamSpec;

// here rather than in `group`: starting an upstream runs discovery, and discovery updates the
// group, so the group does not import discovery
impl Upstream {
    /// Creates the upstream (resolving server names) and starts its health checks and name
    /// re-resolution, which stop when it is dropped.
    pub fn start(spec: UpstreamSpec) -> Arc<Self> {
        let addrs = discovery::resolve_all(&spec);
        let up = Upstream::new(spec);
        up.set_servers(addrs);
        discovery::spawn(&up);
        up
    }
}
