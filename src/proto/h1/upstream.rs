//! The HTTP/1.1 client side of a proxied exchange, run in the request's own task: the request
//! head is written straight to the upstream connection, the response head parsed from it, and
//! the response body read from it as the client's side asks for more. No connection task and no
//! channels between tasks; the connection goes back to its pool when the exchange is over.
//!
//! A request body is written while the response head is awaited and, if the upstream answers
//! early, while its response body streams (an echoing upstream never deadlocks the two).

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pool::{Lease, Reusable};
use crate::proto::BoxError;
use crate::proto::h1::body::{BodyDecoder, BodyLengthMismatch};
use crate::proto::h1::chunked::{self, Decoded};
use crate::proto::h1::encode::{self, BodyShape};
use crate::proto::h1::request::BodyFraming;
use crate::proto::h1::response::{self, Parsed, ResponseHead};

/// Reads start at this size and grow, while reads fill them, up to `MAX_READ`.
const MIN_READ: usize = 16 * 1024;
const MAX_READ: usize = 256 * 1024;

/// An open HTTP/1.1 connection to an upstream server, idle between exchanges.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    read_size: usize,
    head: Vec<u8>,
    /// The upstream sent a 1xx for the request in progress: it has answered something.
    interim: bool,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream connection: {0}")]
    Io(#[source] io::Error),
    /// The connection closed (or was reset) before any byte of a response arrived.
    #[error("upstream closed the connection before answering")]
    Closed,
    /// The connection closed in the middle of a response body.
    #[error("upstream closed the connection in the middle of a response")]
    Truncated,
    /// The upstream's response is not valid HTTP/1.1.
    #[error("malformed upstream response: {0}")]
    Malformed(&'static str),
    /// The client's request body failed (too large, too slow, broken): the client's fault.
    #[error("request body: {0}")]
    RequestBody(#[source] BoxError),
}

/// A failed [`Conn::send`]; the request `body` is handed back when none of the request reached
/// the upstream.
pub struct SendError<B> {
    pub body: Option<B>,
    pub error: Error,
}

/// What a request body must be to go upstream.
pub trait SendBody: HttpBody<Data = Bytes, Error = BoxError> + Unpin {}
impl<B: HttpBody<Data = Bytes, Error = BoxError> + Unpin> SendBody for B {}

impl Conn {
    /// Boxed: a connection moves between the pool, the request and its response body, and a
    /// pointer moves cheaper than the connection.
    pub fn new(io: TcpStream) -> Box<Self> {
        Box::new(Self {
            io,
            buf: BytesMut::new(),
            read_size: MIN_READ,
            head: Vec::with_capacity(512),
            interim: false,
        })
    }

    /// Sends the request `parts` (origin-form target, hop-by-hop headers already removed), then
    /// the `extra` headers, with `body`, and waits for the response head. The head is borrowed,
    /// so a caller can send it again elsewhere. `upgrade`: the request asks for a protocol
    /// switch, so a 101 is the answer and the connection becomes a tunnel.
    pub async fn send<'h, B: SendBody>(
        mut self: Box<Self>,
        parts: &http::request::Parts,
        extra: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
        body: B,
        upgrade: bool,
    ) -> Result<Response<RecvBody<B>>, SendError<B>> {
        self.interim = false;
        let shape = BodyShape {
            empty: body.is_end_stream(),
            exact: body.size_hint().exact(),
        };
        let framing = encode::request_head(&mut self.head, parts, extra, shape);
        if let Err(e) = self.io.write_all(&self.head).await {
            // an incomplete head is nothing the upstream can act on
            return Err(SendError {
                body: Some(body),
                error: Error::Io(e),
            });
        }
        let head_only = parts.method == Method::HEAD;
        let mut upload = framing.map(|framing| Box::new(Upload::new(body, framing)));
        let mut reusable = true;
        let fail = |error| SendError { body: None, error };
        let head = poll_fn(|cx| {
            if let Some(e) = Upload::drive(&mut upload, &mut self.io, cx, &mut reusable) {
                return Poll::Ready(Err(Error::RequestBody(e)));
            }
            self.poll_head(cx, head_only, upgrade)
        })
        .await
        .map_err(fail)?;
        let body = RecvBody {
            conn: Some(self),
            framing: head.framing.into(),
            upload,
            reusable: reusable && head.keep_alive,
            inflight: None,
        };
        let (parts, ()) = head.resp.into_parts();
        Ok(Response::from_parts(parts, body))
    }

    /// Reads until a final response head is parsed (1xx heads other than 101 are skipped).
    fn poll_head(&mut self, cx: &mut Context<'_>, head_only: bool, upgrade: bool) -> Poll<Result<ResponseHead, Error>> {
        loop {
            if !self.buf.is_empty() {
                match response::parse(&mut self.buf, head_only, upgrade).map_err(|m| Error::Malformed(m.0))? {
                    Some(Parsed::Interim) => {
                        self.interim = true;
                        continue;
                    }
                    Some(Parsed::Final(head)) => return Poll::Ready(Ok(head)),
                    None => {}
                }
            }
            // nothing at all from the upstream yet (not even a 1xx)
            let silent = self.buf.is_empty() && !self.interim;
            match ready!(self.poll_fill(cx)) {
                Ok(0) if silent => return Poll::Ready(Err(Error::Closed)),
                Ok(0) => return Poll::Ready(Err(Error::Malformed("incomplete response head"))),
                Ok(_) => {}
                Err(e)
                    if silent
                        && matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionReset
                                | io::ErrorKind::ConnectionAborted
                                | io::ErrorKind::BrokenPipe
                        ) =>
                {
                    return Poll::Ready(Err(Error::Closed));
                }
                Err(e) => return Poll::Ready(Err(Error::Io(e))),
            }
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 4 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))?;
        if n == room && self.read_size < MAX_READ {
            // reads fill the buffer: the stream is fast, read more at a time
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }
}

impl Reusable for Conn {
    /// True while the idle connection can take a request: the server has neither closed it nor
    /// sent anything unasked (either would make it readable). No system call: the reactor's
    /// readiness is read, with a waker that does nothing.
    fn is_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.buf.is_empty() && self.io.poll_read_ready(&mut cx).is_pending()
    }
}

/// The response body's framing, with the chunked decoder's state; `Done` once it has all been
/// read.
enum Framing {
    Body(BodyDecoder),
    UntilClose,
    Done,
}

impl From<response::Framing> for Framing {
    fn from(f: response::Framing) -> Self {
        match BodyDecoder::for_response(f) {
            Some(decoder) => Framing::Body(decoder),
            None if f == response::Framing::UntilClose => Framing::UntilClose,
            None => Framing::Done,
        }
    }
}

/// A request body on its way to the upstream.
struct Upload<B> {
    body: B,
    chunked: bool,
    /// Bytes still owed under a `Content-Length`: the body must match it to the byte, or what
    /// follows would be read by the upstream as another request.
    owed: Option<u64>,
    /// Bytes queued for the socket, in order (a chunk's size line, data and CRLF).
    queue: Vec<Bytes>,
    finished: bool,
}

enum UploadError {
    Body(BoxError),
    /// The socket refused more: the upstream closed, or stopped reading to answer early.
    Io,
}

impl<B: SendBody> Upload<B> {
    fn new(body: B, framing: BodyFraming) -> Self {
        Self {
            body,
            chunked: framing == BodyFraming::Chunked,
            owed: match framing {
                BodyFraming::Length(n) => Some(n),
                BodyFraming::Chunked => None,
            },
            queue: Vec::with_capacity(3),
            finished: false,
        }
    }

    /// Moves `upload` on, if there is one: it is gone once all sent or failed. A failure leaves
    /// the connection out of step (`reusable` turns false); the client's own body failing is
    /// returned, the upstream no longer reading (it may be answering early) is not.
    fn drive(
        upload: &mut Option<Box<Upload<B>>>,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
        reusable: &mut bool,
    ) -> Option<BoxError> {
        let result = match upload.as_mut()?.poll(io, cx) {
            Poll::Pending => return None,
            Poll::Ready(result) => result,
        };
        *upload = None;
        match result {
            Ok(()) => None,
            Err(failure) => {
                *reusable = false;
                match failure {
                    UploadError::Body(e) => Some(e),
                    UploadError::Io => None,
                }
            }
        }
    }

    /// Writes the body until it is all sent (`Ready(Ok)`) or the socket or the body waits.
    fn poll(&mut self, io: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), UploadError>> {
        loop {
            while !self.queue.is_empty() {
                let slices: Vec<IoSlice<'_>> = self.queue.iter().map(|b| IoSlice::new(b)).collect();
                let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices)).map_err(|_| UploadError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(UploadError::Io));
                }
                let mut n = n;
                while n > 0 {
                    let first = &mut self.queue[0];
                    if n >= first.len() {
                        n -= first.len();
                        self.queue.remove(0);
                    } else {
                        first.advance(n);
                        n = 0;
                    }
                }
            }
            if self.finished {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        if let Some(owed) = &mut self.owed {
                            let Some(left) = owed.checked_sub(data.len() as u64) else {
                                return Poll::Ready(Err(UploadError::Body(Box::new(BodyLengthMismatch))));
                            };
                            *owed = left;
                        }
                        if self.chunked {
                            let mut line = Vec::with_capacity(18);
                            chunked::size_line(&mut line, data.len());
                            self.queue.push(Bytes::from(line));
                            self.queue.push(data);
                            self.queue.push(Bytes::from_static(b"\r\n"));
                        } else {
                            self.queue.push(data);
                        }
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(UploadError::Body(e))),
                None => {
                    if self.owed.is_some_and(|owed| owed > 0) {
                        return Poll::Ready(Err(UploadError::Body(Box::new(BodyLengthMismatch))));
                    }
                    if self.chunked {
                        self.queue.push(Bytes::from_static(chunked::LAST_CHUNK));
                    }
                    self.finished = true;
                }
            }
        }
    }
}

/// An upstream response body, read from its connection as it is polled. Read to its end on a
/// keep-alive connection, with the request body all sent, the connection goes back to the pool;
/// dropped earlier, the connection closes.
pub struct RecvBody<B> {
    conn: Option<Box<Conn>>,
    framing: Framing,
    upload: Option<Box<Upload<B>>>,
    reusable: bool,
    /// Counts the exchange in flight on its server until the body is dropped; also names the
    /// pool the connection returns to.
    inflight: Option<Lease<Conn>>,
}

impl<B: SendBody> RecvBody<B> {
    /// Returns the connection to `inflight`'s pool at the end, and holds the lease.
    pub fn pooled(&mut self, inflight: Lease<Conn>) {
        self.inflight = Some(inflight);
        if matches!(self.framing, Framing::Done) {
            self.finish();
        }
    }

    /// The connection after a 101: the socket and what the upstream already sent past the head.
    pub fn into_upgraded(&mut self) -> Option<(TcpStream, Bytes)> {
        let conn = *self.conn.take()?;
        Some((conn.io, conn.buf.freeze()))
    }

    /// The response is complete: the connection goes back to the pool if it can be reused.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        let Some(conn) = self.conn.take() else { return };
        if self.reusable
            && self.upload.is_none()
            && conn.buf.is_empty()
            && let Some(lease) = &self.inflight
        {
            lease.put(conn);
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.framing = Framing::Done;
        Poll::Ready(Some(Err(Box::new(e))))
    }
}

impl<B: SendBody> HttpBody for RecvBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(conn) = &mut this.conn {
            // the upstream has answered already: its answer stands, whatever becomes of the rest
            // of the request (the connection, out of step then, is not reused)
            let _ = Upload::drive(&mut this.upload, &mut conn.io, cx, &mut this.reusable);
        }
        loop {
            let Some(conn) = &mut this.conn else {
                return Poll::Ready(None);
            };
            match &mut this.framing {
                Framing::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::UntilClose if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Body(decoder) if !conn.buf.is_empty() || decoder.is_done() => {
                    match decoder.decode(&mut conn.buf, false).map_err(|m| Error::Malformed(m.0)) {
                        Ok(Decoded::Data(data)) => {
                            if decoder.is_done() {
                                // the last byte: the connection can go back now
                                this.finish();
                            }
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Ok(Decoded::End) => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(Decoded::NeedMore) => {}
                        Err(e) => return this.fail(e),
                    }
                }
                _ => {}
            }
            let conn = this.conn.as_mut().expect("checked above");
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::Truncated),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Body(decoder) => decoder.remaining().map_or_else(SizeHint::default, SizeHint::with_exact),
            Framing::UntilClose => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::body::Body;
    use http::Request;

    /// An upstream on loopback that reads a request head, answers `answer` at once, and
    /// keeps reading whatever else comes (the request body) until the connection closes.
    async fn early_answer(answer: &'static [u8]) -> std::net::SocketAddr {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).await.unwrap();
                got.extend_from_slice(&chunk[..n]);
            }
            s.write_all(answer).await.unwrap();
            while s.read(&mut chunk).await.is_ok_and(|n| n > 0) {}
        });
        addr
    }

    fn streamed(rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>) -> Body {
        let frames = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        Body::boxed(http_body_util::StreamBody::new(frames))
    }

    #[tokio::test]
    async fn an_early_answer_stands_when_the_rest_of_the_request_body_fails() {
        use http_body_util::BodyExt;
        let addr = early_answer(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\n\r\nlog in").await;
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first part"))))
            .await
            .unwrap();
        let (parts, ()) = Request::post("/upload").body(()).unwrap().into_parts();
        let Ok(resp) = conn.send(&parts, std::iter::empty(), streamed(rx), false).await else {
            panic!("the answer came before the body ended");
        };
        assert_eq!(resp.status(), 401);
        // the client's body now fails (too large, too slow...): the answer is still whole
        tx.send(Err(std::io::Error::other("client went away"))).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"log in");
    }

    #[tokio::test]
    async fn a_request_body_longer_or_shorter_than_its_length_is_refused() {
        /// A body that declares one length and sends another.
        struct Lying(u64, Option<Bytes>);
        impl HttpBody for Lying {
            type Data = Bytes;
            type Error = BoxError;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
                Poll::Ready(self.1.take().map(|b| Ok(Frame::data(b))))
            }
            fn size_hint(&self) -> SizeHint {
                SizeHint::with_exact(self.0)
            }
        }
        for (declared, sent) in [(3, &b"abcdef"[..]), (10, &b"abc"[..])] {
            let addr = early_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
            let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
            let (parts, ()) = Request::post("/").body(()).unwrap().into_parts();
            let body = Body::boxed(Lying(declared, Some(Bytes::copy_from_slice(sent))));
            match conn.send(&parts, std::iter::empty(), body, false).await {
                Err(SendError {
                    error: Error::RequestBody(e),
                    ..
                }) => {
                    assert!(e.is::<BodyLengthMismatch>(), "{e}")
                }
                // the answer may win the race: then the connection must not be reused
                Ok(resp) => {
                    use http_body_util::BodyExt;
                    let mut body = resp.into_body();
                    while body.frame().await.is_some() {}
                    assert!(!body.reusable, "declared {declared}, sent {}", sent.len());
                }
                Err(e) => panic!("unexpected error: {}", e.error),
            }
        }
    }
}
