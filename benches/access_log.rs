//! The access log's cost on the request path: a browser request's record taken from the request
//! and written as its JSON line (what every request pays with `[log].access` on; the file write
//! is batched on the log's own thread). A regression here slows every request of a site that
//! keeps an access log.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{REFERER, USER_AGENT};
use http::{HeaderValue, Request};
use orta_gateway::telemetry::access::AccessRecord;

/// The record as the request path fills it: the request's own method, URI and header values
/// (shared, not copied) and what the handler found out.
fn record(req: &Request<()>, host: &HeaderValue, request_id: &HeaderValue) -> AccessRecord {
    AccessRecord {
        time: SystemTime::now(),
        client_ip: "203.0.113.9".parse().unwrap(),
        method: req.method().clone(),
        host: Some(host.clone()),
        uri: req.uri().clone(),
        status: 200,
        bytes_sent: 18_342,
        duration: Duration::from_micros(1_874),
        upstream: Some("127.0.0.1:8000".into()),
        upstream_time: Some(Duration::from_micros(1_612)),
        request_id: request_id.clone(),
        user_agent: req.headers().get(USER_AGENT).cloned(),
        referer: req.headers().get(REFERER).cloned(),
        tls_version: Some("TLSv1.3"),
        http_version: "HTTP/2",
        route: None,
        cache: None,
        rate_limited: false,
    }
}

fn bench(c: &mut Criterion) {
    let req = Request::get("/api/dresses?collection=Aurora")
        .header(
            USER_AGENT,
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
        )
        .header(REFERER, "https://ortanovias.com/catalog.html")
        .body(())
        .unwrap();
    let host = HeaderValue::from_static("ortanovias.com");
    let request_id = HeaderValue::from_static("0c1a2bf41b7307810cb040744e52c390");
    let route: std::sync::Arc<str> = "/api/ (line 41)".into();
    let mut line = Vec::with_capacity(1024);
    let written = record(&req, &host, &request_id);
    c.bench_function("access_log_line", |b| {
        b.iter(|| {
            line.clear();
            black_box(&written).write_json(&mut line);
            black_box(line.len())
        })
    });
    c.bench_function("access_log_record_and_line", |b| {
        b.iter(|| {
            let mut rec = record(black_box(&req), &host, &request_id);
            rec.route = Some(route.clone());
            line.clear();
            rec.write_json(&mut line);
            black_box(line.len())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
