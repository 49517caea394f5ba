//! The request pipeline: the running snapshot a request is served from ([`snapshot`]: routes
//! compiled to handlers, with the upstreams, rate-limit zones and file cache they use), and the
//! service that takes each request through it ([`service`]).

pub mod service;
pub mod snapshot;
