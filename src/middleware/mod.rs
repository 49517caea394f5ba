//! Per-route policy and response filters: rate limiting before the handler, security headers
//! and compression after it.

pub mod compression;
pub mod headers;
pub mod ratelimit;
