//! The soak run behind `benches/soak.sh`: the gateway binary on a config like the shipped one,
//! two bundled-API replicas as their own processes, and for DURATION seconds mixed traffic
//! (HTTP/1.1, HTTPS with HTTP/1.1 and HTTP/2, static files and proxied API calls, bookings
//! posted as uploads) while the config is reloaded every 10 s (a file edit, then SIGHUP, in
//! turn) and one replica is killed with SIGKILL and restarted every minute. Every 10 s it prints
//! the requests so far, failures by kind, and the gateway's RSS and open descriptors; at the end
//! a summary. Exits 1 if any idempotent request failed.
//!
//!   cargo run --release --example soak -- GATEWAY_BIN DURATION_SECS WORK_DIR

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Outcome counters of one kind of traffic.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Tallies {
    /// GET and HEAD: every one must succeed, replica killed or not.
    idempotent: Tally,
    /// Booking POSTs: one in flight on a killed replica may fail.
    uploads: Tally,
    last_errors: std::sync::Mutex<Vec<String>>,
}

/// Ports chosen before their servers bind come from below the ephemeral range, as in the
/// tests: a killed replica re-binds its port while the traffic opens connections all the time.
#[path = "../tests/common/ports.rs"]
mod ports;

fn port() -> u16 {
    ports::free_port()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn replica(bin: &Path, port: u16, db: &Path) -> Child {
    Command::new(bin)
        .args(["api", "--listen", &format!("127.0.0.1:{port}"), "--database"])
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a replica")
}

fn config(work: &Path, repo: &Path, ports: &Ports, min_size: u32) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:{http}"
https = "127.0.0.1:{https}"
redirect_to_https = false
[tls]
source = "self-signed"
self_signed_dir = "{work}/certs"
[compression]
min_size = {min_size}
[[rate_limit]]
name = "api"
rate = "100000/s"
burst = 100000
[[upstream]]
name = "backend"
servers = ["127.0.0.1:{a}", "127.0.0.1:{b}"]
retries = 1
connect_timeout = "1s"
  [upstream.health]
  path = "/api/health"
  interval = "1s"
  fails = 2
  passes = 1
[[route]]
name = "api"
path = "/api/"
upstream = "backend"
rate_limit = "api"
[[route]]
path = "/static/"
root = "{repo}/www/static"
cache_control = "public, max-age=2592000, immutable"
[[route]]
path = "/media/"
root = "{repo}/media"
[[route]]
path = "/"
root = "{repo}/www"
index = "index.html"
[log]
access = "{work}/logs/access.log"
[admin]
listen = "127.0.0.1:{admin}"
"#,
        http = ports.http,
        https = ports.https,
        a = ports.a,
        b = ports.b,
        admin = ports.admin,
        work = work.display(),
        repo = repo.display(),
    )
}

struct Ports {
    http: u16,
    https: u16,
    admin: u16,
    a: u16,
    b: u16,
}

const PATHS: &[&str] = &[
    "/api/health",
    "/api/dresses?page=1",
    "/api/dresses?collection=Aurora&per_page=5",
    "/api/dresses/3",
    "/",
    "/catalog.html",
    "/static/app.css",
    "/media/hero.svg",
    "/favicon.svg",
];

async fn traffic(client: reqwest::Client, base: String, tallies: Arc<Tallies>, stop: Arc<AtomicBool>, seed: usize) {
    let mut i = seed;
    while !stop.load(Relaxed) {
        i += 1;
        let path = PATHS[i % PATHS.len()];
        let r = client.get(format!("{base}{path}")).send().await;
        let ok = match r {
            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
            Ok(r) => {
                note(&tallies, format!("GET {base}{path}: {}", r.status()));
                false
            }
            Err(e) => {
                note(&tallies, format!("GET {base}{path}: {e}"));
                false
            }
        };
        count(&tallies.idempotent, ok);
    }
}

async fn uploads(client: reqwest::Client, base: String, tallies: Arc<Tallies>, stop: Arc<AtomicBool>, seed: u64) {
    let mut n = seed;
    while !stop.load(Relaxed) {
        n += 1;
        // a Wednesday some weeks ahead, a slot: 201, or 409 once the slot is taken
        let day = time::OffsetDateTime::now_utc().date() + time::Duration::days(7 * (1 + (n % 40) as i64));
        let mut day = day;
        while day.weekday() != time::Weekday::Wednesday {
            day = day.next_day().unwrap();
        }
        let slot = ["10:00", "11:00", "12:00", "16:00", "17:00"][(n % 5) as usize];
        let body = serde_json::json!({"name": "Soak Test", "email": "soak@example.com", "phone": "+34 600 000 000",
            "date": day.to_string(), "slot": slot, "notes": "x".repeat((n % 1000) as usize)});
        let r = client.post(format!("{base}/api/appointments")).json(&body).send().await;
        let ok = match r {
            Ok(r) if r.status() == 201 || r.status() == 409 => r.bytes().await.is_ok(),
            Ok(r) => {
                note(&tallies, format!("POST: {}", r.status()));
                false
            }
            Err(e) => {
                note(&tallies, format!("POST: {e}"));
                false
            }
        };
        count(&tallies.uploads, ok);
    }
}

fn count(t: &Tally, ok: bool) {
    if ok {
        t.ok.fetch_add(1, Relaxed);
    } else {
        t.failed.fetch_add(1, Relaxed);
    }
}

fn note(t: &Tallies, e: String) {
    let mut l = t.last_errors.lock().unwrap();
    if l.len() < 20 {
        l.push(e);
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = PathBuf::from(args.get(1).expect("GATEWAY_BIN"));
    let duration = Duration::from_secs(args.get(2).map_or(1800, |s| s.parse().unwrap()));
    let work = PathBuf::from(args.get(3).expect("WORK_DIR"));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(&work).unwrap();
    let ports = Ports {
        http: port(),
        https: port(),
        admin: port(),
        a: port(),
        b: port(),
    };
    let db = work.join("orta.db");
    let mut replicas = [replica(&bin, ports.a, &db), replica(&bin, ports.b, &db)];
    let conf = work.join("gateway.toml");
    std::fs::write(&conf, config(&work, &repo, &ports, 1024)).unwrap();
    let mut gateway = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&conf)
        .current_dir(&work)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("gateway.log")).unwrap())
        .spawn()
        .expect("start the gateway");
    let pid = gateway.id();
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let health = format!("http://127.0.0.1:{}/healthz", ports.admin);
    let started = Instant::now();
    while !plain.get(&health).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(started.elapsed() < Duration::from_secs(30), "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ca = reqwest::Certificate::from_pem(&std::fs::read(work.join("certs/ca.pem")).unwrap()).unwrap();
    let tls = |h1: bool| {
        let b = reqwest::Client::builder()
            .tls_certs_only([ca.clone()])
            .no_proxy()
            .timeout(Duration::from_secs(10));
        if h1 { b.http1_only() } else { b }.build().unwrap()
    };
    let tallies = Arc::new(Tallies {
        idempotent: Tally::default(),
        uploads: Tally::default(),
        last_errors: Default::default(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let http = format!("http://127.0.0.1:{}", ports.http);
    let https = format!("https://localhost:{}", ports.https);
    let mut tasks = Vec::new();
    for i in 0..4 {
        tasks.push(tokio::spawn(traffic(
            plain.clone(),
            http.clone(),
            tallies.clone(),
            stop.clone(),
            i,
        )));
        tasks.push(tokio::spawn(traffic(
            tls(true),
            https.clone(),
            tallies.clone(),
            stop.clone(),
            i * 3,
        )));
        tasks.push(tokio::spawn(traffic(
            tls(false),
            https.clone(),
            tallies.clone(),
            stop.clone(),
            i * 5,
        )));
    }
    for i in 0..2 {
        tasks.push(tokio::spawn(uploads(
            tls(false),
            https.clone(),
            tallies.clone(),
            stop.clone(),
            i * 1000,
        )));
    }
    println!("seconds,idempotent_ok,idempotent_failed,uploads_ok,uploads_failed,rss_kib,fds,reloads");
    let mut reloads = 0u64;
    let mut kills = 0usize;
    let mut next_reload = Instant::now() + Duration::from_secs(10);
    let mut next_kill = Instant::now() + Duration::from_secs(60);
    let mut next_sample = Instant::now();
    let (mut rss_max, mut fds_max) = (0u64, 0usize);
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = Instant::now();
        if now >= next_reload {
            reloads += 1;
            if reloads.is_multiple_of(2) {
                signal(pid, "HUP");
            } else {
                std::fs::write(&conf, config(&work, &repo, &ports, 1024 + (reloads % 7) as u32)).unwrap();
            }
            next_reload += Duration::from_secs(10);
        }
        if now >= next_kill {
            let which = kills % 2;
            kills += 1;
            let _ = replicas[which].kill();
            let _ = replicas[which].wait();
            let port = if which == 0 { ports.a } else { ports.b };
            tokio::time::sleep(Duration::from_millis(500)).await;
            replicas[which] = replica(&bin, port, &db);
            next_kill += Duration::from_secs(60);
        }
        if now >= next_sample {
            let (rss, fd) = (rss_kib(pid), fds(pid));
            rss_max = rss_max.max(rss);
            fds_max = fds_max.max(fd);
            samples.push((start.elapsed().as_secs(), rss, fd));
            println!(
                "{},{},{},{},{},{rss},{fd},{reloads}",
                start.elapsed().as_secs(),
                tallies.idempotent.ok.load(Relaxed),
                tallies.idempotent.failed.load(Relaxed),
                tallies.uploads.ok.load(Relaxed),
                tallies.uploads.failed.load(Relaxed),
            );
            next_sample += Duration::from_secs(10);
        }
    }
    stop.store(true, Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let reloaded_ok = plain
        .get(format!("http://127.0.0.1:{}/metrics", ports.admin))
        .send()
        .await
        .ok();
    let metrics = match reloaded_ok {
        Some(r) => r.text().await.unwrap_or_default(),
        None => String::new(),
    };
    signal(pid, "TERM");
    let _ = gateway.wait();
    for r in &mut replicas {
        let _ = r.kill();
        let _ = r.wait();
    }
    let warm = samples
        .iter()
        .find(|s| s.0 >= 60)
        .or(samples.first())
        .copied()
        .unwrap_or_default();
    let last = samples.last().copied().unwrap_or_default();
    println!();
    println!(
        "duration: {} s, reloads: {reloads}, replica kills: {kills}",
        duration.as_secs()
    );
    for line in metrics.lines().filter(|l| l.starts_with("reloads_total")) {
        println!("gateway: {line}");
    }
    let (iok, ifail) = (
        tallies.idempotent.ok.load(Relaxed),
        tallies.idempotent.failed.load(Relaxed),
    );
    let (uok, ufail) = (tallies.uploads.ok.load(Relaxed), tallies.uploads.failed.load(Relaxed));
    println!("idempotent requests: {iok} ok, {ifail} failed");
    println!("uploads (POST bookings): {uok} ok, {ufail} failed");
    println!(
        "RSS: {} KiB after 1 min, {} KiB at the end, {rss_max} KiB at most; fds: {} after 1 min, {} at the end, {fds_max} at most",
        warm.1, last.1, warm.2, last.2
    );
    for e in tallies.last_errors.lock().unwrap().iter() {
        println!("error: {e}");
    }
    std::process::exit(if ifail == 0 { 0 } else { 1 });
}
