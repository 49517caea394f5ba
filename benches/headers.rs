//! Header work per proxied request: the upstream request head (hop-by-hop and Proxy-* headers
//! out, forwarding headers in) for a bare client and for a browser-like one, and stripping an
//! upstream response. A regression here slows every proxied request.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request};
use orta_gateway::handler::proxy::prepare_request;
use orta_gateway::http::context::{ConnInfo, RequestCtx};
use orta_gateway::proto::h1::fields::strip_hop_by_hop;

fn bench(c: &mut Criterion) {
    let mut conn = ConnInfo::new(
        "203.0.113.9:51234".parse().unwrap(),
        "127.0.0.1:8443".parse().unwrap(),
        true,
    );
    conn.tls_version = Some("TLSv1.3");
    let ctx = RequestCtx {
        conn: &conn,
        client_ip: conn.peer.ip(),
        request_id: HeaderValue::from_static("0c1a2bf41b7307810cb040744e52c390"),
        host_header: Some(HeaderValue::from_static("ortanovias.com")),
    };
    let bare = Request::get("/api/ping")
        .header("host", "ortanovias.com")
        .body(())
        .unwrap();
    let browser = Request::get("/api/dresses?collection=Aurora")
        .header("host", "ortanovias.com")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0")
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("accept-language", "es-ES,es;q=0.9,en;q=0.8")
        .header("connection", "keep-alive")
        .header("cookie", "csrftoken=abc; sessionid=def")
        .header("referer", "https://ortanovias.com/catalog.html")
        .body(())
        .unwrap();
    let (bare_parts, _) = bare.into_parts();
    let (browser_parts, _) = browser.into_parts();
    c.bench_function("upstream_head_bare_client", |b| {
        b.iter_batched(
            || Request::from_parts(clone_parts(&bare_parts), ()).into_parts().0,
            |mut p| {
                let forwarding = prepare_request(&mut p, black_box(&ctx), false);
                (p, forwarding)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("upstream_head_browser", |b| {
        b.iter_batched(
            || Request::from_parts(clone_parts(&browser_parts), ()).into_parts().0,
            |mut p| {
                let forwarding = prepare_request(&mut p, black_box(&ctx), false);
                (p, forwarding)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut response = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("content-length", "1234"),
        ("date", "Sat, 28 Nov 2026 18:00:00 GMT"),
        ("x-powered-by", "Django"),
        ("vary", "Accept, Cookie"),
    ] {
        response.insert(k, HeaderValue::from_static(v));
    }
    c.bench_function("strip_upstream_response_headers", |b| {
        b.iter_batched(
            || response.clone(),
            |mut h| {
                strip_hop_by_hop(&mut h, |n| n == "upgrade" || n == "x-powered-by");
                h
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn clone_parts(p: &http::request::Parts) -> http::request::Parts {
    let mut r = Request::builder()
        .method(p.method.clone())
        .uri(p.uri.clone())
        .version(p.version);
    *r.headers_mut().unwrap() = p.headers.clone();
    r.body(()).unwrap().into_parts().0
}

criterion_group!(benches, bench);
criterion_main!(benches);
