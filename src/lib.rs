//! orta-gateway: an edge gateway that replaces nginx and certbot in one binary.
//!
//! The crate stands in layers; each imports only from the layers below it, and no files import
//! each other in a circle (`tests/layers.rs` fails the build on one):
//!
//! 1. foundations, importing nothing of the crate: `zerocopy` (sealed-memory bodies sent with
//!    sendfile), `fs_atomic`, `memory` (giving memory back after bursts), `net` (listening
//!    sockets, accept with back-off, connection caps), `pem`
//!    (certificates and keys as files, the crypto provider), `router` (host + longest prefix);
//! 2. `proto`: the one HTTP/1 codec (server side, upstream side, one-shot client), the body
//!    type, the PROXY protocol, the client's address behind trusted proxies;
//! 3. `config`: the file's shape, its validation with positioned diagnostics, the validated
//!    `Config` as plain data; it starts nothing;
//! 4. runtime parts, one room each: `tls` (+ ACME), `upstream` (servers, pools, balancing,
//!    health, discovery), `middleware` (rate limits, headers, compression), `handler` (files,
//!    proxy, redirect), `cache` (the proxy response cache), `telemetry` (access log, metrics),
//!    `http` (request context, the gateway's own error answers, conditional requests),
//!    `cluster` (state shared with other gateways through Redis: global rate limits, the ACME
//!    lease, sealed values);
//! 5. `pipeline`: the running snapshot (routes compiled to handlers), the state beside it
//!    (metrics, access log, certificates, connections, shutdown) and the service that takes each
//!    request through them;
//! 6. `server` (listeners, connections, reload, shutdown), `admin`, `health` (the probe of a
//!    running gateway behind `orta-gateway health`) and `import` (nginx configurations
//!    translated by `orta-gateway import-nginx`); `server::embedded` is the small interface
//!    through which a service runs in-process on listeners the server binds;
//! 7. `api`, the bundled API: it plugs into `server::embedded` (the binary passes
//!    `api::bundled()` to `server::run`), and no layer below imports it.
//!
//! Public are only the modules the binary, the tests, the benches and the fuzz targets use.

// no function over 80 lines (clippy.toml), outside the integration tests
#![warn(clippy::too_many_lines)]

mod admin;
pub mod api;
pub mod cache;
pub mod cluster;
pub mod config;
mod fs_atomic;
pub mod handler;
pub mod health;
pub mod http;
pub mod import;
mod memory;
pub mod middleware;
mod net;
pub mod pem;
mod pipeline;
pub mod proto;
pub mod router;
pub mod server;
pub mod telemetry;
pub mod tls;
mod upstream;
pub mod zerocopy;
