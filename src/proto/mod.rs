//! The protocols the gateway speaks, below everything that knows about config, routes or
//! upstreams: the one HTTP/1 codec (`h1`, for the client-facing server, the upstream client,
//! the admin listener and the bundled API alike), the HTTP/3 adapter (`h3`: request bodies
//! from QUIC streams), the body type that flows through the gateway, the PROXY protocol, the client's address behind trusted proxies (`X-Forwarded-For`),
//! reused header maps, pooled blocks for each request's future, and the lifecycle of a client
//! connection (header and keep-alive timers, graceful close).

pub(crate) mod block;
pub mod body;
pub mod client_ip;
pub mod h1;
pub mod h3;
pub(crate) mod lifecycle;
pub(crate) mod maps;
pub mod proxy_protocol;

/// The error type of every body in the gateway.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
