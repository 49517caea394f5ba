//! One client connection: optional TLS handshake, HTTP/1.1 or HTTP/2 by ALPN, and the timers
//! that keep slow or idle clients from holding it: the request head must arrive within
//! `header_read_timeout` (counted from the connection's start, or from the first byte of a later
//! request), and an idle keep-alive connection closes after `keepalive_timeout`. On shutdown the
//! connection finishes its in-flight requests and closes.

use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::ConnSlot;
use super::proxy_protocol::{self, Prefixed};
use crate::config::ServerSettings;
use crate::http::body::{Body, BoxError, ReqBody};
use crate::http::client_ip::canonical;
use crate::http::context::ConnInfo;
use crate::http::service;
use crate::state::State;

const IDLE: u8 = 0;
const READING_HEAD: u8 = 1;
const ACTIVE: u8 = 2;
const NO_DEADLINE: u64 = u64::MAX;

/// Where a connection is in its life, and when it must have moved on.
pub(super) struct Timers {
    born: Instant,
    phase: AtomicU8,
    inflight: AtomicU32,
    /// Milliseconds since `born`.
    deadline_ms: AtomicU64,
    header_ms: u64,
    keepalive_ms: u64,
}

impl Timers {
    fn new(header: Duration, keepalive: Duration) -> Self {
        let t = Self {
            born: Instant::now(),
            phase: AtomicU8::new(READING_HEAD),
            inflight: AtomicU32::new(0),
            deadline_ms: AtomicU64::new(NO_DEADLINE),
            header_ms: header.as_millis() as u64,
            keepalive_ms: keepalive.as_millis() as u64,
        };
        t.deadline_ms.store(t.header_ms, Relaxed);
        t
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn request_started(&self) {
        self.inflight.fetch_add(1, Relaxed);
        self.phase.store(ACTIVE, Relaxed);
        self.deadline_ms.store(NO_DEADLINE, Relaxed);
    }

    fn request_finished(&self) {
        if self.inflight.fetch_sub(1, Relaxed) == 1 {
            self.phase.store(IDLE, Relaxed);
            self.deadline_ms.store(self.now_ms() + self.keepalive_ms, Relaxed);
        }
    }

    /// Bytes arrived on an HTTP/1.1 connection: when idle, that is the start of the next
    /// request head.
    pub(super) fn bytes_read(&self) {
        if self.phase.load(Relaxed) == IDLE
            && self
                .phase
                .compare_exchange(IDLE, READING_HEAD, Relaxed, Relaxed)
                .is_ok()
        {
            self.deadline_ms.store(self.now_ms() + self.header_ms, Relaxed);
        }
    }

    /// `None` when the deadline has passed, else when to look again.
    ///
    /// Requests move the deadline without waking the driver (that would cost a poll of the
    /// connection per request). Instead the driver never sleeps longer than the shortest
    /// timeout: a deadline set at time t is never earlier than t + that period, and the driver
    /// last armed its timer no later than t, so it always wakes in time to see it.
    fn next_check(&self) -> Option<Instant> {
        let now = self.now_ms();
        let period = self.header_ms.min(self.keepalive_ms).max(1);
        let deadline = self.deadline_ms.load(Relaxed);
        if deadline != NO_DEADLINE && now >= deadline && self.phase.load(Relaxed) != ACTIVE {
            return None;
        }
        let at = deadline.min(now + period).max(now + 1);
        Some(self.born + Duration::from_millis(at))
    }
}

/// What the service needs from its connection, shared by all its requests.
pub(super) struct ConnCtx {
    state: Arc<State>,
    info: ConnInfo,
    pub(super) timers: Timers,
    /// Set by a graceful shutdown: an HTTP/1.1 connection closes after its current response.
    pub(super) closing: AtomicBool,
}

impl ConnCtx {
    fn new(state: Arc<State>, info: ConnInfo, timers: Timers) -> Self {
        Self {
            state,
            info,
            timers,
            closing: AtomicBool::new(false),
        }
    }
}

/// Serves one accepted connection to its end.
pub(super) async fn serve(state: Arc<State>, mut stream: TcpStream, mut info: ConnInfo, mut slot: ConnSlot) {
    let server = state.snapshot().config.server.clone();
    let shutdown = state.shutdown.subscribe();
    let mut prefix = Vec::new();
    if server.proxy_protocol {
        // only trusted proxies may say who the client is; anyone else is turned away
        if !server.trusted_proxies.contains(canonical(info.peer.ip())) {
            tracing::debug!(peer = %info.peer, "PROXY protocol expected from a trusted proxy: connection closed");
            return;
        }
        let read = tokio::time::timeout(server.header_read_timeout, proxy_protocol::read_header(&mut stream)).await;
        match read {
            Ok(Ok((client, rest))) => {
                if let Some(client) = client {
                    info.remote = SocketAddr::new(canonical(client.ip()), client.port());
                    if !slot.bind_ip(info.remote.ip(), server.max_connections_per_ip) {
                        tracing::debug!(client = %info.remote, "max_connections_per_ip reached: connection closed");
                        return;
                    }
                }
                prefix = rest;
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %info.peer, "{e}");
                return;
            }
            Err(_) => return,
        }
    }
    let _slot = slot;
    let stream = Prefixed::new(prefix, stream);
    let tls = if info.tls {
        match state.tls.load_full() {
            Some(acceptor) => Some(acceptor),
            None => return,
        }
    } else {
        None
    };
    match tls {
        None => {
            let timers = Timers::new(server.header_read_timeout, server.keepalive_timeout);
            let ctx = Arc::new(ConnCtx::new(state, info, timers));
            serve_h1(ctx, stream, &server, shutdown).await;
        }
        Some(acceptor) => {
            // the handshake is part of the time allowed to send the first request head
            let handshake = tokio::time::timeout(server.header_read_timeout, handshake(&state, &acceptor, stream));
            let Ok(Some(stream)) = handshake.await else {
                return;
            };
            let session = stream.get_ref().1;
            let h2 = session.alpn_protocol() == Some(b"h2");
            info.tls_version = match session.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
                Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
                _ => None,
            };
            let timers = Timers::new(server.header_read_timeout, server.keepalive_timeout);
            let ctx = Arc::new(ConnCtx::new(state, info, timers));
            if h2 {
                let io = TokioIo::new(stream);
                let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                b.timer(TokioTimer::new())
                    .max_header_list_size(server.max_header_size as u32)
                    .max_concurrent_streams(256)
                    .keep_alive_interval(Some(Duration::from_secs(30)))
                    .keep_alive_timeout(Duration::from_secs(20));
                let conn = b.serve_connection(io, service(ctx.clone()));
                drive(conn, &ctx.timers, true, shutdown).await;
            } else {
                serve_h1(ctx, stream, &server, shutdown).await;
            }
        }
    }
}

/// The TLS handshake. While an ACME order is running, the ClientHello is read first: a
/// tls-alpn-01 validation (ALPN `acme-tls/1`) gets the challenge certificate, and is closed
/// right after its handshake, as the protocol wants.
async fn handshake(
    state: &State,
    acceptor: &TlsAcceptor,
    stream: Prefixed<TcpStream>,
) -> Option<tokio_rustls::server::TlsStream<Prefixed<TcpStream>>> {
    let Some(challenges) = state.acme_challenges.load_full() else {
        return acceptor.accept(stream).await.ok();
    };
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
        .await
        .ok()?;
    if rustls_acme::is_tls_alpn_challenge(&start.client_hello()) {
        tracing::debug!("ACME tls-alpn-01 validation handshake");
        let mut tls = start.into_stream(challenges.tls.clone()).await.ok()?;
        use tokio::io::AsyncWriteExt;
        let _ = tls.shutdown().await;
        return None;
    }
    start.into_stream(acceptor.config().clone()).await.ok()
}

async fn serve_h1<T>(ctx: Arc<ConnCtx>, io: T, server: &ServerSettings, shutdown: watch::Receiver<bool>)
where
    T: AsyncRead + AsyncWrite + PlainTcp + Unpin + Send + 'static,
{
    let conn = H1 {
        // boxed once per connection: it holds every request's future in turn
        fut: Box::pin(super::h1::serve(
            ctx.clone(),
            io,
            server.max_header_size,
            server.send_timeout,
        )),
        ctx: ctx.clone(),
    };
    drive(conn, &ctx.timers, false, shutdown).await;
}

/// An HTTP/1.1 connection; a graceful shutdown lets it finish the response in progress.
struct H1<F> {
    fut: Pin<Box<F>>,
    ctx: Arc<ConnCtx>,
}

impl<F: Future> Future for H1<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.fut.as_mut().poll(cx)
    }
}

impl<F: Future> Graceful for H1<F> {
    fn graceful_shutdown(self: Pin<&mut Self>) {
        self.ctx.closing.store(true, Relaxed);
    }
}

/// A hyper connection that can be asked to finish its requests and close.
trait Graceful: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

impl<I, S, B, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxErr>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: HttpBody + 'static,
    B::Error: Into<BoxErr>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self)
    }
}

/// On shutdown, how long an idle HTTP/1.1 connection is kept for one more request (answered
/// with `Connection: close`), so a client that is about to reuse it is not cut off mid-send.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// Runs a connection until it ends, its deadline passes, or the gateway shuts down.
///
/// Polled on every wake-up of the connection (each request wakes it at least once), so the
/// timer and the shutdown signal are polled only when they may have fired: both stay
/// registered with the task between polls, and whether they fired is read from their state
/// (no clock read, no lock) before they are polled again.
async fn drive<C: Graceful>(conn: C, timers: &Timers, h2: bool, shutdown: watch::Receiver<bool>) {
    let mut conn = pin!(conn);
    let first = timers.next_check().unwrap_or_else(Instant::now);
    let mut sleep = pin!(tokio::time::sleep_until(first));
    let mut sleep_registered = false;
    // set once the gateway shuts down: when to stop waiting for one more request
    let mut draining_until: Option<Instant> = None;
    let mut closing = false;
    let probe = shutdown.clone();
    let mut changed_registered = false;
    let mut shutdown = shutdown;
    let mut stopping = *shutdown.borrow_and_update();
    let mut changed = pin!(shutdown.changed());
    poll_fn(|cx| {
        loop {
            if conn.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            // registered by the poll that found nothing: polled again once it may be ready
            if !stopping && (!changed_registered || probe.has_changed().unwrap_or(true)) {
                changed_registered = true;
                stopping = changed.as_mut().poll(cx).is_ready();
            }
            if stopping && !closing && draining_until.is_none() {
                match begin_drain(h2, timers, sleep.as_mut(), conn.as_mut()) {
                    Some(t) => {
                        draining_until = Some(t);
                        sleep_registered = false;
                    }
                    None => closing = true,
                }
                continue;
            }
            if closing || (sleep_registered && !sleep.is_elapsed()) {
                return Poll::Pending;
            }
            sleep_registered = true;
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            sleep_registered = false;
            if draining_until.is_some_and(|t| Instant::now() >= t) {
                conn.as_mut().graceful_shutdown();
                closing = true;
                continue;
            }
            match timers.next_check() {
                Some(at) => sleep.as_mut().reset(draining_until.map_or(at, |t| t.min(at))),
                // HTTP/1.1: idle, or too slow with a request head: just close
                None if !h2 => return Poll::Ready(()),
                None => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    })
    .await
}

/// Starts closing a connection at shutdown: HTTP/2 sends GOAWAY and a busy HTTP/1.1 connection
/// closes after its response (`None`); an idle HTTP/1.1 connection waits `DRAIN_IDLE` for one
/// more request (returns when to give up).
fn begin_drain<C: Graceful>(
    h2: bool,
    timers: &Timers,
    sleep: Pin<&mut tokio::time::Sleep>,
    conn: Pin<&mut C>,
) -> Option<Instant> {
    if h2 || timers.phase.load(Relaxed) != IDLE {
        conn.graceful_shutdown();
        None
    } else {
        let until = Instant::now() + DRAIN_IDLE;
        sleep.reset(until);
        Some(until)
    }
}

/// The HTTP/2 service: each request goes through [`respond`].
fn service(
    ctx: Arc<ConnCtx>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<TrackedBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<TrackedBody>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let ctx = ctx.clone();
        async move { Ok(respond(ctx, req.map(ReqBody::Hyper)).await) }
    })
}

/// Handles one request of the connection; its response body finishes the request's
/// bookkeeping when it is dropped.
pub(super) async fn respond(ctx: Arc<ConnCtx>, req: Request<ReqBody>) -> Response<TrackedBody> {
    ctx.timers.request_started();
    // marks the request finished even if this future is dropped (client went away)
    let finished = Finished(ctx);
    let (resp, completion) = service::handle(&finished.0.state, &finished.0.info, req).await;
    resp.map(|inner| TrackedBody {
        inner,
        bytes: 0,
        completion: Some(completion),
        _finished: finished,
    })
}

/// Marks a request finished when dropped.
struct Finished(Arc<ConnCtx>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.timers.request_finished();
    }
}

/// A response body that counts the bytes sent and, when it is dropped (fully written, or the
/// client went away), finishes the request: metrics, access log, connection timers.
pub struct TrackedBody {
    inner: Body,
    bytes: u64,
    completion: Option<service::Completion>,
    _finished: Finished,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let Some(c) = self.completion.take() {
            c.finish(self.bytes);
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &r
            && let Some(d) = frame.data_ref()
        {
            self.bytes += d.len() as u64;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
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

impl<T> PlainTcp for tokio_rustls::server::TlsStream<T> {}
