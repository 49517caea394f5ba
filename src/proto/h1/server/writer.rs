//! Writing one response of a connection: the head the encoder made, then the body's frames,
//! framed as the head says (Content-Length, chunked, or until close), in as few system calls as
//! the body allows: small frames copied behind the head, large ones written as they are
//! (`writev`), a sealed file by `sendfile` on plain TCP. A client that takes nothing for
//! `send_timeout` is given up on.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::Body as HttpBody;
use tokio::io::AsyncWrite;

use super::socket::{COPY_MAX_FLAT, PlainTcp};
use crate::proto::BoxError;
use crate::proto::h1::chunked;
use crate::proto::h1::response::Framing;
use crate::zerocopy;

/// Writes one response: the head in `out`, then the body's frames.
pub(super) struct Writer<'a, B> {
    pub(super) out: &'a mut Vec<u8>,
    /// How much of `out` is written.
    pub(super) pos: usize,
    /// A large frame to write after `out`.
    pub(super) big: Option<Bytes>,
    /// Framing owed after `big`: a chunk's closing CRLF, and the last chunk once the body
    /// ended.
    pub(super) after_big: &'static [u8],
    pub(super) framing: Framing,
    /// `None` once finished (or when there is no body to send).
    pub(super) body: Option<B>,
    /// The finished body, kept until everything is written: dropping it marks the request
    /// finished, which starts the connection's keep-alive clock.
    pub(super) spent: Option<B>,
    pub(super) copy_max: usize,
    /// The body broke or overran its length: the connection can't carry another response.
    pub(super) broken: bool,
    /// How long a write may wait for the client to take bytes (`server.send_timeout`).
    pub(super) send_timeout: Duration,
    /// Armed while a write waits; dropped at the next progress.
    pub(super) stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<'a, B: HttpBody<Data = Bytes, Error = BoxError> + Unpin> Writer<'a, B> {
    /// A writer of `body` framed by `framing` behind the head already in `out`. Without a
    /// body to send (`Framing::None`), `body` is only held until the head is written.
    pub(super) fn new(
        out: &'a mut Vec<u8>,
        framing: Framing,
        body: B,
        copy_max: usize,
        send_timeout: Duration,
    ) -> Self {
        let (body, spent) = if framing == Framing::None {
            (None, Some(body))
        } else {
            (Some(body), None)
        };
        Writer {
            out,
            pos: 0,
            big: None,
            after_big: b"",
            framing,
            body,
            spent,
            copy_max,
            broken: false,
            send_timeout,
            stall: None,
        }
    }

    pub(super) fn poll_send<T: AsyncWrite + PlainTcp + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.body.is_none() {
                return self.poll_flush(io, cx);
            }
            if self.big.is_some() || self.out.len() - self.pos >= COPY_MAX_FLAT {
                ready!(self.poll_flush(io, cx))?;
            }
            let Some(body) = self.body.as_mut() else { continue };
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.queue(data);
                    }
                    // the last frame: the end goes out with it
                    if self.broken || self.body.as_ref().is_some_and(HttpBody::is_end_stream) {
                        self.end();
                    }
                }
                Poll::Ready(None) => self.end(),
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!("response body failed: {e}");
                    // a truncated answer must end the connection (no closing chunk)
                    self.broken = true;
                    self.body = None;
                }
                Poll::Pending => {
                    ready!(self.poll_flush(io, cx))?;
                    return Poll::Pending;
                }
            }
        }
    }

    fn end(&mut self) {
        match self.framing {
            Framing::Chunked if self.big.is_some() => {
                self.after_big = if self.after_big.is_empty() {
                    b"0\r\n\r\n"
                } else {
                    b"\r\n0\r\n\r\n"
                };
            }
            Framing::Chunked => self.out.extend_from_slice(chunked::LAST_CHUNK),
            // shorter than it said: the client must not wait for the rest
            Framing::Length(left) if left > 0 => self.broken = true,
            _ => {}
        }
        self.spent = self.body.take();
    }

    fn queue(&mut self, mut data: Bytes) {
        if data.is_empty() {
            return;
        }
        match &mut self.framing {
            Framing::Length(left) => {
                if data.len() as u64 > *left {
                    data.truncate(*left as usize);
                    self.broken = true;
                }
                *left -= data.len() as u64;
            }
            Framing::Chunked => {
                chunked::size_line(self.out, data.len());
            }
            Framing::UntilClose => {}
            Framing::None => return,
        }
        let chunked = self.framing == Framing::Chunked;
        if data.len() <= self.copy_max && self.out.len() + data.len() <= 2 * COPY_MAX_FLAT {
            self.out.extend_from_slice(&data);
            if chunked {
                self.out.extend_from_slice(b"\r\n");
            }
        } else {
            self.big = Some(data);
            self.after_big = if chunked { b"\r\n" } else { b"" };
        }
    }

    /// The client takes nothing: after `send_timeout` of that, the response is abandoned.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let timeout = self.send_timeout;
        let stall = self.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes everything queued.
    fn poll_flush<T: AsyncWrite + PlainTcp + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let head = &self.out[self.pos..];
            let big = self.big.as_deref().unwrap_or(&[]);
            if head.is_empty() && big.is_empty() {
                self.out.clear();
                self.pos = 0;
                self.big = None;
                let after = std::mem::take(&mut self.after_big);
                if !after.is_empty() {
                    self.out.extend_from_slice(after);
                    continue;
                }
                if Pin::new(io).poll_flush(cx)?.is_pending() {
                    return self.stalled(cx);
                }
                self.spent = None;
                return Poll::Ready(Ok(()));
            }
            let written = if big.is_empty() {
                Pin::new(&mut *io).poll_write(cx, head)
            } else {
                let both = [io::IoSlice::new(head), io::IoSlice::new(big)];
                let bufs = if head.is_empty() { &both[1..] } else { &both[..] };
                // a sealed file goes by sendfile, also for what is left after a partial send
                match io
                    .plain_tcp()
                    .and_then(|tcp| zerocopy::poll_write_vectored(tcp, cx, bufs))
                {
                    Some(r) => r,
                    None if head.is_empty() => Pin::new(&mut *io).poll_write(cx, big),
                    None if io.is_write_vectored() => Pin::new(&mut *io).poll_write_vectored(cx, bufs),
                    None => Pin::new(&mut *io).poll_write(cx, head),
                }
            };
            let n = match written {
                Poll::Ready(r) => r?,
                Poll::Pending => return self.stalled(cx),
            };
            self.stall = None;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_head = n.min(head.len());
            self.pos += from_head;
            if n > from_head
                && let Some(b) = self.big.as_mut()
            {
                b.advance(n - from_head);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::h1::server::socket::COPY_MAX;
    use hyper::body::Frame;
    use std::task::Waker;

    impl PlainTcp for Vec<u8> {}

    fn full(b: Bytes) -> impl HttpBody<Data = Bytes, Error = BoxError> + Unpin {
        use http_body_util::BodyExt;
        http_body_util::Full::new(b).map_err(|e| match e {})
    }

    /// Writes a response body with `framing`; returns what went on the wire.
    fn written<B: HttpBody<Data = Bytes, Error = BoxError> + Unpin>(framing: Framing, body: B) -> Vec<u8> {
        let mut out = b"HEAD\r\n".to_vec();
        let mut writer = Writer {
            out: &mut out,
            pos: 0,
            big: None,
            after_big: b"",
            framing,
            body: Some(body),
            spent: None,
            copy_max: COPY_MAX,
            broken: false,
            send_timeout: Duration::from_secs(1),
            stall: None,
        };
        let mut wire = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(writer.poll_send(&mut wire, &mut cx).is_ready());
        wire
    }

    #[test]
    fn chunked_bodies_end_after_their_last_chunk_whatever_its_size() {
        let big = Bytes::from(vec![b'x'; 100_000]);
        let frames = [Bytes::from_static(b"hello"), big.clone()];
        let stream = |frames: [Bytes; 2]| {
            http_body_util::StreamBody::new(futures_util::stream::iter(
                frames.map(|b| Ok::<_, BoxError>(Frame::data(b))),
            ))
        };
        let mut want = b"HEAD\r\n5\r\nhello\r\n186a0\r\n".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"\r\n0\r\n\r\n");
        // the end known on the poll after the last frame
        let wire = written(Framing::Chunked, stream(frames));
        assert!(wire == want, "{:?}", String::from_utf8_lossy(&wire[wire.len() - 20..]));
        // the end known with the last frame, which is large: the last chunk still follows it
        let wire = written(Framing::Chunked, full(big.clone()));
        let mut want = b"HEAD\r\n186a0\r\n".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"\r\n0\r\n\r\n");
        assert!(wire == want, "{:?}", String::from_utf8_lossy(&wire[wire.len() - 20..]));
        let wire = written(Framing::Length(5), full(Bytes::from_static(b"hello")));
        assert_eq!(wire, b"HEAD\r\nhello");
    }
}
