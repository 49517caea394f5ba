//! Content negotiation per response: parsing a browser's Accept-Encoding and matching the
//! content type against `[compression].types`. A regression adds to every compressible response.

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderValue;
use orta_gateway::config::CompressionSettings;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let s = CompressionSettings::default();
    let chrome = HeaderValue::from_static("gzip, deflate, br, zstd");
    let weighted = HeaderValue::from_static("br;q=0.5, gzip;q=0.8, *;q=0.1");
    let json = HeaderValue::from_static("application/json");
    let jpeg = HeaderValue::from_static("image/jpeg");
    c.bench_function("negotiate_browser_accept_encoding", |b| {
        b.iter(|| s.negotiate(Some(black_box(&chrome))))
    });
    c.bench_function("negotiate_weighted_accept_encoding", |b| {
        b.iter(|| s.negotiate(Some(black_box(&weighted))))
    });
    c.bench_function("compressible_json", |b| {
        b.iter(|| s.compressible(Some(black_box(&json))))
    });
    c.bench_function("compressible_jpeg", |b| {
        b.iter(|| s.compressible(Some(black_box(&jpeg))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
