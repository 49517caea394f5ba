//! Loading and validating the default config: what `check` and every reload cost. A regression
//! makes reloads (and `orta-gateway check`) slower.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let text = std::fs::read_to_string("conf/gateway.toml").expect("run from the repository root");
    c.bench_function("config_parse_validate_default", |b| {
        b.iter(|| orta_gateway::config::parse(Path::new("conf/gateway.toml"), &text).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
