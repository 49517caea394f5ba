//! The listeners: TLS with HTTP/1.1 and HTTP/2, the plain listener's redirect, request
//! hygiene (paths, Host), slow clients, graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn https_serves_http1_and_http2_through_the_proxy() {
    let up = TestUpstream::start("tls-backend").await;
    let gw = TestGateway::start(&proxy_config(&[up.addr], "")).await;

    let h2 = gw.client();
    let r = h2.get(gw.https_url("/echo")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN h2 negotiated");
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["upstream"], "tls-backend");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    let h1 = client_trusting(&gw.ca_pem(), Some(true));
    let r = h1.get(gw.https_url("/echo")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);

    // many concurrent HTTP/2 streams on one connection
    let mut tasks = Vec::new();
    for i in 0..50 {
        let req = h2.get(gw.https_url(&format!("/n{i}")));
        tasks.push(tokio::spawn(async move { req.send().await.unwrap().status() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }

    // the certificate is for localhost too, and its key is private
    let r = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&gw.ca_pem()).unwrap()])
        .resolve("localhost", gw.https())
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("https://localhost:{}/x", gw.https().port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    use std::os::unix::fs::PermissionsExt;
    for key in ["key.pem", "ca-key.pem"] {
        let mode = std::fs::metadata(gw.dir.path().join("certs").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

#[tokio::test]
async fn plain_listener_redirects_to_https_except_acme_challenges() {
    let up = TestUpstream::start("acme-responder").await;
    let toml = proxy_config(&[up.addr], "").replace("redirect_to_https = false", "redirect_to_https = true");
    let gw = TestGateway::start(&toml).await;
    let client = plain_client();
    let r = client
        .get(gw.http_url("/shop/dress?id=7"))
        .header("host", "ortanovias.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()["location"],
        format!("https://ortanovias.com:{}/shop/dress?id=7", gw.https().port()).as_str()
    );
    // ACME http-01 challenges stay on plain HTTP
    let r = client
        .get(gw.http_url("/.well-known/acme-challenge/token123"))
        .header("host", "ortanovias.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "acme-responder");
    // the HTTPS listener itself does not redirect
    let r = gw.client().get(gw.https_url("/shop")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn redirect_routes_answer_301_keeping_path_and_query() {
    let toml = format!(
        "{}\n[[route]]\nhost = [\"old.example\"]\npath = \"/\"\nredirect = \"https://new.example/\"\n",
        base_config()
    );
    let gw = TestGateway::start(&toml).await;
    let r = plain_client()
        .get(gw.http_url("/a/b?c=d"))
        .header("host", "old.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "https://new.example/a/b?c=d");
    let r = plain_client()
        .get(gw.http_url("/a"))
        .header("host", "other.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn paths_climbing_above_root_get_400_in_every_encoding() {
    let up = TestUpstream::start("u").await;
    let gw = TestGateway::start(&proxy_config(&[up.addr], "")).await;
    for path in [
        "/../etc/passwd",
        "/a/../../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/%2E%2E/etc/passwd",
        "/.%2e/etc/passwd",
        "/a/%2e%2e%2f%2e%2e%2fetc/passwd",
        "/a%2f..%2f..%2fetc/passwd",
        "/a/b/%2e%2e/%2e%2e/%2e%2e/x",
    ] {
        let resp = raw(
            gw.http(),
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 400"),
            "{path}: {}",
            resp.lines().next().unwrap_or("")
        );
    }
    for path in ["/a%00b", "/a%5c..%5cb", "/%c0%ae%c0%ae/x", "/%zz"] {
        let resp = raw(
            gw.http(),
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 400"),
            "{path}: {}",
            resp.lines().next().unwrap_or("")
        );
    }
    assert_eq!(up.hits(), 0, "nothing reached the upstream");
    // dot segments that stay inside are fine
    let resp = raw(
        gw.http(),
        b"GET /a/./b/../c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn http11_without_host_is_400_and_garbage_is_400() {
    let up = TestUpstream::start("u").await;
    let gw = TestGateway::start(&proxy_config(&[up.addr], "")).await;
    let resp = raw(gw.http(), b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = raw(gw.http(), b"\x16\x03\x01garbage\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = raw(gw.http(), b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // HTTP/1.0 without Host still routes
    let resp = raw(gw.http(), b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"),
        "{resp}"
    );
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off_by_header_read_timeout() {
    let up = TestUpstream::start("u").await;
    let toml = proxy_config(&[up.addr], "").replace("header_read_timeout = \"2s\"", "header_read_timeout = \"1s\"");
    let gw = TestGateway::start(&toml).await;
    let mut s = TcpStream::connect(gw.http()).await.unwrap();
    let started = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut_off = None;
    for b in head.iter() {
        if s.write_all(&[*b]).await.is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        // one byte every 100 ms: the whole head would take 6 s
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => panic!("the server answered a head it never fully got"),
            Err(_) => {}
        }
    }
    let t = cut_off.expect("the slow client was never cut off");
    assert!(
        t >= Duration::from_millis(900) && t < Duration::from_millis(2500),
        "cut off after {t:?}"
    );
    assert_eq!(up.hits(), 0);

    // an idle keep-alive connection is not cut by the header timeout
    let mut s = TcpStream::connect(gw.http()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut probe = [0u8; 1];
    let idle = tokio::time::timeout(Duration::from_millis(1500), s.read(&mut probe)).await;
    assert!(
        idle.is_err(),
        "idle keep-alive connection closed before keepalive_timeout"
    );
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn idle_keepalive_connections_close_after_keepalive_timeout() {
    let up = TestUpstream::start("u").await;
    let toml = proxy_config(&[up.addr], "").replace(
        "header_read_timeout = \"2s\"",
        "header_read_timeout = \"5s\"\nkeepalive_timeout = \"500ms\"",
    );
    let gw = TestGateway::start(&toml).await;
    let mut s = TcpStream::connect(gw.http()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("closed")
        .unwrap();
    assert_eq!(n, 0);
    let t = started.elapsed();
    assert!(
        t >= Duration::from_millis(400) && t < Duration::from_millis(1500),
        "closed after {t:?}"
    );
}

#[tokio::test]
async fn max_connections_closes_extra_connections_at_once() {
    let up = TestUpstream::start("u").await;
    let toml = proxy_config(&[up.addr], "").replace(
        "redirect_to_https = false",
        "redirect_to_https = false\nmax_connections = 2",
    );
    let gw = TestGateway::start(&toml).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(gw.http()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 1024];
        assert!(s.read(&mut buf).await.unwrap() > 0);
        held.push(s);
    }
    let mut third = TcpStream::connect(gw.http()).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "third connection was served");
    drop(held);
    wait_until(Duration::from_secs(5), "a slot frees up", || async {
        plain_client()
            .get(gw.http_url("/"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[test]
fn sigterm_finishes_the_in_flight_request_then_exits_0() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(TestUpstream::start("slow"));
    let gw = BinGateway::start(&proxy_config(&[up.addr], ""));
    let url = format!("http://{}/slow?ms=1500", gw.http.unwrap());
    let in_flight = rt.spawn(async move { plain_client().get(url).send().await.map(|r| r.status().as_u16()) });
    rt.block_on(wait_until(
        Duration::from_secs(5),
        "request reached the upstream",
        || async { up.hits() == 1 },
    ));
    gw.signal("TERM");
    // new connections are refused while the old one drains
    let http = gw.http.unwrap();
    rt.block_on(wait_until(Duration::from_secs(5), "listener closed", || async move {
        TcpStream::connect(http).await.is_err()
    }));
    let status = rt.block_on(in_flight).unwrap().expect("in-flight request completed");
    assert_eq!(status, 200);
    let mut gw = gw;
    let code = gw.child.wait().unwrap();
    assert_eq!(code.code(), Some(0), "log:\n{}", gw.log_text());
    assert!(gw.log_text().contains("shutdown complete"));
}

/// A CA and leaf certificates signed by it, written as PEM files.
fn write_certs(dir: &std::path::Path, names: &[&str]) -> Vec<u8> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use std::os::unix::fs::PermissionsExt;
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    for name in names {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    ca_cert.pem().into_bytes()
}

#[tokio::test]
async fn certificate_files_are_chosen_by_sni() {
    let up = TestUpstream::start("u").await;
    let certs = tempfile::tempdir().unwrap();
    let ca = write_certs(certs.path(), &["a.example", "b.example"]);
    let d = certs.path().display();
    let toml = format!(
        r#"[server]
http = ""
https = "127.0.0.1:0"
[tls]
source = "files"
cert = "{d}/a.example.pem"
key = "{d}/a.example.key"
[[tls.certificates]]
cert = "{d}/b.example.pem"
key = "{d}/b.example.key"
[[upstream]]
name = "u"
servers = ["{}"]
[[route]]
path = "/"
upstream = "u"
"#,
        up.addr
    );
    let gw = TestGateway::start(&toml).await;
    let port = gw.https().port();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .resolve("a.example", gw.https())
        .resolve("b.example", gw.https())
        .resolve("c.example", gw.https())
        .no_proxy()
        .build()
        .unwrap();
    for host in ["a.example", "b.example"] {
        let r = client.get(format!("https://{host}:{port}/")).send().await;
        assert_eq!(r.expect(host).status(), 200, "{host}");
    }
    // an unknown name gets the default (first) certificate, which does not match it
    let err = client
        .get(format!("https://c.example:{port}/"))
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("NotValidForName") || format!("{err:?}").contains("certificate"),
        "{err:?}"
    );
}

#[tokio::test]
async fn curl_speaks_http2_over_tls_to_the_gateway() {
    let curl = std::process::Command::new("curl").arg("--version").output();
    assert!(
        curl.is_ok_and(|o| o.status.success()),
        "curl is needed for this test: apt-get install curl (scripts/test installs it)"
    );
    let up = TestUpstream::start("curl-backend").await;
    let gw = TestGateway::start(&proxy_config(&[up.addr], "")).await;
    let ca = gw.dir.path().join("certs/ca.pem");
    let url = gw.https_url("/echo");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(&ca)
        .args(["-w", "\\n%{http_version} %{http_code}", &url])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.ends_with("\n2 200"), "{text}");
    assert!(text.contains("\"upstream\":\"curl-backend\""), "{text}");
}

#[tokio::test]
async fn request_heads_over_max_header_size_get_431() {
    let up = TestUpstream::start("u").await;
    let toml = proxy_config(&[up.addr], "").replace(
        "redirect_to_https = false",
        "redirect_to_https = false\nmax_header_size = \"4KiB\"",
    );
    let gw = TestGateway::start(&toml).await;
    let big = "a".repeat(6000);
    let resp = raw(
        gw.http(),
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        resp.lines().next().unwrap_or("")
    );
    let resp = raw(gw.http(), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(up.hits(), 1);
}

/// Reads one response (head, and a body framed by Content-Length) off `s`.
async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed mid-head");
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    got.extend_from_slice(&body);
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn http11_pipelining_keep_alive_bodies_and_expect_continue() {
    let up = TestUpstream::start("u").await;
    let toml = format!(
        "{}\n[[upstream]]\nname = \"backend\"\nservers = [\"{}\"]\n[[route]]\npath = \"/api/\"\nupstream = \"backend\"\n",
        base_config(),
        up.addr
    );
    let gw = TestGateway::start(&toml).await;

    // three requests in one write: three answers, in order, then the close asked for
    let resp = raw(
        gw.http(),
        b"GET /api/echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /api/echo?n=2 HTTP/1.1\r\nHost: x\r\n\r\nGET /api/echo?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.matches("HTTP/1.1 200 OK").count(), 3, "{resp}");
    let at = |s: &str| resp.find(s).unwrap_or_else(|| panic!("{s} missing: {resp}"));
    assert!(at("n=1") < at("n=2") && at("n=2") < at("n=3"), "{resp}");

    // HTTP/1.0 keeps the connection only when asked to
    let mut s = TcpStream::connect(gw.http()).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /api/echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let r = read_response(&mut s).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("connection: keep-alive"), "{r}");
    }
    let r = raw(gw.http(), b"GET /api/echo HTTP/1.0\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("connection: close"), "{r}");
    // without a Host of its own, the upstream is named by the upstream's name
    assert!(r.contains(r#""host":"backend""#), "{r}");

    // a chunked upload, then the next request on the same connection
    let r = raw(
        gw.http(),
        b"POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET /api/echo?after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.matches("HTTP/1.1 200 OK").count(), 2, "{r}");
    assert!(r.contains("\r\n\r\n11") && r.contains("after"), "{r}");

    // a short body nobody reads (404) is read past: the connection serves the next request
    let r = raw(
        gw.http(),
        b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /api/echo?next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert!(r.contains("HTTP/1.1 200 OK") && r.contains("next"), "{r}");

    // Expect: 100-continue: the interim answer comes when the upstream asks for the body
    let mut s = TcpStream::connect(gw.http()).await.unwrap();
    s.write_all(b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut interim))
        .await
        .expect("no 100 Continue")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\n5"), "{r}");
    assert_eq!(up.hits(), 10);
}
