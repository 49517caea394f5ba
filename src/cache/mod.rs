//! The proxy response cache (like nginx's `proxy_cache`, in memory): zones of stored upstream
//! responses bounded by bytes, shared by the routes that name them and kept across reloads while
//! their settings stay the same. What may be stored and for how long follows RFC 9111 (the
//! upstream's `Cache-Control` and `Expires` first, the route's `ttl` when it says nothing);
//! concurrent misses of one key make one upstream request; expired objects are served while
//! being refreshed (`stale_while_revalidate`) or while the upstream fails (`stale_if_error`).
//!
//! This module keeps, finds and answers from objects; the pipeline decides when to use it.

mod fill;
pub mod policy;
mod respond;
mod store;

pub use fill::{Pending, fill};
pub use store::{Age, CacheStatus, Claim, FillGuard, Object, RouteCache, Zone};
