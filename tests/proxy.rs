//! The reverse proxy against real upstream servers: routing, forwarded headers, streaming,
//! limits, timeouts, load balancing, health checks, failover and WebSockets.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};

#[tokio::test]
async fn routes_by_host_then_longest_prefix_and_404_when_nothing_matches() {
    let (a, b, c, d) = (
        TestUpstream::start("root").await,
        TestUpstream::start("api").await,
        TestUpstream::start("shop").await,
        TestUpstream::start("shop-api-v2").await,
    );
    let toml = format!(
        r#"{}
[[upstream]]
name = "root"
servers = ["{}"]
[[upstream]]
name = "api"
servers = ["{}"]
[[upstream]]
name = "shop"
servers = ["{}"]
[[upstream]]
name = "shopv2"
servers = ["{}"]
[[route]]
path = "/"
upstream = "root"
[[route]]
path = "/api/"
upstream = "api"
[[route]]
host = ["shop.example"]
path = "/api/"
upstream = "shop"
[[route]]
host = ["shop.example"]
path = "/api/v2/"
upstream = "shopv2"
[[route]]
host = ["only.example"]
path = "/x/"
upstream = "shop"
"#,
        base_config(),
        a.addr,
        b.addr,
        c.addr,
        d.addr
    );
    let gw = TestGateway::start(&toml).await;
    let client = plain_client();
    let get = |host: &'static str, path: &'static str| {
        let req = client.get(gw.http_url(path)).header("host", host);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let up = r.headers().get("x-upstream").map(|v| v.to_str().unwrap().to_string());
            (status, up.unwrap_or_default())
        }
    };
    assert_eq!(get("any.example", "/").await, (200, "root".into()));
    assert_eq!(get("any.example", "/api/dresses").await, (200, "api".into()));
    assert_eq!(get("any.example", "/apix").await, (200, "root".into()));
    // a route naming the host beats the host-less one
    assert_eq!(get("shop.example", "/api/dresses").await, (200, "shop".into()));
    assert_eq!(get("SHOP.example:8080", "/api/dresses").await, (200, "shop".into()));
    // longest prefix among the host's routes
    assert_eq!(
        get("shop.example", "/api/v2/dresses").await,
        (200, "shop-api-v2".into())
    );
    // the host's routes don't match the path: host-less routes apply
    assert_eq!(get("shop.example", "/about").await, (200, "root".into()));

    // no route at all: 404, HTML for browsers, JSON on request
    let only = TestGateway::start(&format!(
        "{}\n[[upstream]]\nname = \"u\"\nservers = [\"{}\"]\n[[route]]\nhost = [\"only.example\"]\npath = \"/x/\"\nupstream = \"u\"\n",
        base_config(),
        a.addr
    ))
    .await;
    let r = client
        .get(only.http_url("/y"))
        .header("host", "only.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let r = client
        .get(only.http_url("/x/1"))
        .header("host", "other.example")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["status"], 404);
}

#[tokio::test]
async fn upstream_sees_forwarded_headers_and_request_id_without_hop_by_hop() {
    let up = TestUpstream::start("echo").await;
    let gw = TestGateway::start(&proxy_config(&[up.addr], "")).await;
    let client = gw.client();

    // over TLS with an existing X-Forwarded-For and a client request id
    let r = client
        .get(gw.https_url("/echo?q=1"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-for", "198.51.100.2")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-proto", "gopher")
        .header("x-forwarded-host", "evil.example")
        .header("x-request-id", "req-abc-123")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-request-id"],
        "req-abc-123",
        "request id echoed to the client"
    );
    assert!(r.headers().get("x-powered-by").is_none(), "X-Powered-By stripped");
    let echo: serde_json::Value = r.json().await.unwrap();
    let h = &echo["headers"];
    assert_eq!(echo["uri"], "/echo?q=1");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(
        h["x-forwarded-for"], "203.0.113.7, 198.51.100.2, 127.0.0.1",
        "every X-Forwarded-For line kept, in order, then the peer"
    );
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(
        echo["duplicates"],
        serde_json::json!([]),
        "the client's forwarding headers are replaced, not added to"
    );
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], format!("{}", gw.https()));
    assert_eq!(h["host"], format!("{}", gw.https()));
    assert_eq!(h["x-request-id"], "req-abc-123");
    assert!(h.get("proxy-authorization").is_none());
    assert!(
        h.get("x-drop-me").is_none(),
        "headers named in Connection are hop-by-hop"
    );

    // plain HTTP without a request id: one is generated, the same upstream and downstream
    let r = plain_client().get(gw.http_url("/echo")).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-request-id"], id.as_str());
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn request_body_over_max_body_size_gets_413() {
    let up = TestUpstream::start("u").await;
    let toml = proxy_config(&[up.addr], "").replace(
        "redirect_to_https = false",
        "redirect_to_https = false\nmax_body_size = \"1KiB\"",
    );
    let gw = TestGateway::start(&toml).await;
    let client = plain_client();
    // declared too large: refused before the upstream sees anything
    let r = client
        .post(gw.http_url("/upload"))
        .body(vec![b'a'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // within the limit: passes
    let r = client
        .post(gw.http_url("/upload"))
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "1000");
    // chunked, no length: cut off when it grows past the limit
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..8).map(|_| Ok(vec![b'b'; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = client.post(gw.http_url("/upload")).body(body).send().await.unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn no_reachable_server_is_502_and_a_slow_one_504() {
    // a port with nothing listening
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = TestGateway::start(&proxy_config(&[dead], "connect_timeout = \"1s\"")).await;
    let started = std::time::Instant::now();
    let r = plain_client().get(gw.http_url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(started.elapsed() < Duration::from_secs(2));
    // the server is now marked down: the next request fails at once too
    let r = plain_client().get(gw.http_url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);

    let slow = TestUpstream::start("slow").await;
    let gw = TestGateway::start(&proxy_config(&[slow.addr], "read_timeout = \"300ms\"")).await;
    let r = plain_client().get(gw.http_url("/slow?ms=3000")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let r = plain_client().get(gw.http_url("/slow?ms=10")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn spread(gw: &TestGateway, client: &reqwest::Client, n: usize) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    for _ in 0..n {
        let r = client.get(gw.http_url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        *seen
            .entry(r.headers()["x-upstream"].to_str().unwrap().to_string())
            .or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    ];
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let gw = TestGateway::start(&proxy_config(&addrs, "balance = \"round_robin\"")).await;
    let seen = spread(&gw, &plain_client(), 30).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|n| *n == 10), "{seen:?}");
}

#[tokio::test]
async fn least_conn_sends_new_requests_away_from_a_busy_server() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let gw = TestGateway::start(&proxy_config(&[a.addr, b.addr], "balance = \"least_conn\"")).await;
    let client = plain_client();
    // one slow request keeps one server busy
    let req = client.get(gw.http_url("/slow?ms=2000"));
    let slow = tokio::spawn(async move { req.send().await.unwrap().status() });
    wait_until(Duration::from_secs(5), "the slow request in flight", || async {
        a.hits() + b.hits() == 1
    })
    .await;
    let idle = if a.hits() == 0 { "a" } else { "b" };
    // meanwhile every quick request goes to the other one (round robin would alternate)
    let seen = spread(&gw, &client, 10).await;
    assert_eq!(seen.get(idle), Some(&10), "all to the idle server {idle}: {seen:?}");
    assert_eq!(slow.await.unwrap(), 200);
}

#[tokio::test]
async fn ip_hash_keeps_each_client_on_one_server_and_spreads_clients() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    ];
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let gw = TestGateway::start(&proxy_config(&addrs, "balance = \"ip_hash\"")).await;
    let mut servers_used = std::collections::HashSet::new();
    // the whole of 127.0.0.0/8 is loopback: each client connects from its own address
    for i in 1..=24u8 {
        let client = reqwest::Client::builder()
            .no_proxy()
            .local_address(IpAddr::from([127, 0, 0, i]))
            .build()
            .unwrap();
        let seen = spread(&gw, &client, 6).await;
        assert_eq!(seen.len(), 1, "client 127.0.0.{i} moved between servers: {seen:?}");
        servers_used.extend(seen.into_keys());
    }
    assert_eq!(servers_used.len(), 3, "24 clients should use all 3 servers");
}

#[tokio::test]
async fn active_health_checks_take_a_server_out_and_bring_it_back() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let health =
        "[upstream.health]\npath = \"/api/health\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nfails = 2\npasses = 2";
    let gw = TestGateway::start(&proxy_config(&[a.addr, b.addr], health)).await;
    let client = plain_client();
    assert_eq!(spread(&gw, &client, 10).await.len(), 2);

    b.set_healthy(false);
    let gw_ref = &gw;
    let client_ref = &client;
    wait_until(Duration::from_secs(5), "b taken out by health checks", || async move {
        !spread(gw_ref, client_ref, 4).await.contains_key("b")
    })
    .await;
    // while out, it gets nothing
    let before = b.hits();
    assert_eq!(spread(&gw, &client, 20).await.get("a"), Some(&20));
    assert_eq!(b.hits(), before);

    b.set_healthy(true);
    wait_until(Duration::from_secs(5), "b back after passing checks", || async move {
        spread(gw_ref, client_ref, 4).await.contains_key("b")
    })
    .await;
}

#[tokio::test]
async fn all_servers_down_answers_502_at_once() {
    let a = TestUpstream::start("a").await;
    let health = "[upstream.health]\npath = \"/api/health\"\ninterval = \"100ms\"\nfails = 1\npasses = 1";
    let gw = TestGateway::start(&proxy_config(&[a.addr], health)).await;
    a.set_healthy(false);
    let client = plain_client();
    let gw_ref = &gw;
    let client_ref = &client;
    wait_until(Duration::from_secs(5), "the only server marked down", || async move {
        client_ref.get(gw_ref.http_url("/")).send().await.unwrap().status() == 502
    })
    .await;
    let hits = a.hits();
    let started = std::time::Instant::now();
    let r = client.get(gw.http_url("/slow?ms=5000")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(started.elapsed() < Duration::from_millis(500), "502 without waiting");
    assert_eq!(a.hits(), hits, "a down server gets no traffic");
}

#[tokio::test]
async fn killing_one_of_two_servers_under_load_fails_no_request() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let health = "retries = 1\n[upstream.health]\npath = \"/api/health\"\ninterval = \"200ms\"\nfails = 2\npasses = 2";
    let gw = Arc::new(TestGateway::start(&proxy_config(&[a.addr, b.addr], health)).await);
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (gw, ok, failed, stop) = (gw.clone(), ok.clone(), failed.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let client = plain_client();
            while !stop.load(Ordering::SeqCst) {
                match client.get(gw.http_url("/slow?ms=5")).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failed.lock().unwrap().push(format!("status {}", r.status())),
                    Err(e) => failed.lock().unwrap().push(format!("error {e}")),
                }
            }
        }));
    }
    wait_until(Duration::from_secs(5), "steady load on both servers", || async {
        a.hits() > 50 && b.hits() > 50
    })
    .await;
    b.kill();
    let at_kill = ok.load(Ordering::SeqCst);
    wait_until(Duration::from_secs(10), "300 more requests after the kill", || async {
        ok.load(Ordering::SeqCst) > at_kill + 300
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

use std::sync::Mutex;

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let up = TestUpstream::start("ws").await;
    let gw = TestGateway::start(&proxy_config(&[up.addr], "")).await;
    let tcp = tokio::net::TcpStream::connect(gw.http()).await.unwrap();
    let url = format!("ws://{}/ws", gw.http());
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("websocket handshake through the gateway");
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        let text = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), text);
    }
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_data().as_ref(), &[1, 2, 3]);
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn streams_50_mib_up_and_down_with_bounded_memory() {
    const SIZE: u64 = 50 << 20;
    let up = TestUpstream::start("big").await;
    let toml = proxy_config(&[up.addr], "").replace(
        "redirect_to_https = false",
        "redirect_to_https = false\nmax_body_size = \"100MiB\"",
    );
    let gw = BinGateway::start(&toml);
    let before = gw.peak_rss_kib();
    let client = plain_client();
    let base = format!("http://{}", gw.http.unwrap());

    // download: counted as it arrives, never held whole
    let mut r = client
        .get(format!("{base}/download?bytes={SIZE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got = 0u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        got += chunk.len() as u64;
    }
    assert_eq!(got, SIZE);

    // upload: a generated stream, chunked
    let chunks = (0..(SIZE / 65536)).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b'u'; 65536])));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = client.post(format!("{base}/upload")).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), SIZE.to_string());

    let peak = gw.peak_rss_kib();
    // buffering either body would add 50 MiB; streaming adds a few buffers
    assert!(
        peak < before + 24 * 1024,
        "peak RSS grew from {before} KiB to {peak} KiB while streaming 2 x 50 MiB"
    );
}

/// An upstream that writes canned responses byte for byte, with framings hyper's server never
/// produces: chunk extensions and trailers, interim 1xx answers, bodies ended by close, a
/// keep-alive connection closed right after its answer, conflicting lengths. Counts its
/// connections, and says on `closed` when it has closed one after `/then-close`. `/once` is
/// answered as the first request of a connection only: later on the same connection it is read
/// and the connection closed unanswered (an idle keep-alive timing out as the request arrives).
async fn raw_upstream() -> (SocketAddr, Arc<AtomicUsize>, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    let counted = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for served in 0.. {
                    // one request: its head, then its Content-Length body
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + len {
                        let mut chunk = [0u8; 4096];
                        let n = s.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "request body cut short");
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = buf[end..end + len].to_vec();
                    buf.drain(..end + len);
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    if path == "/once" && served > 0 {
                        return;
                    }
                    let (answer, close): (Vec<u8>, bool) = match path.as_str() {
                        "/once" => (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce".to_vec(), false),
                        "/chunked" => (
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n\
                              5\r\nhello\r\n1;ext=x\r\n,\r\n6\r\n world\r\n0\r\nx-checksum: 1\r\n\r\n"
                                .to_vec(),
                            false,
                        ),
                        "/interim" => (
                            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
                              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                                .to_vec(),
                            false,
                        ),
                        "/until-close" => (
                            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nread until close".to_vec(),
                            true,
                        ),
                        "/head-len" => (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec(), false),
                        "/te-and-cl" => (
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
                              5\r\nhello\r\n0\r\n\r\n"
                                .to_vec(),
                            false,
                        ),
                        "/listed" => (
                            b"HTTP/1.1 200 OK\r\nConnection: content-length, x-secret\r\nX-Secret: 1\r\n\
                              Content-Length: 2\r\n\r\nok"
                                .to_vec(),
                            false,
                        ),
                        "/then-close" => (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbye.".to_vec(), true),
                        "/bad-length" => (
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_vec(),
                            false,
                        ),
                        "/post" => {
                            let mut a =
                                format!("HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                            a.extend_from_slice(&body);
                            (a, false)
                        }
                        _ => (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(), false),
                    };
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                    if close {
                        drop(s);
                        if path == "/then-close" {
                            let _ = closed_tx.send(());
                        }
                        return;
                    }
                }
            });
        }
    });
    (addr, conns, closed)
}

#[tokio::test]
async fn upstream_framings_interim_answers_and_closed_keepalives_are_handled() {
    let (up, conns, mut closed) = raw_upstream().await;
    let gw = TestGateway::start(&proxy_config(&[up], "")).await;
    let client = plain_client();
    let get = |path: &str| client.get(gw.http_url(path)).send();

    let r = get("/chunked").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "hello, world",
        "chunks with extensions and trailers"
    );
    let r = get("/interim").await.unwrap();
    assert_eq!(r.status(), 200, "100 and 103 are skipped for the final answer");
    assert_eq!(r.text().await.unwrap(), "ok");
    assert_eq!(conns.load(Ordering::SeqCst), 1, "a keep-alive connection is reused");

    let r = get("/until-close").await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "read until close",
        "an HTTP/1.0 body ended by close"
    );
    let r = client.head(gw.http_url("/head-len")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        "1000",
        "HEAD: the length stays, no body is awaited"
    );
    let r = get("/chunked").await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "hello, world",
        "the connection after HEAD is still in step"
    );
    assert_eq!(
        conns.load(Ordering::SeqCst),
        2,
        "the closed connection was replaced once"
    );

    // the upstream closes a keep-alive connection after answering: the next request, a POST
    // (never retried), must not be sent on it
    let r = get("/then-close").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "bye.");
    closed.recv().await.unwrap();
    let r = client.post(gw.http_url("/post")).body("order #1").send().await.unwrap();
    assert_eq!(r.status(), 201, "a POST after the upstream closed its idle connection");
    assert_eq!(r.text().await.unwrap(), "order #1");
    assert_eq!(conns.load(Ordering::SeqCst), 3);

    // headers named in Connection go, but not the length the body is framed by
    let r = get("/listed").await.unwrap();
    assert!(r.headers().get("x-secret").is_none());
    assert_eq!(r.text().await.unwrap(), "ok");
    assert_eq!(conns.load(Ordering::SeqCst), 3, "still in step: reused");
    // Transfer-Encoding beside Content-Length: decoded as chunked, and the connection, which a
    // peer might read the other way, is not reused
    let r = get("/te-and-cl").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello");
    let r = get("/chunked").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello, world");
    assert_eq!(conns.load(Ordering::SeqCst), 4);

    let r = get("/bad-length").await.unwrap();
    assert_eq!(r.status(), 502, "conflicting Content-Length from the upstream");
}

#[tokio::test]
async fn a_request_body_streams_while_the_upstream_echoes_it() {
    // the upstream answers at once and echoes as it reads: a proxy that wrote the whole body
    // before reading the answer would stall once the socket buffers on both sides are full
    const SIZE: usize = 32 << 20;
    let up = TestUpstream::start("echo").await;
    let gw = TestGateway::start(&proxy_config(&[up.addr], "").replace(
        "redirect_to_https = false",
        "redirect_to_https = false\nmax_body_size = \"64MiB\"",
    ))
    .await;
    let chunks = (0..SIZE / 65536).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![(i % 251) as u8; 65536])));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = plain_client()
        .post(gw.http_url("/echo-body"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let back = r.bytes().await.unwrap();
    assert_eq!(back.len(), SIZE);
    assert!(
        back.chunks(65536)
            .enumerate()
            .all(|(i, c)| c.iter().all(|b| *b == (i % 251) as u8))
    );
}

#[tokio::test]
async fn a_get_on_a_keepalive_the_upstream_drops_unanswered_goes_again_on_a_new_connection() {
    let (up, conns, _closed) = raw_upstream().await;
    // one server: the replay is on a new connection to it, not on another server
    let gw = TestGateway::start(&proxy_config(&[up], "")).await;
    let client = plain_client();
    let r = client.get(gw.http_url("/once")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "once");
    let r = client.get(gw.http_url("/once")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the GET went again on a new connection");
    assert_eq!(r.text().await.unwrap(), "once");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    // the upstream may have acted on a POST before dropping the connection: not replayed
    let r = client.post(gw.http_url("/once")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    // and the server was not taken out by those: the next request is answered
    let r = client.get(gw.http_url("/chunked")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
