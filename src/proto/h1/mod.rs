//! The one HTTP/1 codec of the gateway. Everything that reads or writes an HTTP/1.1 message
//! goes through it: the client-facing server, the upstream client, the admin listener and the
//! bundled API (hyper stays, for HTTP/2 only).
//!
//! - [`request`]: request heads and the framing of their bodies, strictly;
//! - [`response`]: response heads from upstreams and the framing of their bodies;
//! - [`chunked`]: the chunked coding, decoded (strictly for requests) and encoded;
//! - [`body`]: a body read off a buffer by its framing (a length, or chunked);
//! - [`fields`]: the field rules all of them share (lengths, `Connection`, hop-by-hop);
//! - [`encode`]: request and response heads written with the framing the codec chose;
//! - [`server`]: the server side of a connection, for any service;
//! - [`upstream`]: the client side of a proxied exchange, on a connection of a [`pool`];
//! - [`client`]: a one-shot exchange for the gateway's own small fetches.
//!
//! The parsers are pure functions over a buffer, so the fuzz targets (`fuzz/`) and the corpus
//! replay in `tests/codec.rs` run exactly the code that serves requests.

pub mod body;
pub mod chunked;
pub mod client;
pub mod encode;
pub mod fields;
pub(crate) mod pool;
pub mod request;
pub mod response;
pub mod server;
pub mod upstream;
