//! A request body on its way from the connection to the service: read off the socket as the
//! service asks for each piece (one at a time, through a [`Pipe`]), after a `100 Continue` when
//! the client waits for one, and read past when the service lets go of a short one.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};

use super::socket::fill;
use crate::proto::BoxError;
use crate::proto::h1::body::BodyDecoder;
use crate::proto::h1::chunked::Decoded;
use crate::proto::h1::request::BodyFraming;

/// A request body the handler did not read is read past, to keep the connection, when no
/// more than this is left of it.
const DRAIN_MAX: u64 = 64 * 1024;

/// Reads a request body off the connection as the handler asks for it, one piece at a time,
/// through a [`Pipe`] to the handler's [`RequestBody`].
pub(super) struct Feeder {
    pipe: Arc<Pipe>,
    body: BodyDecoder,
    /// `Expect: 100-continue`: the interim answer is owed when the body is first asked for,
    /// and only before the response has started.
    expect_continue: bool,
    continue_owed: bool,
    /// Bytes of the interim answer written so far.
    continue_sent: usize,
    done: bool,
    complete: bool,
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl Feeder {
    /// The body is all read.
    pub(super) fn is_complete(&self) -> bool {
        self.complete
    }

    /// The service let go of the body before its end.
    pub(super) fn abandoned(&self) -> bool {
        !self.complete && self.pipe.lock().dropped
    }

    pub(super) fn new(framing: BodyFraming, expect_continue: bool) -> Self {
        Self {
            pipe: Arc::new(Pipe::default()),
            body: BodyDecoder::new(framing),
            expect_continue,
            continue_owed: expect_continue,
            continue_sent: 0,
            done: false,
            complete: false,
        }
    }

    /// The handler's side, made before any of the body is read.
    pub(super) fn body(&self) -> RequestBody {
        RequestBody {
            pipe: self.pipe.clone(),
            remaining: self.body.remaining(),
            ended: false,
        }
    }

    /// What is left of the body is short, and the client will send it (it was not waiting
    /// for a `100 Continue` that never came): it can be read and dropped to keep the
    /// connection.
    pub(super) fn drainable(&self) -> bool {
        let waiting = self.expect_continue && self.continue_sent < CONTINUE.len();
        self.body.remaining().is_some_and(|left| left <= DRAIN_MAX) && !waiting
    }

    /// The rest of a `100 Continue` whose writing began, which the response head must follow;
    /// it counts as sent from here.
    pub(super) fn interim_unsent(&mut self) -> &'static [u8] {
        if !self.continue_owed || self.continue_sent == 0 {
            return b"";
        }
        let rest = &CONTINUE[self.continue_sent..];
        self.continue_owed = false;
        self.continue_sent = CONTINUE.len();
        rest
    }

    /// Reads and drops the rest of a `Content-Length` body.
    pub(super) fn poll_drain<T: AsyncRead + Unpin>(
        &mut self,
        io: &mut T,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if self.body.remaining().is_none() {
            return Poll::Ready(Err(io::ErrorKind::InvalidData.into()));
        }
        loop {
            match self.body.decode(buf, true) {
                Ok(Decoded::Data(_)) => {}
                Ok(Decoded::End) => {
                    self.done = true;
                    self.complete = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(Decoded::NeedMore) => {
                    if ready!(fill(io, buf, cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Err(_) => return Poll::Ready(Err(io::ErrorKind::InvalidData.into())),
            }
        }
    }

    /// Moves the body on as far as the handler wants it; registers for wake-ups otherwise.
    pub(super) fn poll<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
        responding: bool,
    ) {
        while !self.done {
            {
                let mut st = self.pipe.lock();
                if st.dropped {
                    self.done = true;
                    return;
                }
                if st.chunk.is_some() || !st.want {
                    if !st.writer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        st.writer = Some(cx.waker().clone());
                    }
                    return;
                }
            }
            if self.continue_owed {
                if responding && self.continue_sent == 0 {
                    self.continue_owed = false;
                } else {
                    match Pin::new(&mut *io).poll_write(cx, &CONTINUE[self.continue_sent..]) {
                        Poll::Pending => return,
                        Poll::Ready(Ok(n)) if n > 0 => {
                            self.continue_sent += n;
                            self.continue_owed = self.continue_sent < CONTINUE.len();
                            if !self.continue_owed {
                                // out of TLS's buffer too: the client waits for it
                                let _ = Pin::new(&mut *io).poll_flush(cx);
                            }
                            continue;
                        }
                        Poll::Ready(_) => return self.fail("the client went away"),
                    }
                }
            }
            match self.body.decode(buf, true) {
                Ok(Decoded::Data(data)) => self.pipe.deliver(|st| {
                    st.chunk = Some(data);
                    st.want = false;
                }),
                Ok(Decoded::End) => {
                    self.done = true;
                    self.complete = true;
                    self.pipe.deliver(|st| st.end = true);
                }
                Ok(Decoded::NeedMore) => match fill(io, buf, cx) {
                    Poll::Pending => return,
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return self.fail("the client closed its request body"),
                    Poll::Ready(Ok(_)) => {}
                },
                Err(_) => return self.fail("malformed chunked request body"),
            }
        }
    }

    pub(super) fn fail(&mut self, why: &'static str) {
        self.done = true;
        self.pipe.deliver(|st| st.error = Some(why));
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        if !self.done {
            self.fail("the connection ended before the request body");
        }
    }
}

/// One piece of a request body at a time, from the connection to the handler.
#[derive(Default)]
struct Pipe(Mutex<PipeState>);

#[derive(Default)]
struct PipeState {
    chunk: Option<Bytes>,
    end: bool,
    error: Option<&'static str>,
    /// The handler is waiting for the next piece.
    want: bool,
    /// The handler dropped the body.
    dropped: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state for the reader and wakes it.
    fn deliver(&self, f: impl FnOnce(&mut PipeState)) {
        let waker = {
            let mut st = self.lock();
            f(&mut st);
            st.reader.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A request body as the handler sees it.
pub struct RequestBody {
    pipe: Arc<Pipe>,
    /// Bytes still to come under a `Content-Length`.
    remaining: Option<u64>,
    ended: bool,
}

/// The client's request body could not be read (bad chunked framing, connection lost).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RequestBodyError(&'static str);

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let (result, waker) = {
            let mut st = self.pipe.lock();
            let result = if let Some(data) = st.chunk.take() {
                Poll::Ready(Some(Ok(data)))
            } else if let Some(e) = st.error {
                Poll::Ready(Some(Err(e)))
            } else if st.end {
                Poll::Ready(None)
            } else {
                st.want = true;
                if !st.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.reader = Some(cx.waker().clone());
                }
                Poll::Pending
            };
            (result, st.writer.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
        match result {
            Poll::Ready(Some(Ok(data))) => {
                if let Some(r) = self.remaining.as_mut() {
                    *r = r.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.ended = true;
                Poll::Ready(Some(Err(Box::new(RequestBodyError(e)))))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.pipe.lock();
            st.dropped = true;
            st.writer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}
