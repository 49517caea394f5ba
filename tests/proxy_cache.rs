//! The proxy response cache, against a real upstream that counts what it receives and can be
//! told to fail, stall or go away: freshness (`max-age`, `s-maxage`, `Expires`, the route's
//! `ttl`), what is never stored, `Vary`, coalesced misses, stale-while-revalidate,
//! stale-if-error, purge, HEAD, ranges, conditional requests and compression from the cache,
//! the access log and metrics, rate limits before the cache, reloads, and the memory bound.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use orta_gateway::proto::body::Body;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// `Origin::mode`: answer 500 to everything.
const FAIL_500: u64 = 1;

/// An origin whose answers are shaped by the query: `cc=` (Cache-Control), `expires=SECS`,
/// `vary=NAME` (the body then names that request header's value), `show=NAME` (the same
/// without `Vary`), `cookie=1` (Set-Cookie),
/// `status=N`, `size=N` (body bytes), `ms=N` (delay before the head). Each answer's body says
/// how many requests its path and query had received, so a cached answer shows its age.
struct Origin {
    addr: SocketAddr,
    /// Requests by path and query.
    hits: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
    mode: Arc<AtomicU64>,
    /// Extra delay for every answer (ms).
    delay: Arc<AtomicU64>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = Origin {
            addr,
            hits: Arc::default(),
            total: Arc::default(),
            mode: Arc::default(),
            delay: Arc::default(),
            tasks: Arc::default(),
        };
        let (hits, total, mode, delay, tasks) = (
            origin.hits.clone(),
            origin.total.clone(),
            origin.mode.clone(),
            origin.delay.clone(),
            origin.tasks.clone(),
        );
        origin.tasks.lock().unwrap().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (hits, total, mode, delay) = (hits.clone(), total.clone(), mode.clone(), delay.clone());
                tasks.lock().unwrap().spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (hits, total, mode, delay) = (hits.clone(), total.clone(), mode.clone(), delay.clone());
                        async move { Ok::<_, Infallible>(answer(req, &hits, &total, &mode, &delay).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        origin
    }

    fn hits(&self, pq: &str) -> usize {
        self.hits.lock().unwrap().get(pq).copied().unwrap_or(0)
    }

    /// Closes the listener and every connection: the origin is gone.
    fn kill(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.kill();
    }
}

fn param<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

async fn answer(
    req: Request<Incoming>,
    hits: &Mutex<HashMap<String, usize>>,
    total: &AtomicUsize,
    mode: &AtomicU64,
    delay: &AtomicU64,
) -> Response<Body> {
    let pq = req.uri().path_and_query().unwrap().to_string();
    let n = {
        let mut h = hits.lock().unwrap();
        let n = h.entry(pq.clone()).or_insert(0);
        *n += 1;
        *n
    };
    total.fetch_add(1, SeqCst);
    let ms = param(&req, "ms").and_then(|v| v.parse().ok()).unwrap_or(0) + delay.load(SeqCst);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if mode.load(SeqCst) == FAIL_500 {
        let mut r = Response::new(Body::full("origin broke"));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return r;
    }
    let varied = param(&req, "vary").map(|name| {
        let v = req.headers().get(name).map_or("", |v| v.to_str().unwrap());
        format!(" {name}={v}")
    });
    let shown = param(&req, "show").map(|name| {
        let v = req.headers().get(name).map_or("", |v| v.to_str().unwrap());
        format!(" {name}={v}")
    });
    let mut body = format!("{pq} #{n}{}{}", varied.unwrap_or_default(), shown.unwrap_or_default());
    if let Some(size) = param(&req, "size").and_then(|v| v.parse::<usize>().ok()) {
        let pad = size.saturating_sub(body.len());
        body.push_str(&" ".repeat(pad));
    }
    let mut r = Response::new(Body::full(body));
    let h = r.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("etag", format!("\"v{n}\"").parse().unwrap());
    h.insert("last-modified", "Mon, 07 Dec 2026 10:00:00 GMT".parse().unwrap());
    if let Some(cc) = param(&req, "cc") {
        h.insert("cache-control", cc.replace("%20", " ").parse().unwrap());
    }
    if let Some(secs) = param(&req, "expires").and_then(|v| v.parse::<u64>().ok()) {
        let now = std::time::SystemTime::now();
        h.insert("date", httpdate::fmt_http_date(now).parse().unwrap());
        let at = httpdate::fmt_http_date(now + Duration::from_secs(secs));
        h.insert("expires", at.parse().unwrap());
    }
    if let Some(name) = param(&req, "vary") {
        h.insert("vary", name.parse().unwrap());
    }
    if param(&req, "cookie").is_some() {
        h.insert("set-cookie", "sessionid=abc; HttpOnly".parse().unwrap());
    }
    if let Some(s) = param(&req, "status").and_then(|v| v.parse::<u16>().ok()) {
        *r.status_mut() = StatusCode::from_u16(s).unwrap();
    }
    r
}

/// A gateway proxying `/` to `origin` with `cache = { zone = "z", <route> }`, its zone of
/// `max_size`, the status header on, an admin listener and an access log in `{dir}`.
async fn gateway(origin: &Origin, route: &str, max_size: &str, extra: &str) -> TestGateway {
    TestGateway::start(&config(origin, route, max_size, extra)).await
}

fn config(origin: &Origin, route: &str, max_size: &str, extra: &str) -> String {
    format!(
        r#"{}
[admin]
listen = "127.0.0.1:0"
[log]
access = "{{dir}}/access.log"
rotation = "never"
[compression]
algorithms = ["gzip"]
min_size = 64
[[cache_zone]]
name = "z"
max_size = "{max_size}"
max_object_size = "64KiB"
{extra}
[[upstream]]
name = "origin"
servers = ["{}"]
retries = 0
[[route]]
path = "/"
upstream = "origin"
cache = {{ zone = "z", status_header = "X-Cache-Status", {route} }}
"#,
        base_config(),
        origin.addr
    )
}

struct Got {
    status: u16,
    cache: String,
    body: String,
    headers: reqwest::header::HeaderMap,
}

async fn get(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut rb = c.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let cache = headers
        .get("x-cache-status")
        .map_or("-".into(), |v| v.to_str().unwrap().to_string());
    let body = resp.text().await.unwrap();
    Got {
        status,
        cache,
        body,
        headers,
    }
}

/// Waits until an object stored before `since` is more than `secs` old (objects age by the
/// clock: nothing to poll). `since` is taken after the answer that stored it arrived, so the
/// object is at least as old as the time since.
async fn outlive(secs: f64, since: Instant) {
    let left = Duration::from_secs_f64(secs).saturating_sub(since.elapsed());
    tokio::time::sleep(left + Duration::from_millis(50)).await;
}

#[tokio::test]
async fn freshness_comes_from_max_age_s_maxage_expires_and_else_the_ttl() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"ttl = "60s""#, "8MiB", "").await;
    let c = plain_client();
    for pq in ["/ttl", "/a?cc=max-age=60", "/b?expires=60", "/c?cc=public"] {
        let url = gw.http_url(pq);
        let first = get(&c, &url, &[]).await;
        assert_eq!((first.status, first.cache.as_str()), (200, "miss"), "{pq}");
        let second = get(&c, &url, &[]).await;
        assert_eq!((second.cache.as_str(), &second.body), ("hit", &first.body), "{pq}");
        assert!(second.headers.contains_key("age"), "{pq}: Age on a hit");
        assert_eq!(origin.hits(pq), 1, "{pq}: one upstream request");
    }
    // the upstream's own freshness wins over the ttl: s-maxage=0 beats max-age, max-age=0 is
    // not stored, and expiry comes from the upstream's max-age, not the route's 60 s
    for pq in ["/d?cc=max-age=60,%20s-maxage=0", "/e?cc=max-age=0"] {
        get(&c, &gw.http_url(pq), &[]).await;
        assert_eq!(get(&c, &gw.http_url(pq), &[]).await.cache, "miss", "{pq}");
        assert_eq!(origin.hits(pq), 2, "{pq}");
    }
    let pq = "/f?cc=max-age=1";
    let first = get(&c, &gw.http_url(pq), &[]).await;
    let stored = Instant::now();
    assert_eq!(get(&c, &gw.http_url(pq), &[]).await.cache, "hit");
    outlive(1.0, stored).await;
    let again = get(&c, &gw.http_url(pq), &[]).await;
    assert_eq!(again.cache, "expired");
    assert_ne!(again.body, first.body, "fetched anew");
    assert_eq!(origin.hits(pq), 2);
}

#[tokio::test]
async fn private_answers_and_requests_with_credentials_are_never_stored() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"ttl = "60s""#, "8MiB", "").await;
    let c = plain_client();
    for pq in [
        "/ns?cc=no-store",
        "/p?cc=private,%20max-age=60",
        "/nc?cc=no-cache",
        "/sc?cookie=1",
        "/v?vary=*",
    ] {
        for _ in 0..2 {
            assert_eq!(get(&c, &gw.http_url(pq), &[]).await.cache, "miss", "{pq}");
        }
        assert_eq!(origin.hits(pq), 2, "{pq} reached the origin each time");
    }
    for (name, value) in [("cookie", "sessionid=1"), ("authorization", "Basic eDp5")] {
        let pq = format!("/cred-{name}");
        for _ in 0..2 {
            assert_eq!(get(&c, &gw.http_url(&pq), &[(name, value)]).await.cache, "bypass");
        }
        assert_eq!(origin.hits(&pq), 2, "{name}");
        // and such a request does not get another visitor's stored answer either
        get(&c, &gw.http_url(&pq), &[]).await;
        assert_eq!(get(&c, &gw.http_url(&pq), &[(name, value)]).await.cache, "bypass");
    }
    let post = c.post(gw.http_url("/post")).body("x").send().await.unwrap();
    assert_eq!(post.headers()["x-cache-status"], "bypass");
    // a request that says no-store is answered, and nothing is stored for it
    let url = gw.http_url("/asked-no-store");
    assert_eq!(get(&c, &url, &[("cache-control", "no-store")]).await.cache, "miss");
    assert_eq!(get(&c, &url, &[]).await.cache, "miss");
    assert_eq!(get(&c, &url, &[("cache-control", "no-store")]).await.cache, "hit");
}

#[tokio::test]
async fn an_unsafe_request_invalidates_and_another_host_port_is_another_key() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"ttl = "60s""#, "8MiB", "").await;
    let c = plain_client();
    let url = gw.http_url("/item");
    get(&c, &url, &[]).await;
    assert_eq!(get(&c, &url, &[]).await.cache, "hit");
    // a POST (or PUT, PATCH, DELETE) that worked changed what the URL shows
    for method in [reqwest::Method::POST, reqwest::Method::DELETE] {
        let r = c.request(method.clone(), &url).body("x").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(get(&c, &url, &[]).await.cache, "miss", "after {method}");
    }
    // the key holds the host as the upstream receives it, port included: a client naming
    // another port (which an upstream may echo into links) cannot fill everyone's object
    let other = get(&c, &url, &[("host", "127.0.0.1:6666")]).await;
    assert_eq!(other.cache, "miss");
    assert_eq!(get(&c, &url, &[]).await.cache, "hit");
    assert_eq!(get(&c, &url, &[("host", "127.0.0.1:6666")]).await.cache, "hit");
}

#[tokio::test]
async fn ignored_cookies_do_not_stop_caching() {
    let origin = Origin::start().await;
    let toml = config(&origin, r#"ttl = "60s""#, "8MiB", "").replace(
        "status_header = \"X-Cache-Status\", ttl = \"60s\" }",
        "status_header = \"X-Cache-Status\", ttl = \"60s\" }\ncache_ignore_cookies = [\"csrftoken\"]",
    );
    let gw = TestGateway::start(&toml).await;
    let c = plain_client();
    let url = gw.http_url("/catalog");
    assert_eq!(get(&c, &url, &[("cookie", "csrftoken=a")]).await.cache, "miss");
    assert_eq!(get(&c, &url, &[("cookie", "csrftoken=b")]).await.cache, "hit");
    assert_eq!(get(&c, &url, &[]).await.cache, "hit");
    assert_eq!(
        get(&c, &url, &[("cookie", "csrftoken=b; sessionid=s")]).await.cache,
        "bypass"
    );
    assert_eq!(origin.hits("/catalog"), 2);
}

#[tokio::test]
async fn vary_keeps_variants_apart() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"ttl = "60s""#, "8MiB", "").await;
    let c = plain_client();
    let url = gw.http_url("/lang?vary=accept-language");
    let es = get(&c, &url, &[("accept-language", "es")]).await;
    assert!(es.body.ends_with("accept-language=es"), "{}", es.body);
    let en = get(&c, &url, &[("accept-language", "en")]).await;
    assert_eq!(en.cache, "miss", "another variant");
    assert!(en.body.ends_with("accept-language=en"), "{}", en.body);
    for (lang, want) in [("es", &es.body), ("en", &en.body)] {
        let again = get(&c, &url, &[("accept-language", lang)]).await;
        assert_eq!((again.cache.as_str(), &again.body), ("hit", want), "{lang}");
    }
    assert_eq!(origin.hits("/lang?vary=accept-language"), 2);
}

#[tokio::test]
async fn a_hundred_concurrent_misses_make_one_upstream_request() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"ttl = "60s""#, "8MiB", "").await;
    let c = plain_client();
    let url = gw.http_url("/busy?ms=300");
    let mut all = JoinSet::new();
    for _ in 0..100 {
        let (c, url) = (c.clone(), url.clone());
        all.spawn(async move { get(&c, &url, &[]).await });
    }
    let mut statuses = HashMap::<String, usize>::new();
    while let Some(got) = all.join_next().await {
        let got = got.unwrap();
        assert_eq!((got.status, got.body.as_str()), (200, "/busy?ms=300 #1"));
        *statuses.entry(got.cache).or_default() += 1;
    }
    assert_eq!(origin.hits("/busy?ms=300"), 1, "one upstream request: {statuses:?}");
    assert_eq!(statuses.get("miss"), Some(&1), "{statuses:?}");
}

#[tokio::test]
async fn a_client_that_stops_reading_or_leaves_neither_holds_nor_loses_the_fill() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start().await;
    let toml = config(&origin, r#"ttl = "60s""#, "256MiB", "")
        .replace("max_object_size = \"64KiB\"", "max_object_size = \"64MiB\"");
    let gw = TestGateway::start(&toml).await;
    let c = plain_client();
    // far more than the sockets between them buffer
    let pq = "/big?size=33554432";
    let request = format!("GET {pq} HTTP/1.1\r\nHost: {}\r\n\r\n", gw.http());
    let mut stalled = tokio::net::TcpStream::connect(gw.http()).await.unwrap();
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 64];
    let n = stalled.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // the first client reads no more; another asks for the same object and gets it from the
    // cache, well within the 5 s a waiter would wait for a fill
    let started = Instant::now();
    let got = get(&c, &gw.http_url(pq), &[]).await;
    assert_eq!(
        (got.status, got.cache.as_str(), got.body.len()),
        (200, "hit", 33_554_432)
    );
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    drop(stalled);
    // a client that leaves as soon as the head arrives does not cost the object either
    let pq = "/left?size=4194304";
    let request = format!("GET {pq} HTTP/1.1\r\nHost: {}\r\n\r\n", gw.http());
    let mut leaving = tokio::net::TcpStream::connect(gw.http()).await.unwrap();
    leaving.write_all(request.as_bytes()).await.unwrap();
    let n = leaving.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    drop(leaving);
    wait_until(Duration::from_secs(10), "the object the client left", || async {
        get(&c, &gw.http_url(pq), &[]).await.cache == "hit"
    })
    .await;
    assert_eq!((origin.hits("/big?size=33554432"), origin.hits(pq)), (1, 1));
}

#[tokio::test]
async fn fills_in_progress_hold_no_more_than_the_zone() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start().await;
    let toml = config(&origin, r#"ttl = "60s""#, "4MiB", "")
        .replace("max_object_size = \"64KiB\"", "max_object_size = \"4MiB\"");
    let gw = TestGateway::start(&toml).await;
    let c = plain_client();
    let admin = gw.gw().admin_addr().unwrap();
    let filling = || async {
        let metrics = metrics_text(&plain_client(), admin).await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("proxy_cache_filling_bytes{zone=\"z\"} "))
            .unwrap_or_else(|| panic!("no proxy_cache_filling_bytes in {metrics}"))
            .parse::<f64>()
            .unwrap()
    };
    // clients that ask for 3 MiB objects and read nothing: kept whole, each would hold 6 MiB
    // (the copy aside and the copy queued for its client)
    let mut stalled = Vec::new();
    for i in 0..6 {
        let request = format!("GET /stall{i}?size=3145728 HTTP/1.1\r\nHost: {}\r\n\r\n", gw.http());
        let mut s = tokio::net::TcpStream::connect(gw.http()).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 16];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[..12], b"HTTP/1.1 200");
        stalled.push(s);
    }
    wait_until(
        Duration::from_secs(10),
        "the origin to have sent every answer",
        || async { (0..6).all(|i| origin.hits(&format!("/stall{i}?size=3145728")) == 1) },
    )
    .await;
    for _ in 0..10 {
        let held = filling().await;
        assert!(held <= (4 << 20) as f64, "{held} bytes held by fills");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a client that reads gets a whole answer all the same
    let got = get(&c, &gw.http_url("/stall0?size=3145728"), &[]).await;
    assert_eq!((got.status, got.body.len()), (200, 3_145_728));
    drop(stalled);
    wait_until(Duration::from_secs(10), "fills to give their room back", || async {
        filling().await == 0.0
    })
    .await;
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"stale_while_revalidate = "30s""#, "8MiB", "").await;
    let c = plain_client();
    let pq = "/swr?cc=max-age=1";
    let url = gw.http_url(pq);
    let first = get(&c, &url, &[]).await;
    let stored = Instant::now();
    outlive(1.0, stored).await;
    // the origin is slow now: stale answers must not wait for it
    origin.delay.store(3000, SeqCst);
    let started = Instant::now();
    let mut all = JoinSet::new();
    for _ in 0..20 {
        let (c, url) = (c.clone(), url.clone());
        all.spawn(async move { get(&c, &url, &[]).await });
    }
    while let Some(got) = all.join_next().await {
        let got = got.unwrap();
        assert_eq!((got.cache.as_str(), &got.body), ("updating", &first.body));
    }
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "stale answers waited for the origin: {:?}",
        started.elapsed()
    );
    wait_until(Duration::from_secs(10), "the refreshed object", || async {
        get(&c, &url, &[]).await.body == format!("{pq} #2")
    })
    .await;
    assert_eq!(origin.hits(pq), 2, "one background refresh for twenty stale answers");
}

#[tokio::test]
async fn stale_if_error_keeps_answering_while_the_upstream_fails_then_502() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"stale_if_error = "2s""#, "8MiB", "").await;
    let c = plain_client();
    let (failing, killed) = ("/sie-500?cc=max-age=1", "/sie-down?cc=max-age=1");
    let a = get(&c, &gw.http_url(failing), &[]).await;
    let b = get(&c, &gw.http_url(killed), &[]).await;
    let stored = Instant::now();
    outlive(1.0, stored).await;
    origin.mode.store(FAIL_500, SeqCst);
    let got = get(&c, &gw.http_url(failing), &[]).await;
    assert_eq!((got.status, got.cache.as_str(), &got.body), (200, "stale", &a.body));
    origin.kill();
    let got = get(&c, &gw.http_url(killed), &[]).await;
    assert_eq!((got.status, got.cache.as_str(), &got.body), (200, "stale", &b.body));
    // past max-age + stale_if_error: the error reaches the client
    outlive(3.0, stored).await;
    // (the gateway's own error pages carry no cache status header, as nginx's `add_header`)
    assert_eq!(get(&c, &gw.http_url(killed), &[]).await.status, 502);
}

#[tokio::test]
async fn a_waiter_behind_a_fill_stuck_on_a_hung_upstream_gets_the_stale_object() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"stale_if_error = "1h", lock_timeout = "300ms""#, "8MiB", "").await;
    let c = plain_client();
    let pq = "/hung?cc=max-age=1";
    let first = get(&c, &gw.http_url(pq), &[]).await;
    let stored = Instant::now();
    outlive(1.0, stored).await;
    // the origin hangs now: the next request fills, and waits for it
    origin.delay.store(20_000, SeqCst);
    let filler = {
        let (c, url) = (c.clone(), gw.http_url(pq));
        tokio::spawn(async move { get(&c, &url, &[]).await })
    };
    wait_until(Duration::from_secs(5), "the fill to reach the origin", || async {
        origin.hits(pq) == 2
    })
    .await;
    let started = Instant::now();
    let got = get(&c, &gw.http_url(pq), &[]).await;
    assert_eq!((got.status, got.cache.as_str(), &got.body), (200, "stale", &first.body));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(origin.hits(pq), 2, "the waiter did not join the hung origin");
    filler.abort();
}

#[tokio::test]
async fn head_ranges_conditionals_and_compression_are_answered_from_the_cache() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"ttl = "60s""#, "8MiB", "").await;
    let c = plain_client();
    let pq = "/doc?size=2000";
    let url = gw.http_url(pq);
    let full = get(&c, &url, &[]).await;
    assert_eq!(full.body.len(), 2000);
    let head = c.head(&url).send().await.unwrap();
    assert_eq!(head.headers()["x-cache-status"], "hit");
    assert_eq!(head.headers()["content-length"], "2000");
    assert!(head.bytes().await.unwrap().is_empty());
    let part = get(&c, &url, &[("range", "bytes=0-4")]).await;
    assert_eq!(
        (part.status, part.cache.as_str(), part.body.as_str()),
        (206, "hit", &full.body[..5])
    );
    assert_eq!(part.headers["content-range"], "bytes 0-4/2000");
    let etag = full.headers["etag"].to_str().unwrap().to_string();
    let not_modified = get(&c, &url, &[("if-none-match", &etag)]).await;
    assert_eq!((not_modified.status, not_modified.cache.as_str()), (304, "hit"));
    let since = get(&c, &url, &[("if-modified-since", "Mon, 07 Dec 2026 10:00:00 GMT")]).await;
    assert_eq!(since.status, 304);
    let gz = c.get(&url).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    assert_eq!(gz.headers()["x-cache-status"], "hit");
    assert!(
        gz.headers()["vary"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    let zipped = gz.bytes().await.unwrap();
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut plain).unwrap();
    assert_eq!(plain, full.body);
    // the security headers go out on hits as on any response
    assert_eq!(full.headers["x-content-type-options"], "nosniff");
    assert_eq!(part.headers["x-content-type-options"], "nosniff");
    assert_eq!(origin.hits(pq), 1, "everything above came from one upstream answer");
    // a HEAD on a miss asks the upstream, and is not stored
    let head = c.head(gw.http_url("/head-first")).send().await.unwrap();
    assert_eq!(head.headers()["x-cache-status"], "miss");
    assert_eq!(get(&c, &gw.http_url("/head-first"), &[]).await.cache, "miss");
}

#[tokio::test]
async fn https_and_http2_clients_share_a_cached_answer() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"ttl = "60s""#, "8MiB", "").await;
    let h2 = client_trusting(&gw.ca_pem(), None);
    let h1 = client_trusting(&gw.ca_pem(), Some(true));
    let url = gw.https_url("/tls");
    let first = h2.get(&url).send().await.unwrap();
    assert_eq!(first.version(), http::Version::HTTP_2);
    assert_eq!(first.headers()["x-cache-status"], "miss");
    let body = first.text().await.unwrap();
    let again = get(&h1, &url, &[]).await;
    assert_eq!((again.cache.as_str(), &again.body), ("hit", &body));
    let over_h2 = get(&h2, &url, &[]).await;
    assert_eq!((over_h2.cache.as_str(), &over_h2.body), ("hit", &body));
    // plain HTTP is another scheme: another key
    assert_eq!(get(&plain_client(), &gw.http_url("/tls"), &[]).await.cache, "miss");
    assert_eq!(origin.hits("/tls"), 2);
}

#[tokio::test]
async fn purge_by_url_and_by_prefix_on_the_admin_listener() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"ttl = "60s""#, "8MiB", "").await;
    let c = plain_client();
    let admin = gw.gw().admin_addr().unwrap();
    for pq in ["/p/a", "/p/b?x=1", "/q"] {
        get(&c, &gw.http_url(pq), &[]).await;
        assert_eq!(get(&c, &gw.http_url(pq), &[]).await.cache, "hit");
    }
    let purge = |body: serde_json::Value| {
        let c = c.clone();
        async move {
            let r = c
                .post(format!("http://{admin}/cache/purge"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let host = gw.http().to_string();
    let (status, answer) = purge(serde_json::json!({ "url": format!("http://{host}/q") })).await;
    assert_eq!((status, answer["purged"].as_u64()), (200, Some(1)));
    assert_eq!(get(&c, &gw.http_url("/q"), &[]).await.cache, "miss");
    let (_, answer) = purge(serde_json::json!({ "prefix": format!("http://{host}/p/") })).await;
    assert_eq!(answer["purged"].as_u64(), Some(2));
    assert_eq!(get(&c, &gw.http_url("/p/a"), &[]).await.cache, "miss");
    assert_eq!(get(&c, &gw.http_url("/p/b?x=1"), &[]).await.cache, "miss");
    let (status, _) = purge(serde_json::json!({ "url": "not a url" })).await;
    assert_eq!(status, 400);
    let (status, _) = purge(serde_json::json!({ "url": "http://x/", "zone": "nope" })).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn access_log_metrics_and_rate_limits_before_the_cache() {
    let origin = Origin::start().await;
    let zone = "[[rate_limit]]\nname = \"rl\"\nrate = \"1/m\"\nburst = 2\n";
    let toml = config(&origin, r#"ttl = "60s""#, "8MiB", zone).replace(
        "upstream = \"origin\"\ncache",
        "upstream = \"origin\"\nrate_limit = \"rl\"\ncache",
    );
    let gw = TestGateway::start(&toml).await;
    let c = plain_client();
    let url = gw.http_url("/limited");
    assert_eq!(get(&c, &url, &[]).await.cache, "miss");
    assert_eq!(get(&c, &url, &[]).await.cache, "hit");
    assert_eq!(get(&c, &url, &[]).await.cache, "hit");
    // the zone's rate + burst is spent: a hit still counts against it
    assert_eq!(get(&c, &url, &[]).await.status, 429);
    let admin = gw.gw().admin_addr().unwrap();
    let metrics = metrics_text(&c, admin).await;
    for want in [
        "proxy_cache_requests_total{zone=\"z\",status=\"hit\"} 2",
        "proxy_cache_requests_total{zone=\"z\",status=\"miss\"} 1",
        "proxy_cache_objects{zone=\"z\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} in:\n{metrics}");
    }
    let log = gw.dir.path().join("access.log");
    wait_until(
        Duration::from_secs(5),
        "three cache fields in the access log",
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let fields: Vec<String> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["cache"].as_str().map(str::to_string))
                .collect();
            fields == ["miss", "hit", "hit"]
        },
    )
    .await;
}

#[tokio::test]
async fn a_reload_keeps_an_unchanged_zone_and_empties_a_changed_one() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"ttl = "60s""#, "8MiB", "").await;
    let c = plain_client();
    let url = gw.http_url("/kept");
    get(&c, &url, &[]).await;
    let load = |toml: String| {
        let toml = toml.replace("{dir}", gw.dir.path().to_str().unwrap());
        orta_gateway::config::parse(std::path::Path::new("t.toml"), &toml)
            .unwrap()
            .config
    };
    // an unrelated change: the objects stay
    let same_zone = config(&origin, r#"ttl = "60s""#, "8MiB", "").replace(
        "[[upstream]]",
        "[[rate_limit]]\nname = \"unused\"\nrate = \"5/s\"\n[[upstream]]",
    );
    // the listeners keep their ports only if the config names them: reuse the bound ones
    let pin = |t: String| {
        t.replacen("http = \"127.0.0.1:0\"", &format!("http = \"{}\"", gw.http()), 1)
            .replacen("https = \"127.0.0.1:0\"", &format!("https = \"{}\"", gw.https()), 1)
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"{}\"", gw.gw().admin_addr().unwrap()),
                1,
            )
    };
    gw.gw().reload(load(pin(same_zone))).unwrap();
    assert_eq!(get(&c, &url, &[]).await.cache, "hit", "kept across the reload");
    gw.gw()
        .reload(load(pin(config(&origin, r#"ttl = "60s""#, "4MiB", ""))))
        .unwrap();
    assert_eq!(get(&c, &url, &[]).await.cache, "miss", "a resized zone starts empty");
}

#[tokio::test]
async fn ten_thousand_keys_stay_within_max_size() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, r#"ttl = "60s""#, "1MiB", "").await;
    let c = plain_client();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..16 {
        let (c, next, base) = (c.clone(), next.clone(), gw.http_url("/k"));
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, SeqCst);
                if i >= 10_000 {
                    return;
                }
                let got = get(&c, &format!("{base}{i}?size=1024"), &[]).await;
                assert_eq!(got.status, 200);
            }
        });
    }
    while let Some(w) = workers.join_next().await {
        w.unwrap();
    }
    let metrics = metrics_text(&c, gw.gw().admin_addr().unwrap()).await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{zone=\"z\"}} ")))
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
            .parse()
            .unwrap()
    };
    let (bytes, objects) = (value("proxy_cache_bytes"), value("proxy_cache_objects"));
    assert!(bytes <= (1 << 20) as f64, "{bytes} bytes held");
    assert!(objects > 100.0 && objects < 10_000.0, "{objects} objects held");
    assert_eq!(origin.total.load(SeqCst), 10_000);
}

/// The bar: the bundled catalog, microcached, keeps answering 200 for the stale-if-error window
/// with every upstream stopped.
#[tokio::test]
async fn the_cached_catalog_stays_up_with_every_upstream_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let db = orta_gateway::api::db::Db::open(&dir.path().join("orta.db")).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut replicas = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        addrs.push(format!("\"{addr}\""));
        replicas.push(tokio::spawn(orta_gateway::api::serve(
            listener,
            addr,
            db.clone(),
            stopped.clone(),
        )));
    }
    let toml = format!(
        r#"{}
[[cache_zone]]
name = "catalog"
[[upstream]]
name = "backend"
servers = [{}]
[[route]]
path = "/api/dresses"
upstream = "backend"
cache = {{ zone = "catalog", ttl = "1s", stale_if_error = "1h", status_header = "X-Cache-Status" }}
"#,
        base_config(),
        addrs.join(", ")
    );
    let gw = TestGateway::start(&toml).await;
    let c = plain_client();
    let url = gw.http_url("/api/dresses?page=1");
    let first = get(&c, &url, &[]).await;
    let stored = Instant::now();
    assert_eq!((first.status, first.cache.as_str()), (200, "miss"));
    assert!(
        first.body.contains("\"items\"") || first.body.contains('['),
        "{}",
        first.body
    );
    // every replica stops: their listeners close
    stop.send(true).unwrap();
    for r in replicas {
        r.await.unwrap();
    }
    // a stopping replica still answers one request on a connection that was idle when it was
    // told to stop, for a second (its drain, `proto::lifecycle`): let that pass, so that every
    // request below finds the upstream gone
    tokio::time::sleep(Duration::from_millis(1500)).await;
    outlive(1.0, stored).await;
    for _ in 0..20 {
        let got = get(&c, &url, &[]).await;
        assert_eq!((got.status, got.cache.as_str(), &got.body), (200, "stale", &first.body));
    }
    // what was never cached fails as before
    assert_eq!(get(&c, &gw.http_url("/api/dresses?page=2"), &[]).await.status, 502);
}
