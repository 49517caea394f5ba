//! The HTTP/3 listener: QUIC (quinn) on the UDP port of the HTTPS listener, with the same
//! certificates (the rustls config of TCP TLS, ALPN `h3`, TLS 1.3, no 0-RTT), and h3 on each
//! connection. Every request goes through the one pipeline (`pipeline::service`), its body
//! adapted by `proto::h3`; the answer streams back on its QUIC stream. QUIC connections count
//! toward `max_connections` and `max_connections_per_ip` with the TCP ones; past
//! [`RETRY_PAST_HANDSHAKES`] handshakes in progress, new clients must first prove their address
//! (Retry). When the gateway stops, each connection is sent GOAWAY, its requests in flight
//! finish (within `shutdown_grace`: the connection holds its slot until then), and it closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::Request;
use http_body_util::BodyExt;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::http::context::ConnInfo;
use crate::net::ConnSlot;
use crate::pipeline::service;
use crate::pipeline::state::State;
use crate::proto::block::Pooled;
use crate::proto::body::ReqBody;
use crate::proto::h3::{H3Body, strip_connection_fields};

/// H3_NO_ERROR, H3_REQUEST_INCOMPLETE and H3_INTERNAL_ERROR (RFC 9114 §8.1).
const NO_ERROR: u32 = 0x100;

/// Receive and send buffers asked of the kernel for the UDP socket.
const SOCKET_BUFFER: usize = 4 << 20;

/// Binds the UDP socket at `addr` and the QUIC endpoint on it.
pub(super) fn bind(addr: SocketAddr, config: &Config, state: &State) -> Result<quinn::Endpoint, String> {
    let socket = udp_socket(addr).map_err(|e| format!("cannot listen on UDP {addr} (server.http3): {e}"))?;
    let server = server_config(config, state)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| format!("cannot start QUIC on {addr}: {e}"))
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // as the TCP listeners: [::] is IPv6 only
        socket.set_only_v6(true)?;
    }
    for (what, set, get) in [
        (
            "receive",
            Socket::set_recv_buffer_size as fn(&Socket, usize) -> _,
            Socket::recv_buffer_size as fn(&Socket) -> _,
        ),
        ("send", Socket::set_send_buffer_size, Socket::send_buffer_size),
    ] {
        let _ = set(&socket, SOCKET_BUFFER);
        // Linux reports twice what it grants
        if let Ok(got) = get(&socket)
            && got / 2 < SOCKET_BUFFER
        {
            let sysctl = if what == "receive" {
                "net.core.rmem_max"
            } else {
                "net.core.wmem_max"
            };
            tracing::warn!(
                "HTTP/3: the kernel caps the UDP {what} buffer at {} KiB (wanted {} KiB); raise {sysctl}",
                got / 2 / 1024,
                SOCKET_BUFFER / 1024
            );
        }
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// QUIC's server config: the TCP listener's rustls config (its certificate store, so new
/// certificates reach new handshakes without anything here) with ALPN `h3` and no early data.
fn server_config(config: &Config, state: &State) -> Result<quinn::ServerConfig, String> {
    let mut tls = (*crate::tls::server_config(state.certs().clone(), config.tls.min_version)?).clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    // 0-RTT requests could be replayed
    tls.max_early_data_size = 0;
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls)).map_err(|e| format!("QUIC TLS setup: {e}"))?;
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(config.server.keepalive_timeout)
        .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::from_u32(75_000)));
    transport
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(100))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(8))
        .max_idle_timeout(Some(idle))
        // what a client can make the gateway hold, as for HTTP/2: 64 KiB a stream, 256 KiB a
        // connection (quinn's defaults are 1.25 MB a stream and no connection bound)
        .stream_receive_window(quinn::VarInt::from_u32(64 * 1024))
        .receive_window(quinn::VarInt::from_u32(256 * 1024))
        .send_window(1 << 20)
        .datagram_receive_buffer_size(None);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    // the client's address is checked once (limits, allow-lists, rate limits): it may not move
    server.migration(false);
    Ok(server)
}

/// Handshakes in progress past which new connections must first prove their address (a Retry
/// round trip), so that a flood of Initial packets from spoofed sources costs the gateway
/// little and makes it send nothing larger than what it received.
pub(super) const RETRY_PAST_HANDSHAKES: usize = 64;

/// Accepts QUIC connections until `stop` turns true; then tells each one to finish.
pub(super) async fn serve(endpoint: quinn::Endpoint, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let local = endpoint
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let handshaking = Arc::new(AtomicUsize::new(0));
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = stop.changed() => break,
        };
        let Some(incoming) = incoming else { break };
        if handshaking.load(SeqCst) >= RETRY_PAST_HANDSHAKES && !incoming.remote_address_validated() {
            match incoming.retry() {
                Ok(()) => state.quic_retry_sent(),
                Err(e) => e.into_incoming().refuse(),
            }
            continue;
        }
        let Some(slot) = admit(&state, incoming.remote_address()) else {
            // over max_connections or max_connections_per_ip, as on TCP; a source address not
            // yet proven must prove it first (else spoofed packets could use up another
            // client's share)
            if incoming.remote_address_validated() {
                incoming.refuse();
            } else {
                match incoming.retry() {
                    Ok(()) => state.quic_retry_sent(),
                    Err(e) => e.into_incoming().refuse(),
                }
            }
            continue;
        };
        // counted before its task runs, so that a burst cannot pass the threshold unseen
        let counted = Handshaking::start(&handshaking);
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            let Some(conn) = handshake(incoming, &state, counted).await else {
                return;
            };
            connection(conn, local, state, slot, stop).await;
        });
    }
    // no new connections; those open get GOAWAY from their own tasks
    endpoint.set_server_config(None);
}

/// A connection slot for a client at `remote`, counted with the TCP connections against
/// `max_connections` and `max_connections_per_ip` (trusted proxies exempt from the latter).
fn admit(state: &State, remote: SocketAddr) -> Option<ConnSlot> {
    let snap = state.snapshot();
    let server = &snap.config.server;
    let mut slot = state.connections().try_acquire(server.max_connections)?;
    let ip = crate::proto::client_ip::canonical(remote.ip());
    if !server.trusted_proxies.contains(ip) && !slot.bind_ip(ip, server.max_connections_per_ip) {
        return None;
    }
    Some(slot)
}

/// One handshake in progress, counted until dropped.
struct Handshaking(Arc<AtomicUsize>);

impl Handshaking {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, SeqCst);
        Handshaking(count.clone())
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// Completes the QUIC handshake within `header_read_timeout`, counted while it runs.
async fn handshake(incoming: quinn::Incoming, state: &State, _counted: Handshaking) -> Option<quinn::Connection> {
    let connecting = incoming.accept().ok()?;
    let limit = state.snapshot().config.server.header_read_timeout;
    tokio::time::timeout(limit, connecting).await.ok()?.ok()
}

/// Requests in flight on one connection, and a wake-up when the last one ends.
#[derive(Default)]
struct InFlight {
    n: AtomicUsize,
    idle: Notify,
}

struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

async fn connection(
    conn: quinn::Connection,
    local: SocketAddr,
    state: Arc<State>,
    slot: ConnSlot,
    mut stop: watch::Receiver<bool>,
) {
    let _open = state.quic_connection_opened();
    let mut info = ConnInfo::new(conn.remote_address(), local, true);
    info.tls_version = Some("TLSv1.3");
    let info = Arc::new(info);
    // the connection's settings, read once (as a TCP connection's): each request then loads
    // the snapshot only in the pipeline
    let (max_head, limits) = {
        let snap = state.snapshot();
        let server = &snap.config.server;
        let limits = Limits {
            head: server.header_read_timeout,
            send: server.send_timeout,
        };
        (server.max_header_size as u64, limits)
    };
    let setup = limits.head;
    // kept to let the last answers' bytes leave before the connection is dropped
    let quic = conn.clone();
    let mut builder = h3::server::builder();
    builder.max_field_section_size(max_head);
    let built = builder.build(h3_quinn::Connection::new(conn));
    // a client that never lets the gateway open its control streams does not hold a slot
    let Ok(Ok(mut h3c)) = tokio::time::timeout(setup, built).await else {
        return;
    };
    let in_flight = Arc::new(InFlight::default());
    let mut draining = false;
    loop {
        let idle = in_flight.idle.notified();
        if draining && in_flight.n.load(SeqCst) == 0 {
            // told to stop and nothing left in flight: close
            break;
        }
        tokio::select! {
            accepted = h3c.accept() => match accepted {
                Ok(Some(resolver)) => {
                    in_flight.n.fetch_add(1, SeqCst);
                    let guard = InFlightGuard(in_flight.clone());
                    let (state, info) = (state.clone(), info.clone());
                    // built in a pooled block: the request's future (the pipeline's) is large,
                    // and moving it into the task would copy it (as for HTTP/2)
                    tokio::spawn(Pooled::with(|| request(resolver, state, info, limits, guard)));
                }
                Ok(None) | Err(_) => break,
            },
            _ = stop.changed(), if !draining => {
                draining = true;
                // GOAWAY: the requests already accepted finish, no new ones
                let _ = tokio::time::timeout(setup, h3c.shutdown(0)).await;
            }
            _ = idle, if draining => {}
        }
    }
    if draining {
        // the client closes once it has read the last answers (after GOAWAY): dropping the
        // connection before that would cut their ends off
        let _ = tokio::time::timeout(CLOSE_WAIT, quic.closed()).await;
    }
    drop(h3c);
    drop(slot);
}

type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;

/// How long a request's head may take to arrive, and an answer's writes to be taken.
#[derive(Clone, Copy)]
struct Limits {
    head: Duration,
    send: Duration,
}

/// One request: through the pipeline, its answer streamed back.
async fn request(
    resolver: Resolver,
    state: Arc<State>,
    info: Arc<ConnInfo>,
    limits: Limits,
    _in_flight: InFlightGuard,
) {
    // a stream that never sends its head does not stay open (as `header_read_timeout` on TCP)
    let Ok(Ok((req, stream))) = tokio::time::timeout(limits.head, resolver.resolve_request()).await else {
        return;
    };
    let (mut send, mut recv) = stream.split();
    let (parts, ()) = req.into_parts();
    // a request whose stream already ended has no body (most GETs): say so, so that it is
    // forwarded without one, may be retried and may be answered from the cache
    let first = match futures_util::FutureExt::now_or_never(recv.recv_data()) {
        Some(Ok(None)) => None,
        Some(Ok(Some(mut chunk))) => Some(Some(chunk.copy_to_bytes(chunk.remaining()))),
        Some(Err(_)) => return,
        None => Some(None),
    };
    let body = match first {
        None if !parts.headers.contains_key(http::header::CONTENT_LENGTH) => ReqBody::Empty,
        first => match H3Body::new(recv, &parts.headers, first.flatten()) {
            Some(b) => ReqBody::H3(Box::new(b)),
            None => {
                // an invalid Content-Length: malformed (RFC 9114 §4.1.2)
                send.stop_stream(h3::error::Code::H3_MESSAGE_ERROR);
                return;
            }
        },
    };
    let head_only = parts.method == http::Method::HEAD;
    let req = Request::from_parts(parts, body);
    let (resp, completion) = service::handle(&state, &info, req).await;
    let (mut head, body) = resp.into_parts();
    strip_connection_fields(&mut head.headers);
    // no content after HEAD, 204 or 304 (the HTTP/1.1 encoder and hyper drop it too)
    let bodiless = head_only || matches!(head.status.as_u16(), 204 | 304);
    let sent = respond(&mut send, head, body, bodiless, limits.send).await;
    completion.finish(sent);
}

/// Sends the answer; returns the body bytes sent. A client that takes nothing for
/// `send_timeout` loses the answer (as on HTTP/1.1), and an answer that cannot be completed
/// resets the stream, so the client never takes it as whole.
async fn respond(
    send: &mut h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>,
    head: http::response::Parts,
    mut body: crate::proto::body::Body,
    bodiless: bool,
    limit: Duration,
) -> u64 {
    use h3::error::Code;
    if !matches!(
        tokio::time::timeout(limit, send.send_response(http::Response::from_parts(head, ()))).await,
        Ok(Ok(()))
    ) {
        send.stop_stream(Code::H3_REQUEST_CANCELLED);
        return 0;
    }
    let mut sent: u64 = 0;
    loop {
        let frame = if bodiless { None } else { body.frame().await };
        let (written, last) = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    sent += data.len() as u64;
                    (tokio::time::timeout(limit, send.send_data(data)).await, false)
                }
                Err(frame) => match frame.into_trailers() {
                    // (gRPC's status travels in trailers; `finish` follows)
                    Ok(trailers) => (tokio::time::timeout(limit, send.send_trailers(trailers)).await, false),
                    Err(_) => continue,
                },
            },
            Some(Err(_)) => {
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return sent;
            }
            None => (tokio::time::timeout(limit, send.finish()).await, true),
        };
        match written {
            Ok(Ok(())) if last => return sent,
            Ok(Ok(())) => {}
            _ => {
                send.stop_stream(Code::H3_REQUEST_CANCELLED);
                return sent;
            }
        }
    }
}

/// How long to wait, at most, for the idle QUIC connections to close once told to.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Closes every connection of `endpoint` at once (after the grace: what is still open).
pub(super) fn close(endpoint: &quinn::Endpoint) {
    endpoint.close(quinn::VarInt::from_u32(NO_ERROR), b"");
}
