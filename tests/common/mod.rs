//! Test harness: a real gateway (in-process from a TOML string, or the real binary as a child
//! process) and real upstream HTTP servers, all on loopback ports bound to 0. Readiness is
//! checked, never slept for.
#![allow(dead_code)]

pub mod engine;
pub mod pebble;
mod ports;
pub mod redis_server;
// each test binary uses a part of the harness (as `dead_code` above)
#[allow(unused_imports)]
pub use ports::{ephemeral_low, free_port};

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper_util::rt::TokioIo;
use orta_gateway::config;
use orta_gateway::proto::body::Body;
use orta_gateway::server::Gateway;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A CA, and a leaf it signed for `names` and `ips`: (CA PEM, leaf PEM, leaf key PEM).
pub fn ca_and_leaf(names: &[&str], ips: &[std::net::IpAddr]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

/// Fails, saying how to install it, when `tool` is not on PATH (tests never skip).
pub fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "`{tool}` is needed for this test: apt-get install {package} (scripts/test installs it)"
    );
}

/// Polls `f` every 20 ms until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The admin listener's `/metrics` text.
pub async fn metrics_text(c: &reqwest::Client, admin: impl std::fmt::Display) -> String {
    c.get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The admin listener's `/status` JSON.
pub async fn status_json(c: &reqwest::Client, admin: impl std::fmt::Display) -> serde_json::Value {
    c.get(format!("http://{admin}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Sends raw bytes, returns everything read until the server closes (or 5 s pass).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

// ---- the gateway, in-process ------------------------------------------------------------------

pub struct TestGateway {
    pub gw: Option<Gateway>,
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    /// Starts a gateway on `toml`; `{dir}` in it is replaced by a fresh temporary directory.
    pub async fn start(toml: &str) -> TestGateway {
        Self::start_in(tempfile::tempdir().unwrap(), toml).await
    }

    /// Like `start`, in a directory the test has already filled.
    pub async fn start_in(dir: tempfile::TempDir, toml: &str) -> TestGateway {
        let text = toml.replace("{dir}", dir.path().to_str().unwrap());
        let loaded = match config::parse(Path::new("test.toml"), &text) {
            Ok(l) => l,
            Err(d) => panic!("test config rejected:\n{d}\n{text}"),
        };
        let gw = Gateway::start(loaded.config, Some(orta_gateway::api::bundled()))
            .await
            .expect("gateway starts");
        TestGateway { gw: Some(gw), dir }
    }

    pub fn gw(&self) -> &Gateway {
        self.gw.as_ref().unwrap()
    }

    pub fn http(&self) -> SocketAddr {
        self.gw().http_addr().expect("http listener")
    }

    pub fn https(&self) -> SocketAddr {
        self.gw().https_addr().expect("https listener")
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http())
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.https())
    }

    /// The CA that signed the self-signed certificate (in `{dir}/certs`).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("certs/ca.pem")).expect("self-signed CA in {dir}/certs")
    }

    /// A TLS session for `localhost` over `tcp` (already connected to the HTTPS listener,
    /// perhaps after a PROXY header), trusting the gateway's self-signed CA, offering `alpn`.
    pub async fn tls_over(
        &self,
        tcp: tokio::net::TcpStream,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        tls_connect(&self.ca_pem(), tcp, alpn).await
    }

    /// A client that trusts the gateway's self-signed CA, HTTP/1.1 and HTTP/2 by ALPN.
    pub fn client(&self) -> reqwest::Client {
        client_trusting(&self.ca_pem(), None)
    }

    pub async fn shutdown(mut self) -> bool {
        self.gw.take().unwrap().shutdown(Duration::from_secs(5)).await
    }
}

/// A reqwest client trusting exactly `ca_pem`; `h1` forces HTTP/1.1.
pub fn client_trusting(ca_pem: &[u8], h1: Option<bool>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem).unwrap();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30));
    if h1 == Some(true) {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// A plain HTTP client: no redirects followed, no proxy.
/// Client load for the "under load, no request fails" tests: `workers` tasks each send requests
/// one after another until stopped, counting 200s and recording anything else.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the workers on `rt`; `worker(i)` makes worker `i`'s request maker (its client,
    /// or a new one per request).
    pub fn start<W>(rt: &tokio::runtime::Handle, workers: usize, worker: impl Fn(usize) -> W) -> Load
    where
        W: FnMut() -> reqwest::RequestBuilder + Send + 'static,
    {
        Self::start_paced(rt, workers, Duration::ZERO, worker)
    }

    /// Like `start`, each worker pausing `pause` after each request (a load that stays under a
    /// rate limit).
    pub fn start_paced<W>(
        rt: &tokio::runtime::Handle,
        workers: usize,
        pause: Duration,
        worker: impl Fn(usize) -> W,
    ) -> Load
    where
        W: FnMut() -> reqwest::RequestBuilder + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|i| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                let mut request = worker(i);
                rt.spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        match request().send().await {
                            Ok(r) if r.status() == 200 => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => failures.lock().unwrap().push(r.status().to_string()),
                            Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            workers,
        }
    }

    /// 200s so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// The failures so far (at most 5).
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().iter().take(5).cloned().collect()
    }

    /// Stops the workers and panics if any request failed; returns the 200s.
    pub async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            w.await.unwrap();
        }
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        self.ok.load(Ordering::SeqCst)
    }
}

pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The common head of test configs: plain + TLS listeners on free ports, self-signed
/// certificate cached in `{dir}/certs`, no redirect.
pub fn base_config() -> String {
    r#"
[server]
http = "127.0.0.1:0"
https = "127.0.0.1:0"
redirect_to_https = false
header_read_timeout = "2s"
shutdown_grace = "5s"
[tls]
source = "self-signed"
self_signed_dir = "{dir}/certs"
"#
    .to_string()
}

/// `[[upstream]]` + catch-all `[[route]]` proxying to `servers`.
pub fn proxy_config(servers: &[SocketAddr], extra_upstream: &str) -> String {
    format!(
        "{}\n[[upstream]]\nname = \"backend\"\nservers = [{}]\n{extra_upstream}\n[[route]]\npath = \"/\"\nupstream = \"backend\"\n",
        base_config(),
        servers
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

// ---- upstream servers -------------------------------------------------------------------------

/// A real HTTP/1.1 upstream server on a free port. Endpoints:
/// `/api/health` (200, or 503 when set unhealthy), `/echo` (request as JSON),
/// `/slow?ms=N`, `/download?bytes=N` (streamed), `/upload` (counts the body), `/echo-body` (the
/// body streamed back while it arrives), `/ws` (WebSocket
/// echo), `.../own-headers` (sets its own CSP and X-Frame-Options); anything else answers its
/// name. Every response carries `x-upstream: NAME`.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicUsize>,
    pub healthy: Arc<AtomicBool>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl TestUpstream {
    pub async fn start(name: &str) -> TestUpstream {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name).await
    }

    pub async fn start_on(addr: SocketAddr, name: &str) -> TestUpstream {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let (n, h, hl, t) = (name.to_string(), hits.clone(), healthy.clone(), tasks.clone());
        tasks.lock().unwrap().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, h, hl) = (n.clone(), h.clone(), hl.clone());
                t.lock().unwrap().spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (n, h, hl) = (n.clone(), h.clone(), hl.clone());
                        async move { Ok::<_, Infallible>(upstream_handle(&n, &h, &hl, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        TestUpstream {
            addr,
            name: name.to_string(),
            hits,
            healthy,
            tasks,
        }
    }

    /// Kills the server: closes its listener and every open connection at once.
    pub fn kill(&self) {
        self.tasks.lock().unwrap().abort_all();
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, ok: bool) {
        self.healthy.store(ok, Ordering::SeqCst);
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

async fn upstream_handle(
    name: &str,
    hits: &AtomicUsize,
    healthy: &AtomicBool,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path != "/api/health" {
        hits.fetch_add(1, Ordering::SeqCst);
    }
    // behind an `/api/` route the endpoints are the same: `/api/echo` is `/echo`
    let endpoint = match path.as_str() {
        "/api/health" => "/api/health",
        p => p.strip_prefix("/api").filter(|e| e.starts_with('/')).unwrap_or(p),
    };
    let mut resp = match endpoint {
        "/api/health" => {
            let ok = healthy.load(Ordering::SeqCst);
            let mut r = Response::new(Body::full(if ok { "ok" } else { "sick" }));
            *r.status_mut() = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            r
        }
        "/echo" => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect();
            // names sent more than once (the map above keeps the last value only)
            let duplicates: Vec<&str> = req
                .headers()
                .keys()
                .filter(|k| req.headers().get_all(*k).iter().count() > 1)
                .map(|k| k.as_str())
                .collect();
            let body = serde_json::json!({
                "duplicates": duplicates,
                "method": req.method().as_str(),
                "uri": req.uri().to_string(),
                "version": format!("{:?}", req.version()),
                "headers": headers,
                "upstream": name,
            });
            let mut r = Response::new(Body::full(body.to_string()));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r.headers_mut()
                .insert("x-powered-by", "TestFramework/1.0".parse().unwrap());
            r
        }
        "/slow" => {
            let ms = query_param(&req, "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(Body::full(format!("slow {name}")))
        }
        "/download" => {
            let n = query_param(&req, "bytes").unwrap_or(0);
            Response::new(Body::boxed(Generated { remaining: n }))
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            Response::new(Body::full(n.to_string()))
        }
        // the body streams back as it arrives: the upstream answers before the request ends
        "/echo-body" => Response::new(Body::boxed(req.into_body())),
        "/ws" => websocket_echo(&mut req),
        p if p.ends_with("/own-headers") => {
            let mut r = Response::new(Body::full("own headers"));
            r.headers_mut()
                .insert("content-security-policy", "upstream-csp".parse().unwrap());
            r.headers_mut()
                .insert("x-frame-options", "ALLOW-FROM upstream".parse().unwrap());
            r
        }
        _ => Response::new(Body::full(name.to_string())),
    };
    resp.headers_mut().insert("x-upstream", name.parse().unwrap());
    resp
}

fn websocket_echo(req: &mut Request<Incoming>) -> Response<Body> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Some(key) = req.headers().get("sec-websocket-key") else {
        let mut r = Response::new(Body::full("not a websocket request"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    let mut r = Response::new(Body::Empty);
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    r
}

/// A streamed body of `remaining` bytes, in 64 KiB chunks, never held in memory whole.
pub struct Generated {
    pub remaining: u64,
}

static CHUNK: [u8; 65536] = [b'x'; 65536];

impl HttpBody for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }
}

// ---- the real binary --------------------------------------------------------------------------

/// The gateway binary as a child process. Killed when dropped.
/// A TLS session for `localhost` over `tcp`, trusting the CA in `ca_pem`, offering `alpn`.
pub async fn tls_connect(
    ca_pem: &[u8],
    tcp: tokio::net::TcpStream,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

// ---- raw HTTP/2 frames ------------------------------------------------------------------------

/// One HTTP/2 frame as the wire has it: length, type, flags, stream, payload.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads one HTTP/2 frame: (type, flags, stream, payload).
pub async fn read_h2_frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok((head[3], head[4], stream, payload))
}

pub struct BinGateway {
    pub child: Child,
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orta-gateway"))
}

impl BinGateway {
    /// Writes `toml` (with `{dir}` replaced) and runs `orta-gateway run` on it; returns once the
    /// listeners are announced on stderr.
    pub fn start(toml: &str) -> BinGateway {
        Self::start_with(toml, |_| {})
    }

    /// Like `start`, after `prepare` has filled the scratch directory (the working directory).
    pub fn start_with(toml: &str, prepare: impl FnOnce(&Path)) -> BinGateway {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let work = dir.path().to_path_buf();
        Self::launch(toml, &work, dir, None)
    }

    /// Like `start`, with at most `nofile` open file descriptors (soft and hard limit).
    pub fn start_limited(toml: &str, nofile: u64) -> BinGateway {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().to_path_buf();
        Self::launch(toml, &work, dir, Some(nofile))
    }

    /// Like `start`, in a directory an earlier gateway used (a restart).
    pub fn start_in(toml: &str, work: &Path) -> BinGateway {
        Self::launch(toml, work, tempfile::tempdir().unwrap(), None)
    }

    fn launch(toml: &str, work: &Path, dir: tempfile::TempDir, nofile: Option<u64>) -> BinGateway {
        let text = toml.replace("{dir}", work.to_str().unwrap());
        let conf = work.join("gateway.toml");
        std::fs::write(&conf, text).unwrap();
        let mut command = Command::new(bin_path());
        command
            .args(["run", "--config"])
            .arg(&conf)
            .current_dir(work)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = rustix::process::Rlimit {
                current: Some(n),
                maximum: Some(n),
            };
            // SAFETY: setrlimit is async-signal-safe, and nothing else runs in the child
            unsafe {
                command.pre_exec(move || {
                    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).map_err(std::io::Error::from)
                });
            }
        }
        let mut child = command.spawn().expect("spawn orta-gateway");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let (mut http, mut https) = (None, None);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => panic!("gateway did not start; log:\n{}", log.lock().unwrap().join("\n")),
            };
            if let Some(a) = line.split("listening http=").nth(1) {
                http = a.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            if let Some(a) = line.split("listening https=").nth(1) {
                https = a.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            if line.contains("orta-gateway started") {
                break;
            }
        }
        BinGateway {
            child,
            http,
            https,
            log,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The self-signed CA of a gateway started with `base_config()` (certificates in `{dir}/certs`).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("certs/ca.pem")).expect("self-signed CA in {dir}/certs")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Peak resident memory (VmHWM) in KiB.
    /// CPU time (user + system, in clock ticks) of the process so far.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // fields after the command name, which may hold spaces, in parentheses
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// The process's open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for BinGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
