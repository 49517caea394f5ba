//! One client connection: the PROXY header from a trusted proxy, the TLS handshake, then
//! HTTP/1.1 (the codec's server) or HTTP/2 (hyper) by ALPN, every request going through the
//! gateway's pipeline, with the timers of `header_read_timeout` and `keepalive_timeout`
//! (`proto::lifecycle`). On shutdown the connection finishes its in-flight requests and closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerSettings;
use crate::http::context::ConnInfo;
use crate::net::ConnSlot;
use crate::pipeline::service;
use crate::pipeline::state::State;
use crate::proto::BoxError;
use crate::proto::block::Pooled;
use crate::proto::body::{Body, ReqBody};
use crate::proto::client_ip::canonical;
use crate::proto::h1::request::Limits;
use crate::proto::h1::server::{self as h1, PlainTcp, RequestBody};
use crate::proto::lifecycle::{Graceful, Timers, drive};
use crate::proto::proxy_protocol::{self, Prefixed};

/// What the service needs from its connection, shared by all its requests.
struct ConnCtx {
    state: Arc<State>,
    info: ConnInfo,
    timers: Timers,
    /// Set by a graceful shutdown: an HTTP/1.1 connection closes after its current response.
    closing: AtomicBool,
    /// The connection's place in the open count, freed with the context (when the connection
    /// and the last of its requests are done).
    _slot: ConnSlot,
}

impl ConnCtx {
    fn new(state: Arc<State>, info: ConnInfo, timers: Timers, slot: ConnSlot) -> Self {
        Self {
            state,
            info,
            timers,
            closing: AtomicBool::new(false),
            _slot: slot,
        }
    }
}

/// Starts serving an accepted connection in a task of its own. The task's future is held for as
/// long as the connection lives, so it is kept small: a plain HTTP/1.1 connection's holds the
/// codec's connection and its timers. What only some connections need, and only for a moment
/// (the PROXY header, the TLS handshake), runs in a set-up task ([`serve`]) that then starts
/// the connection's own.
pub(super) fn start(state: &Arc<State>, stream: TcpStream, info: ConnInfo, slot: ConnSlot) {
    let snap = state.snapshot();
    let server = &snap.config.server;
    if info.tls || server.proxy_protocol {
        tokio::spawn(serve(state.clone(), stream, info, slot));
        return;
    }
    let timers = Timers::new(server.header_read_timeout, server.keepalive_timeout);
    let ctx = ConnCtx::new(state.clone(), info, timers, slot);
    let stream = Prefixed::new(Vec::new(), stream);
    tokio::spawn(http1(ctx, stream, h1_options(server), state.shutdown_signal()));
}

/// HTTP/1.1 on `io` (plain or TLS), to the connection's end.
fn http1<T>(
    ctx: ConnCtx,
    io: T,
    options: h1::Options,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + PlainTcp + Unpin + Send + 'static,
{
    let ctx = Arc::new(ctx);
    let conn = h1::connection(ctx.clone(), io, options);
    async move { drive(conn, &ctx.timers, false, shutdown).await }
}

/// Sets up a connection that starts with a PROXY header or a TLS handshake, then serves it in
/// a task of its own.
async fn serve(state: Arc<State>, stream: TcpStream, mut info: ConnInfo, mut slot: ConnSlot) {
    let snap = state.snapshot();
    let server = &snap.config.server;
    let (header_timeout, keepalive) = (server.header_read_timeout, server.keepalive_timeout);
    let options = h1_options(server);
    let max_header_list = server.max_header_size as u32;
    let stream = if server.proxy_protocol {
        match Box::pin(proxy_header(server, stream, &mut info, &mut slot)).await {
            Some(stream) => stream,
            None => return,
        }
    } else {
        Prefixed::new(Vec::new(), stream)
    };
    drop(snap);
    let shutdown = state.shutdown_signal();
    let timers = Timers::new(header_timeout, keepalive);
    // the connection goes on in a task of its own, sized for what it runs from now on: this
    // one holds room for the set-up just done (and is freed when it returns)
    if !info.tls {
        tokio::spawn(http1(
            ConnCtx::new(state, info, timers, slot),
            stream,
            options,
            shutdown,
        ));
        return;
    }
    // the handshake is part of the time allowed to send the first request head
    let Some(acceptor) = state.tls() else { return };
    if let Ok(Some(stream)) = boxed_handshake(&state, acceptor, stream, header_timeout).await {
        let ctx = ConnCtx::new(state, info, timers, slot);
        over_tls(stream, ctx, options, max_header_list, shutdown);
    }
}

type Tls = tokio_rustls::server::TlsStream<Prefixed<TcpStream>>;

/// [`handshake`] within `timeout`, boxed: built here, not in the connection's future, which
/// would keep room for it as long as the connection lives.
fn boxed_handshake(
    state: &State,
    acceptor: Arc<TlsAcceptor>,
    stream: Prefixed<TcpStream>,
    timeout: Duration,
) -> Pin<Box<dyn Future<Output = Result<Option<Tls>, tokio::time::error::Elapsed>> + Send + '_>> {
    Box::pin(tokio::time::timeout(timeout, async move {
        handshake(state, &acceptor, stream).await
    }))
}

/// How much of a request body an HTTP/2 client may send on one stream before the gateway has
/// passed it on (nginx's `http2_body_preread_size`; what an edge proxy is advised to allow).
const H2_STREAM_WINDOW: u32 = 64 * 1024;
/// The same for all the streams of a connection together: the most request body one HTTP/2
/// connection can make the gateway hold (hyper's default is 1 MiB a stream and a connection).
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;

/// Serves an established TLS session in a task of its own, HTTP/2 or HTTP/1.1 by ALPN.
fn over_tls(
    stream: Tls,
    mut ctx: ConnCtx,
    options: h1::Options,
    max_header_list: u32,
    shutdown: watch::Receiver<bool>,
) {
    let session = stream.get_ref().1;
    let h2 = session.alpn_protocol() == Some(b"h2");
    ctx.info.tls_version = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
        Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
        _ => None,
    };
    if !h2 {
        tokio::spawn(http1(ctx, stream, options, shutdown));
        return;
    }
    let ctx = Arc::new(ctx);
    let io = TokioIo::new(stream);
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(max_header_list)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = b.serve_connection(io, service(ctx.clone()));
    tokio::spawn(async move { drive(conn, &ctx.timers, true, shutdown).await });
}

/// Reads the PROXY header a trusted proxy sends first: the client it names becomes the
/// connection's client (and counts against `max_connections_per_ip`). `None`: the connection
/// closes (not a trusted proxy, a bad or late header, the client over its cap).
async fn proxy_header(
    server: &ServerSettings,
    mut stream: TcpStream,
    info: &mut ConnInfo,
    slot: &mut ConnSlot,
) -> Option<Prefixed<TcpStream>> {
    // only trusted proxies may say who the client is; anyone else is turned away
    if !server.trusted_proxies.contains(canonical(info.peer.ip())) {
        tracing::debug!(peer = %info.peer, "PROXY protocol expected from a trusted proxy: connection closed");
        return None;
    }
    let read = tokio::time::timeout(server.header_read_timeout, proxy_protocol::read_header(&mut stream)).await;
    match read {
        Ok(Ok((client, rest))) => {
            if let Some(client) = client {
                info.remote = SocketAddr::new(canonical(client.ip()), client.port());
                if !slot.bind_ip(info.remote.ip(), server.max_connections_per_ip) {
                    tracing::debug!(client = %info.remote, "max_connections_per_ip reached: connection closed");
                    return None;
                }
            }
            Some(Prefixed::new(rest, stream))
        }
        Ok(Err(e)) => {
            tracing::debug!(peer = %info.peer, "{e}");
            None
        }
        Err(_) => None,
    }
}

/// The TLS handshake. While an ACME order is running, the ClientHello is read first: a
/// tls-alpn-01 validation (ALPN `acme-tls/1`) gets the challenge certificate, and is closed
/// right after its handshake, as the protocol wants.
async fn handshake(state: &State, acceptor: &TlsAcceptor, stream: Prefixed<TcpStream>) -> Option<Tls> {
    let Some(challenges) = state.acme().challenges.load_full() else {
        return acceptor.accept(stream).await.ok();
    };
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
        .await
        .ok()?;
    if rustls_acme::is_tls_alpn_challenge(&start.client_hello()) {
        tracing::debug!("ACME tls-alpn-01 validation handshake");
        let name = start.client_hello().server_name().map(str::to_string);
        let config = challenges.alpn_config(name.as_deref()).await?;
        let mut tls = start.into_stream(config).await.ok()?;
        use tokio::io::AsyncWriteExt;
        let _ = tls.shutdown().await;
        return None;
    }
    start.into_stream(acceptor.config().clone()).await.ok()
}

/// What an HTTP/1.1 connection allows, from `[server]`.
fn h1_options(server: &ServerSettings) -> h1::Options {
    h1::Options {
        limits: Limits {
            max_head: server.max_header_size,
            underscores: server.underscores_in_headers,
        },
        send_timeout: server.send_timeout,
    }
}

/// HTTP/1.1 requests of the connection, through the gateway's pipeline.
impl h1::Service for ConnCtx {
    type Body = TrackedBody;

    fn call(self: Arc<Self>, req: Request<Option<RequestBody>>) -> impl Future<Output = Response<TrackedBody>> + Send {
        respond(self, req.map(|b| b.map_or(ReqBody::Empty, ReqBody::H1)))
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
        // built in a pooled block: hyper moves the stream's future into a task of its own, and
        // a pointer moves for free where the request's few KiB would be copied
        Pooled::with(|| async move { Ok(respond(ctx, req.map(ReqBody::Hyper)).await) })
    })
}

/// Handles one request of the connection; its response body finishes the request's
/// bookkeeping when it is dropped.
async fn respond(ctx: Arc<ConnCtx>, req: Request<ReqBody>) -> Response<TrackedBody> {
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

impl<T> PlainTcp for tokio_rustls::server::TlsStream<T> {}
