//! A small load generator for HTTP/3 and HTTP/2, the same client shape for both (h2load here has
//! no HTTP/3): `CONNS` connections, `STREAMS` requests in flight on each, GET of one URL for
//! `SECS` seconds on one thread; prints requests/s, p50 and p99 latency, errors. HTTP/3 runs on
//! quinn + h3-quinn, HTTP/2 on hyper over rustls; both trust the CA in `CA` (PEM).
//!
//!   cargo bench --bench h3load -- h3|h2 https://127.0.0.1:8443/index.html CA CONNS STREAMS SECS
//!
//! `benches/wrk/h3.sh` runs it against the gateway's own HTTP/2, interleaved and pinned.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;

struct Args {
    proto: String,
    uri: http::Uri,
    addr: SocketAddr,
    ca: Vec<u8>,
    conns: usize,
    streams: usize,
    secs: u64,
}

fn args() -> Args {
    let a: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    assert!(a.len() >= 6, "usage: h3load h3|h2 URL CA_PEM CONNS STREAMS SECS");
    let uri: http::Uri = a[1].parse().expect("a URL");
    let addr = uri
        .authority()
        .expect("host:port")
        .as_str()
        .parse()
        .expect("IP:PORT in the URL");
    Args {
        proto: a[0].clone(),
        uri,
        addr,
        ca: std::fs::read(&a[2]).expect("the CA file"),
        conns: a[3].parse().unwrap(),
        streams: a[4].parse().unwrap(),
        secs: a[5].parse().unwrap(),
    }
}

fn tls(ca: &[u8], alpn: &[u8]) -> rustls::ClientConfig {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![alpn.to_vec()];
    c
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
}

impl Tally {
    /// One request that began at `started`: its latency when it succeeded, else an error.
    fn record(&mut self, started: Instant, ok: bool) {
        if ok {
            self.latencies_us.push(started.elapsed().as_micros() as u32);
        } else {
            self.errors += 1;
        }
    }
}

async fn run_h3(a: Arc<Args>, deadline: Instant) -> Tally {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls(&a.ca, b"h3")).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = endpoint
        .connect(a.addr, "localhost")
        .unwrap()
        .await
        .expect("QUIC handshake");
    let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(conn)).await.unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..a.streams {
        let (mut sender, a) = (sender.clone(), a.clone());
        streams.spawn(async move {
            let mut t = Tally::default();
            while Instant::now() < deadline {
                let started = Instant::now();
                let ok = async {
                    let req = http::Request::get(a.uri.clone()).body(()).unwrap();
                    let mut s = sender.send_request(req).await.ok()?;
                    s.finish().await.ok()?;
                    let resp = s.recv_response().await.ok()?;
                    while let Some(mut chunk) = s.recv_data().await.ok()? {
                        chunk.advance(chunk.remaining());
                    }
                    resp.status().is_success().then_some(())
                }
                .await;
                t.record(started, ok.is_some());
            }
            t
        });
    }
    merge(streams).await
}

async fn run_h2(a: Arc<Args>, deadline: Instant) -> Tally {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls(&a.ca, b"h2")));
    let tcp = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..a.streams {
        let (mut sender, a) = (sender.clone(), a.clone());
        streams.spawn(async move {
            let mut t = Tally::default();
            while Instant::now() < deadline {
                let started = Instant::now();
                let req = http::Request::get(a.uri.clone())
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap();
                let ok = match sender.send_request(req).await {
                    Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                t.record(started, ok);
            }
            t
        });
    }
    merge(streams).await
}

async fn merge(mut set: tokio::task::JoinSet<Tally>) -> Tally {
    let mut all = Tally::default();
    while let Some(t) = set.join_next().await {
        let t = t.unwrap();
        all.latencies_us.extend(t.latencies_us);
        all.errors += t.errors;
    }
    all
}

fn main() {
    let a = Arc::new(args());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tally = rt.block_on(async {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(a.secs);
        let mut conns = tokio::task::JoinSet::new();
        for _ in 0..a.conns {
            let a = a.clone();
            if a.proto == "h3" {
                conns.spawn(run_h3(a, deadline));
            } else {
                conns.spawn(run_h2(a, deadline));
            }
        }
        let all = merge(conns).await;
        (all, started.elapsed())
    });
    let (mut all, took) = tally;
    all.latencies_us.sort_unstable();
    let n = all.latencies_us.len();
    let pct = |p: f64| {
        all.latencies_us
            .get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{} req/s {:.0} p50_ms {:.3} p99_ms {:.3} requests {n} errors {}",
        a.proto,
        n as f64 / took.as_secs_f64(),
        f64::from(pct(0.50)) / 1000.0,
        f64::from(pct(0.99)) / 1000.0,
        all.errors
    );
}
