//! The admin listener (loopback by default): `/metrics` in Prometheus text format, `/healthz`
//! (200 while serving), `/status` (JSON: generation, config, listeners, upstream health,
//! certificates, last reload error), and `POST /cache/purge` (drops proxy-cached objects by URL
//! or URL prefix).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pipeline::snapshot::Snapshot;
use crate::pipeline::state::State;
use crate::proto::body::Body;
use crate::proto::h1::request::Limits;
use crate::proto::h1::server::{self as h1, RequestBody, SimpleTimeouts};
use crate::telemetry::access::rfc3339;
use crate::telemetry::metrics::Gauge;

/// Serves the admin endpoints until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    const OPTIONS: h1::Options = h1::Options {
        limits: Limits {
            max_head: 16 * 1024,
            underscores: false,
        },
        send_timeout: std::time::Duration::from_secs(30),
    };
    const TIMEOUTS: SimpleTimeouts = SimpleTimeouts {
        header: std::time::Duration::from_secs(10),
        keepalive: std::time::Duration::from_secs(60),
    };
    loop {
        let (stream, _) = tokio::select! {
            accepted = crate::net::accept(&listener) => accepted,
            _ = stop.changed() => return,
        };
        let state = state.clone();
        let handler = move |req| {
            let state = state.clone();
            async move { handle(&state, req).await }
        };
        tokio::spawn(h1::serve_simple(stream, handler, OPTIONS, TIMEOUTS, stop.clone()));
    }
}

async fn handle(state: &State, req: Request<Option<RequestBody>>) -> Response<Body> {
    if req.uri().path() == "/cache/purge" {
        return purge(state, req).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics().render(&scrape_time_series(state)),
        ),
        "/healthz" if state.shutting_down() => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n".into()),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/status" => text(StatusCode::OK, "application/json", status(state).to_string()),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /metrics, /healthz, /status, POST /cache/purge\n".into(),
        ),
    }
}

/// `POST /cache/purge` with `{"url": "https://host/path?q"}` or `{"prefix": "https://host/path/"}`
/// (and optionally `"zone"`): drops the matching objects of every zone (or of that one) and
/// answers `{"purged": N}`.
async fn purge(state: &State, req: Request<Option<RequestBody>>) -> Response<Body> {
    use http_body_util::{BodyExt, Limited};
    let json = |status, v: serde_json::Value| text(status, "application/json", format!("{v}\n"));
    let bad = |msg: &str| json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": msg }));
    if req.method() != Method::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "POST {\"url\": ...} or {\"prefix\": ...}" }),
        );
    }
    let body = match req.into_body() {
        Some(b) => match Limited::new(b, 16 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return bad("the body could not be read (at most 16 KiB)"),
        },
        None => bytes::Bytes::new(),
    };
    let Ok(serde_json::Value::Object(ask)) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return bad("expected a JSON object: {\"url\": ...} or {\"prefix\": ...}");
    };
    let zone = ask.get("zone").and_then(|z| z.as_str());
    let (url, prefix) = (
        ask.get("url").and_then(|u| u.as_str()),
        ask.get("prefix").and_then(|p| p.as_str()),
    );
    let Some(key) = url.or(prefix).and_then(crate::cache::policy::key_of_url) else {
        return bad("give \"url\" or \"prefix\" as an absolute http(s) URL");
    };
    let snap = state.snapshot();
    if let Some(z) = zone
        && !snap.cache_zones.contains_key(z)
    {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no cache_zone `{z}`") }),
        );
    }
    let purged: u64 = snap
        .cache_zones
        .iter()
        .filter(|(name, _)| zone.is_none_or(|z| z == name.as_str()))
        .map(|(_, z)| {
            if url.is_some() {
                z.purge_url(&key)
            } else {
                z.purge_prefix(&key)
            }
        })
        .sum();
    tracing::info!(key, purged, "cache purge");
    json(StatusCode::OK, serde_json::json!({ "purged": purged }))
}

fn text(status: StatusCode, ctype: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Series read from live state when scraped.
fn scrape_time_series(state: &State) -> Vec<Gauge> {
    let snap = state.snapshot();
    let files = &snap.files;
    let dropped = state.access_log().map_or(0, |l| l.dropped());
    let unlabelled = [
        (
            "cache_hits_total",
            "Files served from the cache",
            "counter",
            files.hits() as f64,
        ),
        (
            "cache_misses_total",
            "Files read from disk",
            "counter",
            files.misses() as f64,
        ),
        (
            "cache_bytes",
            "Bytes held by the file cache",
            "gauge",
            files.weighted_size() as f64,
        ),
        (
            "sendfile_bytes_total",
            "Bytes of cached files sent to plain-HTTP clients with sendfile (no copy through user space)",
            "counter",
            crate::zerocopy::sent_bytes() as f64,
        ),
        (
            "access_log_dropped_total",
            "Access log lines dropped because the writer fell behind",
            "counter",
            dropped as f64,
        ),
        (
            "connections_open",
            "Open client connections (QUIC ones included)",
            "gauge",
            state.connections().open() as f64,
        ),
        (
            "quic_connections_open",
            "Open QUIC (HTTP/3) client connections",
            "gauge",
            state.quic_connections() as f64,
        ),
        (
            "quic_retries_total",
            "Retry packets sent to make new QUIC clients prove their address (handshake floods)",
            "counter",
            state.quic_retries() as f64,
        ),
        (
            "config_generation",
            "Generation of the running config (1 at start, +1 per reload)",
            "gauge",
            snap.generation as f64,
        ),
    ];
    let mut out = upstream_series(&snap);
    out.extend(proxy_cache_series(&snap));
    out.extend(unlabelled.map(|(name, help, kind, value)| Gauge {
        name,
        help,
        kind,
        labels: vec![],
        value,
    }));
    out.extend(certificate_series(state));
    out
}

/// Seconds until each certificate expires, by domain.
fn certificate_series(state: &State) -> Vec<Gauge> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as f64;
    let mut out = Vec::new();
    for c in state.certs().describe() {
        for domain in &c.names {
            out.push(Gauge {
                name: "certificate_expiry_seconds",
                help: "Seconds until the certificate expires",
                kind: "gauge",
                labels: vec![("domain", domain.clone())],
                value: c.not_after as f64 - now,
            });
        }
    }
    out
}

/// Each proxy cache zone's requests by cache status, bytes and objects held, zones in name order.
fn proxy_cache_series(snap: &Snapshot) -> Vec<Gauge> {
    let mut zones: Vec<_> = snap.cache_zones.values().collect();
    zones.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let mut out = Vec::new();
    for z in &zones {
        for (status, n) in z.counts() {
            out.push(Gauge {
                name: "proxy_cache_requests_total",
                help: "Requests to cached routes, by zone and cache status",
                kind: "counter",
                labels: vec![("zone", z.spec.name.clone()), ("status", status.to_string())],
                value: n as f64,
            });
        }
    }
    for (name, help) in [
        ("proxy_cache_bytes", "Bytes held by the proxy cache zone"),
        ("proxy_cache_objects", "Responses held by the proxy cache zone"),
        (
            "proxy_cache_filling_bytes",
            "Bytes held by fills in progress of the proxy cache zone (at most its max_size)",
        ),
    ] {
        for z in &zones {
            let value = match name {
                "proxy_cache_bytes" => z.bytes(),
                "proxy_cache_objects" => z.objects(),
                _ => z.filling_bytes(),
            };
            out.push(Gauge {
                name,
                help,
                kind: "gauge",
                labels: vec![("zone", z.spec.name.clone())],
                value: value as f64,
            });
        }
    }
    out
}

/// Each upstream server's health and load, upstreams in name order.
fn upstream_series(snap: &Snapshot) -> Vec<Gauge> {
    let mut upstreams: Vec<_> = snap.upstreams.values().collect();
    upstreams.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let mut out = Vec::new();
    for (name, help) in [
        ("upstream_up", "1 when the upstream server takes traffic"),
        ("upstream_inflight", "Requests in flight to the upstream server"),
    ] {
        for u in &upstreams {
            for s in u.servers().iter() {
                let value = if name == "upstream_up" {
                    f64::from(u8::from(s.is_up()))
                } else {
                    s.inflight() as f64
                };
                out.push(Gauge {
                    name,
                    help,
                    kind: "gauge",
                    labels: vec![("upstream", u.spec.name.clone()), ("server", s.label.to_string())],
                    value,
                });
            }
        }
    }
    out
}

fn status(state: &State) -> serde_json::Value {
    let snap = state.snapshot();
    let st = state.status().clone();
    let mut upstreams: Vec<_> = snap.upstreams.values().collect();
    upstreams.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let certificates: Vec<serde_json::Value> = state
        .certs()
        .describe()
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "names": c.names,
                "issuer": c.issuer,
                "not_after": rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(c.not_after.max(0) as u64)),
            })
        })
        .collect();
    serde_json::json!({
        "generation": snap.generation,
        "config": { "path": snap.config.file.display().to_string(), "loaded_at": st.loaded_at.map(rfc3339) },
        "last_reload_error": st.last_reload_error,
        "shutting_down": state.shutting_down(),
        "listeners": { "http": st.http, "https": st.https, "http3": st.http3, "admin": st.admin, "api": st.api },
        "quic_connections_open": state.quic_connections(),
        "connections_open": state.connections().open(),
        "upstreams": upstreams.iter().map(|u| serde_json::json!({
            "name": u.spec.name,
            "servers": u.servers().iter().map(|s| serde_json::json!({
                "address": &*s.label,
                "up": s.is_up(),
                "inflight": s.inflight(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "certificates": certificates,
        "acme": state.acme().status().as_ref().map(|a| serde_json::json!({
            "domains": a.domains,
            "pending": a.pending,
            "last_error": a.last_error,
            "next_renewal": a.next_renewal.map(|(at, why)| serde_json::json!({
                "at": rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(at.max(0) as u64)),
                "why": why.describe(),
            })),
        })),
        "cluster": state.cluster().map(|c| cluster_status(&c)),
    })
}

/// `/status`'s `cluster`: Redis reachable or not, this node, the nodes seen, the ACME lock.
fn cluster_status(c: &crate::cluster::Cluster) -> serde_json::Value {
    let v = c.view();
    serde_json::json!({
        "redis": c.settings.redis_redacted(),
        "reachable": v.reachable,
        "down_reason": v.down,
        "node": c.node(),
        "nodes": v.nodes.iter().map(|(name, ago)| serde_json::json!({
            "name": name,
            "seen_secs_ago": (ago * 10.0).round() / 10.0,
        })).collect::<Vec<_>>(),
        "acme_lock": v.acme_lock.map(|(key, holder)| serde_json::json!({ "key": key, "holder": holder })),
    })
}
