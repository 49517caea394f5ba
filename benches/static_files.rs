//! Static file hot path: a cache hit turned into a response (identity and a cached brotli
//! variant), and a 304 revalidation. A regression here is a slower `static_*` row in the wrk
//! comparison with nginx.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use orta_gateway::config::{CacheSettings, CompressionSettings};
use orta_gateway::handler::files::cache::FileCache;
use orta_gateway::handler::files::{self, StaticRoute};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<p>Orta Novias</p>\n".repeat(100)).unwrap();
    let css: String = (0..1000)
        .map(|i| format!(".d{i} {{ margin: {}px; }}\n", i % 17))
        .collect();
    std::fs::write(dir.path().join("app.css"), css).unwrap();
    let route = StaticRoute::new("/", dir.path(), Some("index.html".into()), None);
    let cache = FileCache::new(CacheSettings::default());
    let compression = CompressionSettings::default();
    let get = |path: &str, ae: Option<&str>| {
        let mut b = Request::get(path);
        if let Some(ae) = ae {
            b = b.header("accept-encoding", ae);
        }
        b.body(()).unwrap()
    };
    let serve = |cache: &Arc<FileCache>, req: &Request<()>| {
        let path = req.uri().path().to_string();
        rt.block_on(files::serve(&route, cache, &compression, req, &path, &mut None))
            .unwrap()
    };
    // warm the cache and the variants
    let idx = get("/index.html", None);
    let css_br = get("/app.css", Some("gzip, deflate, br"));
    serve(&cache, &idx);
    serve(&cache, &css_br);
    let etag = serve(&cache, &idx).headers()["etag"].clone();
    let mut revalidate = get("/index.html", None);
    revalidate.headers_mut().insert("if-none-match", etag);

    c.bench_function("static_hit_index_2k_identity", |b| b.iter(|| serve(&cache, &idx)));
    c.bench_function("static_hit_css_30k_brotli_variant", |b| {
        b.iter(|| serve(&cache, &css_br))
    });
    c.bench_function("static_hit_304", |b| b.iter(|| serve(&cache, &revalidate)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
