//! The request path, in one direction: snapshot → request id → host and path checks → plain
//! listener's HTTPS redirect → router → handler → response headers. Every outcome, errors
//! included, leaves here as a response; nothing on this path panics on client input.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Body as _;

use crate::http::context::{ConnInfo, RequestCtx};
use crate::http::error::{HttpError, wants_json};
use crate::proto::body::{Body, ReqBody};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cached::CachedProxy;
use super::snapshot::{Route, Snapshot};
use super::state::State;
use crate::handler::proxy::{X_FORWARDED_FOR, X_REQUEST_ID};
use crate::handler::{Handler, files, proxy, redirect};
use crate::middleware::compression;
use crate::middleware::ratelimit;
use crate::proto::maps;
use crate::router::{PathError, normalize_path};
use crate::telemetry::access::{AccessLog, AccessRecord};
use crate::telemetry::metrics::RouteMetrics;
use crate::upstream::Server;

const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// What the handlers found out, for logs and metrics.
#[derive(Default)]
pub struct Meta {
    /// The response came from an upstream (its own security headers are kept).
    pub from_upstream: bool,
    /// The upstream server that answered, and how long its response head took.
    pub upstream: Option<(Arc<Server>, Duration)>,
    /// What the file cache or the proxy cache did (`hit`, `miss`, `stale`, ...).
    pub cache: Option<&'static str>,
    pub rate_limited: bool,
}

/// Finishes a request's bookkeeping once its response has been sent: metrics and the access
/// log line (which needs the bytes sent and the full duration).
pub struct Completion {
    start: Instant,
    status: u16,
    metrics: Arc<RouteMetrics>,
    log: Option<(Arc<AccessLog>, Box<AccessRecord>)>,
}

impl Completion {
    pub fn finish(self, bytes_sent: u64) {
        let elapsed = self.start.elapsed();
        self.metrics.observe(self.status, elapsed.as_secs_f64());
        if let Some((log, mut record)) = self.log {
            record.bytes_sent = bytes_sent;
            record.duration = elapsed;
            log.write(&record);
        }
    }
}

/// Handles one request from a client connection.
pub async fn handle(state: &State, conn: &ConnInfo, mut req: Request<ReqBody>) -> (Response<Body>, Completion) {
    let start = Instant::now();
    let snap = state.snapshot();
    let server = &snap.config.server;
    if req.version() >= Version::HTTP_2 && !server.underscores_in_headers {
        // (the HTTP/1.1 codec drops them as it parses)
        drop_underscored(req.headers_mut());
    }
    let request_id = request_id(req.headers().get(&X_REQUEST_ID));
    let trusted = &server.trusted_proxies;
    // X-Forwarded-For is looked up only when some proxy is trusted to send it
    let xff = if trusted.is_empty() {
        None
    } else {
        req.headers().get(&X_FORWARDED_FOR)
    };
    let client_ip = trusted.client_ip(conn.remote.ip(), xff);
    let (host, host_error) = match host_header(&req) {
        Ok(host) => (host, None),
        Err(e) => (None, Some(e)),
    };
    let ctx = RequestCtx {
        conn,
        client_ip,
        request_id,
        host_header: host,
    };
    let access_log = state.access_log();
    let record = access_log.as_ref().map(|_| access_record(&ctx, &req));
    let accept = req.headers().get(header::ACCEPT).cloned();
    let h1 = req.version() < Version::HTTP_2;
    let h3 = req.version() == Version::HTTP_3;
    let mut matched = None;
    let mut meta = Meta::default();
    let routed = match host_error {
        None => route(state, &snap, &ctx, req, &mut matched, &mut meta).await,
        Some(e) => Err(e),
    };
    let mut resp = match routed {
        Ok(r) => r,
        Err(e) => {
            // a malformed request: don't read anything more from this client
            let close = h1 && matches!(e, HttpError::BadRequest(_));
            meta.from_upstream = false;
            let mut resp = e.into_response(wants_json(accept.as_ref()));
            if close {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    };
    let h = resp.headers_mut();
    // the route's security headers, or the global ones outside any route
    matched
        .map_or(&snap.config.headers, |r: &Route| &r.headers)
        .apply(h, conn.tls, meta.from_upstream);
    h.insert(X_REQUEST_ID.clone(), ctx.request_id);
    connection_headers(state, server.server_header, h, conn.tls && !h3, h1);
    let status = resp.status().as_u16();
    let log = access_log.zip(record).map(|(log, mut rec)| {
        rec.status = status;
        rec.route = matched.map(|r| r.name.clone());
        rec.cache = meta.cache;
        rec.rate_limited = meta.rate_limited;
        if let Some((server, took)) = &meta.upstream {
            rec.upstream = Some(server.label.clone());
            rec.upstream_time = Some(*took);
        }
        (log, rec)
    });
    let completion = Completion {
        start,
        status,
        metrics: matched.map_or_else(|| state.metrics().unrouted().clone(), |r| r.metrics.clone()),
        log,
    };
    (resp, completion)
}

/// `Server` when asked for; `Alt-Svc` on HTTPS over TCP while HTTP/3 is served; on HTTP/1.1
/// while draining, `Connection: close` (the client should reconnect, to the next process).
fn connection_headers(state: &State, server_header: bool, h: &mut http::HeaderMap, tcp_tls: bool, h1: bool) {
    if server_header {
        h.insert(header::SERVER, HeaderValue::from_static("orta-gateway"));
    }
    if tcp_tls && let Some(alt_svc) = state.alt_svc() {
        h.insert(header::ALT_SVC, alt_svc);
    }
    if h1 && state.shutting_down() {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The access-log fields known before the request is handled.
fn access_record(ctx: &RequestCtx<'_>, req: &Request<ReqBody>) -> Box<AccessRecord> {
    Box::new(AccessRecord::new(
        req,
        ctx.client_ip,
        ctx.host_header.as_ref(),
        &ctx.request_id,
        ctx.conn.tls_version,
    ))
}

/// Routes a request and runs its handler; `matched` is set to the route once one is found,
/// `meta` to what the handler found out.
async fn route<'s>(
    state: &State,
    snap: &'s Snapshot,
    ctx: &RequestCtx<'_>,
    req: Request<ReqBody>,
    matched: &mut Option<&'s Route>,
    meta: &mut Meta,
) -> Result<Response<Body>, HttpError> {
    let host = match &ctx.host_header {
        Some(v) => host_name(v).ok_or(HttpError::BadRequest("The Host header is not a valid host name."))?,
        None if req.version() == Version::HTTP_11 => {
            return Err(HttpError::BadRequest("HTTP/1.1 requests need a Host header."));
        }
        None => Cow::Borrowed(""),
    };
    let content_length = check_framing(&req)?;
    let server = &snap.config.server;
    if let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE_PREFIX)
        && let Some(challenges) = state.acme().challenges.load_full()
        && let Some(key_auth) = challenges.http01(token).await
    {
        return Ok(acme_answer(key_auth));
    }
    if let Some(answer) = answer_before_routing(state, server.redirect_to_https, ctx, &req, &host) {
        return answer;
    }
    let path = normalize_path(req.uri().path()).map_err(|e| match e {
        PathError::Escapes => HttpError::BadRequest("The path climbs above the root."),
        PathError::Malformed => HttpError::BadRequest("The path is not valid."),
    })?;
    if content_length.is_some_and(|len| len > server.max_body_size) {
        return Err(HttpError::PayloadTooLarge);
    }
    // resolve the route, admit the request, handle it
    let route = snap.router.lookup(&host, &path).ok_or(HttpError::NotFound)?;
    *matched = Some(route.as_ref());
    admit(route, ctx, meta).await?;
    match &route.handler {
        Handler::Proxy(upstream) => {
            let limits = proxy::BodyLimits {
                max_size: server.max_body_size,
                read_timeout: server.body_read_timeout,
            };
            if let Some(cache) = &route.cache {
                let cached = CachedProxy {
                    route: cache,
                    upstream,
                    compression: &snap.config.compression,
                    limits,
                };
                let (status, resp) = cached.handle(ctx, req, &mut meta.upstream).await;
                meta.cache = Some(status.as_str());
                meta.from_upstream = true;
                return resp;
            }
            let method = req.method().clone();
            let accept_encoding = req.headers().get(header::ACCEPT_ENCODING).cloned();
            // not boxed: the request's future is built in place in a pooled block and never
            // moves, so the proxy's state machine costs room in the block, not copies
            let resp = proxy::forward(upstream, ctx, req, limits, &mut meta.upstream).await?;
            meta.from_upstream = true;
            Ok(compression::compress_response(
                &snap.config.compression,
                &method,
                accept_encoding.as_ref(),
                resp,
            ))
        }
        Handler::Static(files) => {
            let resp = files::serve(
                files,
                &snap.files,
                &snap.config.compression,
                &req,
                &path,
                &mut meta.cache,
            )
            .await;
            maps::recycle(req.into_parts().0.headers);
            resp
        }
        Handler::Redirect(base) => redirect::to_base(base, req.uri()),
    }
}

/// The answer to an ACME http-01 validation (on either listener, for any host).
fn acme_answer(key_auth: String) -> Response<Body> {
    let mut resp = Response::new(Body::full(key_auth));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// What is answered for any host before routing (after ACME validations): the redirect of
/// plain HTTP to HTTPS.
fn answer_before_routing(
    state: &State,
    redirect_to_https: bool,
    ctx: &RequestCtx<'_>,
    req: &Request<ReqBody>,
    host: &str,
) -> Option<Result<Response<Body>, HttpError>> {
    let path = req.uri().path();
    if !ctx.conn.tls
        && redirect_to_https
        && !path.starts_with(ACME_CHALLENGE_PREFIX)
        && let Some(port) = state.https_port()
    {
        if host.is_empty() {
            return Some(Err(HttpError::BadRequest(
                "A Host header is needed to redirect to HTTPS.",
            )));
        }
        return Some(redirect::to_https(&host_for_url(host), port, req.uri()));
    }
    None
}

/// The route's own admission: its `allow` list, then its rate limit.
async fn admit(route: &Route, ctx: &RequestCtx<'_>, meta: &mut Meta) -> Result<(), HttpError> {
    if let Some(allow) = &route.allow
        && !allow.iter().any(|n| n.contains(&ctx.client_ip))
    {
        return Err(HttpError::Forbidden);
    }
    if let Some(zone) = &route.rate_limit {
        let checked = match zone.is_shared() {
            true => zone.check_shared(ctx.client_ip).await,
            false => zone.check(ctx.client_ip),
        };
        checked.map_err(|wait| {
            meta.rate_limited = true;
            HttpError::TooManyRequests {
                retry_after_secs: ratelimit::retry_after_secs(wait),
            }
        })?;
    }
    Ok(())
}

/// Refuses requests whose framing or target could be read two ways (request smuggling and
/// cache poisoning vectors): both `Content-Length` and `Transfer-Encoding`, several differing
/// `Content-Length`s, or an absolute-form target naming another host than `Host`. Returns the
/// declared length, if any.
///
/// HTTP/1.1 heads with ambiguous framing never get here: the server's parser refuses them as it
/// reads the framing (`server::h1`), so only HTTP/2 requests are looked at for it.
fn check_framing(req: &Request<ReqBody>) -> Result<Option<u64>, HttpError> {
    let h = req.headers();
    if req.version() == Version::HTTP_3
        && h.keys().any(|k| {
            matches!(
                k.as_str(),
                "connection" | "transfer-encoding" | "upgrade" | "keep-alive" | "proxy-connection"
            )
        })
    {
        // malformed in HTTP/3 (RFC 9114 §4.2); hyper refuses them for HTTP/2 already
        return Err(HttpError::BadRequest(
            "Connection-specific fields are not allowed in HTTP/3.",
        ));
    }
    if req.version() >= Version::HTTP_2 {
        if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
            return Err(HttpError::BadRequest(
                "Content-Length and Transfer-Encoding together are ambiguous.",
            ));
        }
        // the same rule as the HTTP/1.1 codec's: one length, said once
        let mut lengths = crate::proto::h1::fields::Lengths::default();
        for v in h.get_all(header::CONTENT_LENGTH) {
            lengths
                .add(v.as_bytes())
                .map_err(|_| HttpError::BadRequest("Conflicting Content-Length headers."))?;
        }
        if lengths.repeated {
            return Err(HttpError::BadRequest("Content-Length sent more than once."));
        }
    }
    if req.version() <= Version::HTTP_11
        && let (Some(authority), Some(host)) = (req.uri().authority(), h.get(header::HOST))
        && !authority.as_str().eq_ignore_ascii_case(host.to_str().unwrap_or(""))
    {
        return Err(HttpError::BadRequest(
            "The request target names another host than Host.",
        ));
    }
    // the body knows its declared length (HTTP/2's from content-length too)
    Ok(req.body().size_hint().exact())
}

/// The host the request is for, which it is routed on and which the upstream receives as
/// `Host`. HTTP/1.1: `Host` (a request without it is refused later, RFC 9112 §3.2, also with an
/// absolute-form target); HTTP/1.0: `Host`, else an absolute-form target's authority. HTTP/2:
/// `:authority`, else `host`; both present and different, or `host` sent twice: 400 (RFC 9113
/// §8.3.1: the gateway must not route on one and forward the other).
fn host_header(req: &Request<ReqBody>) -> Result<Option<HeaderValue>, HttpError> {
    let authority = || {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    };
    // (the HTTP/1.1 codec has refused a second Host line)
    let host = req.headers().get(header::HOST);
    Ok(match req.version() {
        Version::HTTP_11 => host.cloned(),
        v if v < Version::HTTP_11 => host.cloned().or_else(authority),
        _ if req.headers().get_all(header::HOST).iter().nth(1).is_some() => {
            return Err(HttpError::BadRequest("More than one Host header."));
        }
        _ => match (authority(), host) {
            (Some(a), Some(h)) if !a.as_bytes().eq_ignore_ascii_case(h.as_bytes()) => {
                return Err(HttpError::BadRequest(
                    "The :authority and host fields name different hosts.",
                ));
            }
            (Some(a), _) => Some(a),
            (None, h) => h.cloned(),
        },
    })
}

/// Removes the fields whose names hold `_` (see `proto::h1::fields::has_underscore`).
fn drop_underscored(h: &mut http::HeaderMap) {
    use crate::proto::h1::fields::has_underscore;
    if h.keys().any(|k| has_underscore(k.as_str().as_bytes())) {
        let doomed: Vec<_> = h
            .keys()
            .filter(|k| has_underscore(k.as_str().as_bytes()))
            .cloned()
            .collect();
        for name in doomed {
            h.remove(name);
        }
    }
}

/// The lower-cased host name of a `Host` value, port removed; `None` when it is not a host.
/// Parsed in place: no allocation unless the name has capitals.
fn host_name(v: &HeaderValue) -> Option<Cow<'_, str>> {
    let s = v.to_str().ok()?;
    let port_ok = |p: &str| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    let host = match s.strip_prefix('[') {
        Some(rest) => {
            let (h, after) = rest.split_once(']')?;
            if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
                return None;
            }
            h.parse::<std::net::Ipv6Addr>().ok()?;
            h
        }
        None => {
            let h = match s.rsplit_once(':') {
                Some((h, p)) if port_ok(p) => h,
                Some(_) => return None,
                None => s,
            };
            let h = h.strip_suffix('.').unwrap_or(h);
            let valid = h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
            if h.is_empty() || !valid {
                return None;
            }
            h
        }
    };
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// A host as it goes back into a URL (IPv6 in brackets).
fn host_for_url(host: &str) -> Cow<'_, str> {
    if host.contains(':') {
        Cow::Owned(format!("[{host}]"))
    } else {
        Cow::Borrowed(host)
    }
}

/// The client's `X-Request-Id` when it is sane (1-128 visible ASCII characters), else a new
/// 128-bit random id in hex.
fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    let mut id = fresh_or_given_id(given);
    // unique to one exchange: HTTP/2 sends it as a never-indexed literal, so it neither costs an
    // HPACK table insertion nor evicts the fields every response repeats (HTTP/1.1 ignores this)
    id.set_sensitive(true);
    id
}

fn fresh_or_given_id(given: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = given {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let mut buf = [0u8; 32];
    let mut n = fastrand::u128(..);
    for slot in buf.iter_mut().rev() {
        *slot = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
    }
    // owned by one shared allocation: the copies for the upstream and the response are free
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf)).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(host_name(&v("example.com")).unwrap(), "example.com");
        assert_eq!(host_name(&v("Example.COM:8080")).unwrap(), "example.com");
        assert_eq!(host_name(&v("127.0.0.1:8443")).unwrap(), "127.0.0.1");
        assert_eq!(host_name(&v("[::1]:8443")).unwrap(), "::1");
        assert_eq!(host_name(&v("example.com.")).unwrap(), "example.com");
        assert!(host_name(&v("user@evil.com")).is_none());
        assert!(host_name(&v("a b")).is_none());
        assert!(host_name(&v("example.com:80x")).is_none());
        assert!(host_name(&v("[::1")).is_none());
        assert!(host_name(&v("")).is_none());
        assert!(matches!(host_name(&v("example.com")), Some(Cow::Borrowed(_))));
    }

    #[test]
    fn request_ids() {
        let given = HeaderValue::from_static("abc-123");
        assert_eq!(request_id(Some(&given)), given);
        let fresh = request_id(Some(&HeaderValue::from_static("has space")));
        assert_eq!(fresh.len(), 32);
        assert_ne!(request_id(None), request_id(None));
        // never indexed by HPACK: each one is new
        assert!(request_id(None).is_sensitive() && request_id(Some(&given)).is_sensitive());
    }
}
