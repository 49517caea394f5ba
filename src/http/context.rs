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
    /// `remote`'s address as a header value, made once per connection (forwarding headers).
    pub remote_value: std::sync::OnceLock<http::HeaderValue>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            remote: peer,
            local,
            tls,
            tls_version: None,
            remote_value: std::sync::OnceLock::new(),
        }
    }

    /// The client's address (`remote`, IPv4-mapped addresses unwrapped) as a header value.
    pub fn remote_header(&self) -> &http::HeaderValue {
        self.remote_value
            .get_or_init(|| ip_value(crate::proto::client_ip::canonical(self.remote.ip())))
    }
}

/// An IP address as a header value: formatted on the stack, one allocation, shared by clones.
pub fn ip_value(ip: std::net::IpAddr) -> http::HeaderValue {
    use std::io::Write;
    let mut buf = [0u8; 45];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{ip}");
    let n = cur.position() as usize;
    // an IP address is always a valid header value
    http::HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&buf[..n]))
        .unwrap_or(http::HeaderValue::from_static("unknown"))
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
