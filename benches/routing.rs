//! Routing per request: path normalisation and the lookup over 100 routes (host and prefix).
//! A regression here adds to every request the gateway handles.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use orta_gateway::router::{RoutePrefix, Router, normalize_path};
use std::hint::black_box;

struct R(String);
impl RoutePrefix for R {
    fn prefix(&self) -> &str {
        &self.0
    }
}

fn bench(c: &mut Criterion) {
    // 100 routes: 10 hosts x 8 prefixes, plus 20 host-less prefixes
    let mut routes = Vec::new();
    for h in 0..10 {
        for p in 0..8 {
            routes.push((vec![format!("shop{h}.example")], Arc::new(R(format!("/section{p}/")))));
        }
    }
    for p in 0..20 {
        routes.push((vec![], Arc::new(R(format!("/area{p}/sub/")))));
    }
    routes.push((vec![], Arc::new(R("/".into()))));
    let router = Router::new(routes);
    c.bench_function("route_host_prefix_hit", |b| {
        b.iter(|| router.lookup(black_box("shop7.example"), black_box("/section5/dresses/42")))
    });
    c.bench_function("route_fallback_to_any_host", |b| {
        b.iter(|| router.lookup(black_box("unknown.example"), black_box("/area19/sub/x")))
    });
    c.bench_function("normalize_plain_path", |b| {
        b.iter(|| normalize_path(black_box("/api/dresses/42")))
    });
    c.bench_function("normalize_encoded_path", |b| {
        b.iter(|| normalize_path(black_box("/static/./img/../caf%C3%A9.png")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
