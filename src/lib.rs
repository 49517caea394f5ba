//! orta-gateway: an edge gateway that replaces nginx and certbot in one binary.
//!
//! A request flows one way: listener (`server`) → TLS (`tls`) → HTTP/1.1 or HTTP/2 (`server`,
//! `http`) → `router` → handler (`handler`: proxy to an `upstream`, static files, redirect) → response filters (`middleware`) → response. The
//! running config is one immutable snapshot (`config`, `state`) swapped whole on reload.

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
