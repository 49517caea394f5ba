//! Security: headers on every kind of response, per-IP rate limiting, client IP from trusted
//! proxies and the PROXY protocol, connection caps, slow clients, TLS hardening, and request
//! hygiene.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SEC_HEADERS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    (
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
    ),
    ("permissions-policy", "camera=(), microphone=(), geolocation=()"),
];
const HSTS: &str = "max-age=63072000; includeSubDomains";

fn assert_security_headers(r: &reqwest::Response, tls: bool, what: &str) {
    let h = r.headers();
    for (name, value) in SEC_HEADERS {
        assert_eq!(h.get(name).map(|v| v.to_str().unwrap()), Some(value), "{what}: {name}");
    }
    match tls {
        true => assert_eq!(
            h.get("strict-transport-security").map(|v| v.to_str().unwrap()),
            Some(HSTS),
            "{what}"
        ),
        false => assert!(
            h.get("strict-transport-security").is_none(),
            "{what}: no HSTS over plain HTTP"
        ),
    }
    assert!(h.get("server").is_none(), "{what}: no Server header by default");
    assert!(h.get("x-powered-by").is_none(), "{what}");
}

/// Routes: `/api/` proxied (rate limited), `/dead/` to nothing, `/` static, an old host redirected.
async fn full_gateway(server_extra: &str, up: SocketAddr) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "<p>home</p>").unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = base_config().replace(
        "shutdown_grace = \"5s\"",
        &format!("shutdown_grace = \"5s\"\n{server_extra}"),
    ) + &format!(
        r#"
[[rate_limit]]
name = "api"
rate = "10/s"
burst = 5
[[upstream]]
name = "backend"
servers = ["{up}"]
[[upstream]]
name = "dead"
servers = ["{dead}"]
connect_timeout = "500ms"
[[route]]
path = "/api/"
upstream = "backend"
rate_limit = "api"
[[route]]
path = "/dead/"
upstream = "dead"
[[route]]
path = "/"
root = "{{dir}}/www"
index = "index.html"
[[route]]
host = ["old.example"]
path = "/"
redirect = "https://new.example"
"#
    );
    TestGateway::start_in(dir, &toml).await
}

#[tokio::test]
async fn every_kind_of_response_carries_the_security_headers() {
    let up = TestUpstream::start("u").await;
    // each pass is its own client (its own rate-limit bucket), named through a trusted proxy
    let gw = full_gateway("trusted_proxies = [\"127.0.0.1\"]", up.addr).await;
    for tls in [false, true] {
        let base = if tls { gw.client() } else { plain_client() };
        let client_ip = if tls { "198.51.100.1" } else { "198.51.100.2" };
        let c = Xff(base, client_ip);
        let url = |p: &str| if tls { gw.https_url(p) } else { gw.http_url(p) };
        let r = c.get(url("/api/echo")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_security_headers(&r, tls, "proxied");
        let r = c.get(url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let etag = r.headers()["etag"].clone();
        assert_security_headers(&r, tls, "static");
        let r = c.get(url("/")).header("if-none-match", etag).send().await.unwrap();
        assert_eq!(r.status(), 304);
        assert_security_headers(&r, tls, "304");
        // by Host over HTTP/1.1 (HTTP/2 routes by :authority)
        let h1 = client_trusting(&gw.ca_pem(), Some(true));
        let r = h1.get(url("/old")).header("host", "old.example").send().await.unwrap();
        assert_eq!(r.status(), 301);
        assert_security_headers(&r, tls, "redirect");
        let r = c.get(url("/missing")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_security_headers(&r, tls, "404");
        let r = c.get(url("/dead/x")).send().await.unwrap();
        assert_eq!(r.status(), 502);
        assert_security_headers(&r, tls, "502");
        let r = c.get(url("/a%00b")).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_security_headers(&r, tls, "400");
        let mut limited = None;
        for _ in 0..40 {
            let r = c.get(url("/api/x")).send().await.unwrap();
            if r.status() == 429 {
                limited = Some(r);
                break;
            }
        }
        let r = limited.expect("rate limited");
        assert_security_headers(&r, tls, "429");
    }
}

/// A client whose requests all carry one X-Forwarded-For.
struct Xff(reqwest::Client, &'static str);

impl Xff {
    fn get(&self, url: String) -> reqwest::RequestBuilder {
        self.0.get(url).header("x-forwarded-for", self.1)
    }
}

#[tokio::test]
async fn https_redirects_and_server_header_on_request() {
    let up = TestUpstream::start("u").await;
    let gw = full_gateway("server_header = true", up.addr).await;
    let r = plain_client().get(gw.http_url("/api/x")).send().await.unwrap();
    assert_eq!(r.headers()["server"], "orta-gateway");
    let toml = proxy_config(&[up.addr], "").replace("redirect_to_https = false", "redirect_to_https = true");
    let gw = TestGateway::start(&toml).await;
    let r = plain_client().get(gw.http_url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_security_headers(&r, false, "https redirect");
}

#[tokio::test]
async fn routes_override_or_remove_headers_and_upstream_values_win_unless_overridden() {
    // an upstream that sets its own X-Frame-Options and CSP
    let up = TestUpstream::start("u").await;
    let toml = base_config()
        + &format!(
            r#"
[headers]
x_frame_options = "SAMEORIGIN"
[[upstream]]
name = "u"
servers = ["{}"]
[[route]]
path = "/keep/"
upstream = "u"
  [route.headers]
  permissions_policy = ""
[[route]]
path = "/force/"
upstream = "u"
  [route.headers]
  content_security_policy = "default-src 'none'"
  x_frame_options = ""
  override = true
[[route]]
path = "/"
upstream = "u"
"#,
            up.addr
        );
    let gw = TestGateway::start(&toml).await;
    let c = plain_client();
    let r = c.get(gw.http_url("/plain")).send().await.unwrap();
    assert_eq!(
        r.headers()["x-frame-options"],
        "SAMEORIGIN",
        "[headers] overrides the default"
    );
    assert_eq!(
        r.headers()["x-content-type-options"],
        "nosniff",
        "unlisted keys keep the default"
    );
    let r = c.get(gw.http_url("/keep/x")).send().await.unwrap();
    assert!(r.headers().get("permissions-policy").is_none(), "\"\" removes");
    assert_eq!(r.headers()["x-frame-options"], "SAMEORIGIN", "inherited from [headers]");

    // the upstream's own values: kept without override, replaced or removed with it
    let r = c.get(gw.http_url("/keep/own-headers")).send().await.unwrap();
    assert_eq!(r.headers()["content-security-policy"], "upstream-csp");
    assert_eq!(r.headers()["x-frame-options"], "ALLOW-FROM upstream");
    let r = c.get(gw.http_url("/force/own-headers")).send().await.unwrap();
    assert_eq!(r.headers()["content-security-policy"], "default-src 'none'");
    assert!(r.headers().get("x-frame-options").is_none());
}

#[tokio::test]
async fn rate_limit_allows_rate_plus_burst_then_429_and_recovers() {
    let up = TestUpstream::start("u").await;
    let gw = full_gateway("", up.addr).await;
    let c = plain_client();
    let mut passed = 0;
    let started = Instant::now();
    let limited = loop {
        let r = c.get(gw.http_url("/api/x")).send().await.unwrap();
        if r.status() == 429 {
            break r;
        }
        assert_eq!(r.status(), 200);
        passed += 1;
        assert!(passed < 40, "never limited");
    };
    // 10/s + burst 5: 15 at once (and one more per 100 ms that passed meanwhile)
    let refilled = (started.elapsed().as_millis() / 100) as i32;
    assert!((15..=15 + refilled + 1).contains(&passed), "{passed} passed");
    assert_eq!(limited.headers()["retry-after"], "1");
    let body: serde_json::Value = c
        .get(gw.http_url("/api/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"]["status"], 429);
    // refilled at 10/s: a request passes again after ~100 ms
    let gw_ref = &gw;
    let c_ref = &c;
    wait_until(Duration::from_secs(2), "the bucket refills", || async move {
        c_ref.get(gw_ref.http_url("/api/x")).send().await.unwrap().status() == 200
    })
    .await;
}

#[tokio::test]
async fn trusted_proxies_give_each_client_its_own_bucket_and_spoofing_is_ignored() {
    let up = TestUpstream::start("u").await;
    let gw = full_gateway("trusted_proxies = [\"127.0.0.1/32\"]", up.addr).await;
    let c = plain_client();
    let status = |ip: &'static str| {
        let req = c.get(gw.http_url("/api/echo")).header("x-forwarded-for", ip);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for _ in 0..15 {
        assert_eq!(status("198.51.100.1").await, 200);
    }
    assert_eq!(status("198.51.100.1").await, 429);
    // another client behind the same proxy: its own bucket
    assert_eq!(status("198.51.100.2").await, 200);
    // the upstream sees the client
    let r = c
        .get(gw.http_url("/api/echo"))
        .header("x-forwarded-for", "6.6.6.6, 198.51.100.3")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let echo: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} {text}"));
    assert_eq!(echo["headers"]["x-real-ip"], "198.51.100.3", "right-most untrusted hop");
    assert_eq!(echo["headers"]["x-forwarded-for"], "6.6.6.6, 198.51.100.3, 127.0.0.1");

    // no trusted proxies: X-Forwarded-For is the client's own claim and changes nothing
    let gw = full_gateway("", up.addr).await;
    for i in 0..15 {
        let r = c
            .get(gw.http_url("/api/x"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .get(gw.http_url("/api/x"))
        .header("x-forwarded-for", "203.0.113.99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "spoofed X-Forwarded-For did not get a fresh bucket");
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_from_trusted_proxies_only() {
    let up = TestUpstream::start("u").await;
    let toml = proxy_config(&[up.addr], "").replace(
        "redirect_to_https = false",
        "redirect_to_https = false\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.0/8\"]",
    );
    let gw = TestGateway::start(&toml).await;
    let request = "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let resp = raw(
        gw.http(),
        format!("PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n{request}").as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"x-real-ip\":\"203.0.113.7\""), "{resp}");

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0, 12, 198, 51, 100, 9, 127, 0, 0, 1, 0x1f, 0x90, 0, 80]);
    v2.extend_from_slice(request.as_bytes());
    let resp = raw(gw.http(), &v2).await;
    assert!(resp.contains("\"x-real-ip\":\"198.51.100.9\""), "{resp}");

    // over TLS too: the PROXY header comes before the handshake
    let mut tcp = TcpStream::connect(gw.https()).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.8 127.0.0.1 5555 443\r\n")
        .await
        .unwrap();
    let mut tls = gw.tls_over(tcp, &[]).await;
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    assert!(String::from_utf8_lossy(&out).contains("\"x-real-ip\":\"203.0.113.8\""));

    // a connection without the header, and one from an untrusted peer, are closed unanswered
    let resp = raw(gw.http(), request.as_bytes()).await;
    assert_eq!(resp, "", "no PROXY header");
    let untrusted = proxy_config(&[up.addr], "").replace(
        "redirect_to_https = false",
        "redirect_to_https = false\nproxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]",
    );
    let gw = TestGateway::start(&untrusted).await;
    let resp = raw(
        gw.http(),
        format!("PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n{request}").as_bytes(),
    )
    .await;
    assert_eq!(resp, "", "PROXY header from an untrusted peer");
}

#[tokio::test]
async fn per_ip_connection_cap() {
    let up = TestUpstream::start("u").await;
    let toml = proxy_config(&[up.addr], "").replace(
        "redirect_to_https = false",
        "redirect_to_https = false\nmax_connections_per_ip = 3",
    );
    let gw = TestGateway::start(&toml).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(gw.http()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        assert!(s.read(&mut buf).await.unwrap() > 0);
        held.push(s);
    }
    // a fourth from the same address is closed at once
    let mut s = TcpStream::connect(gw.http()).await.unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)));
    // another address is not affected
    let other = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    assert_eq!(other.get(gw.http_url("/")).send().await.unwrap().status(), 200);
    drop(held);
    let gw_ref = &gw;
    wait_until(Duration::from_secs(5), "slots freed", || async move {
        plain_client()
            .get(gw_ref.http_url("/"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test]
async fn slowloris_and_slow_post_are_cut_off_while_others_are_served() {
    let up = TestUpstream::start("u").await;
    let toml = proxy_config(&[up.addr], "").replace(
        "header_read_timeout = \"2s\"",
        "header_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"",
    );
    let gw = TestGateway::start(&toml).await;
    let addr = gw.http();
    // 40 slowloris connections sending their head one byte per second
    let mut attackers = Vec::new();
    for _ in 0..40 {
        attackers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let started = Instant::now();
            for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-A: aaaaaaaaaa\r\n\r\n" {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => panic!("a slowloris head was answered"),
                    Err(_) => {}
                }
            }
            started.elapsed()
        }));
    }
    // and a slow POST: the head at once, then its body one byte every 1.5 s
    let slow_post = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            .await
            .unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        loop {
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(1500), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => {
                    if s.write_all(b"c").await.is_err() {
                        break;
                    }
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        (started.elapsed(), String::from_utf8_lossy(&out).into_owned())
    });
    // meanwhile, normal clients are served promptly
    let c = plain_client();
    for _ in 0..20 {
        let t = Instant::now();
        let r = c.get(gw.http_url("/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a normal request took {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for a in attackers {
        let t = a.await.unwrap();
        assert!(t < Duration::from_millis(2500), "a slowloris connection lived {t:?}");
    }
    let (t, resp) = slow_post.await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(t < Duration::from_secs(3), "the slow POST lasted {t:?}");
}

fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is needed for this test: apt-get install openssl (scripts/test installs it)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn negotiated(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.split("Cipher is ").nth(1))
        .filter(|c| !c.contains("(NONE)"))
        .map(str::to_string)
}

#[tokio::test]
async fn tls_12_and_13_only_with_strong_suites() {
    let up = TestUpstream::start("u").await;
    let gw = TestGateway::start(&proxy_config(&[up.addr], "")).await;
    let target = format!("127.0.0.1:{}", gw.https().port());
    let run = |args: Vec<&str>| {
        let mut a = vec!["s_client", "-connect", target.as_str()];
        a.extend(args);
        tokio::task::spawn_blocking({
            let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            move || openssl(&a.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    // the client offers TLS 1.1 (security level 0 lets OpenSSL 3 offer it): refused
    let out = run(vec!["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]).await.unwrap();
    assert!(
        out.contains("Protocol  : TLSv1.1") || out.contains("TLSv1.1"),
        "the client did offer TLS 1.1: {out}"
    );
    assert_eq!(negotiated(&out), None, "TLS 1.1 accepted: {out}");
    let out = run(vec!["-tls1_2"]).await.unwrap();
    let suite = negotiated(&out).expect("TLS 1.2 accepted");
    assert!(
        suite.starts_with("ECDHE-") && (suite.contains("GCM") || suite.contains("CHACHA20")),
        "{suite}"
    );
    let out = run(vec!["-tls1_3"]).await.unwrap();
    assert!(negotiated(&out).is_some_and(|s| s.starts_with("TLS_")), "{out}");
    // weak suites: static RSA key exchange, CBC, SHA-1 MACs
    for weak in [
        "AES128-SHA",
        "AES256-SHA256",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES128-SHA256",
        "DES-CBC3-SHA",
    ] {
        let out = run(vec!["-tls1_2", "-cipher", &format!("{weak}:@SECLEVEL=0")])
            .await
            .unwrap();
        assert_eq!(negotiated(&out), None, "{weak} accepted: {out}");
    }

    // min_version = "1.3"
    let toml = proxy_config(&[up.addr], "").replace("[tls]", "[tls]\nmin_version = \"1.3\"");
    let gw = TestGateway::start(&toml).await;
    let target = format!("127.0.0.1:{}", gw.https().port());
    let t = target.clone();
    let out = tokio::task::spawn_blocking(move || openssl(&["s_client", "-connect", &t, "-tls1_2"]))
        .await
        .unwrap();
    assert_eq!(negotiated(&out), None, "TLS 1.2 accepted with min_version 1.3");
    let out = tokio::task::spawn_blocking(move || openssl(&["s_client", "-connect", &target, "-tls1_3"]))
        .await
        .unwrap();
    assert!(negotiated(&out).is_some());
}

#[test]
fn a_private_key_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    let key_path = dir.path().join("key.pem");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let conf = dir.path().join("g.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nhttp = \"\"\nhttps = \"127.0.0.1:0\"\n[tls]\nsource = \"files\"\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin_path())
        .args(["check", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains(":7:7: private key") && stdout.contains("mode 0644") && stdout.contains("chmod 600"),
        "{stdout}"
    );
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = std::process::Command::new(bin_path())
        .args(["check", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn malformed_requests_get_their_4xx_and_a_closed_connection() {
    let up = TestUpstream::start("u").await;
    let gw = TestGateway::start(&proxy_config(&[up.addr], "")).await;
    let cases: [(&str, &[u8], &str); 8] = [
        (
            "Content-Length with Transfer-Encoding",
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        (
            "conflicting Content-Lengths",
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            "400",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
            "400",
        ),
        (
            "absolute-form target for another host",
            b"GET http://evil.example/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "400",
        ),
        ("invalid method", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
        (
            "a transfer coding other than chunked",
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "501",
        ),
        (
            "invalid header name",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
            "400",
        ),
        (
            "oversize head",
            &[
                &b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "[..],
                &[b'a'; 20_000],
                b"\r\n\r\n",
            ]
            .concat()
            .leak()[..],
            "431",
        ),
    ];
    for (what, req, status) in cases {
        let started = Instant::now();
        let resp = raw(gw.http(), req).await;
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {:?}",
            resp.lines().next()
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{what}: the connection was not closed"
        );
    }
    assert_eq!(up.hits(), 0, "none of them reached the upstream");
    // a body that breaks mid-stream is the client's fault too (the upstream saw its head)
    let resp = raw(
        gw.http(),
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n",
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 400"),
        "bad chunk size: {:?}",
        resp.lines().next()
    );
}

#[tokio::test]
async fn proxy_headers_never_reach_upstreams() {
    let up = TestUpstream::start("u").await;
    let gw = TestGateway::start(&proxy_config(&[up.addr], "")).await;
    let echo: serde_json::Value = plain_client()
        .get(gw.http_url("/echo"))
        .header("proxy-authorization", "Basic x")
        .header("proxy-connection", "keep-alive")
        .header("proxy-custom", "1")
        .header("te", "trailers")
        .header("keep-alive", "timeout=5")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let h = echo["headers"].as_object().unwrap();
    for name in [
        "proxy-authorization",
        "proxy-connection",
        "proxy-custom",
        "te",
        "keep-alive",
        "connection",
    ] {
        assert!(!h.contains_key(name), "{name} reached the upstream");
    }
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_off_by_send_timeout() {
    let up = TestUpstream::start("u").await;
    let toml = proxy_config(&[up.addr], "").replace(
        "header_read_timeout = \"2s\"",
        "header_read_timeout = \"2s\"\nsend_timeout = \"1s\"",
    );
    let gw = TestGateway::start(&toml).await;
    let size: usize = 64 << 20;
    let mut s = TcpStream::connect(gw.http()).await.unwrap();
    s.write_all(format!("GET /download?bytes={size} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // read nothing while the socket buffers fill and the gateway waits on them
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let started = Instant::now();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await
    .is_ok();
    assert!(ended, "the connection stayed open ({got} bytes read)");
    assert!(got < size, "the whole response arrived: nothing was cut off");
    assert!(started.elapsed() < Duration::from_secs(5));
    // a reading client on another connection is served as usual
    let r = plain_client()
        .get(gw.http_url("/download?bytes=1000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 1_000_000);
}

#[tokio::test]
async fn accept_loops_back_off_when_descriptors_run_out() {
    const LIMIT: u64 = 96;
    let (admin, api) = (free_port(), free_port());
    let toml = format!(
        "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [api]\nreplicas = [\"127.0.0.1:{api}\"]\ndatabase = \"{{dir}}/orta.db\"\n[log]\naccess = \"off\"\n"
    );
    let gw = BinGateway::start_limited(&toml, LIMIT);
    for port in [admin, api] {
        // the listener answers while there are descriptors
        let url = format!(
            "http://127.0.0.1:{port}/{}",
            if port == admin { "healthz" } else { "api/health" }
        );
        assert_eq!(plain_client().get(&url).send().await.unwrap().status(), 200);
        // connections that are never closed take every descriptor; the rest wait in the backlog,
        // so each accept fails with EMFILE
        let mut held = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while gw.open_fds() < LIMIT as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "descriptors never ran out: {} open after {} connections",
                gw.open_fds(),
                held.len()
            );
            let before = gw.open_fds();
            held.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
            // the next connection once the gateway has taken this one (its descriptor count
            // moved), so a gateway slow to accept is not outrun into the backlog
            let taken = std::time::Instant::now() + Duration::from_millis(200);
            while gw.open_fds() == before && std::time::Instant::now() < taken {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        for _ in 0..16 {
            held.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        // the loop that cannot accept must not spin: over a second and a half, a spinning loop
        // burns the whole of it (150 ticks); backing off, next to nothing
        let before = gw.cpu_ticks();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let used = gw.cpu_ticks() - before;
        assert!(
            used < 40,
            "port {port}: {used} ticks of CPU in 1.5 s with descriptors exhausted"
        );
        // descriptors back: the waiting connections are served
        drop(held);
        wait_until(Duration::from_secs(10), "the listener accepts again", || {
            let url = url.clone();
            async move { plain_client().get(&url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }
    drop(gw);
}
