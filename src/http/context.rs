//! What a handler knows about the request beyond its head: the connection it came on, the
//! client's address, the request id.

use std::net::{IpAddr, SocketAddr};

use http::HeaderValue;

/// Facts about one client connection, fixed for its lifetime.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Who connected: the TCP peer, or the client a trusted proxy named in a PROXY header.
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// Accepted on the TLS listener.
    pub tls: bool,
    /// The negotiated TLS version, once the handshake is done.
    pub tls_version: Option<&'static str>,
}

/// Per-request facts shared by the router, handlers and filters.
#[derive(Debug)]
pub struct RequestCtx<'a> {
    pub conn: &'a ConnInfo,
    pub client_ip: IpAddr,
    pub request_id: HeaderValue,
    /// The request's `Host` (or `:authority`) as sent, port included.
    pub host_header: Option<HeaderValue>,
}

impl RequestCtx<'_> {
    pub fn scheme(&self) -> &'static str {
        if self.conn.tls { "https" } else { "http" }
    }
}
