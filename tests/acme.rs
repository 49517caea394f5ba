//! ACME against pebble, the CA's own test server, with real validation: tls-alpn-01 and http-01
//! issuance, SAN certificates verified against pebble's root over HTTP/1.1 and HTTP/2, restarts
//! from the cache without a new order, renewal swapped under load, a CA that is down at start,
//! private cache files, `orta-gateway certs`; and the ARI fetch against a local RFC 9773
//! endpoint.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pebble::Pebble;
use common::*;
use rustls::pki_types::pem::PemObject;

const DOMAINS: [&str; 2] = ["shop.test", "www.shop.test"];

/// A gateway config on fixed ports, ACME from `directory`, caching in `{dir}/acme`.
fn acme_config(http: u16, https: u16, pebble: &Pebble, up: SocketAddr, extra_acme: &str, redirect: bool) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:{http}"
https = "127.0.0.1:{https}"
redirect_to_https = {redirect}
shutdown_grace = "5s"
[tls]
source = "acme"
[acme]
domains = ["{d0}", "{d1}"]
contact = ["mailto:ops@shop.test"]
directory = "{dir_url}"
cache_dir = "{{dir}}/acme"
check_interval = "1s"
ca_root = "{ca}"
{extra_acme}
[[upstream]]
name = "u"
servers = ["{up}"]
[[route]]
path = "/"
upstream = "u"
"#,
        d0 = DOMAINS[0],
        d1 = DOMAINS[1],
        dir_url = pebble.directory,
        ca = pebble.ca.display(),
    )
}

/// A client that trusts only pebble's issuing root and sends `name` to the gateway.
fn verified_client(root: &[u8], https: u16, h1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root).unwrap()])
        .no_proxy()
        .timeout(Duration::from_secs(10));
    for d in DOMAINS {
        b = b.resolve(d, SocketAddr::from(([127, 0, 0, 1], https)));
    }
    if h1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// The serial and issuer of the certificate the gateway on loopback presents for `name`.
async fn served_serial(https: u16, name: &str) -> Option<(String, String)> {
    common::pebble::served_serial(SocketAddr::from(([127, 0, 0, 1], https)), name).await
}

async fn wait_for_issued(https: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some((serial, issuer)) = served_serial(https, DOMAINS[0]).await
            && issuer.contains("Pebble")
        {
            return serial;
        }
        assert!(Instant::now() < deadline, "no certificate issued by pebble within 40 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn both_names_over_h1_and_h2(root: &[u8], https: u16) {
    for h1 in [true, false] {
        let c = verified_client(root, https, h1);
        for d in DOMAINS {
            let r = c.get(format!("https://{d}:{https}/x")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{d}");
            let v = if h1 {
                reqwest::Version::HTTP_11
            } else {
                reqwest::Version::HTTP_2
            };
            assert_eq!(r.version(), v);
        }
    }
}

#[tokio::test]
async fn tls_alpn_01_issues_a_san_certificate_and_a_restart_reuses_it() {
    let up = TestUpstream::start("u").await;
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https, None);
    pebble.ready().await;
    let toml = acme_config(http, https, &pebble, up.addr, "challenge = \"tls-alpn-01\"", false);
    let gw = BinGateway::start(&toml);
    let serial = wait_for_issued(https).await;
    let root = pebble.issuing_root().await;
    both_names_over_h1_and_h2(&root, https).await;
    assert!(gw.log_text().contains("new certificate issued"), "{}", gw.log_text());
    let issued = pebble.issued();
    assert_eq!(issued, 1);

    // the cache: private files in a private directory, and `certs` reads them
    use std::os::unix::fs::PermissionsExt;
    let acme_dir = gw.dir.path().join("acme");
    assert_eq!(
        std::fs::metadata(&acme_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let mut files = 0;
    for e in std::fs::read_dir(&acme_dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            files += 1;
            assert_eq!(
                e.metadata().unwrap().permissions().mode() & 0o777,
                0o600,
                "{:?}",
                e.file_name()
            );
        }
    }
    assert!(files >= 2, "account key and certificate");
    let conf = gw.dir.path().join("gateway.toml");
    let out = Command::new(bin_path())
        .args(["certs", "--config"])
        .arg(&conf)
        .current_dir(gw.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for field in [
        "acme: shop.test, www.shop.test",
        "issuer:",
        "Pebble",
        "not before:",
        "not after:",
        "days left",
        "renewal:",
        "a third of the lifetime left",
    ] {
        assert!(text.contains(field), "certs output lacks {field:?}:\n{text}");
    }

    // a restart loads the cached certificate: same serial, no new order
    let dir = gw.dir.path().to_path_buf();
    let mut gw = gw;
    gw.signal("TERM");
    gw.child.wait().unwrap();
    let gw2 = BinGateway::start_in(&toml, &dir);
    let again = wait_for_issued(https).await;
    assert_eq!(again, serial, "the cached certificate");
    assert!(
        gw2.log_text().contains("cached certificate deployed"),
        "{}",
        gw2.log_text()
    );
    assert_eq!(pebble.issued(), issued, "no new order");
    drop(gw);
}

#[tokio::test]
async fn http_01_issues_with_redirect_to_https_on() {
    let up = TestUpstream::start("u").await;
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https, None);
    pebble.ready().await;
    let gw = BinGateway::start(&acme_config(
        http,
        https,
        &pebble,
        up.addr,
        "challenge = \"http-01\"",
        true,
    ));
    wait_for_issued(https).await;
    let root = pebble.issuing_root().await;
    both_names_over_h1_and_h2(&root, https).await;
    // everything else on the plain listener is still redirected
    let r = plain_client()
        .get(format!("http://127.0.0.1:{http}/x"))
        .header("host", DOMAINS[0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    drop(gw);
}

#[tokio::test]
async fn a_ca_down_at_start_means_a_temporary_certificate_then_issuance() {
    let up = TestUpstream::start("u").await;
    let (http, https) = (free_port(), free_port());
    let admin = free_port();
    // the gateway starts while its CA is not running yet
    let mut pebble = Pebble::prepare(http, https, None);
    let toml =
        acme_config(http, https, &pebble, up.addr, "", false) + &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
    let gw = BinGateway::start(&toml);
    // meanwhile: a temporary certificate, and /status says why
    let (_, issuer) = served_serial(https, DOMAINS[0])
        .await
        .expect("a certificate is served at once");
    assert!(
        issuer.contains("orta-gateway"),
        "temporary self-signed, issued by {issuer}"
    );
    let status = status_json(&plain_client(), format!("127.0.0.1:{admin}")).await;
    assert!(
        status["acme"]["pending"].as_str().unwrap().contains("waiting"),
        "{status}"
    );
    let metrics_url = format!("http://127.0.0.1:{admin}/metrics");
    let failed = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("acme_renewals_total{result=\"failed\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let m = &metrics_url;
    wait_until(Duration::from_secs(10), "a failed order counted", || async move {
        failed(&plain_client().get(m).send().await.unwrap().text().await.unwrap()) >= 1.0
    })
    .await;
    // the CA comes up: issuance follows
    pebble.launch();
    pebble.ready().await;
    wait_for_issued(https).await;
    let metrics = plain_client()
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("acme_renewals_total{result=\"ok\"} 1"), "{metrics}");
    assert!(
        metrics.contains("certificate_expiry_seconds{domain=\"shop.test\"}"),
        "{metrics}"
    );
    drop(gw);
}

#[tokio::test]
async fn a_short_lived_certificate_is_renewed_under_load_without_a_failed_request() {
    let up = TestUpstream::start("u").await;
    let (http, https) = (free_port(), free_port());
    // 60 s certificates, renewed with 50 s left: a new one every ~10 s
    let pebble = Pebble::start(http, https, Some(60));
    pebble.ready().await;
    let gw = BinGateway::start(&acme_config(
        http,
        https,
        &pebble,
        up.addr,
        "renew_before = \"50s\"",
        false,
    ));
    let first = wait_for_issued(https).await;
    let root = pebble.issuing_root().await;
    let load = Load::start(&tokio::runtime::Handle::current(), 4, |i| {
        let root = root.clone();
        // a new client per request: new handshakes see the new certificate
        move || verified_client(&root, https, i % 2 == 0).get(format!("https://{}:{https}/x", DOMAINS[i % 2]))
    });
    let started = Instant::now();
    let mut renewed = None;
    while renewed.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no renewal; log:\n{}",
            gw.log_text()
        );
        if let Some((serial, issuer)) = served_serial(https, DOMAINS[0]).await
            && issuer.contains("Pebble")
            && serial != first
        {
            renewed = Some(serial);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let at_renewal = load.ok();
    // (by hand rather than wait_until: a timeout says what the load saw and what the gateway logged)
    let waiting = Instant::now();
    while load.ok() <= at_renewal + 20 {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "timed out waiting for requests on the new certificate: {} ok ({at_renewal} at renewal), failures {:?}; log:\n{}",
            load.ok(),
            load.failures(),
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    load.finish().await;
    assert!(gw.log_text().contains("renewing now"), "{}", gw.log_text());
}

#[tokio::test]
async fn ari_windows_are_fetched_from_the_directory() {
    use orta_gateway::tls::acme::ari;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    // a CA, a leaf for the endpoint, and a certificate to ask about
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    leaf.use_authority_key_identifier_extension = true;
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    let expected_id = ari::cert_id(leaf.der()).expect("an AKI and a serial");
    // the RFC 9773 endpoint
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let asked = Arc::new(Mutex::new(Vec::<String>::new()));
    let asked2 = asked.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, asked) = (acceptor.clone(), asked2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let asked = asked.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        asked.lock().unwrap().push(path.clone());
                        let body = if path == "/dir" {
                            serde_json::json!({"newNonce": "x", "renewalInfo": format!("https://{addr}/renewal-info")})
                        } else {
                            serde_json::json!({"suggestedWindow": {"start": "2031-01-02T04:00:00Z", "end": "2031-01-03T04:00:00Z"}})
                        };
                        let mut r =
                            http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body.to_string())));
                        r.headers_mut().insert("retry-after", "21600".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let url = ari::renewal_info_url(&format!("https://{addr}/dir"), &client)
        .await
        .unwrap();
    assert_eq!(url.as_deref(), Some(format!("https://{addr}/renewal-info").as_str()));
    let info = ari::fetch(&url.unwrap(), leaf.der(), &client).await.unwrap();
    assert_eq!(info.window.start, 1_925_092_800);
    assert_eq!(info.window.end, 1_925_179_200);
    assert_eq!(info.retry_after, Some(Duration::from_secs(21600)));
    assert_eq!(
        asked.lock().unwrap().last().unwrap(),
        &format!("/renewal-info/{expected_id}")
    );
}
