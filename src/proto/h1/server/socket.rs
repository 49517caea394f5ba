//! What the server side's reader and writer share: the socket underneath (plain TCP or not),
//! the buffer sizes, one read into the connection's buffer, and the buffers a connection takes
//! only while it works: an idle connection holds none. Its next request is read into the
//! worker thread's scratch space and copied into a buffer just large enough once it has come;
//! response heads are written into buffers from a small per-worker pool, given back when the
//! connection goes idle.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use crate::proto::proxy_protocol::Prefixed;

/// The read buffer grows by this much when it runs low.
pub(super) const READ_SIZE: usize = 16 * 1024;
/// Body frames up to this size are copied behind the head (one write); larger ones go out as
/// they are (`writev`, or `sendfile` for a sealed file).
pub(super) const COPY_MAX: usize = 16 * 1024;
/// The same, when the transport cannot write several buffers at once (TLS).
pub(super) const COPY_MAX_FLAT: usize = 64 * 1024;
/// A response buffer taken new starts this large (most heads, and small bodies behind them).
const OUT_SIZE: usize = 4 * 1024;
/// Response buffers larger than this go back to the allocator, not to the pool.
const OUT_KEEP: usize = 16 * 1024;
/// Response buffers each worker thread keeps for its connections' next responses.
const SPARE_MAX: usize = 16;

thread_local! {
    /// Where a connection holding no read buffer reads its next bytes.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
    /// Response buffers given back by connections that went idle.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A response buffer for a connection that holds none.
pub(super) fn take_out() -> Vec<u8> {
    SPARE
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(OUT_SIZE))
}

/// Gives an idle connection's response buffer back to the pool (or the allocator).
pub(super) fn give_back_out(mut out: Vec<u8>) {
    if out.capacity() == 0 || out.capacity() > OUT_KEEP {
        return;
    }
    out.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARE_MAX {
            spare.push(out);
        }
    });
}

/// [`fill`] for a connection between requests: one that holds no read buffer reads into the
/// worker's scratch space and takes a buffer the size of what came.
pub(super) fn fill_idle<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() != 0 {
        return fill(io, buf, cx);
    }
    SCRATCH.with_borrow_mut(|scratch| {
        let mut read = ReadBuf::new(scratch);
        ready!(Pin::new(io).poll_read(cx, &mut read))?;
        let got = read.filled();
        buf.reserve(got.len());
        buf.extend_from_slice(got);
        Poll::Ready(Ok(got.len()))
    })
}

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
