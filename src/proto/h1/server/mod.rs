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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

mod reader;
mod socket;
mod writer;

use reader::Feeder;
pub use reader::RequestBody;
pub use socket::PlainTcp;
use socket::{COPY_MAX, COPY_MAX_FLAT, fill, fill_idle, give_back_out, take_out};
use writer::Writer;

use super::encode::{self, BodyShape};
use super::request::{self, Limits, Reject, RequestHead};
use crate::proto::BoxError;
use crate::proto::block::Pooled;
use crate::proto::lifecycle::{self, Graceful, Timers};
use crate::proto::maps;
use crate::proto::proxy_protocol::Prefixed;

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

/// What a connection allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub limits: Limits,
    /// How long a write may wait for the client to take bytes.
    pub send_timeout: Duration,
}

/// A connection closed with request bytes unread is read (and discarded) this long first, so
/// the client gets its answer instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// Serves HTTP/1.1 requests on `io` until the client closes, an error ends the connection, or
/// a graceful shutdown ([`Service::closing`]) finds it between requests.
pub async fn serve<T, S>(service: Arc<S>, io: T, options: Options)
where
    T: AsyncRead + AsyncWrite + PlainTcp + Unpin + Send + 'static,
    S: Service,
{
    let mut conn = Conn::new(service, io, options);
    let refused = loop {
        // the request's own future (the service's, with its body and response) is large and
        // lives only while the request does: in a block from the worker's pool, so the
        // connection waiting for its next head keeps only its own few fields. (No head is held
        // by this function at an await: that would keep room for one here for the
        // connection's whole life.)
        let exchange = match poll_fn(|cx| conn.poll_head(cx)).await {
            Ok(Some(head)) => Pooled::with(|| conn.exchange(head)),
            Ok(None) => return,
            Err(status) => break status,
        };
        match exchange.await {
            Next::KeepAlive => conn.trim(),
            Next::Abort => return,
            Next::Close if conn.buf.is_empty() => {
                let _ = conn.io.shutdown().await;
                return;
            }
            // pipelined requests left unread would turn a plain close into a reset
            Next::Close | Next::Linger => {
                Box::pin(conn.linger()).await;
                return;
            }
            Next::Upgrade(to) => {
                let Conn { io, buf, .. } = conn;
                let _ = to.send(Prefixed::new(buf.to_vec(), Box::new(io)));
                return;
            }
        }
    };
    // boxed, as is `linger` above: what is rare stays out of the connection's future
    Box::pin(conn.reject(refused)).await;
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
    /// Puts the promise of the connection into `req`'s extensions; the sender keeps it.
    fn offer<B>(req: &mut Request<B>) -> tokio::sync::oneshot::Sender<Upgraded> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        req.extensions_mut().insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
        tx
    }

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
    fn new(service: Arc<S>, io: T, options: Options) -> Self {
        let mut limits = options.limits;
        limits.max_head = limits.max_head.max(1024);
        Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            limits,
            send_timeout: options.send_timeout,
            service,
        }
    }

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
            match ready!(fill_idle(&mut self.io, &mut self.buf, cx)) {
                Ok(0) | Err(_) => return Poll::Ready(Ok(None)),
                Ok(_) => self.service.head_started(),
            }
        }
    }

    /// Between requests: the response buffer goes back to the worker's pool and an empty read
    /// buffer to the allocator, so an idle connection holds neither (pipelined bytes keep theirs).
    fn trim(&mut self) {
        give_back_out(std::mem::take(&mut self.out));
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// The response buffer, taken from the worker's pool when the connection holds none.
    fn out(&mut self) -> &mut Vec<u8> {
        if self.out.capacity() == 0 {
            self.out = take_out();
        }
        &mut self.out
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
        let out = self.out();
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

    /// The response is out and the request body is not all read: it is read past when the
    /// connection stays open and the rest is short; `Some(Linger)` when the connection ends.
    async fn finish_body(&mut self, mut f: Feeder, keep_alive: bool) -> Option<Next> {
        if !keep_alive || !f.drainable() {
            return Some(Next::Linger);
        }
        let (io, buf) = (&mut self.io, &mut self.buf);
        let drain = tokio::time::timeout(LINGER, poll_fn(|cx| f.poll_drain(io, buf, cx)));
        if !matches!(drain.await, Ok(Ok(()))) {
            return Some(Next::Linger);
        }
        None
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
        let upgrade_to = upgrade.then(|| OnUpgrade::offer(&mut req));

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
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        keep_alive &= !ends_connection(feeder.as_ref(), parts.status, upgrade_to.is_some());
        let interim = feeder.as_mut().map_or(&[][..], Feeder::interim_unsent);
        let shape = BodyShape {
            empty: body.is_end_stream(),
            exact: body.size_hint().exact(),
        };
        let framing = encode::response_head(self.out(), &parts, version, head_only, shape, &mut keep_alive);
        maps::recycle(parts.headers);
        if !interim.is_empty() {
            // a 100 Continue cut short by a full socket is finished ahead of the answer
            self.out.splice(0..0, interim.iter().copied());
        }
        // the body is dropped (the request counted finished) once its last byte is written
        let copy_max = if self.io.is_write_vectored() {
            COPY_MAX
        } else {
            COPY_MAX_FLAT
        };
        let mut writer = Writer::new(&mut self.out, framing, body, copy_max, self.send_timeout);
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
        if let Some(f) = feeder
            && !f.is_complete()
            && let Some(next) = self.finish_body(f, keep_alive).await
        {
            return next;
        }
        if !keep_alive || self.service.closing() {
            return Next::Close;
        }
        Next::KeepAlive
    }
}

/// The connection cannot carry another exchange after an answer with `status`: the handler let
/// the request body go unread and it is not short enough to read past, or the answer is about
/// the body itself (too large, too slow, broken); or a 101 came that nobody asked for (or for
/// HTTP/2), which the connection can't follow.
fn ends_connection(feeder: Option<&Feeder>, status: StatusCode, upgrade_offered: bool) -> bool {
    let body_left =
        feeder.is_some_and(|f| f.abandoned() && (!f.drainable() || matches!(status.as_u16(), 400 | 408 | 413)));
    body_left || (status == StatusCode::SWITCHING_PROTOCOLS && !upgrade_offered)
}
