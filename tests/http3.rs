//! HTTP/3: a real QUIC + h3 client (quinn and h3-quinn, trusting the gateway's self-signed CA)
//! against the gateway's UDP side of the HTTPS listener: static files with and without
//! compression, proxied GET and a 10 MiB upload streamed to a real upstream, the gateway's own
//! 404/413/429 answers, security headers and the access log; `Alt-Svc` over TCP only.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use common::*;

type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// A QUIC client config trusting exactly `ca_pem`, offering h3.
fn client_config(ca_pem: &[u8]) -> quinn::ClientConfig {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ))
}

/// An HTTP/3 connection to `addr`, trusting `ca_pem`, for `localhost`.
async fn connect(addr: SocketAddr, ca_pem: &[u8]) -> (quinn::Endpoint, Sender, tokio::task::JoinHandle<()>) {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client_config(ca_pem));
    let conn = endpoint
        .connect(addr, "localhost")
        .unwrap()
        .await
        .expect("QUIC handshake");
    let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(conn)).await.unwrap();
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    (endpoint, sender, drive)
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

/// Sends `method path` with `headers` and `body` (streamed in 64 KiB chunks), reads the answer.
async fn send(
    sender: &mut Sender,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Answer {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = &body {
        req = req.header("content-length", b.len());
    }
    let mut stream = sender.send_request(req.body(()).unwrap()).await.unwrap();
    let mut sent_whole = true;
    if let Some(b) = body {
        for chunk in b.chunks(64 * 1024) {
            if let Err(e) = stream.send_data(Bytes::copy_from_slice(chunk)).await {
                // the gateway answered without the rest (a 413): it may ask us to stop, politely
                assert!(
                    e.to_string().contains("H3_NO_ERROR") || format!("{e:?}").contains("0x100"),
                    "{e:?}"
                );
                sent_whole = false;
                break;
            }
        }
    }
    if sent_whole {
        stream.finish().await.unwrap();
    }
    let resp = stream.recv_response().await.unwrap();
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    }
}

/// A gateway with HTTP/3 on: `/` static from `{dir}/www`, `/api/` proxied to `upstream`
/// (rate-limited by `limit`), `max_body_size` 16 MiB, an access log in `{dir}`.
async fn gateway(upstream: SocketAddr, extra_server: &str, limit: &str) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "<!doctype html><p>orta</p>\n".repeat(200)).unwrap();
    let toml = base_config().replace(
        "redirect_to_https = false\n",
        &format!("redirect_to_https = false\nmax_body_size = \"16MiB\"\n{extra_server}\n"),
    ) + &format!(
        r#"
[log]
access = "{{dir}}/access.log"
rotation = "never"
[[rate_limit]]
name = "limit"
rate = "{limit}"
[[upstream]]
name = "backend"
servers = ["{upstream}"]
[[route]]
path = "/api/"
upstream = "backend"
rate_limit = "limit"
[[route]]
path = "/"
root = "{{dir}}/www"
index = "index.html"
"#
    );
    TestGateway::start_in(dir, &toml).await
}

#[tokio::test]
async fn static_proxied_and_gateway_answers_over_http3() {
    let upstream = TestUpstream::start("u1").await;
    let gw = gateway(upstream.addr, "http3 = true", "1000/s").await;
    let port = gw.https().port();
    let (_endpoint, mut h3, _drive) = connect(gw.https(), &gw.ca_pem()).await;

    let page = send(&mut h3, port, "GET", "/", &[], None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body.len(), "<!doctype html><p>orta</p>\n".len() * 200);
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert!(page.headers.contains_key("x-request-id"));
    assert!(!page.headers.contains_key("alt-svc"), "HTTP/3 answers need no Alt-Svc");
    let gz = send(&mut h3, port, "GET", "/", &[("accept-encoding", "gzip")], None).await;
    assert_eq!(gz.headers["content-encoding"], "gzip");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut plain).unwrap();
    assert_eq!(plain, page.body);

    let echo = send(&mut h3, port, "GET", "/api/echo", &[], None).await;
    assert_eq!(echo.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&echo.body).unwrap();
    assert_eq!(json["headers"]["host"], format!("localhost:{port}"));
    assert_eq!(json["headers"]["x-forwarded-proto"], "https");
    assert!(!echo.headers.contains_key("x-powered-by"));

    // 10 MiB streamed up through the gateway to the upstream, which counts it
    let upload = send(&mut h3, port, "POST", "/api/upload", &[], Some(vec![b'x'; 10 << 20])).await;
    assert_eq!(
        (upload.status, String::from_utf8_lossy(&upload.body).as_ref()),
        (200, "10485760")
    );

    let missing = send(
        &mut h3,
        port,
        "GET",
        "/nothing-here",
        &[("accept", "application/json")],
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.headers["x-content-type-options"], "nosniff");
    let too_large = send(&mut h3, port, "POST", "/api/upload", &[], Some(vec![b'x'; 17 << 20])).await;
    assert_eq!(too_large.status, 413);

    let log = gw.dir.path().join("access.log");
    wait_until(Duration::from_secs(5), "HTTP/3 lines in the access log", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["http_version"] == "HTTP/3")
            .count()
            >= 6
    })
    .await;
}

#[tokio::test]
async fn rate_limits_apply_over_http3() {
    let upstream = TestUpstream::start("u1").await;
    let gw = gateway(upstream.addr, "http3 = true", "1/m").await;
    let port = gw.https().port();
    let (_endpoint, mut h3, _drive) = connect(gw.https(), &gw.ca_pem()).await;
    assert_eq!(send(&mut h3, port, "GET", "/api/x", &[], None).await.status, 200);
    let limited = send(&mut h3, port, "GET", "/api/x", &[], None).await;
    assert_eq!(limited.status, 429);
    assert!(limited.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn alt_svc_is_sent_over_tcp_tls_only_and_only_with_http3_on() {
    let upstream = TestUpstream::start("u1").await;
    let gw = gateway(upstream.addr, "http3 = true\nalt_svc_max_age = \"1h\"", "1000/s").await;
    let tls = gw.client().get(gw.https_url("/")).send().await.unwrap();
    let port = gw.https().port();
    assert_eq!(tls.headers()["alt-svc"], format!("h3=\":{port}\"; ma=3600").as_str());
    let plain = plain_client().get(gw.http_url("/")).send().await.unwrap();
    assert!(!plain.headers().contains_key("alt-svc"));

    let advertised = gateway(upstream.addr, "http3 = true\nhttp3_advertised_port = 443", "1000/s").await;
    let tls = advertised.client().get(advertised.https_url("/")).send().await.unwrap();
    assert_eq!(tls.headers()["alt-svc"], "h3=\":443\"; ma=86400");

    let off = gateway(upstream.addr, "http3 = false", "1000/s").await;
    let tls = off.client().get(off.https_url("/")).send().await.unwrap();
    assert!(!tls.headers().contains_key("alt-svc"));
}

#[tokio::test]
async fn quic_connections_count_toward_the_limits_and_show_in_status_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "hi").unwrap();
    let toml = base_config().replace(
        "redirect_to_https = false\n",
        "redirect_to_https = false\nhttp3 = true\nmax_connections_per_ip = 1\n",
    ) + "[admin]\nlisten = \"127.0.0.1:0\"\n[[route]]\npath = \"/\"\nroot = \"{dir}/www\"\nindex = \"index.html\"\n";
    let gw = TestGateway::start_in(dir, &toml).await;
    let port = gw.https().port();
    let (_e1, mut first, _d1) = connect(gw.https(), &gw.ca_pem()).await;
    assert_eq!(send(&mut first, port, "GET", "/", &[], None).await.status, 200);
    // a second connection from the same address is one too many
    let second = tokio::time::timeout(Duration::from_secs(5), try_connect(gw.https(), &gw.ca_pem())).await;
    assert!(matches!(second, Ok(Err(_))), "a second QUIC connection was accepted");
    let admin = gw.gw().admin_addr().unwrap();
    let metrics = metrics_text(&plain_client(), admin).await;
    assert!(metrics.contains("quic_connections_open 1"), "{metrics}");
    let status = status_json(&plain_client(), admin).await;
    assert_eq!(status["quic_connections_open"], 1);
    assert_eq!(status["listeners"]["http3"], gw.https().to_string());
}

/// Like `connect`, but the handshake's failure is returned.
async fn try_connect(addr: SocketAddr, ca_pem: &[u8]) -> Result<quinn::Connection, quinn::ConnectionError> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client_config(ca_pem));
    endpoint.connect(addr, "localhost").unwrap().await
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_then_closes() {
    let upstream = TestUpstream::start("u1").await;
    let gw = gateway(upstream.addr, "http3 = true", "1000/s").await;
    let (port, addr, ca) = (gw.https().port(), gw.https(), gw.ca_pem());
    let (_endpoint, mut h3, _drive) = connect(addr, &ca).await;
    let slow = tokio::spawn(async move { send(&mut h3, port, "GET", "/api/slow?ms=800", &[], None).await });
    wait_until(Duration::from_secs(5), "the request to reach the upstream", || async {
        upstream.hits() == 1
    })
    .await;
    // SIGTERM's path: stop, with the request still in flight
    let drained = gw.shutdown().await;
    let answer = slow.await.unwrap();
    assert_eq!(
        (answer.status, String::from_utf8_lossy(&answer.body).as_ref()),
        (200, "slow u1")
    );
    assert!(drained, "the QUIC connection closed once its request was answered");
    // and no new connection is taken
    let after = tokio::time::timeout(Duration::from_secs(5), try_connect(addr, &ca)).await;
    assert!(!matches!(after, Ok(Ok(_))), "a connection after shutdown");
}

#[tokio::test]
async fn a_reload_keeps_open_quic_connections_and_turns_http3_off_and_on() {
    let upstream = TestUpstream::start("u1").await;
    let gw = gateway(upstream.addr, "http3 = true", "1000/s").await;
    let (port, addr, ca) = (gw.https().port(), gw.https(), gw.ca_pem());
    let (_endpoint, mut h3, _drive) = connect(addr, &ca).await;
    assert_eq!(send(&mut h3, port, "GET", "/", &[], None).await.status, 200);
    let dir = gw.dir.path().to_str().unwrap().to_string();
    let config = |extra: &str| {
        let toml = base_config().replace(
            "redirect_to_https = false\n",
            &format!("redirect_to_https = false\nmax_body_size = \"16MiB\"\n{extra}\n"),
        ) + &format!(
            "[[upstream]]\nname = \"backend\"\nservers = [\"{}\"]\n[[route]]\npath = \"/api/\"\nupstream = \"backend\"\n[[route]]\npath = \"/\"\nroot = \"{{dir}}/www\"\nindex = \"index.html\"\n",
            upstream.addr
        );
        let toml = toml.replace("{dir}", &dir);
        orta_gateway::config::parse(std::path::Path::new("t.toml"), &toml)
            .unwrap()
            .config
    };
    // an unrelated change: the open connection goes on, the new max-age is advertised
    gw.gw()
        .reload(config("http3 = true\nalt_svc_max_age = \"1h\""))
        .unwrap();
    assert_eq!(send(&mut h3, port, "GET", "/", &[], None).await.status, 200);
    let tls = gw.client().get(gw.https_url("/")).send().await.unwrap();
    assert_eq!(tls.headers()["alt-svc"], format!("h3=\":{port}\"; ma=3600").as_str());
    // off: no more advertising, no new connections
    gw.gw().reload(config("http3 = false")).unwrap();
    let tls = gw.client().get(gw.https_url("/")).send().await.unwrap();
    assert!(!tls.headers().contains_key("alt-svc"));
    let refused = tokio::time::timeout(Duration::from_secs(3), try_connect(addr, &ca)).await;
    assert!(!matches!(refused, Ok(Ok(_))), "a QUIC connection with http3 off");
    // on again, on the same port
    gw.gw().reload(config("http3 = true")).unwrap();
    let (_endpoint2, mut again, _drive2) = connect(addr, &ca).await;
    assert_eq!(send(&mut again, port, "GET", "/", &[], None).await.status, 200);
}

#[tokio::test]
async fn garbage_datagrams_neither_crash_nor_stop_http3() {
    let upstream = TestUpstream::start("u1").await;
    let gw = gateway(upstream.addr, "http3 = true", "1000/s").await;
    let (port, addr, ca) = (gw.https().port(), gw.https(), gw.ca_pem());
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..2000usize {
        // random bytes, and headers that look like QUIC long and short packets
        let len = 1 + (i * 37) % 1400;
        let mut datagram = vec![0u8; len];
        for b in datagram.iter_mut() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *b = rng as u8;
        }
        match i % 3 {
            0 => datagram[0] = 0xc0 | (datagram[0] & 0x0f),
            1 => datagram[0] = 0x40 | (datagram[0] & 0x3f),
            _ => {}
        }
        socket.send_to(&datagram, addr).await.unwrap();
    }
    let (_endpoint, mut h3, _drive) = connect(addr, &ca).await;
    assert_eq!(send(&mut h3, port, "GET", "/", &[], None).await.status, 200);
}

#[tokio::test]
async fn a_changed_https_address_moves_http3_with_it() {
    let (first, second) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "hi").unwrap();
    let config = |port: u16| {
        base_config()
            .replace("https = \"127.0.0.1:0\"", &format!("https = \"127.0.0.1:{port}\""))
            .replace(
                "redirect_to_https = false\n",
                "redirect_to_https = false\nhttp3 = true\n",
            )
            + "[[route]]\npath = \"/\"\nroot = \"{dir}/www\"\nindex = \"index.html\"\n"
    };
    let gw = TestGateway::start_in(dir, &config(first)).await;
    let ca = gw.ca_pem();
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (_e1, mut h3, _d1) = connect(at(first), &ca).await;
    assert_eq!(send(&mut h3, first, "GET", "/", &[], None).await.status, 200);
    let text = config(second).replace("{dir}", gw.dir.path().to_str().unwrap());
    let loaded = orta_gateway::config::parse(std::path::Path::new("t.toml"), &text).unwrap();
    gw.gw().reload(loaded.config).unwrap();
    // HTTP/3 is on the new port, advertised there, and gone from the old one
    let (_e2, mut moved, _d2) = connect(at(second), &ca).await;
    assert_eq!(send(&mut moved, second, "GET", "/", &[], None).await.status, 200);
    let tls = gw
        .client()
        .get(format!("https://127.0.0.1:{second}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(tls.headers()["alt-svc"], format!("h3=\":{second}\"; ma=86400").as_str());
    let old = tokio::time::timeout(Duration::from_secs(3), try_connect(at(first), &ca)).await;
    assert!(!matches!(old, Ok(Ok(_))), "HTTP/3 still taken on the old port");
}

/// A UDP socket that sends but never hears anything back: a client whose handshakes stay in
/// progress on the server (as with spoofed source addresses).
#[derive(Debug)]
struct Deaf(Arc<dyn quinn::AsyncUdpSocket>);

impl quinn::AsyncUdpSocket for Deaf {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.0.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        _cx: &mut std::task::Context,
        _bufs: &mut [std::io::IoSliceMut<'_>],
        _meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Pending
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[tokio::test]
async fn a_handshake_flood_makes_new_clients_prove_their_address() {
    use quinn::Runtime;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "hi").unwrap();
    let toml = base_config().replace(
        "redirect_to_https = false\n",
        "redirect_to_https = false\nhttp3 = true\n",
    ) + "[admin]\nlisten = \"127.0.0.1:0\"\n[[route]]\npath = \"/\"\nroot = \"{dir}/www\"\nindex = \"index.html\"\n";
    let gw = TestGateway::start_in(dir, &toml).await;
    let (addr, ca) = (gw.https(), gw.ca_pem());
    let admin = gw.gw().admin_addr().unwrap();
    let retries = || async {
        let metrics = metrics_text(&plain_client(), admin).await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("quic_retries_total "))
            .unwrap_or_else(|| panic!("no quic_retries_total in {metrics}"))
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(retries().await, 0.0, "no Retry while handshakes are few");
    // 80 clients whose handshakes never finish: they stay in progress on the gateway
    let mut deaf = Vec::new();
    for _ in 0..80 {
        let socket = quinn::TokioRuntime
            .wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            Arc::new(Deaf(socket)),
            Arc::new(quinn::TokioRuntime),
        )
        .unwrap();
        endpoint.set_default_client_config(client_config(&ca));
        let connecting = endpoint.connect(addr, "localhost").unwrap();
        deaf.push((endpoint, tokio::spawn(connecting)));
    }
    wait_until(
        Duration::from_secs(5),
        "the gateway to answer new clients with Retry",
        || async {
            // a real client: past the threshold it is sent a Retry, answers it, and is served
            let (_endpoint, mut h3, _drive) = connect(addr, &ca).await;
            assert_eq!(send(&mut h3, addr.port(), "GET", "/", &[], None).await.status, 200);
            retries().await > 0.0
        },
    )
    .await;
    for (_, connecting) in deaf {
        connecting.abort();
    }
}

#[tokio::test]
async fn a_reload_with_new_certificate_files_reaches_new_quic_handshakes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "hi").unwrap();
    let localhost: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let write = |which: &str| {
        let (ca, leaf, key) = ca_and_leaf(&["localhost"], &[localhost]);
        let (cert_path, key_path) = (
            dir.path().join(format!("{which}.pem")),
            dir.path().join(format!("{which}.key")),
        );
        std::fs::write(&cert_path, &leaf).unwrap();
        std::fs::write(&key_path, key).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (ca, leaf)
    };
    let (ca_a, leaf_a) = write("a");
    let (ca_b, leaf_b) = write("b");
    let config = |which: &str| {
        format!(
            "[server]\nhttp = \"\"\nhttps = \"127.0.0.1:0\"\nhttp3 = true\n[tls]\nsource = \"files\"\ncert = \"{{dir}}/{which}.pem\"\nkey = \"{{dir}}/{which}.key\"\n[[route]]\npath = \"/\"\nroot = \"{{dir}}/www\"\nindex = \"index.html\"\n"
        )
    };
    let gw = TestGateway::start_in(dir, &config("a")).await;
    let served = |conn: &quinn::Connection| {
        let chain = conn
            .peer_identity()
            .unwrap()
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .unwrap();
        chain[0].to_vec()
    };
    let der = |pem: &str| {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    };
    let before = try_connect(gw.https(), ca_a.as_bytes())
        .await
        .expect("a handshake with certificate a");
    assert_eq!(served(&before), der(&leaf_a));
    let text = config("b").replace("{dir}", gw.dir.path().to_str().unwrap());
    let loaded = orta_gateway::config::parse(std::path::Path::new("t.toml"), &text).unwrap();
    // (server.https is the same `127.0.0.1:0`: the listeners and the QUIC endpoint stay)
    gw.gw().reload(loaded.config).unwrap();
    let after = try_connect(gw.https(), ca_b.as_bytes())
        .await
        .expect("a handshake with certificate b");
    assert_eq!(served(&after), der(&leaf_b));
    // the connection made before the reload is still open
    assert!(before.close_reason().is_none(), "{:?}", before.close_reason());
}

#[tokio::test]
async fn a_malformed_control_stream_closes_the_connection_with_an_http3_error() {
    let upstream = TestUpstream::start("u1").await;
    let gw = gateway(upstream.addr, "http3 = true", "1000/s").await;
    let (addr, ca) = (gw.https(), gw.ca_pem());
    let conn = try_connect(addr, &ca).await.unwrap();
    // a control stream (type 0x00) whose first frame is DATA, not SETTINGS: H3_MISSING_SETTINGS
    let mut control = conn.open_uni().await.unwrap();
    control
        .write_all(&[0x00, 0x00, 0x04, b'j', b'u', b'n', b'k'])
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the gateway closes it");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            assert_eq!(code, 0x10a, "H3_MISSING_SETTINGS, got {code:#x}");
        }
        other => panic!("closed with {other:?}, not an HTTP/3 error code"),
    }
    // and the gateway goes on serving
    let (_endpoint, mut h3, _drive) = connect(addr, &ca).await;
    assert_eq!(send(&mut h3, addr.port(), "GET", "/", &[], None).await.status, 200);
}

#[tokio::test]
async fn oversized_field_sections_and_idle_connections_end_over_http3() {
    let upstream = TestUpstream::start("u1").await;
    let gw = gateway(
        upstream.addr,
        "http3 = true\nmax_header_size = \"1KiB\"\nkeepalive_timeout = \"1s\"",
        "1000/s",
    )
    .await;
    let (addr, port, ca) = (gw.https(), gw.https().port(), gw.ca_pem());
    let (_endpoint, mut h3, _drive) = connect(addr, &ca).await;
    // a field section past max_header_size is not taken
    let big = "x".repeat(2048);
    let req = http::Request::get(format!("https://localhost:{port}/"))
        .header("x-big", big.as_str())
        .body(())
        .unwrap();
    let refused = async {
        let mut stream = h3.send_request(req).await.ok()?;
        stream.finish().await.ok()?;
        stream.recv_response().await.ok()
    }
    .await;
    // 431, as on HTTP/1.1 (h3 answers it itself as it reads the section)
    assert_eq!(refused.map(|r| r.status().as_u16()), Some(431));
    assert_eq!(send(&mut h3, port, "GET", "/", &[], None).await.status, 200);
    // an idle connection closes after keepalive_timeout
    let idle = try_connect(addr, &ca).await.unwrap();
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.closed())
        .await
        .expect("closed when idle");
    assert!(matches!(closed, quinn::ConnectionError::TimedOut), "{closed:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[test]
fn sigterm_lets_an_http3_request_in_flight_finish() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(TestUpstream::start("u1"));
    let toml = base_config().replace(
        "redirect_to_https = false\n",
        "redirect_to_https = false\nhttp3 = true\n",
    ) + &format!(
        "[[upstream]]\nname = \"backend\"\nservers = [\"{}\"]\n[[route]]\npath = \"/\"\nupstream = \"backend\"\n",
        upstream.addr
    );
    let mut gw = BinGateway::start(&toml);
    let (addr, ca) = (gw.https.unwrap(), gw.ca_pem());
    let answer = rt.block_on(async {
        let (_endpoint, mut h3, _drive) = connect(addr, &ca).await;
        let slow = tokio::spawn(async move { send(&mut h3, addr.port(), "GET", "/slow?ms=800", &[], None).await });
        wait_until(Duration::from_secs(5), "the request to reach the upstream", || async {
            upstream.hits() == 1
        })
        .await;
        gw.signal("TERM");
        slow.await.unwrap()
    });
    assert_eq!(
        (answer.status, String::from_utf8_lossy(&answer.body).as_ref()),
        (200, "slow u1")
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn bodiless_requests_connection_fields_and_head_over_http3() {
    let upstream = TestUpstream::start("u1").await;
    let gw = gateway(upstream.addr, "http3 = true", "1000/s").await;
    let (addr, port, ca) = (gw.https(), gw.https().port(), gw.ca_pem());
    let (_endpoint, mut h3, _drive) = connect(addr, &ca).await;
    // a GET without a body reaches the upstream without one (no chunked framing)
    let echo = send(&mut h3, port, "GET", "/api/echo", &[], None).await;
    let json: serde_json::Value = serde_json::from_slice(&echo.body).unwrap();
    assert!(json["headers"].get("transfer-encoding").is_none(), "{json}");
    assert!(json["headers"].get("content-length").is_none(), "{json}");
    // fields HTTP/3 forbids in a request: 400
    let bad = send(&mut h3, port, "GET", "/", &[("transfer-encoding", "chunked")], None).await;
    assert_eq!(bad.status, 400);
    // HEAD: the head only, also for the gateway's own answers
    let head = send(&mut h3, port, "HEAD", "/nothing-here", &[], None).await;
    assert_eq!((head.status, head.body.len()), (404, 0));
}
