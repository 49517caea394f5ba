//! The access log's cost on the request path: a browser request's record taken from the request
//! and written as its JSON line (what every request pays with `[log].access` on; the file write
//! is batched on the log's own thread). A regression here slows every request of a site that
//! keeps an access log.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{REFERER, USER_AGENT};
use http::{HeaderValue, Request, Version};
use orta_gateway::telemetry::access::AccessRecord;

/// The record as the request path fills it: taken from the request on arrival, then what the
/// handler found out.
fn record(req: &Request<()>, client_ip: IpAddr, host: &HeaderValue, request_id: &HeaderValue) -> AccessRecord {
    let mut rec = AccessRecord::new(req, client_ip, Some(host), request_id, Some("TLSv1.3"));
    rec.status = 200;
    rec.bytes_sent = 18_342;
    rec.duration = Duration::from_micros(1_874);
    rec.upstream = Some("127.0.0.1:8000".into());
    rec.upstream_time = Some(Duration::from_micros(1_612));
    rec
}

fn bench(c: &mut Criterion) {
    let req = Request::get("/api/dresses?collection=Aurora")
        .version(Version::HTTP_2)
        .header(
            USER_AGENT,
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
        )
        .header(REFERER, "https://ortanovias.com/catalog.html")
        .body(())
        .unwrap();
    let client_ip: IpAddr = "203.0.113.9".parse().unwrap();
    let host = HeaderValue::from_static("ortanovias.com");
    let request_id = HeaderValue::from_static("0c1a2bf41b7307810cb040744e52c390");
    let route: std::sync::Arc<str> = "/api/ (line 41)".into();
    let mut line = Vec::with_capacity(1024);
    let written = record(&req, client_ip, &host, &request_id);
    c.bench_function("access_log_line", |b| {
        b.iter(|| {
            line.clear();
            black_box(&written).write_json(&mut line);
            black_box(line.len())
        })
    });
    c.bench_function("access_log_record_and_line", |b| {
        b.iter(|| {
            let mut rec = record(black_box(&req), client_ip, &host, &request_id);
            rec.route = Some(route.clone());
            line.clear();
            rec.write_json(&mut line);
            black_box(line.len())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
