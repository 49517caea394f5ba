//! The Docker deployment built and run on the real engine: the image (`docker/Dockerfile`'s final
//! stage with the binary this test build made) serving the dev config as a non-root user,
//! healthy by its own health check, finishing a download in flight on `docker stop`; the dev
//! stack (`docker/docker-compose.yml`) spreading requests over every API replica found by DNS,
//! following `--scale` up and a replica stopped under load without a failed request; the
//! production stack's gateway getting its certificate from pebble and serving HTTPS, then the
//! backend's rolling restart as `docker/README.md` documents it, under load, without a failed
//! request. Names are unique per run; containers, networks and volumes are removed after.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::engine::*;
use common::pebble::Pebble;
use common::*;

/// The dev config's health-check (and re-resolution) interval.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// A reqwest client trusting `ca_pem` that sends `host` to `addr` (SNI and Host).
fn client_for(ca_pem: &[u8], host: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem).unwrap()])
        .resolve(host, addr)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A directory the container's unprivileged user can read.
fn readable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn write_readable(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Copies the tree at `from` into `to`, readable by everyone.
fn copy_tree(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir(&target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            write_readable(&target, &std::fs::read(entry.path()).unwrap());
        }
    }
}

/// The `replica` field of the API's `/api/health` answer through `c`.
async fn replica(c: &reqwest::Client, url: &str) -> Option<String> {
    let r = c.get(url).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    let v: serde_json::Value = r.json().await.ok()?;
    Some(v["replica"].as_str()?.split(':').next()?.to_string())
}

/// The replicas (container short ids) that answer `n` requests to `url`, sent 50 ms apart (under
/// the configs' rate limits).
async fn replicas_seen(c: &reqwest::Client, url: &str, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        if let Some(name) = replica(c, url).await {
            seen.insert(name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// Polls `f` every `pause` until it holds; panics with `what` after `limit`.
async fn poll_until<F, Fut>(limit: Duration, pause: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(pause).await;
    }
}

/// GETs of the API's `/api/health` through the gateway, one after another with a pause (below
/// the route's rate limit), recording which replica answered each and every failure.
struct ReplicaLoad {
    stop: Arc<AtomicBool>,
    /// When each answer came, from which replica, and how long it took.
    seen: Arc<Mutex<Vec<(Instant, String, Duration)>>>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReplicaLoad {
    fn start(c: reqwest::Client, url: String, pause: Duration) -> ReplicaLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<(Instant, String, Duration)>>> = Arc::default();
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, se, fa) = (stop.clone(), Arc::clone(&seen), Arc::clone(&failures));
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                let sent = Instant::now();
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let v: serde_json::Value = r.json().await.unwrap();
                        let name = v["replica"].as_str().unwrap().split(':').next().unwrap().to_string();
                        se.lock().unwrap().push((Instant::now(), name, sent.elapsed()));
                    }
                    Ok(r) => fa
                        .lock()
                        .unwrap()
                        .push(format!("{} at {:?}", r.status(), SystemTime::now())),
                    Err(e) => fa.lock().unwrap().push(format!("{e:?} at {:?}", SystemTime::now())),
                }
                tokio::time::sleep(pause).await;
            }
        });
        ReplicaLoad {
            stop,
            seen,
            failures,
            task,
        }
    }

    /// The replicas that answered since `t`.
    fn seen_since(&self, t: Instant) -> BTreeSet<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(at, _, _)| *at >= t)
            .map(|(_, n, _)| n.clone())
            .collect()
    }

    fn served(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The longest wait for an answer since `from` (from `from` to the first, between two).
    fn longest_gap(&self, from: Instant) -> Duration {
        let seen = self.seen.lock().unwrap();
        let mut last = from;
        let mut longest = Duration::ZERO;
        for (at, _, _) in seen.iter().filter(|(at, _, _)| *at >= from) {
            longest = longest.max(at.duration_since(last));
            last = *at;
        }
        longest
    }

    /// The slowest answers (for a failure's message).
    fn slowest(&self) -> Vec<Duration> {
        let mut all: Vec<Duration> = self.seen.lock().unwrap().iter().map(|(_, _, d)| *d).collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        all.truncate(8);
        all
    }

    /// Waits until the replicas answering since `t` are exactly `want`.
    async fn wait_for(&self, limit: Duration, what: &str, t: Instant, want: &BTreeSet<String>) {
        poll_until(limit, Duration::from_millis(100), what, || {
            let holds = self.seen_since(t) == *want;
            async move { holds }
        })
        .await;
    }

    /// Stops, and panics if any request failed (with the gateway's log in `gateway`); the
    /// requests served.
    async fn finish(self, gateway: &str) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let served = self.served();
        self.task.await.unwrap();
        let failures = self.failures.lock().unwrap();
        if !failures.is_empty() {
            let logs = run_for(
                &docker(),
                &["logs", "--tail", "60", gateway],
                &[],
                Duration::from_secs(30),
            )
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
            eprintln!("the gateway's log:\n{logs}");
        }
        assert!(
            failures.is_empty(),
            "{} requests failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        served
    }
}

/// Waits (polling from a blocking thread) until `f` holds.
async fn wait_blocking(limit: Duration, what: &str, f: impl Fn() -> bool + Send + Sync + 'static) {
    let f = std::sync::Arc::new(f);
    wait_until(limit, what, || {
        let f = f.clone();
        async move { tokio::task::spawn_blocking(move || f()).await.unwrap() }
    })
    .await;
}

/// Waits until the gateway in `gateway` no longer lists `ip` among `upstream`'s servers.
async fn wait_until_dropped(gateway: &str, upstream: &'static str, ip: String) {
    let gateway = gateway.to_string();
    let what = format!("the gateway to drop {ip} from {upstream}");
    wait_blocking(Duration::from_secs(30), &what, move || {
        !upstream_servers(&gateway_status(&gateway), upstream)
            .iter()
            .any(|s| s.contains(&format!("{ip}:")))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_image_serves_the_dev_config_as_a_non_root_user_and_finishes_downloads_on_stop() {
    engine();
    // the demo site plus one large file, for a download still in flight when `docker stop` comes
    let www = readable_tempdir();
    copy_tree(&repo().join("www"), www.path());
    let big: Vec<u8> = (0..48u32 << 20).map(|i| (i % 251) as u8).collect();
    write_readable(&www.path().join("big.bin"), &big);
    let (http, https) = (free_port(), free_port());
    let name = run_name("image");
    let conf = repo().join("docker/gateway.dev.toml");
    dk(&[
        "run",
        "-d",
        "--name",
        &name,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-p",
        &format!("127.0.0.1:{http}:8080"),
        "-p",
        &format!("127.0.0.1:{https}:8443"),
        "-e",
        "ORTA_GATEWAY_CONFIG=/srv/orta/conf/gateway.toml",
        "-v",
        &format!("{}:/srv/orta/conf/gateway.toml:ro", conf.display()),
        "-v",
        &format!("{}:/srv/orta/www:ro", www.path().display()),
        "--stop-timeout",
        "60",
        IMAGE,
    ]);
    let _container = Container(name.clone());
    let ca = read_in(&name, "/srv/orta/certs/self-signed/ca.pem", Duration::from_secs(30));
    let addr = SocketAddr::from(([127, 0, 0, 1], https));
    let c = client_for(&ca, "localhost", addr);
    let url = format!("https://localhost:{https}/");
    let c2 = c.clone();
    wait_until(Duration::from_secs(30), "HTTPS through the published port", || {
        let (c, url) = (c2.clone(), url.clone());
        async move { c.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    let page = c.get(&url).send().await.unwrap();
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert!(page.text().await.unwrap().contains("<html"));
    // the gateway runs as the image's unprivileged user
    let status = String::from_utf8(exec(&name, &["cat", "/proc/1/status"]).stdout).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid.split_whitespace().nth(1), Some("10001"), "{uid}");
    let rss = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: ?");
    eprintln!("the gateway in its container, serving the demo: {rss}");
    // the image's own HEALTHCHECK (`orta-gateway health`) turns healthy
    let n = name.clone();
    wait_blocking(Duration::from_secs(60), "the health check to say healthy", move || {
        inspect(&n, "{{.State.Health.Status}}") == "healthy"
    })
    .await;
    // a download in flight when `docker stop` sends SIGTERM
    let mut download = c
        .get(format!("https://localhost:{https}/big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let mut got = Vec::with_capacity(big.len());
    while got.len() < 256 * 1024 {
        got.extend_from_slice(&download.chunk().await.unwrap().unwrap());
    }
    let n = name.clone();
    let stop = tokio::task::spawn_blocking(move || dk(&["stop", "-t", "60", &n]));
    // draining: the health check now fails, yet the container runs on for the download
    let n = name.clone();
    wait_blocking(Duration::from_secs(20), "the gateway to start draining", move || {
        !exec(&n, &["orta-gateway", "health"]).status.success()
    })
    .await;
    assert_eq!(inspect(&name, "{{.State.Running}}"), "true");
    while let Some(chunk) = download.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert!(
        got == big,
        "the download finished whole ({} of {} bytes)",
        got.len(),
        big.len()
    );
    stop.await.unwrap();
    assert_eq!(inspect(&name, "{{.State.ExitCode}}"), "0", "exits 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dev_stack_spreads_over_every_api_replica_and_follows_scaling_under_load() {
    engine();
    let (http, https) = (free_port(), free_port());
    let stack = Stack::new(
        "dev",
        &[repo().join("docker/docker-compose.yml")],
        &[
            ("ORTA_HTTP_PUBLISH", &format!("127.0.0.1:{http}")),
            ("ORTA_HTTPS_PUBLISH", &format!("127.0.0.1:{https}")),
        ],
    );
    stack.compose(&["up", "-d", "--no-build", "--scale", "api=3"]);
    let gateway = stack.one("gateway");
    let ca = read_in(&gateway, "/srv/orta/certs/self-signed/ca.pem", Duration::from_secs(30));
    let c = client_for(&ca, "localhost", SocketAddr::from(([127, 0, 0, 1], https)));
    let url = format!("https://localhost:{https}/api/health");
    // every replica gets requests (the gateway resolved `api` to all three at start)
    let first: BTreeSet<String> = stack.ids("api").iter().map(|id| short_id(id)).collect();
    assert_eq!(first.len(), 3);
    let (c2, u2, want) = (c.clone(), url.clone(), first.clone());
    poll_until(
        Duration::from_secs(60),
        Duration::from_millis(200),
        "requests spread over all three replicas",
        || {
            let (c, url, want) = (c2.clone(), u2.clone(), want.clone());
            async move { replicas_seen(&c, &url, 12).await == want }
        },
    )
    .await;
    // under load from here on: 40 requests a second, below the dev config's rate limit
    let load = ReplicaLoad::start(c.clone(), url.clone(), Duration::from_millis(25));
    // a fourth replica gets requests within one health interval of starting (plus its start)
    stack.compose(&["up", "-d", "--no-build", "--no-recreate", "--scale", "api=4"]);
    let started = Instant::now();
    let all: BTreeSet<String> = stack.ids("api").iter().map(|id| short_id(id)).collect();
    assert_eq!(all.len(), 4, "{all:?}");
    load.wait_for(
        HEALTH_INTERVAL + Duration::from_secs(3),
        "the fourth replica to get requests",
        started,
        &all,
    )
    .await;
    eprintln!(
        "the fourth replica got requests {:?} after it started",
        started.elapsed()
    );
    // one replica stopped under load: no request fails, and the gateway lets it go
    let victim = stack
        .ids("api")
        .into_iter()
        .find(|id| first.contains(&short_id(id)))
        .unwrap();
    let ip = container_ip(&victim);
    let v = victim.clone();
    tokio::task::spawn_blocking(move || dk(&["stop", "-t", "15", &v]))
        .await
        .unwrap();
    wait_until_dropped(&gateway, "backend", ip).await;
    let dropped = Instant::now();
    let rest: BTreeSet<String> = all.iter().filter(|id| **id != short_id(&victim)).cloned().collect();
    load.wait_for(
        HEALTH_INTERVAL * 2,
        "the three replicas left to share the requests",
        dropped,
        &rest,
    )
    .await;
    let served = load.finish(&gateway).await;
    assert!(served > 100, "{served} requests served");
}

/// The production config, its ACME directory pebble's (with pebble's root trusted).
fn production_config_for(pebble: &Pebble) -> String {
    let text = std::fs::read_to_string(repo().join("docker/gateway.production.toml")).unwrap();
    let directory = text
        .lines()
        .find(|l| l.starts_with("directory = "))
        .expect("the production config names its ACME directory");
    let text = text.replace(
        directory,
        &format!(
            "directory = \"{}\"\nca_root = \"/etc/orta-gateway/pebble-ca.pem\"",
            pebble.directory
        ),
    );
    assert!(text.contains(&pebble.directory));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_production_gateway_gets_its_certificate_and_rolls_the_backend_without_a_failed_request() {
    engine();
    let (http, https) = (free_port(), free_port());
    let dir = readable_tempdir();
    // the bundled API's image stands in for the Django backend
    let override_file = dir.path().join("override.yml");
    let stack = Stack::new(
        "prod",
        &[
            repo().join("docker/docker-compose.production.yml"),
            override_file.clone(),
        ],
        &[
            ("ORTA_HTTP_PUBLISH", &format!("127.0.0.1:{http}")),
            ("ORTA_HTTPS_PUBLISH", &format!("127.0.0.1:{https}")),
            ("POSTGRES_PASSWORD", "test-only"),
            ("ORTA_CLUSTER_SECRET", "test-only-cluster-secret"),
            ("BACKEND_IMAGE", IMAGE),
        ],
    );
    let conf = dir.path().join("gateway.toml");
    let ca = dir.path().join("pebble-ca.pem");
    write_readable(
        &override_file,
        format!(
            r#"version: "3.8"
services:
  backend:
    command: ["api", "--listen", "0.0.0.0:8000", "--database", "/srv/orta/data/orta.db"]
    healthcheck:
      test: ["CMD", "orta-gateway", "health", "--url", "http://127.0.0.1:8000/api/health"]
      interval: 2s
  gateway:
    volumes:
      - {conf}:/etc/orta-gateway/gateway.toml:ro
      - {ca}:/etc/orta-gateway/pebble-ca.pem:ro
  redis:
    image: {redis}
    # as the official image does: other containers may connect without a password
    command: ["redis-server", "--appendonly", "yes", "--protected-mode", "no"]
"#,
            conf = conf.display(),
            ca = ca.display(),
            redis = redis_image(),
        )
        .as_bytes(),
    );
    // the networks first: pebble listens on the host's address on the gateway's network
    write_readable(&conf, b"");
    write_readable(&ca, b"");
    let services = ["--no-deps", "gateway", "backend", "redis"];
    let mut up = vec!["up", "--no-start", "--no-build", "--scale", "backend=2"];
    up.extend_from_slice(&services);
    stack.compose(&up);
    let network = format!("{}_frontend", stack.project);
    let host_ip = dk(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        &network,
    ]);
    let mut pebble = Pebble::prepare_on(host_ip.parse().unwrap(), http, https, None);
    write_readable(&conf, production_config_for(&pebble).as_bytes());
    write_readable(&ca, &std::fs::read(&pebble.ca).unwrap());
    pebble.launch();
    pebble.ready().await;
    let mut up = vec!["up", "-d", "--no-build", "--scale", "backend=2"];
    up.extend_from_slice(&services);
    stack.compose(&up);
    let gateway = stack.one("gateway");
    // the certificate pebble issues, for both names, then the backend through it
    let root = pebble.issuing_root().await;
    let addr = SocketAddr::from(([127, 0, 0, 1], https));
    let c = client_for(&root, "ortanovias.com", addr);
    let url = "https://ortanovias.com/api/health/".to_string();
    let (c2, u2) = (c.clone(), url.clone());
    let deadline = Instant::now() + Duration::from_secs(90);
    while !c2.get(u2.clone()).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(
            Instant::now() < deadline,
            "no certificate from pebble, or no backend behind it, within 90 s; the gateway's log:\n{}",
            run_for(
                &docker(),
                &["logs", "--tail", "60", &gateway],
                &[],
                Duration::from_secs(30)
            )
            .map(|o| format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ))
            .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let www = client_for(&root, "www.ortanovias.com", addr);
    let r = www.get("https://www.ortanovias.com/api/health/").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("strict-transport-security"));
    assert!(pebble.issued() >= 1);
    // cluster mode on the stack's redis: the certificate (sealed) and this gateway's heartbeat
    let redis = stack.one("redis");
    let cli = |args: &[&str]| {
        let mut all = vec!["exec", redis.as_str(), "redis-cli", "-n", "1"];
        all.extend_from_slice(args);
        dk(&all)
    };
    assert_eq!(
        cli(&["EXISTS", "orta-gateway:acme:cert:ortanovias.com,www.ortanovias.com"]),
        "1"
    );
    let nodes = cli(&["ZRANGE", "orta-gateway:nodes", "0", "-1"]);
    assert_eq!(
        nodes,
        short_id(&gateway),
        "the gateway's node name is its container's host name"
    );
    let redirect = plain_client()
        .get(format!("http://127.0.0.1:{http}/api/health/"))
        .header("host", "ortanovias.com")
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 301);
    assert_eq!(
        redirect.headers()["location"],
        "https://ortanovias.com/api/health/",
        "ports 80/443 inside the container, as outside it"
    );
    // the rolling restart of docker/README.md, under load (8 requests a second, below the api
    // zone's 10)
    let old = stack.ids("backend");
    assert_eq!(old.len(), 2);
    let load = ReplicaLoad::start(c.clone(), url.clone(), Duration::from_millis(125));
    // 1. new replicas beside the old ones, until the gateway sends them requests
    let started = Instant::now();
    stack.compose(&[
        "up",
        "-d",
        "--no-build",
        "--no-deps",
        "--no-recreate",
        "--scale",
        "backend=4",
        "backend",
    ]);
    let all: BTreeSet<String> = stack.ids("backend").iter().map(|id| short_id(id)).collect();
    assert_eq!(all.len(), 4);
    load.wait_for(
        Duration::from_secs(30),
        "requests reaching all four replicas",
        started,
        &all,
    )
    .await;
    // 2. the old ones stopped and removed one at a time, each once the gateway has let it go
    for id in &old {
        let ip = container_ip(id);
        let victim = id.clone();
        tokio::task::spawn_blocking(move || {
            dk(&["stop", "-t", "15", &victim]);
            dk(&["rm", "-v", &victim]);
        })
        .await
        .unwrap();
        wait_until_dropped(&gateway, "backend", ip).await;
    }
    let retired = Instant::now();
    let new: BTreeSet<String> = all
        .iter()
        .filter(|id| !old.iter().any(|o| short_id(o) == **id))
        .cloned()
        .collect();
    load.wait_for(
        Duration::from_secs(10),
        "only the new replicas to answer",
        retired,
        &new,
    )
    .await;
    let (slowest, gap) = (load.slowest(), load.longest_gap(started));
    let served = load.finish(&gateway).await;
    // the load ran the whole roll, a request every 125 ms plus its own time. A request that
    // meets a replica just stopped waits for its connect to time out (2 s) before the retry,
    // and may meet the next one too (retries = 2): no answer waits longer than that.
    let took = started.elapsed();
    assert!(
        served >= 4 && gap <= Duration::from_secs(7),
        "{served} requests served in {took:?}, the longest wait between two answers {gap:?}; the slowest took {slowest:?}"
    );
}
