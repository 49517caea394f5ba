//! Static files from the in-memory cache: types, index, traversal and symlinks, caching
//! validators, ranges, compression (cached variants, precompressed siblings, streamed proxied
//! responses), invalidation on change, and the cache's size bound.

mod common;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const CSS: &str = "body { color: #333; background: ivory; }\n";

/// A text file big enough to compress (distinct lines, so it is not trivially tiny).
fn text_file(lines: usize) -> String {
    (0..lines)
        .map(|i| format!(".dress-{i} {{ margin: {}px; padding: {}px; }}\n", i % 17, i % 11))
        .collect()
}

/// A site under `{dir}/www` with a secret file just outside it.
fn site(dir: &Path) {
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("static")).unwrap();
    std::fs::create_dir_all(www.join("docs")).unwrap();
    std::fs::create_dir_all(www.join("empty")).unwrap();
    std::fs::write(www.join("index.html"), "<!doctype html><title>Orta</title><p>home</p>").unwrap();
    std::fs::write(www.join("docs/index.html"), "<p>docs</p>").unwrap();
    std::fs::write(www.join("static/app.css"), text_file(800)).unwrap();
    std::fs::write(www.join("static/small.css"), CSS).unwrap();
    std::fs::write(
        www.join("static/app.js"),
        format!("console.log('orta');\n{}", "// x\n".repeat(400)),
    )
    .unwrap();
    std::fs::write(www.join("static/data.json"), "{\"ok\":true}").unwrap();
    std::fs::write(
        www.join("static/logo.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
    let jpeg: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(www.join("static/photo.jpg"), jpeg).unwrap();
    std::fs::write(dir.join("secret.txt"), "TOP-SECRET-VALUE").unwrap();
}

fn site_config(extra_server: &str, extra: &str) -> String {
    base_config().replace(
        "shutdown_grace = \"5s\"",
        &format!("shutdown_grace = \"5s\"\n{extra_server}"),
    ) + &format!(
        r#"
[[route]]
path = "/"
root = "{{dir}}/www"
index = "index.html"
cache_control = "public, max-age=60"
{extra}
"#
    )
}

async fn site_gateway(extra_server: &str, extra: &str) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    TestGateway::start_in(dir, &site_config(extra_server, extra)).await
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut out).unwrap();
    out
}

fn unbrotli(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(b, 4096).read_to_end(&mut out).unwrap();
    out
}

#[tokio::test]
async fn serves_files_with_types_index_and_404() {
    let gw = site_gateway("", "").await;
    let c = plain_client();
    let get = |p: &str| c.get(gw.http_url(p)).send();
    for (path, ctype) in [
        ("/", "text/html; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/static/small.css", "text/css; charset=utf-8"),
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/data.json", "application/json; charset=utf-8"),
        ("/static/logo.svg", "image/svg+xml; charset=utf-8"),
        ("/static/photo.jpg", "image/jpeg"),
        ("/docs/", "text/html; charset=utf-8"),
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ctype, "{path}");
        assert_eq!(r.headers()["cache-control"], "public, max-age=60", "{path}");
        assert!(r.headers().contains_key("etag") && r.headers().contains_key("last-modified"));
    }
    let r = get("/").await.unwrap();
    assert!(r.text().await.unwrap().contains("home"));
    let r = get("/static/small.css").await.unwrap();
    assert_eq!(r.text().await.unwrap(), CSS);
    // a directory without its slash is redirected, like nginx
    let r = get("/docs?x=1").await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "/docs/?x=1");
    // no listings, no missing files
    assert_eq!(get("/empty/").await.unwrap().status(), 404);
    assert_eq!(get("/static/").await.unwrap().status(), 404);
    assert_eq!(get("/nope.html").await.unwrap().status(), 404);
    assert_eq!(get("/static/app.css/x").await.unwrap().status(), 404);
}

#[tokio::test]
async fn head_and_405() {
    let gw = site_gateway("", "").await;
    let c = plain_client();
    let r = c.head(gw.http_url("/static/small.css")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], CSS.len().to_string().as_str());
    assert_eq!(r.headers()["content-type"], "text/css; charset=utf-8");
    assert!(r.bytes().await.unwrap().is_empty());
    for m in ["POST", "PUT", "DELETE"] {
        let r = c
            .request(m.parse().unwrap(), gw.http_url("/static/small.css"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{m}");
        assert_eq!(r.headers()["allow"], "GET, HEAD");
    }
}

#[tokio::test]
async fn traversal_in_every_encoding_never_reaches_the_secret_next_to_the_root() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let toml = base_config()
        + r#"
[[route]]
path = "/static/"
root = "{dir}/www/static"
[[route]]
path = "/"
root = "{dir}/www"
"#;
    let gw = TestGateway::start_in(dir, &toml).await;
    let attempts = [
        "/../secret.txt",
        "/static/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/static/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/static%2f..%2f..%2fsecret.txt",
        "/static/..%5c..%5csecret.txt",
        "/static\\..\\..\\secret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/%c0%af../secret.txt",
        "/static/%252e%252e/%252e%252e/secret.txt",
        "/..%00/secret.txt",
        "/static/app.css%00/../../../secret.txt",
        "/%2e%2e%2fsecret.txt",
        "//../secret.txt",
    ];
    for path in attempts {
        let resp = raw(
            gw.http(),
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let status = resp.get(9..12).unwrap_or("");
        assert!(
            status == "400" || status == "404",
            "{path}: {}",
            resp.lines().next().unwrap_or("")
        );
        assert!(!resp.contains("TOP-SECRET"), "{path} leaked the secret");
    }
}

#[tokio::test]
async fn symlinks_that_leave_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let www = dir.path().join("www");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), www.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path(), www.join("parent")).unwrap();
    std::os::unix::fs::symlink(www.join("static/small.css"), www.join("inside.css")).unwrap();
    let gw = TestGateway::start_in(dir, &site_config("", "")).await;
    let c = plain_client();
    for p in ["/escape.txt", "/parent/secret.txt"] {
        let r = c.get(gw.http_url(p)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{p}");
        assert!(!r.text().await.unwrap().contains("TOP-SECRET"));
    }
    // a link that stays inside the root is fine
    let r = c.get(gw.http_url("/inside.css")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), CSS);
}

#[tokio::test]
async fn etag_and_last_modified_give_304() {
    let gw = site_gateway("", "").await;
    let c = plain_client();
    let url = gw.http_url("/static/small.css");
    let r = c.get(&url).send().await.unwrap();
    let etag = r.headers()["etag"].clone();
    let lm = r.headers()["last-modified"].clone();
    assert!(etag.to_str().unwrap().starts_with('"'), "strong ETag");

    let r = c.get(&url).header("if-none-match", etag.clone()).send().await.unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag);
    assert_eq!(r.headers()["cache-control"], "public, max-age=60");
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .get(&url)
        .header("if-none-match", "\"other\", W/".to_string() + etag.to_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304, "weak comparison for If-None-Match");
    let r = c.get(&url).header("if-none-match", "\"other\"").send().await.unwrap();
    assert_eq!(r.status(), 200);

    let r = c
        .get(&url)
        .header("if-modified-since", lm.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = c
        .get(&url)
        .header("if-modified-since", "Thu, 01 Jan 2015 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // If-None-Match wins over If-Modified-Since
    let r = c
        .get(&url)
        .header("if-none-match", "\"other\"")
        .header("if-modified-since", lm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn ranges_206_416_and_if_range() {
    let gw = site_gateway("", "").await;
    let c = plain_client();
    let url = gw.http_url("/static/app.css");
    let full = text_file(800);
    let r = c.get(&url).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 10-19/{}", full.len()).as_str()
    );
    assert!(
        r.headers().get("content-encoding").is_none(),
        "ranges are served uncompressed"
    );
    assert_eq!(r.text().await.unwrap(), &full[10..20]);
    let r = c.get(&url).header("range", "bytes=-5").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.text().await.unwrap(), &full[full.len() - 5..]);
    let r = c
        .get(&url)
        .header("range", format!("bytes={}-", full.len() + 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], format!("bytes */{}", full.len()).as_str());
    // several ranges: the whole file
    let r = c.get(&url).header("range", "bytes=0-1,5-6").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), full);
    // If-Range with the current ETag: the range; with a stale one: the whole file
    let etag = c.get(&url).send().await.unwrap().headers()["etag"].clone();
    let r = c
        .get(&url)
        .header("range", "bytes=0-3")
        .header("if-range", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let r = c
        .get(&url)
        .header("range", "bytes=0-3")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), full);
}

#[tokio::test]
async fn gzip_and_brotli_variants_decode_to_the_file() {
    let gw = site_gateway("", "").await;
    let c = plain_client();
    let url = gw.http_url("/static/app.css");
    let full = text_file(800).into_bytes();
    for (accept, enc) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("gzip, deflate, br", "br"),
        ("br;q=0.5, gzip", "gzip"),
    ] {
        let r = c.get(&url).header("accept-encoding", accept).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-encoding"], enc, "{accept}");
        assert_eq!(r.headers()["vary"], "Accept-Encoding");
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        let len: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), len);
        assert!(body.len() < full.len() / 2);
        let decoded = if enc == "gzip" { gunzip(&body) } else { unbrotli(&body) };
        assert_eq!(decoded, full, "{accept}");
        // the variant has its own ETag, and revalidates
        let r = c
            .get(&url)
            .header("accept-encoding", accept)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{accept}");
    }
    // identity when not accepted
    for accept in [None, Some("br;q=0"), Some("identity"), Some("deflate")] {
        let mut req = c.get(&url);
        if let Some(a) = accept {
            req = req.header("accept-encoding", a);
        }
        let r = req.send().await.unwrap();
        assert!(r.headers().get("content-encoding").is_none(), "{accept:?}");
        assert_eq!(r.headers()["vary"], "Accept-Encoding");
        assert_eq!(r.bytes().await.unwrap().as_ref(), full.as_slice());
    }
    // not below min_size, not for JPEG, not for HEAD
    let r = c
        .get(gw.http_url("/static/small.css"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    let r = c
        .get(gw.http_url("/static/photo.jpg"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    assert!(r.headers().get("vary").is_none());
}

#[tokio::test]
async fn compressed_variants_are_computed_once_and_served_from_the_cache() {
    let gw = site_gateway("", "").await;
    let c = plain_client();
    let url = gw.http_url("/static/app.css");
    let first = c
        .get(&url)
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let files = gw.gw().snapshot().files.clone();
    let hits = files.hits();
    for _ in 0..5 {
        let again = c
            .get(&url)
            .header("accept-encoding", "br")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(again, first, "the same cached bytes");
    }
    assert_eq!(
        files.hits(),
        hits + 5,
        "served from the cache (misses: {})",
        files.misses()
    );
}

#[tokio::test]
async fn precompressed_siblings_are_served_when_newer() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let css = dir.path().join("www/static/app.css");
    let full = std::fs::read(&css).unwrap();
    // a sibling made by the operator's build (gzip with a file name in its header, so its
    // bytes differ from anything the gateway would make)
    let mut enc = flate2::GzBuilder::new()
        .filename("app.css")
        .write(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &full).unwrap();
    let sibling = enc.finish().unwrap();
    std::fs::write(dir.path().join("www/static/app.css.gz"), &sibling).unwrap();
    // and an older .br sibling, which must be ignored
    std::fs::write(dir.path().join("www/static/app.css.br"), b"stale").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("www/static/app.css.br"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let gw = TestGateway::start_in(dir, &site_config("", "")).await;
    let c = plain_client();
    let r = c
        .get(gw.http_url("/static/app.css"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        sibling.as_slice(),
        "the sibling's bytes"
    );
    let r = c
        .get(gw.http_url("/static/app.css"))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "br");
    assert_eq!(unbrotli(&r.bytes().await.unwrap()), full, "not the stale sibling");
}

#[tokio::test]
async fn a_file_changed_on_disk_is_served_new_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let path = dir.path().join("www/static/small.css");
    let gw = TestGateway::start_in(dir, &site_config("", "")).await;
    let c = plain_client();
    let url = gw.http_url("/static/small.css");
    assert_eq!(c.get(&url).send().await.unwrap().text().await.unwrap(), CSS);
    assert_eq!(c.get(&url).send().await.unwrap().text().await.unwrap(), CSS);

    // rewritten in place
    std::fs::write(&path, "body { color: red; }\n").unwrap();
    let changed = Instant::now();
    wait_until(Duration::from_secs(1), "the new content within 1 s", || async {
        c.get(&url).send().await.unwrap().text().await.unwrap() == "body { color: red; }\n"
    })
    .await;
    assert!(changed.elapsed() < Duration::from_secs(1));

    // replaced by rename, as editors and deploy tools do
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, "body { color: blue; }\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let changed = Instant::now();
    wait_until(Duration::from_secs(1), "the renamed-in content within 1 s", || async {
        c.get(&url).send().await.unwrap().text().await.unwrap() == "body { color: blue; }\n"
    })
    .await;
    assert!(changed.elapsed() < Duration::from_secs(1));

    // removed
    std::fs::remove_file(&path).unwrap();
    wait_until(Duration::from_secs(1), "404 once removed", || async {
        c.get(&url).send().await.unwrap().status() == 404
    })
    .await;
}

#[tokio::test]
async fn the_cache_stays_within_max_size_and_streams_larger_files() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let many = dir.path().join("www/many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..40 {
        std::fs::write(many.join(format!("f{i}.bin")), vec![i as u8; 32 * 1024]).unwrap();
    }
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("www/big.bin"), &big).unwrap();
    let toml = site_config("", "") + "[cache]\nmax_size = \"256KiB\"\nmax_file_size = \"64KiB\"\n";
    let gw = TestGateway::start_in(dir, &toml).await;
    let c = plain_client();
    for i in 0..40 {
        let r = c.get(gw.http_url(&format!("/many/f{i}.bin"))).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().len(), 32 * 1024);
    }
    let files = gw.gw().snapshot().files.clone();
    assert!(
        files.weighted_size() <= 256 * 1024,
        "cache holds {} bytes",
        files.weighted_size()
    );
    assert!(
        files.weighted_size() >= 128 * 1024,
        "cache still holds files: {}",
        files.weighted_size()
    );

    // over max_file_size: streamed from disk, ranges included
    let misses = files.misses();
    let r = c.get(gw.http_url("/big.bin")).send().await.unwrap();
    assert_eq!(r.headers()["content-length"], "300000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), big.as_slice());
    let r = c
        .get(gw.http_url("/big.bin"))
        .header("range", "bytes=100000-100009")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &big[100_000..100_010]);
    assert_eq!(files.misses(), misses + 2, "large files are not cached");
}

#[tokio::test]
async fn proxied_json_is_compressed_while_it_streams() {
    use std::sync::Arc;
    // an upstream that sends half its JSON, then waits until the client has seen compressed
    // bytes before sending the rest: a gateway that buffered the body would never get there
    let go = Arc::new(tokio::sync::Notify::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let part = |i: usize| -> bytes::Bytes {
        let items: Vec<String> = (0..2000)
            .map(|j| {
                format!(
                    "{{\"id\":{},\"name\":\"dress {}\",\"price\":{}}}",
                    i * 2000 + j,
                    (i * 7919 + j * 104729) % 100_003,
                    j * 13 % 4800
                )
            })
            .collect();
        bytes::Bytes::from(items.join(","))
    };
    let (p1, p2) = (part(0), part(1));
    let expected = [&b"["[..], &p1, b",", &p2, b"]"].concat();
    let go2 = go.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(move |_req| {
            let (go, p1, p2) = (go2.clone(), p1.clone(), p2.clone());
            async move {
                let (mut tx, body) = futures_channel_body();
                tokio::spawn(async move {
                    tx.send(bytes::Bytes::from_static(b"[")).await;
                    tx.send(p1).await;
                    go.notified().await;
                    tx.send(bytes::Bytes::from_static(b",")).await;
                    tx.send(p2).await;
                    tx.send(bytes::Bytes::from_static(b"]")).await;
                });
                let mut r = http::Response::new(body);
                r.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                Ok::<_, std::convert::Infallible>(r)
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
            .await;
    });
    let gw = TestGateway::start(&proxy_config(&[addr], "")).await;
    let mut r = plain_client()
        .get(gw.http_url("/catalog"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert!(r.headers().get("content-length").is_none());
    assert_eq!(r.headers()["vary"], "Accept-Encoding");
    let mut got = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .expect("compressed bytes arrive before the upstream has finished")
        .unwrap()
        .unwrap();
    got.extend_from_slice(&first);
    go.notify_one();
    while let Some(chunk) = r.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(gunzip(&got), expected);
}

/// A channel-fed response body for the streaming upstream above.
fn futures_channel_body() -> (Sender, http_body_util::StreamBody<tokio_stream_shim::Rx>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (Sender(tx), http_body_util::StreamBody::new(tokio_stream_shim::Rx(rx)))
}

struct Sender(tokio::sync::mpsc::Sender<bytes::Bytes>);

impl Sender {
    async fn send(&mut self, b: bytes::Bytes) {
        let _ = self.0.send(b).await;
    }
}

mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Rx(pub tokio::sync::mpsc::Receiver<bytes::Bytes>);

    impl futures_util::Stream for Rx {
        type Item = Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }
}

#[tokio::test]
async fn large_cached_files_go_out_with_sendfile_and_stay_intact_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let gown: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(dir.path().join("www/gown.jpg"), &gown).unwrap();
    let gw = TestGateway::start_in(dir, &site_config("", "")).await;
    let c = plain_client();
    // no other test in this file caches a file large enough for a memory file, so the counter
    // moves only for this test's responses
    let before = orta_gateway::zerocopy::sent_bytes();
    for _ in 0..3 {
        let r = c.get(gw.http_url("/gown.jpg")).send().await.unwrap();
        assert_eq!(r.headers()["content-length"], "300000");
        assert_eq!(r.bytes().await.unwrap().as_ref(), gown.as_slice());
    }
    let r = c
        .get(gw.http_url("/gown.jpg"))
        .header("range", "bytes=1000-199999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &gown[1000..200_000]);
    let sent = orta_gateway::zerocopy::sent_bytes() - before;
    assert!(
        sent >= 2 * 300_000 + 199_000,
        "bodies after the first miss go out with sendfile: {sent} bytes"
    );
    let cached = gw
        .gw()
        .snapshot()
        .files
        .get(&gw.dir.path().canonicalize().unwrap().join("www/gown.jpg"));
    assert!(orta_gateway::zerocopy::is_sealed(&cached.expect("cached").body));

    // the same bytes through TLS, HTTP/1.1 and HTTP/2
    for h1 in [Some(true), None] {
        let c = client_trusting(&gw.ca_pem(), h1);
        let r = c.get(gw.https_url("/gown.jpg")).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), gown.as_slice());
    }

    // rewritten on disk: the new bytes, from a new memory file
    let new: Vec<u8> = gown.iter().map(|b| b ^ 0x5a).collect();
    std::fs::write(gw.dir.path().join("www/gown.jpg"), &new).unwrap();
    wait_until(Duration::from_secs(2), "the rewritten file is served", || async {
        let r = c.get(gw.http_url("/gown.jpg")).send().await.unwrap();
        r.bytes().await.unwrap().as_ref() == new.as_slice()
    })
    .await;
}
