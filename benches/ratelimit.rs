//! The rate limiter's check per request, for one client and for a zone already tracking 100k
//! addresses. A regression here slows every request on a rate-limited route.

use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use governor::clock::DefaultClock;
use orta_gateway::config::{ZoneScope, ZoneSpec};
use orta_gateway::middleware::ratelimit::Zone;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let spec = ZoneSpec {
        name: "api".into(),
        count: 1_000_000,
        period: Duration::from_secs(1),
        burst: 1_000_000,
        scope: ZoneScope::Local,
    };
    let one = Zone::with_clock(spec.clone(), DefaultClock::default());
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    c.bench_function("ratelimit_check_1_key", |b| b.iter(|| one.check(black_box(ip))));

    let many = Zone::with_clock(spec, DefaultClock::default());
    for i in 0..100_000u32 {
        let _ = many.check(IpAddr::V4((0x0a00_0000 + i).into()));
    }
    let mut i = 0u32;
    c.bench_function("ratelimit_check_100k_keys", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            many.check(black_box(IpAddr::V4((0x0a00_0000 + i).into())))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
