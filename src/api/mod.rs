//! The bundled Orta Novias API: the catalog and fitting appointments, a small but real upstream
//! so the gateway runs end to end on one machine. `run` starts one replica per
//! `[api].replicas` address in-process; `orta-gateway api` runs one alone (as docker runs
//! replicas). Replicas share one SQLite database (`db`); bookings are validated in `booking`.
//! Served by the gateway's own HTTP/1 codec: five endpoints don't need a framework's build time.

pub(crate) mod booking;
pub mod db;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ApiSettings;
use crate::proto::body::Body;
use crate::proto::h1::server::{self as h1, RequestBody, SimpleTimeouts};
use crate::server::embedded::{Embedded, Ready, Serving};
use db::{Appointment, BookError, Db};

/// The database file when `[api].database` is not set.
pub const DEFAULT_DATABASE: &str = "data/orta.db";
/// Largest booking request accepted.
const MAX_BODY: usize = 16 * 1024;
const MAX_PER_PAGE: u64 = 50;

/// One replica: its address (reported by `/api/health`) and the shared database.
struct Replica {
    name: String,
    db: Arc<Db>,
}

/// The bundled API as the gateway runs it in-process (`[api]`): replicas on the listeners the
/// gateway binds, sharing one database.
pub fn bundled() -> Arc<dyn Embedded> {
    Arc::new(Bundled)
}

struct Bundled;

/// The API with its database open.
struct Open {
    path: PathBuf,
    db: Arc<Db>,
}

impl Embedded for Bundled {
    fn prepare(&self, settings: &ApiSettings, current: Option<&Arc<dyn Ready>>) -> Result<Arc<dyn Ready>, String> {
        let path = settings
            .database
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATABASE));
        // the running replicas stay while the database file is the same
        if let Some(current) = current
            && let Some(open) = (current.as_ref() as &dyn std::any::Any).downcast_ref::<Open>()
            && open.path == path
        {
            return Ok(current.clone());
        }
        let db = Db::open(&path)?;
        Ok(Arc::new(Open { path, db }))
    }
}

impl Ready for Open {
    fn serve(self: Arc<Self>, listener: TcpListener, local: SocketAddr, stop: watch::Receiver<bool>) -> Serving {
        Box::pin(serve(listener, local, self.db.clone(), stop))
    }
}

/// Serves one replica on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, addr: SocketAddr, db: Arc<Db>, mut stop: watch::Receiver<bool>) {
    let replica = Arc::new(Replica {
        name: replica_name(addr),
        db,
    });
    loop {
        let (stream, _) = tokio::select! {
            accepted = crate::net::accept(&listener) => accepted,
            _ = stop.changed() => return,
        };
        let replica = replica.clone();
        let handler = move |req| {
            let replica = replica.clone();
            async move { handle(&replica, req).await }
        };
        tokio::spawn(h1::serve_simple(stream, handler, OPTIONS, TIMEOUTS, stop.clone()));
    }
}

/// A replica's name in `/api/health`: its address, or, listening on every address (as in a
/// container), the host's name and the port, so that replicas behind one DNS name differ.
fn replica_name(addr: SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(host) if !host.trim().is_empty() => format!("{}:{}", host.trim(), addr.port()),
        _ => addr.to_string(),
    }
}

/// Runs one replica alone (`orta-gateway api --listen ADDR`) until SIGTERM/SIGINT.
pub async fn run_standalone(addr: SocketAddr, database: &Path) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    // SIGTERM handled from before the replica says it listens (docker may stop it at once)
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let db = Db::open(database)?;
    let listener = crate::net::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(database = %database.display(), "bundled API replica listening api={bound}");
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, bound, db, rx));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = tx.send(true);
    let _ = task.await;
    Ok(())
}

/// What a replica's connections allow.
const OPTIONS: h1::Options = h1::Options {
    limits: crate::proto::h1::request::Limits {
        max_head: 16 * 1024,
        underscores: false,
    },
    send_timeout: std::time::Duration::from_secs(60),
};
const TIMEOUTS: SimpleTimeouts = SimpleTimeouts {
    header: std::time::Duration::from_secs(30),
    keepalive: std::time::Duration::from_secs(75),
};

async fn handle(replica: &Replica, req: Request<Option<RequestBody>>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET | Method::HEAD, ["api", "health"]) => {
            if replica.db.healthy().await {
                reply(StatusCode::OK, json!({ "status": "ok", "replica": replica.name }))
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "status": "unavailable", "replica": replica.name, "error": "database unusable" }),
                )
            }
        }
        (Method::GET | Method::HEAD, ["api", "dresses"]) => catalog(replica, req.uri().query()).await,
        (Method::GET | Method::HEAD, ["api", "dresses", id]) => match id.parse::<i64>() {
            Ok(id) if id > 0 => match replica.db.dress(id).await {
                Ok(Some(d)) => public(json!(d)),
                Ok(None) => error(StatusCode::NOT_FOUND, "dress not found"),
                Err(e) => unavailable(&e),
            },
            _ => error(StatusCode::NOT_FOUND, "dress not found"),
        },
        (Method::POST, ["api", "appointments"]) => book(replica, req).await,
        (Method::GET | Method::HEAD, ["api", "appointments", id]) => match replica.db.appointment(id.to_string()).await
        {
            Ok(Some(a)) => reply(StatusCode::OK, json!(a)),
            Ok(None) => error(StatusCode::NOT_FOUND, "appointment not found"),
            Err(e) => unavailable(&e),
        },
        (_, ["api", "health" | "dresses" | "appointments", ..]) => {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            let allow = if path.starts_with("/api/appointments") && segments.len() == 2 {
                "POST"
            } else {
                "GET, HEAD"
            };
            r.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static(allow));
            r
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn catalog(replica: &Replica, query: Option<&str>) -> Response<Body> {
    let (mut collection, mut q, mut page, mut per_page) = (None, None, 1u64, 12u64);
    for (k, v) in query_pairs(query.unwrap_or("")) {
        let number = |v: &str| v.parse::<u64>().ok().filter(|n| *n > 0);
        match k.as_str() {
            "collection" if !v.is_empty() => collection = Some(v),
            "q" if !v.trim().is_empty() => q = Some(v.trim().to_string()),
            "page" => match number(&v) {
                Some(n) => page = n,
                None => return error(StatusCode::BAD_REQUEST, "page must be a positive whole number"),
            },
            "per_page" => match number(&v) {
                Some(n) => per_page = n.min(MAX_PER_PAGE),
                None => return error(StatusCode::BAD_REQUEST, "per_page must be a positive whole number"),
            },
            _ => {}
        }
    }
    match replica.db.dresses(collection, q, page, per_page).await {
        Ok(p) => public(json!(p)),
        Err(e) => unavailable(&e),
    }
}

async fn book(replica: &Replica, req: Request<Option<RequestBody>>) -> Response<Body> {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the booking as application/json",
        );
    }
    let Some(body) = req.into_body() else {
        return error(StatusCode::BAD_REQUEST, "malformed JSON");
    };
    let bytes: Bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "the booking is too large"),
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return error(StatusCode::BAD_REQUEST, "malformed JSON"),
    };
    let Value::Object(fields) = body else {
        return error(StatusCode::BAD_REQUEST, "malformed JSON: expected an object");
    };
    // the dress check needs the database: look the id up first (a cheap primary-key read)
    let dress_ok = match fields.get("dress_id").and_then(Value::as_i64) {
        Some(id) if id > 0 => match replica.db.dress(id).await {
            Ok(d) => d.is_some(),
            Err(e) => return unavailable(&e),
        },
        _ => false,
    };
    let booking = match booking::validate(&fields, time::OffsetDateTime::now_utc(), |_| dress_ok) {
        Ok(b) => b,
        Err(errors) => {
            return reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error": "validation failed", "fields": errors }),
            );
        }
    };
    let appointment = Appointment {
        id: uuid_v4(),
        name: booking.name,
        email: booking.email,
        phone: booking.phone,
        date: booking.date,
        slot: booking.slot,
        dress_id: booking.dress_id,
        notes: booking.notes,
        status: "confirmed".into(),
        created_at: crate::telemetry::access::rfc3339(std::time::SystemTime::now()),
    };
    match replica.db.book(appointment).await {
        Ok(a) => {
            let mut r = reply(StatusCode::CREATED, json!(a));
            if let Ok(loc) = HeaderValue::from_str(&format!("/api/appointments/{}", a.id)) {
                r.headers_mut().insert(http::header::LOCATION, loc);
            }
            r
        }
        Err(BookError::Taken) => reply(
            StatusCode::CONFLICT,
            json!({ "error": "slot taken", "fields": { "slot": "this slot is already booked; choose another" } }),
        ),
        Err(BookError::Db(e)) => unavailable(&e),
    }
}

/// A random (version 4) UUID from the crypto provider's secure generator: unguessable.
fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    if crate::pem::provider().secure_random.fill(&mut b).is_err() {
        // the provider's generator cannot fail in practice; never hand out a predictable id
        for chunk in b.chunks_mut(8) {
            chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes());
        }
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// `a=1&b=x+y` → pairs, percent-decoded, `+` as space.
fn query_pairs(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn reply(status: StatusCode, value: Value) -> Response<Body> {
    let mut resp = Response::new(Body::full(value.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A catalog answer: the same for every visitor, so without `no-store` (as Django answers by
/// default): a cache in front may keep it for its `ttl`.
fn public(value: Value) -> Response<Body> {
    let mut resp = reply(StatusCode::OK, value);
    resp.headers_mut().remove(CACHE_CONTROL);
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    reply(status, json!({ "error": message }))
}

fn unavailable(e: &str) -> Response<Body> {
    tracing::error!("API database error: {e}");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database is unavailable; retry later",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_and_distinct() {
        let a = uuid_v4();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, uuid_v4());
    }

    #[test]
    fn queries_decode() {
        assert_eq!(
            query_pairs("collection=Mediterr%C3%A1nea&q=silk+lace&page=2"),
            vec![
                ("collection".into(), "Mediterránea".into()),
                ("q".into(), "silk lace".into()),
                ("page".into(), "2".into())
            ]
        );
    }
}
