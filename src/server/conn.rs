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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerSettings;
use crate::http::context::ConnInfo;
use crate::net::ConnSlot;
use crate::pipeline::service;
use crate::pipeline::state::State;
use crate::proto::BoxError;
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
    let shutdown = state.shutdown_signal();
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
        match state.tls() {
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
    let Some(challenges) = state.acme().challenges.load_full() else {
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
    let options = h1::Options {
        limits: Limits {
            max_head: server.max_header_size,
            underscores: server.underscores_in_headers,
        },
        send_timeout: server.send_timeout,
    };
    let conn = h1::connection(ctx.clone(), io, options);
    drive(conn, &ctx.timers, false, shutdown).await;
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
        async move { Ok(respond(ctx, req.map(ReqBody::Hyper)).await) }
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
