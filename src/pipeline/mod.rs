//! The request pipeline: the running snapshot a request is served from ([`snapshot`]: routes
//! compiled to handlers, with the upstreams, rate-limit zones and file cache they use), and the
//! service that takes each request through it ([`service`]); beside the snapshot, the
//! long-lived parts that outlive any one config ([`state`]).

mod cached;
pub mod service;
pub mod snapshot;
pub mod state;
