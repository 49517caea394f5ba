//! What the server side's reader and writer share: the socket underneath (plain TCP or not),
//! the buffer sizes, and one read into the connection's buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;

use crate::proto::proxy_protocol::Prefixed;

/// The read buffer grows by this much when it runs low.
pub(super) const READ_SIZE: usize = 16 * 1024;
/// Body frames up to this size are copied behind the head (one write); larger ones go out as
/// they are (`writev`, or `sendfile` for a sealed file).
pub(super) const COPY_MAX: usize = 16 * 1024;
/// The same, when the transport cannot write several buffers at once (TLS).
pub(super) const COPY_MAX_FLAT: usize = 64 * 1024;

/// The TCP socket under a transport when body bytes reach it unchanged (plain HTTP, not TLS):
/// there a sealed body can go out with `sendfile`.
pub trait PlainTcp {
    fn plain_tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl PlainTcp for Prefixed<TcpStream> {
    fn plain_tcp(&self) -> Option<&TcpStream> {
        Some(self.get_ref())
    }
}

impl PlainTcp for TcpStream {
    fn plain_tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

/// Reads what the socket has into `buf`, growing it when it runs low.
pub(super) fn fill<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}
