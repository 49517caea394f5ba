//! The handle stage of a proxied route with a cache: answer from the zone when the object is
//! fresh; serve it stale while one background request refreshes it; otherwise one request per
//! key goes to the upstream (the others wait for it, up to `lock_timeout`) and its answer fills
//! the zone as it streams to the client; when the upstream fails, an object within
//! `stale_if_error` is served instead of the error.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Body as _;

use crate::cache::{self, Age, CacheStatus, Claim, FillGuard, Object, Pending, RouteCache, policy};
use crate::config::CompressionSettings;
use crate::handler::proxy::{self, BodyLimits};
use crate::http::context::RequestCtx;
use crate::http::error::HttpError;
use crate::middleware::compression;
use crate::proto::body::{Body, ReqBody};
use crate::upstream::{Server, Upstream};

/// Where the proxy records the upstream server that answered, and how long its head took.
type Answered = Option<(Arc<Server>, std::time::Duration)>;

/// What the request asked of the cache and of the upstream.
pub(super) struct CachedProxy<'a> {
    pub route: &'a Arc<RouteCache>,
    pub upstream: &'a Arc<Upstream>,
    pub compression: &'a CompressionSettings,
    pub limits: BodyLimits,
}

/// Request headers a fill does not pass on. The stored object must be the whole identity
/// representation, whatever this one client asked for; and it is served to everyone, so
/// nothing of this one client's that is not in the key may shape it: no cookies (the key
/// ignores the ones a route lists), no forwarding or override headers an upstream may build
/// URLs or choose methods from (the gateway adds its own X-Forwarded-For/-Host/-Proto after).
fn strip_for_fill(h: &mut HeaderMap) {
    for name in [
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::ACCEPT_ENCODING,
        header::COOKIE,
        header::FORWARDED,
    ] {
        h.remove(name);
    }
    let unkeyed = |n: &str| {
        n.starts_with("x-forwarded-")
            || matches!(
                n,
                "x-original-url"
                    | "x-rewrite-url"
                    | "x-host"
                    | "x-http-method-override"
                    | "x-http-method"
                    | "x-method-override"
            )
    };
    if h.keys().any(|k| unkeyed(k.as_str())) {
        let doomed: Vec<_> = h.keys().filter(|k| unkeyed(k.as_str())).cloned().collect();
        for name in doomed {
            h.remove(name);
        }
    }
}

impl CachedProxy<'_> {
    /// The answer, and what the cache did for it.
    pub async fn handle(
        &self,
        ctx: &RequestCtx<'_>,
        req: Request<ReqBody>,
        answered: &mut Answered,
    ) -> (CacheStatus, Result<Response<Body>, HttpError>) {
        let (status, mut result) = self.answer(ctx, req, answered).await;
        self.route.zone.count(status);
        if let (Some(name), Ok(resp)) = (&self.route.spec.status_header, &mut result) {
            resp.headers_mut()
                .insert(name.clone(), HeaderValue::from_static(status.as_str()));
        }
        (status, result)
    }

    async fn answer(
        &self,
        ctx: &RequestCtx<'_>,
        req: Request<ReqBody>,
        answered: &mut Answered,
    ) -> (CacheStatus, Result<Response<Body>, HttpError>) {
        let spec = &self.route.spec;
        let has_body = !req.body().is_end_stream();
        let host = ctx.host_header.as_ref().map_or(&b""[..], |h| h.as_bytes());
        let primary = policy::primary_key(ctx.scheme(), host, req.uri());
        if !policy::request_cacheable(req.method(), req.headers(), has_body, &spec.ignore_cookies) {
            let unsafe_method = policy::is_unsafe(req.method());
            let result = self.pass(ctx, req, answered).await;
            if unsafe_method
                && result
                    .as_ref()
                    .is_ok_and(|r| r.status().is_success() || r.status().is_redirection())
            {
                // a POST, PUT, PATCH or DELETE that worked changed what the URL shows
                self.route.zone.purge_url(&primary);
            }
            return (CacheStatus::Bypass, result);
        }
        let zone = &self.route.zone;
        let lookup = zone.lookup(&primary, req.headers());
        let (stale, status) = match lookup.found {
            Some(object) => match object.state() {
                Age::Fresh => {
                    return (
                        CacheStatus::Hit,
                        Ok(self.answer_from_cache(&primary, &object, &req).await),
                    );
                }
                Age::Revalidate => {
                    if object.start_refresh() {
                        self.refresh_later(ctx, &req, primary.clone(), object.clone());
                    }
                    return (
                        CacheStatus::Updating,
                        Ok(self.answer_from_cache(&primary, &object, &req).await),
                    );
                }
                Age::IfError => (Some(object), CacheStatus::Expired),
                Age::Dead => (None, CacheStatus::Expired),
            },
            None => (None, CacheStatus::Miss),
        };
        if req.method() == Method::HEAD || policy::request_forbids_storing(req.headers()) {
            // a HEAD does not fill (it brings no body), nor a request that says no-store: the
            // upstream answers them
            let (method, client) = (req.method().clone(), req.headers().clone());
            let result = self.pass(ctx, req, answered).await;
            return self.or_stale(&primary, stale, (&method, &client), status, result).await;
        }
        match zone.claim(lookup.fill_key) {
            Claim::Fill(guard) => self.fill(ctx, req, primary, stale, status, guard, answered).await,
            Claim::Wait(mut done) => {
                // another request is filling this object: wait for it, within bounds
                let woke = tokio::time::timeout(spec.lock_timeout, done.changed()).await.is_ok();
                if let Some(object) = zone.lookup(&primary, req.headers()).found
                    && object.state() == Age::Fresh
                {
                    return (
                        CacheStatus::Hit,
                        Ok(self.answer_from_cache(&primary, &object, &req).await),
                    );
                }
                if !woke && let Some(object) = &stale {
                    // the fill is stuck on a hung upstream: don't join it there
                    let resp = self.answer_from_cache(&primary, object, &req).await;
                    return (CacheStatus::Stale, Ok(resp));
                }
                let client = req.headers().clone();
                let result = self.pass(ctx, req, answered).await;
                self.or_stale(&primary, stale, (&Method::GET, &client), status, result)
                    .await
            }
        }
    }

    /// The request goes to the upstream as any proxied one; the answer is compressed on the way.
    async fn pass(
        &self,
        ctx: &RequestCtx<'_>,
        req: Request<ReqBody>,
        answered: &mut Answered,
    ) -> Result<Response<Body>, HttpError> {
        let method = req.method().clone();
        let accept_encoding = req.headers().get(header::ACCEPT_ENCODING).cloned();
        let resp = proxy::forward(self.upstream, ctx, req, self.limits, answered).await?;
        Ok(compression::compress_response(
            self.compression,
            &method,
            accept_encoding.as_ref(),
            resp,
        ))
    }

    /// This request fills the object: it goes upstream for the identity representation, and
    /// the answer is stored as it streams back (when it may be).
    #[allow(clippy::too_many_arguments)]
    async fn fill(
        &self,
        ctx: &RequestCtx<'_>,
        req: Request<ReqBody>,
        primary: String,
        stale: Option<Arc<Object>>,
        status: CacheStatus,
        guard: FillGuard,
        answered: &mut Answered,
    ) -> (CacheStatus, Result<Response<Body>, HttpError>) {
        let client = req.headers().clone();
        let method = req.method().clone();
        let (mut parts, body) = req.into_parts();
        strip_for_fill(&mut parts.headers);
        let sent = Request::from_parts(parts, body);
        let since = self.route.zone.generation();
        let result = proxy::forward(self.upstream, ctx, sent, self.limits, answered).await;
        let result = result.map(|resp| {
            if stale.is_some() && resp.status().is_server_error() {
                return resp;
            }
            let fill = Fill {
                primary: primary.clone(),
                request: client.clone(),
                guard: Some(guard),
                since,
            };
            let resp = fill_from(self.route, fill, self.upstream.spec.read_timeout, resp);
            compression::compress_response(self.compression, &method, client.get(header::ACCEPT_ENCODING), resp)
        });
        self.or_stale(&primary, stale, (&method, &client), status, result).await
    }

    /// `result`, unless the upstream failed (no answer, or a 5xx) and a stale object may stand
    /// in for it.
    async fn or_stale(
        &self,
        primary: &str,
        stale: Option<Arc<Object>>,
        (method, client): (&Method, &HeaderMap),
        status: CacheStatus,
        result: Result<Response<Body>, HttpError>,
    ) -> (CacheStatus, Result<Response<Body>, HttpError>) {
        let failed = match &result {
            Ok(resp) => resp.status().is_server_error(),
            Err(e) => matches!(
                e,
                HttpError::BadGateway(_) | HttpError::GatewayTimeout | HttpError::ServiceUnavailable
            ),
        };
        match stale {
            Some(object) if failed => {
                let resp = self
                    .route
                    .zone
                    .respond(primary, &object, self.compression, method, client)
                    .await;
                (CacheStatus::Stale, Ok(resp))
            }
            _ => (status, result),
        }
    }

    async fn answer_from_cache(&self, primary: &str, object: &Arc<Object>, req: &Request<ReqBody>) -> Response<Body> {
        self.route
            .zone
            .respond(primary, object, self.compression, req.method(), req.headers())
            .await
    }

    /// Refreshes an expired object in the background (the client was answered with it).
    fn refresh_later(&self, ctx: &RequestCtx<'_>, req: &Request<ReqBody>, primary: String, object: Arc<Object>) {
        let mut head = Request::new(ReqBody::Empty);
        *head.method_mut() = Method::GET;
        *head.uri_mut() = req.uri().clone();
        *head.version_mut() = req.version();
        *head.headers_mut() = req.headers().clone();
        strip_for_fill(head.headers_mut());
        let client = req.headers().clone();
        let since = self.route.zone.generation();
        let (route, upstream, limits) = (self.route.clone(), self.upstream.clone(), self.limits);
        let conn = ctx.conn.clone();
        let (client_ip, request_id, host_header) = (ctx.client_ip, ctx.request_id.clone(), ctx.host_header.clone());
        tokio::spawn(async move {
            let ctx = RequestCtx {
                conn: &conn,
                client_ip,
                request_id,
                host_header,
            };
            let mut answered = None;
            if let Ok(resp) = proxy::forward(&upstream, &ctx, head, limits, &mut answered).await
                && !resp.status().is_server_error()
            {
                if policy::storable(resp.status(), resp.headers(), route.spec.ttl).is_none() {
                    // the upstream no longer lets it be stored: stop serving the old one
                    route.zone.purge_url(&primary);
                    return;
                }
                let fill = Fill {
                    primary,
                    request: client,
                    guard: None,
                    since,
                };
                // nobody reads this answer: the cache's reader keeps it all the same, and the new
                // object replaces this one (whose flag stays set: no second refresh meanwhile)
                drop(fill_from(&route, fill, upstream.spec.read_timeout, resp));
                return;
            }
            // failed: a later request may try again
            object.refresh_failed();
        });
    }
}

/// What a response fills: the key, the request's headers (for the variant), the guard of the
/// fill, the purge generation when it went upstream.
struct Fill {
    primary: String,
    request: HeaderMap,
    guard: Option<FillGuard>,
    since: u64,
}

/// The upstream's response, its body filling the cache as it flows when it may be stored.
fn fill_from(
    route: &Arc<RouteCache>,
    fill: Fill,
    read_timeout: std::time::Duration,
    resp: Response<Body>,
) -> Response<Body> {
    let Some(fresh) = policy::storable(resp.status(), resp.headers(), route.spec.ttl) else {
        return resp;
    };
    let too_large = resp
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n > route.zone.spec.max_object_size);
    if too_large {
        return resp;
    }
    let vary = policy::vary(resp.headers()).unwrap_or_default();
    let (parts, body) = resp.into_parts();
    let pending = Pending {
        route: route.clone(),
        primary: fill.primary,
        request: fill.request,
        status: parts.status,
        headers: parts.headers.clone(),
        vary,
        fresh,
        guard: fill.guard,
        since: fill.since,
        read_timeout,
    };
    Response::from_parts(parts, cache::fill(body, pending))
}
