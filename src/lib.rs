//! orta-gateway: an edge gateway that replaces nginx and certbot in one binary.
//!
//! The crate stands in layers; each imports only from the layers below it, and no files import
//! each other in a circle (`tests/layers.rs` fails the build on one):
//!
//! 1. foundations, importing nothing of the crate: `zerocopy` (sealed-memory bodies sent with
//!    sendfile), `fs_atomic`, `net` (listening sockets, accept with back-off, connection caps), `pem`
//!    (certificates and keys as files, the crypto provider), `router` (host + longest prefix);
//! 2. `proto`: the one HTTP/1 codec (server side, upstream side, one-shot client), the body
//!    type, the PROXY protocol, the client's address behind trusted proxies;
//! 3. `config`: the file's shape, its validation with positioned diagnostics, the validated
//!    `Config` as plain data; it starts nothing;
//! 4. runtime parts, one room each: `tls` (+ ACME), `upstream` (servers, pools, balancing,
//!    health, discovery), `middleware` (rate limits, headers, compression), `handler` (files,
//!    proxy, redirect), `telemetry` (access log, metrics), `http` (request context, the
//!    gateway's own error answers);
//! 5. `pipeline`: the running snapshot (routes compiled to handlers) and the service that
//!    takes each request through it; `state`, the snapshot and the long-lived parts beside it;
//! 6. `server` (listeners, connections, reload, shutdown) and `admin`;
//! 7. `api`, the bundled API, served on its own listener. `server` still opens its database
//!    and starts it: the one import that runs upward.

// no function over 80 lines (clippy.toml), outside the integration tests
#![warn(clippy::too_many_lines)]

pub mod admin;
pub mod api;
pub mod config;
pub mod fs_atomic;
pub mod handler;
pub mod http;
pub mod middleware;
pub mod net;
pub mod pem;
pub mod pipeline;
pub mod proto;
pub mod router;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod zerocopy;
