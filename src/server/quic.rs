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

use bytes::Bytes;
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
        socket.set_only_v6(false)?;
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
        .max_idle_timeout(Some(idle));
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
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
            // over max_connections or max_connections_per_ip, as on TCP
            incoming.refuse();
            continue;
        };
        let (state, stop, handshaking) = (state.clone(), stop.clone(), handshaking.clone());
        tokio::spawn(async move {
            let Some(conn) = handshake(incoming, &state, &handshaking).await else {
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

/// Completes the QUIC handshake within `header_read_timeout`, counted while it runs.
async fn handshake(incoming: quinn::Incoming, state: &State, handshaking: &AtomicUsize) -> Option<quinn::Connection> {
    let connecting = incoming.accept().ok()?;
    handshaking.fetch_add(1, SeqCst);
    let limit = state.snapshot().config.server.header_read_timeout;
    let done = tokio::time::timeout(limit, connecting).await;
    handshaking.fetch_sub(1, SeqCst);
    done.ok()?.ok()
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
    let max_head = state.snapshot().config.server.max_header_size as u64;
    let built = h3::server::builder()
        .max_field_section_size(max_head)
        .build(h3_quinn::Connection::new(conn))
        .await;
    let Ok(mut h3c) = built else { return };
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
                    tokio::spawn(Pooled::with(|| request(resolver, state, info, guard)));
                }
                Ok(None) | Err(_) => break,
            },
            _ = stop.changed(), if !draining => {
                draining = true;
                // GOAWAY: the requests already accepted finish, no new ones
                let _ = h3c.shutdown(0).await;
            }
            _ = idle, if draining => {}
        }
    }
    drop(slot);
}

type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;

/// One request: through the pipeline, its answer streamed back.
async fn request(resolver: Resolver, state: Arc<State>, info: Arc<ConnInfo>, _in_flight: InFlightGuard) {
    let Ok((req, stream)) = resolver.resolve_request().await else {
        return;
    };
    let (mut send, recv) = stream.split();
    let (parts, ()) = req.into_parts();
    let Some(body) = H3Body::new(recv, &parts.headers) else {
        // an invalid Content-Length: malformed (RFC 9114 §4.1.2)
        send.stop_stream(h3::error::Code::H3_MESSAGE_ERROR);
        return;
    };
    let req = Request::from_parts(parts, ReqBody::H3(Box::new(body)));
    let (resp, completion) = service::handle(&state, &info, req).await;
    let (mut head, mut body) = resp.into_parts();
    strip_connection_fields(&mut head.headers);
    let mut sent: u64 = 0;
    if send.send_response(http::Response::from_parts(head, ())).await.is_err() {
        completion.finish(0);
        return;
    }
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    sent += data.len() as u64;
                    if send.send_data(data).await.is_err() {
                        break;
                    }
                }
            }
            Some(Err(_)) => {
                // the answer cannot be completed: the client must not take it as whole
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                break;
            }
            None => {
                let _ = send.finish().await;
                break;
            }
        }
    }
    completion.finish(sent);
}

/// How long to wait, at most, for the idle QUIC connections to close once told to.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Closes every connection of `endpoint` at once (after the grace: what is still open).
pub(super) fn close(endpoint: &quinn::Endpoint) {
    endpoint.close(quinn::VarInt::from_u32(NO_ERROR), b"");
}
