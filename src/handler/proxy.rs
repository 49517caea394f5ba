//! The reverse proxy: forwards a request to a server of an upstream over a pooled HTTP/1.1
//! connection, streaming bodies both ways. Hop-by-hop headers are dropped, forwarding headers
//! added. A server that cannot be reached is skipped for another (any method); an idempotent
//! request without a body is also retried elsewhere when its connection breaks before an answer.
//! WebSocket upgrades are joined into a byte tunnel.

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body as _;
use tokio::io::AsyncWriteExt;

use crate::http::context::RequestCtx;
use crate::http::error::HttpError;
use crate::proto::body::{self, Body, ReqBody};
use crate::proto::h1::fields::{is_hop_by_hop, strip_hop_by_hop};
use crate::proto::h1::pool::Lease;
use crate::proto::h1::server::OnUpgrade;
use crate::proto::h1::upstream::{self as h1, Conn, RecvBody};
use crate::proto::maps;
use crate::upstream::pool::{self, ConnectError};
use crate::upstream::{Server, Upstream};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Limits on a request body streamed to an upstream.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// 413 past this many bytes.
    pub max_size: u64,
    /// 408 when the client pauses longer than this between two chunks.
    pub read_timeout: std::time::Duration,
}

/// Forwards `req` to `upstream`.
pub async fn forward(
    upstream: &Arc<Upstream>,
    ctx: &RequestCtx<'_>,
    req: Request<ReqBody>,
    limits: BodyLimits,
    answered_by: &mut Option<(Arc<Server>, std::time::Duration)>,
) -> Result<Response<Body>, HttpError> {
    let (mut parts, incoming) = req.into_parts();
    let r = forward_parts(upstream, ctx, &mut parts, incoming, limits, answered_by).await;
    // the head has been sent: its map serves a later message
    maps::recycle(std::mem::take(&mut parts.headers));
    r
}

async fn forward_parts(
    upstream: &Arc<Upstream>,
    ctx: &RequestCtx<'_>,
    parts: &mut Parts,
    incoming: ReqBody,
    limits: BodyLimits,
    answered_by: &mut Option<(Arc<Server>, std::time::Duration)>,
) -> Result<Response<Body>, HttpError> {
    // the HTTP/1.1 codec read the request as asking for an upgrade (`Connection: upgrade` and
    // `Upgrade`), and handed over the way to the client's connection
    let client_upgrade = parts.extensions.remove::<OnUpgrade>();
    let upgrade = client_upgrade.is_some();
    let forwarding = prepare_request(parts, ctx, upgrade);
    if ctx.host_header.is_none()
        && let Ok(name) = HeaderValue::from_str(&upstream.spec.name)
    {
        // an HTTP/1.0 request without Host: HTTP/1.1 to the upstream needs one (nginx sends
        // the upstream's name too)
        parts.headers.insert(header::HOST, name);
    }
    let mut body = if incoming.is_end_stream() {
        Body::Empty
    } else {
        Body::limited(incoming, limits.max_size, limits.read_timeout)
    };
    // an idempotent request without a body can be sent again if its connection breaks (the
    // head stays here, borrowed by each attempt)
    let replayable = is_idempotent(&parts.method) && body.is_end_stream();
    let replay = upstream.spec.retries > 0 && replayable;

    let spec = &upstream.spec;
    let max_fails = spec.health.as_ref().map_or(1, |h| h.fails);
    let servers = upstream.servers();
    let mut tried: Vec<usize> = Vec::with_capacity(2);
    let mut last_error = "No upstream server is available.";
    for _attempt in 0..=spec.retries {
        let Some(i) = upstream.pick(&servers, ctx.client_ip, &tried) else {
            break;
        };
        tried.push(i);
        let server = &servers[i];
        // counted in flight from now until the response body ends (least_conn reads this)
        let inflight = server.begin();
        let sent = std::time::Instant::now();
        let head = (&*parts, &forwarding);
        match send(
            server,
            head,
            body,
            replayable,
            upgrade,
            spec.connect_timeout,
            spec.read_timeout,
        )
        .await
        {
            Outcome::Response(resp) => {
                server.record_success();
                *answered_by = Some((server.clone(), sent.elapsed()));
                return Ok(response(resp, inflight, client_upgrade));
            }
            Outcome::NotSent(back, err) => {
                tracing::warn!(server = %server.label, "upstream {err}; trying another server");
                server.record_failure(max_fails);
                last_error = "No upstream server could be reached.";
                body = back;
            }
            Outcome::TimedOut => return Err(HttpError::GatewayTimeout),
            Outcome::Failed(err, stale) => {
                match body::client_body_error(&err) {
                    Some(body::ClientBodyError::TooLarge) => return Err(HttpError::PayloadTooLarge),
                    Some(body::ClientBodyError::Timeout) => return Err(HttpError::RequestTimeout),
                    Some(body::ClientBodyError::Broken) => {
                        return Err(HttpError::BadRequest("The request body is malformed."));
                    }
                    None => {}
                }
                tracing::warn!(server = %server.label, "upstream request failed: {err}");
                if !stale {
                    server.record_failure(max_fails);
                }
                last_error = "The upstream server closed the connection.";
                if !replay {
                    return Err(HttpError::BadGateway(last_error));
                }
                body = Body::Empty;
            }
        }
    }
    Err(HttpError::BadGateway(last_error))
}

enum Outcome {
    Response(Response<RecvBody<Body>>),
    /// The request never left: it can go to another server whatever its method.
    NotSent(Body, ConnectError),
    /// Sent, then the connection failed before a response. `stale`: a reused connection closed
    /// unanswered, the upstream's idle timeout rather than a sign of a sick server.
    Failed(h1::Error, bool),
    TimedOut,
}

/// Sends on a pooled connection (skipping stale ones) or a new one.
async fn send(
    server: &Arc<Server>,
    (head, forwarding): (&Parts, &Forwarding),
    mut body: Body,
    replayable: bool,
    upgrade: bool,
    connect_timeout: std::time::Duration,
    read_timeout: std::time::Duration,
) -> Outcome {
    loop {
        let (conn, fresh) = match server.pool.take() {
            Some(conn) => (conn, false),
            None => {
                // boxed: connecting is rare (pooled connections are reused) and its future is
                // large, so it should not swell every request's future
                match Box::pin(pool::connect(&server.addr, connect_timeout)).await {
                    Ok(conn) => (conn, true),
                    Err(e) => return Outcome::NotSent(body, e),
                }
            }
        };
        match tokio::time::timeout(read_timeout, conn.send(head, forwarding.headers(), body, upgrade)).await {
            Err(_) => return Outcome::TimedOut,
            Ok(Ok(resp)) => return Outcome::Response(resp),
            Ok(Err(e)) => match e.body {
                // not sent (the pooled connection was closing): try the next connection
                Some(back) if !fresh => body = back,
                Some(back) => return Outcome::NotSent(back, ConnectError::Closed),
                None => {
                    // a reused connection the upstream closed as the request went out (its idle
                    // keep-alive ran out): nothing was answered, so a request that can be
                    // replayed goes again on another connection, and the server is not blamed
                    // (as nginx)
                    let stale = !fresh && matches!(e.error, h1::Error::Closed);
                    if !(stale && replayable) {
                        return Outcome::Failed(e.error, stale);
                    }
                    body = Body::Empty;
                }
            },
        }
    }
}

/// The forwarding headers of a request to an upstream. They are written after the request's
/// own headers (whose copies of them were removed) straight onto the wire, never through the
/// header map: five map inserts per request saved.
pub struct Forwarding {
    host: Option<HeaderValue>,
    forwarded_for: HeaderValue,
    real_ip: HeaderValue,
    proto: HeaderValue,
    request_id: HeaderValue,
}

impl Forwarding {
    pub fn headers(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let host = self.host.iter().map(|h| (&X_FORWARDED_HOST, h));
        host.chain([
            (&X_FORWARDED_FOR, &self.forwarded_for),
            (&X_REAL_IP, &self.real_ip),
            (&X_FORWARDED_PROTO, &self.proto),
            (&X_REQUEST_ID, &self.request_id),
        ])
    }
}

fn is_forwarding(name: &str) -> bool {
    matches!(
        name,
        "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto" | "x-real-ip" | "x-request-id"
    )
}

/// Rewrites the request head for the upstream: origin-form URI, HTTP/1.1, `Host` the one the
/// gateway routed on, hop-by-hop headers out; returns the forwarding headers to send with it.
pub fn prepare_request(parts: &mut Parts, ctx: &RequestCtx<'_>, upgrade: bool) -> Forwarding {
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts.uri.path_and_query().cloned();
        parts.uri = pq.map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    // HTTP/2 names the host in `:authority`: it becomes `Host` (RFC 9113 §8.3.1), replacing
    // any `host` field of the client's (the pipeline refused one that differs)
    let needs_host = parts.version >= Version::HTTP_2;
    parts.version = Version::HTTP_11;
    let h = &mut parts.headers;
    // X-Forwarded-For gets the hop we heard from appended (each proxy appends its peer); the
    // values that came with the request, read in the same pass that finds what must go
    let peer = ctx.conn.remote_header().clone();
    // besides hop-by-hop headers: Proxy-* ones (for proxies, never for the origin), `Upgrade`
    // unless this is an upgrade, and the client's own forwarding headers
    let doomed = |name: &str| name.starts_with("proxy-") || (!upgrade && name == "upgrade") || is_forwarding(name);
    let mut forwarded_for: Option<Vec<u8>> = None;
    let mut strip = false;
    for (name, value) in h.iter() {
        let n = name.as_str();
        if name == X_FORWARDED_FOR {
            if !value.is_empty() {
                let list = forwarded_for.get_or_insert_with(Vec::new);
                if !list.is_empty() {
                    list.extend_from_slice(b", ");
                }
                list.extend_from_slice(value.as_bytes());
            }
            strip = true;
        } else if is_hop_by_hop(n) || doomed(n) {
            strip = true;
        }
    }
    if strip {
        strip_hop_by_hop(h, doomed);
    }
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if let Some(host) = &ctx.host_header
        && (needs_host || !h.contains_key(header::HOST))
    {
        h.insert(header::HOST, host.clone());
    }
    let forwarded_for = match forwarded_for {
        Some(mut list) => {
            list.extend_from_slice(b", ");
            list.extend_from_slice(peer.as_bytes());
            HeaderValue::from_bytes(&list).unwrap_or_else(|_| peer.clone())
        }
        None => peer.clone(),
    };
    // X-Real-IP is the client as worked out through trusted proxies; usually the peer itself,
    // and then the same value
    let peer_ip = crate::proto::client_ip::canonical(ctx.conn.remote.ip());
    let real_ip = if ctx.client_ip == peer_ip {
        peer
    } else {
        crate::http::context::ip_value(ctx.client_ip)
    };
    Forwarding {
        host: ctx.host_header.clone(),
        forwarded_for,
        real_ip,
        proto: HeaderValue::from_static(ctx.scheme()),
        request_id: ctx.request_id.clone(),
    }
}

/// The upstream's response for the client: hop-by-hop headers and `X-Powered-By` out, the body
/// streamed and its connection pooled at the end; a 101 joins the two upgraded connections.
fn response(
    resp: Response<RecvBody<Body>>,
    inflight: Lease<Conn>,
    client_upgrade: Option<OnUpgrade>,
) -> Response<Body> {
    let (mut parts, mut body) = resp.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client) = client_upgrade
        && let Some((mut upstream, early)) = body.into_upgraded()
    {
        tokio::spawn(async move {
            if let Some(mut client) = client.get().await
                && (early.is_empty() || client.write_all(&early).await.is_ok())
            {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            drop(inflight);
        });
        return Response::from_parts(parts, Body::Empty);
    }
    body.pooled(inflight);
    // the client left hop-by-hop headers (and `Upgrade`) out as it parsed the head; what names
    // the backend's software stays behind too (the gateway's own `Server` is added on request)
    parts.headers.remove(header::SERVER);
    parts.headers.remove(&X_POWERED_BY);
    Response::from_parts(parts, Body::Upstream(body))
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
