//! The HTTP/1.1 server side of a connection, run in the connection's own task, for any
//! [`Service`]: the gateway's client-facing listeners, the admin listener and the bundled API.
//! Request heads are parsed by [`super::request`] (field values are slices of one copy of the
//! head), the service's future is polled in place, a request body is read from the socket as
//! the service asks for it, and each response is framed by [`super::encode`] (Content-Length,
//! chunked, or until close) and written with as few system calls as its body allows: a small
//! answer leaves in one write, a cached large file by `sendfile`. Keep-alive, pipelining,
//! `Expect: 100-continue` and protocol upgrades (WebSocket) follow RFC 9112; a malformed head
//! gets 400 (431 when too large, 501 for what is not implemented) and the connection closes.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::body::BodyDecoder;
use super::chunked::{self, Decoded};
use super::encode::{self, BodyShape};
use super::request::{self, BodyFraming, Limits, Reject, RequestHead};
use super::response::Framing;
use crate::proto::BoxError;
use crate::proto::lifecycle::{self, Graceful, Timers};
use crate::proto::maps;
use crate::proto::proxy_protocol::Prefixed;
use crate::zerocopy;

/// What answers the requests of a connection.
pub trait Service: Send + Sync + 'static {
    type Body: HttpBody<Data = Bytes, Error = BoxError> + Send + Unpin + 'static;

    /// Answers one request; `None` as its body when the request has none.
    fn call(self: Arc<Self>, req: Request<Option<RequestBody>>) -> impl Future<Output = Response<Self::Body>> + Send;

    /// The first bytes of a request head arrived.
    fn head_started(&self) {}

    /// A graceful shutdown asked the connection to close once its current response is out.
    fn closing(&self) -> bool;

    /// Asks the connection to close once its current response is out.
    fn close(&self);
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

/// What a connection allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub limits: Limits,
    /// How long a write may wait for the client to take bytes.
    pub send_timeout: Duration,
}

/// The read buffer grows by this much when it runs low.
const READ_SIZE: usize = 16 * 1024;
/// Body frames up to this size are copied behind the head (one write); larger ones go out as
/// they are (`writev`, or `sendfile` for a sealed file).
const COPY_MAX: usize = 16 * 1024;
/// The same, when the transport cannot write several buffers at once (TLS).
const COPY_MAX_FLAT: usize = 64 * 1024;
/// A connection closed with request bytes unread is read (and discarded) this long first, so
/// the client gets its answer instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
/// The response buffer an idle connection keeps.
const KEEP_IDLE: usize = 16 * 1024;
/// A request body the handler did not read is read past, to keep the connection, when no
/// more than this is left of it.
const DRAIN_MAX: u64 = 64 * 1024;

/// Serves HTTP/1.1 requests on `io` until the client closes, an error ends the connection, or
/// a graceful shutdown ([`Service::closing`]) finds it between requests.
pub async fn serve<T, S>(service: Arc<S>, io: T, options: Options)
where
    T: AsyncRead + AsyncWrite + PlainTcp + Unpin + Send + 'static,
    S: Service,
{
    let mut limits = options.limits;
    limits.max_head = limits.max_head.max(1024);
    let mut conn = Conn {
        io,
        buf: BytesMut::with_capacity(READ_SIZE),
        out: Vec::with_capacity(1024),
        limits,
        send_timeout: options.send_timeout,
        service,
    };
    loop {
        let head = match poll_fn(|cx| conn.poll_head(cx)).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(status) => {
                conn.reject(status).await;
                return;
            }
        };
        match conn.exchange(head).await {
            Next::KeepAlive => conn.trim(),
            Next::Abort => return,
            Next::Close if conn.buf.is_empty() => {
                let _ = conn.io.shutdown().await;
                return;
            }
            // pipelined requests left unread would turn a plain close into a reset
            Next::Close | Next::Linger => {
                conn.linger().await;
                return;
            }
            Next::Upgrade(to) => {
                let Conn { io, buf, .. } = conn;
                let _ = to.send(Prefixed::new(buf.to_vec(), Box::new(io)));
                return;
            }
        }
    }
}

/// A connection being served: a graceful shutdown asks it to finish the response in progress
/// and close.
pub struct Connection<F, S> {
    fut: Pin<Box<F>>,
    service: Arc<S>,
}

impl<F: Future, S> Future for Connection<F, S> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.fut.as_mut().poll(cx)
    }
}

impl<F: Future, S: Service> Graceful for Connection<F, S> {
    fn graceful_shutdown(self: Pin<&mut Self>) {
        self.service.close();
    }
}

/// [`serve`] as a [`Graceful`] connection, boxed once: it holds every request's future in turn.
pub fn connection<T, S>(service: Arc<S>, io: T, options: Options) -> Connection<impl Future<Output = ()>, S>
where
    T: AsyncRead + AsyncWrite + PlainTcp + Unpin + Send + 'static,
    S: Service,
{
    Connection {
        fut: Box::pin(serve(service.clone(), io, options)),
        service,
    }
}

/// A service of a few fixed endpoints (the admin listener, the bundled API): a handler and the
/// timers of one connection.
struct Simple<H> {
    handler: H,
    timers: Timers,
    closing: AtomicBool,
}

impl<H, F, B> Service for Simple<H>
where
    H: Fn(Request<Option<RequestBody>>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send,
    B: HttpBody<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
{
    type Body = B;

    async fn call(self: Arc<Self>, req: Request<Option<RequestBody>>) -> Response<B> {
        self.timers.request_started();
        let resp = (self.handler)(req).await;
        self.timers.request_finished();
        resp
    }

    fn head_started(&self) {
        self.timers.bytes_read();
    }

    fn closing(&self) -> bool {
        self.closing.load(Relaxed)
    }

    fn close(&self) {
        self.closing.store(true, Relaxed);
    }
}

/// Timeouts of a [`serve_simple`] connection.
#[derive(Debug, Clone, Copy)]
pub struct SimpleTimeouts {
    /// A request head must arrive within this.
    pub header: Duration,
    /// An idle connection closes after this.
    pub keepalive: Duration,
}

/// Serves a plain TCP connection with `handler` until the client closes, the connection idles or
/// sends its head too slowly, or `stop` turns true (the response in progress is finished).
pub async fn serve_simple<H, F, B>(
    stream: TcpStream,
    handler: H,
    options: Options,
    timeouts: SimpleTimeouts,
    stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Option<RequestBody>>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send,
    B: HttpBody<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
{
    let _ = stream.set_nodelay(true);
    let service = Arc::new(Simple {
        handler,
        timers: Timers::new(timeouts.header, timeouts.keepalive),
        closing: AtomicBool::new(false),
    });
    let conn = connection(service.clone(), stream, options);
    lifecycle::drive(conn, &service.timers, false, stop).await;
}

/// A transport a protocol upgrade hands over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The client's side of an upgraded connection, with any bytes it sent after its request head.
pub type Upgraded = Prefixed<Box<dyn Io>>;

/// In a request's extensions when it asks for a protocol upgrade: resolves to the client's
/// connection once a `101 Switching Protocols` answer has been written to it.
/// (Extensions must be `Clone`: a clone shares the one connection, which the first to ask gets.)
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<tokio::sync::oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub async fn get(self) -> Option<Upgraded> {
        let rx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        rx.await.ok()
    }
}

enum Next {
    KeepAlive,
    Close,
    /// Drop the connection as it is: writing failed or stalled.
    Abort,
    /// Close, reading what the client still sends for a while (its answer must not be lost to
    /// a reset).
    Linger,
    Upgrade(tokio::sync::oneshot::Sender<Upgraded>),
}

struct Conn<T, S> {
    io: T,
    /// Bytes read and not yet consumed (the next head, a body, pipelined requests).
    buf: BytesMut,
    /// The response head being written, with small body frames behind it.
    out: Vec<u8>,
    limits: Limits,
    send_timeout: Duration,
    service: Arc<S>,
}

impl<T, S> Conn<T, S>
where
    T: AsyncRead + AsyncWrite + PlainTcp + Unpin + Send + 'static,
    S: Service,
{
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        fill(&mut self.io, &mut self.buf, cx)
    }

    /// Reads until a request head is complete; `None` when the connection should just end.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<RequestHead>, Reject>> {
        loop {
            if !self.buf.is_empty()
                && let Some(head) = request::parse(&mut self.buf, &self.limits)?
            {
                return Poll::Ready(Ok(Some(head)));
            }
            // shutting down: no waiting for a head (a complete one buffered is still served)
            if self.service.closing() {
                return Poll::Ready(Ok(None));
            }
            match ready!(self.fill(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(Ok(None)),
                Ok(_) => self.service.head_started(),
            }
        }
    }

    /// Gives back what a large message grew the buffers to, between requests: an idle
    /// connection keeps a few KiB.
    fn trim(&mut self) {
        if self.out.capacity() > KEEP_IDLE {
            self.out = Vec::with_capacity(1024);
        }
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_SIZE {
            self.buf = BytesMut::with_capacity(READ_SIZE);
        }
    }

    async fn reject(&mut self, why: Reject) {
        let (status, text): (&[u8], &[u8]) = match why {
            Reject::Bad(why) => {
                tracing::debug!("request refused: {why}");
                (b"400 Bad Request", b"Bad Request\n")
            }
            Reject::TooLarge => (
                b"431 Request Header Fields Too Large",
                b"Request Header Fields Too Large\n",
            ),
            Reject::NotImplemented => (b"501 Not Implemented", b"Not Implemented\n"),
        };
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status);
        out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\n");
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(text.len()).as_bytes());
        out.extend_from_slice(b"\r\nconnection: close\r\n");
        encode::date_line(out);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(text);
        if self.io.write_all(&self.out).await.is_ok() {
            self.linger().await;
        }
    }

    /// Closes the sending side, then reads and drops what the client still sends (up to a
    /// bound) so that unread bytes don't reset the connection under the answer just written.
    async fn linger(&mut self) {
        let _ = self.io.shutdown().await;
        let mut drained = 0;
        let _ = tokio::time::timeout(LINGER, async {
            loop {
                self.buf.clear();
                match poll_fn(|cx| self.fill(cx)).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => drained += n,
                }
                if drained > LINGER_BYTES {
                    return;
                }
            }
        })
        .await;
    }

    /// Runs one request through the gateway and writes its response.
    async fn exchange(&mut self, head: RequestHead) -> Next {
        let RequestHead {
            req,
            body,
            mut keep_alive,
            expect_continue,
            upgrade,
        } = head;
        let version = req.version();
        let head_only = req.method() == Method::HEAD;
        let mut feeder = body.map(|framing| Feeder::new(framing, expect_continue));
        let mut req = req.map(|()| feeder.as_ref().map(Feeder::body));
        let mut upgrade_to = None;
        if upgrade {
            let (tx, rx) = tokio::sync::oneshot::channel();
            req.extensions_mut().insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
            upgrade_to = Some(tx);
        }

        let resp = {
            let mut fut = pin!(self.service.clone().call(req));
            let (io, buf) = (&mut self.io, &mut self.buf);
            poll_fn(|cx| {
                if let Poll::Ready(resp) = fut.as_mut().poll(cx) {
                    return Poll::Ready(resp);
                }
                if let Some(f) = feeder.as_mut() {
                    f.poll(io, buf, cx, false);
                }
                Poll::Pending
            })
            .await
        };

        let (parts, body) = resp.into_parts();
        // a body the handler let go of unread: a short one is read past, else the connection
        // ends; so it does after an answer about the body itself (too large, too slow, broken)
        if let Some(f) = &feeder
            && !f.complete
            && f.pipe.lock().dropped
            && (!f.drainable() || matches!(parts.status.as_u16(), 400 | 408 | 413))
        {
            keep_alive = false;
        }
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        if switching && upgrade_to.is_none() {
            // a 101 nobody asked for (or for HTTP/2): the connection can't follow it
            keep_alive = false;
        }
        let interim = feeder.as_mut().map_or(&[][..], Feeder::interim_unsent);
        let shape = BodyShape {
            empty: body.is_end_stream(),
            exact: body.size_hint().exact(),
        };
        let framing = encode::response_head(&mut self.out, &parts, version, head_only, shape, &mut keep_alive);
        maps::recycle(parts.headers);
        if !interim.is_empty() {
            // a 100 Continue cut short by a full socket is finished ahead of the answer
            self.out.splice(0..0, interim.iter().copied());
        }
        // the body is dropped (the request counted finished) once its last byte is written
        let (body, spent) = if framing == Framing::None {
            (None, Some(body))
        } else {
            (Some(body), None)
        };
        let mut writer = Writer {
            out: &mut self.out,
            pos: 0,
            big: None,
            after_big: b"",
            framing,
            body,
            spent,
            copy_max: if self.io.is_write_vectored() {
                COPY_MAX
            } else {
                COPY_MAX_FLAT
            },
            broken: false,
            send_timeout: self.send_timeout,
            stall: None,
        };
        let (io, buf) = (&mut self.io, &mut self.buf);
        let sent = poll_fn(|cx| {
            let r = writer.poll_send(io, cx);
            if let Some(f) = feeder.as_mut() {
                f.poll(io, buf, cx, true);
            }
            r
        })
        .await;
        if sent.is_err() {
            // the client is gone, or takes nothing (a close would wait on it too)
            return Next::Abort;
        }
        keep_alive &= !writer.broken;
        drop(writer);
        if switching && let Some(to) = upgrade_to {
            return Next::Upgrade(to);
        }
        if let Some(mut f) = feeder
            && !f.complete
        {
            if !keep_alive || !f.drainable() {
                return Next::Linger;
            }
            let (io, buf) = (&mut self.io, &mut self.buf);
            let drain = tokio::time::timeout(LINGER, poll_fn(|cx| f.poll_drain(io, buf, cx)));
            if !matches!(drain.await, Ok(Ok(()))) {
                return Next::Linger;
            }
        }
        if !keep_alive || self.service.closing() {
            return Next::Close;
        }
        Next::KeepAlive
    }
}

fn fill<T: AsyncRead + Unpin>(io: &mut T, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Writes one response: the head in `out`, then the body's frames.
struct Writer<'a, B> {
    out: &'a mut Vec<u8>,
    /// How much of `out` is written.
    pos: usize,
    /// A large frame to write after `out`.
    big: Option<Bytes>,
    /// Framing owed after `big`: a chunk's closing CRLF, and the last chunk once the body
    /// ended.
    after_big: &'static [u8],
    framing: Framing,
    /// `None` once finished (or when there is no body to send).
    body: Option<B>,
    /// The finished body, kept until everything is written: dropping it marks the request
    /// finished, which starts the connection's keep-alive clock.
    spent: Option<B>,
    copy_max: usize,
    /// The body broke or overran its length: the connection can't carry another response.
    broken: bool,
    /// How long a write may wait for the client to take bytes (`server.send_timeout`).
    send_timeout: Duration,
    /// Armed while a write waits; dropped at the next progress.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B: HttpBody<Data = Bytes, Error = BoxError> + Unpin> Writer<'_, B> {
    fn poll_send<T: AsyncWrite + PlainTcp + Unpin>(
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

/// Reads a request body off the connection as the handler asks for it, one piece at a time,
/// through a [`Pipe`] to the handler's [`RequestBody`].
struct Feeder {
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
    fn new(framing: BodyFraming, expect_continue: bool) -> Self {
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
    fn body(&self) -> RequestBody {
        RequestBody {
            pipe: self.pipe.clone(),
            remaining: self.body.remaining(),
            ended: false,
        }
    }

    /// What is left of the body is short, and the client will send it (it was not waiting
    /// for a `100 Continue` that never came): it can be read and dropped to keep the
    /// connection.
    fn drainable(&self) -> bool {
        let waiting = self.expect_continue && self.continue_sent < CONTINUE.len();
        self.body.remaining().is_some_and(|left| left <= DRAIN_MAX) && !waiting
    }

    /// The rest of a `100 Continue` whose writing began, which the response head must follow;
    /// it counts as sent from here.
    fn interim_unsent(&mut self) -> &'static [u8] {
        if !self.continue_owed || self.continue_sent == 0 {
            return b"";
        }
        let rest = &CONTINUE[self.continue_sent..];
        self.continue_owed = false;
        self.continue_sent = CONTINUE.len();
        rest
    }

    /// Reads and drops the rest of a `Content-Length` body.
    fn poll_drain<T: AsyncRead + Unpin>(
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
    fn poll<T: AsyncRead + AsyncWrite + Unpin>(
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

    fn fail(&mut self, why: &'static str) {
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
#[derive(Debug)]
pub struct RequestBodyError(&'static str);

impl std::fmt::Display for RequestBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for RequestBodyError {}

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

#[cfg(test)]
mod tests {
    use super::*;

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
