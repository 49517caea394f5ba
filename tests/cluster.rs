//! Cluster mode against real parts: Debian's redis-server (with a password) on a free port,
//! several gateway processes, pebble with pebble-challtestsrv as its DNS. One order for three
//! gateways with the CA validating through a gateway that did not order; a holder killed
//! mid-order replaced once its lease expires; a cluster-wide rate limit; Redis stopped and
//! killed under load (local limits at once, never a 5xx) and back; `check`, startup and
//! `certs` with `[cluster]`.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pebble::{Pebble, served_serial};
use common::redis_server::RedisServer;
use common::*;

const DOMAINS: [&str; 2] = ["shop.test", "www.shop.test"];
const SECRET: &str = "a cluster secret for the tests, 32+ bytes";

/// Writes the cluster secret as a private file in the gateway's directory.
fn write_secret(dir: &Path) {
    let path = dir.join("secret");
    std::fs::write(&path, SECRET).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn cluster_section(redis: &str, node: &str, extra: &str) -> String {
    format!("[cluster]\nredis = \"{redis}\"\nnode_name = \"{node}\"\nsecret_file = \"{{dir}}/secret\"\n{extra}\n")
}

/// A gateway proxying everything to `up` under a cluster zone of 10/s + burst 5.
fn limit_toml(redis: &str, node: &str, admin: u16, up: SocketAddr, rate: &str, burst: u32) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"
https = ""
[admin]
listen = "127.0.0.1:{admin}"
{cluster}
[[rate_limit]]
name = "z"
rate = "{rate}"
burst = {burst}
scope = "cluster"
[[upstream]]
name = "u"
servers = ["{up}"]
[[route]]
path = "/"
upstream = "u"
rate_limit = "z"
"#,
        cluster = cluster_section(redis, node, ""),
    )
}

/// A gateway on `ip` managing DOMAINS with ACME from pebble, sharing through `redis`.
fn acme_toml(ip: &str, ports: (u16, u16, u16), pebble: &Pebble, redis: &str, node: &str, extra: &str) -> String {
    let (http, https, admin) = ports;
    format!(
        r#"[server]
http = "{ip}:{http}"
https = "{ip}:{https}"
redirect_to_https = false
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:{admin}"
[tls]
source = "acme"
[acme]
domains = ["{d0}", "{d1}"]
contact = ["mailto:ops@shop.test"]
directory = "{dir_url}"
cache_dir = "{{dir}}/acme"
ca_root = "{ca}"
{extra}
{cluster}
[[upstream]]
name = "u"
servers = ["127.0.0.1:9"]
[[route]]
path = "/"
upstream = "u"
"#,
        d0 = DOMAINS[0],
        d1 = DOMAINS[1],
        dir_url = pebble.directory,
        ca = pebble.ca.display(),
        cluster = cluster_section(redis, node, "lock_ttl = \"2s\""),
    )
}

async fn cluster_status(c: &reqwest::Client, admin: u16) -> serde_json::Value {
    status_json(c, format!("127.0.0.1:{admin}")).await["cluster"].clone()
}

async fn wait_reachable(c: &reqwest::Client, admin: u16) {
    wait_until(Duration::from_secs(10), "the gateway sees Redis", || async move {
        cluster_status(c, admin).await["reachable"] == true
    })
    .await;
}

/// The sum of `cluster_fallback_total` over its reasons.
async fn fallbacks(c: &reqwest::Client, admin: u16) -> u64 {
    metrics_text(c, format!("127.0.0.1:{admin}"))
        .await
        .lines()
        .filter(|l| l.starts_with("cluster_fallback_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Gateways on one zone of `rate` + `burst` (`limit_toml`), a (name, scope) each, started and
/// with Redis answering: each with its admin port, and their URLs.
async fn limit_gateways(
    c: &reqwest::Client,
    redis: &RedisServer,
    up: SocketAddr,
    nodes: &[(&str, &str)],
    rate: &str,
    burst: u32,
) -> (Vec<(BinGateway, u16)>, Vec<String>) {
    let mut gateways = Vec::new();
    for (node, scope) in nodes {
        let admin = free_port();
        let toml = limit_toml(&redis.url(), node, admin, up, rate, burst)
            .replace("scope = \"cluster\"", &format!("scope = \"{scope}\""));
        gateways.push((BinGateway::start_with(&toml, write_secret), admin));
    }
    for (_, admin) in &gateways {
        wait_reachable(c, *admin).await;
    }
    let urls = gateways
        .iter()
        .map(|(g, _)| format!("http://{}/", g.http.unwrap()))
        .collect();
    (gateways, urls)
}

#[tokio::test]
async fn a_cluster_zone_is_one_limit_across_three_gateways() {
    let redis = RedisServer::start();
    let up = TestUpstream::start("app").await;
    let c = plain_client();
    let nodes = [("n1", "cluster"), ("n2", "cluster"), ("n3", "cluster")];
    let (gateways, urls) = limit_gateways(&c, &redis, up.addr, &nodes, "10/s", 5).await;
    // one client alternating between the three
    let started = Instant::now();
    let (mut ok, mut refused_by) = (0usize, [0usize; 3]);
    for i in 0..90 {
        let r = c.get(&urls[i % 3]).send().await.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                refused_by[i % 3] += 1;
            }
            s => panic!("request {i}: status {s}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // 15 at once (rate 10 + burst 5, as a local zone), then one per 100 ms, for all three
    let most = 15 + (secs * 10.0).ceil() as usize;
    assert!(
        ok >= 15 && ok <= most,
        "{ok} passed in {secs:.2} s: expected 15..={most}"
    );
    assert!(ok < 45, "{ok} passed: three local zones would let about 45 through");
    assert!(
        refused_by.iter().all(|&n| n > 0),
        "every gateway refused some: {refused_by:?}"
    );
    assert_eq!(fallbacks(&c, gateways[0].1).await, 0, "Redis answered every request");
    // /status: this node, the nodes seen, Redis without its password
    let status = cluster_status(&c, gateways[1].1).await;
    assert_eq!(status["node"], "n2");
    assert_eq!(status["reachable"], true);
    assert!(!status["redis"].as_str().unwrap().contains(&redis.password), "{status}");
    wait_until(Duration::from_secs(5), "all three nodes listed", || {
        let c = c.clone();
        let admin = gateways[1].1;
        async move {
            let s = cluster_status(&c, admin).await;
            let names: Vec<&str> = s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n["name"].as_str())
                .collect();
            ["n1", "n2", "n3"].iter().all(|n| names.contains(n))
        }
    })
    .await;
}

#[tokio::test]
async fn a_burst_from_one_client_is_decided_as_a_local_zone_would() {
    let redis = RedisServer::start();
    let up = TestUpstream::start("app").await;
    let c = plain_client();
    // one zone of 1/m + burst 5 on two gateways, and the same zone local on a third: nothing
    // refills while the test runs
    let nodes = [("n1", "cluster"), ("n2", "cluster"), ("local", "local")];
    let (gateways, urls) = limit_gateways(&c, &redis, up.addr, &nodes, "1/m", 5).await;
    // requests at once, each (status, Retry-After)
    let burst = |urls: Vec<String>, n: usize| {
        let sent = (0..n).map(|i| {
            let c = c.clone();
            let url = urls[i % urls.len()].clone();
            async move {
                let r = c.get(&url).send().await.unwrap();
                let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                (r.status().as_u16(), retry)
            }
        });
        futures_util::future::join_all(sent)
    };
    let local = burst(urls[2..].to_vec(), 30).await;
    // 60 on the cluster zone, half on each gateway: they reach Redis many to a call, one key
    let shared = burst(urls[..2].to_vec(), 60).await;
    let passed = |got: &[(u16, Option<String>)]| got.iter().filter(|(s, _)| *s == 200).count();
    // 1 + 5 at once
    assert_eq!(passed(&local), 6, "{local:?}");
    assert_eq!(passed(&shared), passed(&local), "the burst and no more: {shared:?}");
    for (status, retry) in local.iter().chain(&shared).filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 429);
        // the next request fits one interval after the last that went
        let secs: u64 = retry.as_deref().expect("Retry-After").parse().unwrap();
        assert!((55..=60).contains(&secs), "Retry-After {secs}");
    }
    for (_, admin) in &gateways[..2] {
        assert_eq!(fallbacks(&c, *admin).await, 0, "Redis decided every request");
    }
    // fewer calls than requests: calls held several requests of the one key
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.conn()).unwrap();
    let calls: usize = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("EVALSHA calls in INFO");
    assert!(calls < 60, "{calls} calls for 60 requests");
    // one bucket in Redis for one client, however many of its requests each call held
    let keys: Vec<String> = redis::cmd("KEYS").arg("*rl:*").query(&mut redis.conn()).unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
}

/// Requests one after another until told to stop: (sent at, status, latency).
type Record = Arc<Mutex<Vec<(Instant, u16, Duration)>>>;

#[tokio::test]
async fn redis_stopped_then_killed_under_load_falls_back_to_local_limits_and_back() {
    let mut redis = RedisServer::start();
    let up = TestUpstream::start("app").await;
    let c = plain_client();
    let admin = free_port();
    let g = BinGateway::start_with(
        &limit_toml(&redis.url(), "solo", admin, up.addr, "20/s", 0),
        write_secret,
    );
    wait_reachable(&c, admin).await;
    let url = format!("http://{}/", g.http.unwrap());
    let record: Record = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = {
        let (c, url, record, running) = (c.clone(), url.clone(), record.clone(), running.clone());
        tokio::spawn(async move {
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                let at = Instant::now();
                let status = c.get(&url).send().await.map_or(0, |r| r.status().as_u16());
                record.lock().unwrap().push((at, status, at.elapsed()));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.signal("STOP");
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let timeouts = fallbacks(&c, admin).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    let restarted = Instant::now();
    wait_reachable(&c, admin).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    load.await.unwrap();

    let record = record.lock().unwrap().clone();
    let bad: Vec<_> = record.iter().filter(|(_, s, _)| *s != 200 && *s != 429).collect();
    assert!(bad.is_empty(), "only 200 and 429, never a 5xx: {bad:?}");
    let during: Vec<_> = record
        .iter()
        .filter(|(at, _, _)| *at >= stopped && *at < restarted)
        .collect();
    assert!(
        during.len() > 20,
        "load kept going while Redis was away: {}",
        during.len()
    );
    let slowest = during.iter().map(|(_, _, l)| *l).max().unwrap();
    assert!(
        slowest < Duration::from_millis(200),
        "local limits take over within 200 ms (timeout 100 ms): slowest {slowest:?}"
    );
    assert!(
        during.iter().any(|(_, s, _)| *s == 429) && during.iter().any(|(_, s, _)| *s == 200),
        "the local bucket limits while Redis is away (not no limit)"
    );
    assert!(
        timeouts > 0,
        "cluster_fallback_total counts the requests decided locally"
    );
    let text = metrics_text(&c, format!("127.0.0.1:{admin}")).await;
    assert!(text.contains("cluster_fallback_total{reason=\"timeout\"}"), "{text}");
    assert!(
        g.log_text().matches("cluster: Redis is not answering").count() == 1,
        "logged once"
    );
    // back on Redis: no more fallbacks, and the bucket is in the new Redis
    let before = fallbacks(&c, admin).await;
    for _ in 0..5 {
        let s = c.get(&url).send().await.unwrap().status().as_u16();
        assert!(s == 200 || s == 429);
    }
    assert_eq!(fallbacks(&c, admin).await, before, "Redis decides again");
    let exists: bool = redis::cmd("EXISTS")
        .arg("orta-gateway:rl:z:127.0.0.1")
        .query(&mut redis.conn())
        .unwrap();
    assert!(exists, "the zone's bucket is kept in the restarted Redis");
}

/// `orta-gateway check` on `toml` (written in a fresh directory with the secret): exit status
/// and everything printed.
fn check(toml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path());
    let conf = dir.path().join("gateway.toml");
    std::fs::write(&conf, toml.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let out = Command::new(bin_path())
        .args(["check", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn check_and_startup_say_what_is_wrong_with_the_cluster() {
    let redis = RedisServer::start();
    let up = TestUpstream::start("app").await;
    let good = limit_toml(&redis.url(), "n1", free_port(), up.addr, "10/s", 5);
    let (ok, out) = check(&good);
    assert!(ok, "{out}");
    // a wrong password: refused by check and by run, positioned at `redis` (line 7, column 9)
    let wrong = good.replace(&redis.password, "not-the-password");
    let (ok, out) = check(&wrong);
    assert!(
        !ok && out.contains("gateway.toml:7:9: [cluster] redis") && out.contains("refused"),
        "{out}"
    );
    assert!(!out.contains("not-the-password"), "the password is not printed: {out}");
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path());
    std::fs::write(
        dir.path().join("g.toml"),
        wrong.replace("{dir}", dir.path().to_str().unwrap()),
    )
    .unwrap();
    let run = Command::new(bin_path())
        .args(["run", "--config"])
        .arg(dir.path().join("g.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && said.contains("refused"), "{said}");
    // nothing listening: check warns (the config is right; the gateway would serve on its
    // local state), and run does serve
    let nobody = good.replace(&format!(":{}/0", redis.port), &format!(":{}/0", free_port()));
    let (ok, out) = check(&nobody);
    assert!(
        ok && out.contains("gateway.toml:7:9: warning: [cluster] redis") && out.contains("is unreachable"),
        "{out}"
    );
    let g = BinGateway::start_with(&nobody, write_secret);
    assert!(g.log_text().contains("is unreachable"), "{}", g.log_text());
    let r = plain_client()
        .get(format!("http://{}/", g.http.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "served with the local bucket");
    // the secret: a variable that is not set, a file others can read, none with ACME
    let unset = good.replace(
        "secret_file = \"{dir}/secret\"",
        "secret_env = \"ORTA_TEST_NO_SUCH_SECRET\"",
    );
    let (ok, out) = check(&unset);
    assert!(
        !ok && out.contains("ORTA_TEST_NO_SUCH_SECRET") && out.contains("not set"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open-secret");
    std::fs::write(&open, SECRET).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = check(&good.replace("{dir}/secret", open.to_str().unwrap()));
    assert!(!ok && out.contains("chmod 600"), "{out}");
    let pebble = Pebble::prepare(free_port(), free_port(), None);
    let acme = acme_toml("127.0.0.1", (0, 0, free_port()), &pebble, &redis.url(), "n1", "")
        .replace("secret_file = \"{dir}/secret\"\n", "");
    let (ok, out) = check(&acme);
    assert!(!ok && out.contains("needs secret_env or secret_file"), "{out}");
}

/// Redis, and pebble (certificates valid `validity` seconds) whose DNS answers DOMAINS with
/// `ip`; the ports validations go to (http-01, tls-alpn-01).
async fn redis_and_ca(ip: &str, validity: Option<u64>) -> (RedisServer, Pebble, u16, u16) {
    let redis = RedisServer::start();
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https, validity);
    pebble.ready().await;
    for d in DOMAINS {
        pebble.set_a(d, ip).await;
    }
    (redis, pebble, http, https)
}

/// Starts a gateway of the ACME cluster on `ip`.
fn acme_node(
    ip: &str,
    ports: (u16, u16),
    pebble: &Pebble,
    redis: &RedisServer,
    node: &str,
    extra: &str,
) -> (BinGateway, u16) {
    let admin = free_port();
    let toml = acme_toml(ip, (ports.0, ports.1, admin), pebble, &redis.url(), node, extra);
    (BinGateway::start_with(&toml, write_secret), admin)
}

fn lock_key() -> String {
    format!("orta-gateway:acme:lock:{}", DOMAINS.join(","))
}

/// Holds the ACME lock as the test, so that no gateway orders until it is released.
fn block_orders(redis: &RedisServer) {
    let set: Option<String> = redis::cmd("SET")
        .arg(lock_key())
        .arg("blocker/0")
        .arg("PX")
        .arg(60_000)
        .query(&mut redis.conn())
        .unwrap();
    assert!(set.is_some());
}

/// Releases the test's lock and waits until a gateway holds it; returns its value.
async fn release_and_wait_for_holder(redis: &RedisServer) -> String {
    let mut conn = redis.conn();
    redis::cmd("DEL").arg(lock_key()).query::<i64>(&mut conn).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Option<String> = redis::cmd("GET").arg(lock_key()).query(&mut conn).unwrap();
        if let Some(v) = v {
            return v;
        }
        assert!(Instant::now() < deadline, "no gateway took the lock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The serial of the pebble-issued certificate served on `addr`, once there is one.
async fn pebble_serial(addr: SocketAddr, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some((serial, issuer)) = served_serial(addr, DOMAINS[0]).await
            && issuer.contains("Pebble")
        {
            return serial;
        }
        assert!(
            Instant::now() < deadline,
            "{addr}: no pebble certificate within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_lock_watched(c: &reqwest::Client, admin: u16) {
    wait_until(
        Duration::from_secs(10),
        "the node sees the test's lock",
        || async move {
            let s = cluster_status(c, admin).await;
            s["reachable"] == true && s["acme_lock"]["holder"] == "blocker"
        },
    )
    .await;
}

#[tokio::test]
async fn three_gateways_order_once_and_the_ca_may_reach_any_of_them() {
    // the CA resolves both names to node b, which will not be the one ordering
    let (redis, pebble, http, https) = redis_and_ca("127.0.0.3", None).await;
    block_orders(&redis);
    let (b, b_admin) = acme_node("127.0.0.3", (http, https), &pebble, &redis, "b", "");
    let (c_gw, c_admin) = acme_node("127.0.0.4", (http, https), &pebble, &redis, "c", "");
    let (a, a_admin) = acme_node("127.0.0.2", (http, https), &pebble, &redis, "a", "");
    let client = plain_client();
    for admin in [a_admin, b_admin, c_admin] {
        wait_lock_watched(&client, admin).await;
    }
    // b and c paused: a takes the lock; they resume at once (the CA's connection waits for b)
    b.signal("STOP");
    c_gw.signal("STOP");
    let holder = release_and_wait_for_holder(&redis).await;
    b.signal("CONT");
    c_gw.signal("CONT");
    assert!(holder.starts_with("a/"), "{holder}");
    let serials = [
        pebble_serial(SocketAddr::from(([127, 0, 0, 2], https)), Duration::from_secs(30)).await,
        pebble_serial(SocketAddr::from(([127, 0, 0, 3], https)), Duration::from_secs(15)).await,
        pebble_serial(SocketAddr::from(([127, 0, 0, 4], https)), Duration::from_secs(15)).await,
    ];
    assert!(serials.iter().all(|s| *s == serials[0]), "one certificate: {serials:?}");
    assert_eq!(pebble.issued(), 1, "exactly one certificate issued");
    assert_eq!(pebble.log_count("POST /order-plz"), 1, "exactly one order placed");
    assert!(a.log_text().contains("this node holds the order lock"));
    for g in [&b, &c_gw] {
        assert!(
            !g.log_text().contains("this node holds the order lock"),
            "{}",
            g.log_text()
        );
    }
    // the lock is given back, and /status says who held it last (nobody now)
    let held: Option<String> = redis::cmd("GET").arg(lock_key()).query(&mut redis.conn()).unwrap();
    assert_eq!(held, None);
    let s = status_json(&client, format!("127.0.0.1:{c_admin}")).await;
    assert!(s["acme"]["pending"].is_null(), "{s}");
    // private keys are sealed in Redis
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(format!("orta-gateway:acme:cert:{}", DOMAINS.join(",")))
        .query(&mut redis.conn())
        .unwrap();
    assert!(
        !stored.windows(11).any(|w| w == b"PRIVATE KEY"),
        "the key is encrypted in Redis"
    );
    // `orta-gateway certs` of node c reads the certificate from Redis
    let out = Command::new(bin_path())
        .args(["certs", "--config"])
        .arg(c_gw.dir.path().join("gateway.toml"))
        .current_dir(c_gw.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("key orta-gateway:acme:cert:") && text.contains("Pebble"),
        "{text}"
    );
    drop(a);
}

#[tokio::test]
async fn a_holder_killed_mid_order_is_replaced_once_its_lease_expires() {
    let (redis, pebble, http, https) = redis_and_ca("127.0.0.3", None).await;
    block_orders(&redis);
    let http01 = "challenge = \"http-01\"";
    let (b, b_admin) = acme_node("127.0.0.3", (http, https), &pebble, &redis, "b", http01);
    let (a, a_admin) = acme_node("127.0.0.2", (http, https), &pebble, &redis, "a", http01);
    let client = plain_client();
    for admin in [a_admin, b_admin] {
        wait_lock_watched(&client, admin).await;
    }
    b.signal("STOP");
    let holder = release_and_wait_for_holder(&redis).await;
    a.signal("KILL");
    b.signal("CONT");
    assert!(holder.starts_with("a/"), "{holder}");
    assert_eq!(pebble.issued(), 0, "killed before its order finished");
    // nobody takes the lock while a's lease runs (2 s)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still: Option<String> = redis::cmd("GET").arg(lock_key()).query(&mut redis.conn()).unwrap();
    assert_eq!(
        still.as_deref(),
        Some(holder.as_str()),
        "the dead holder's lease still runs"
    );
    let serial = pebble_serial(SocketAddr::from(([127, 0, 0, 3], https)), Duration::from_secs(30)).await;
    assert!(!serial.is_empty());
    assert!(
        b.log_text().contains("this node holds the order lock"),
        "{}",
        b.log_text()
    );
    assert_eq!(pebble.issued(), 1);
}

/// Rewrites the gateway's config and reloads it (SIGHUP); waits until the reload is decided:
/// returns whether it was taken.
async fn reload(g: &BinGateway, c: &reqwest::Client, admin: u16, toml: &str) -> bool {
    let before = status_json(c, format!("127.0.0.1:{admin}")).await;
    let path = g.dir.path().join("gateway.toml");
    std::fs::write(&path, toml.replace("{dir}", g.dir.path().to_str().unwrap())).unwrap();
    g.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status_json(c, format!("127.0.0.1:{admin}")).await;
        if s["generation"] != before["generation"] {
            return true;
        }
        if s["last_reload_error"] != before["last_reload_error"] && !s["last_reload_error"].is_null() {
            return false;
        }
        assert!(Instant::now() < deadline, "the reload was not decided: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reload_adds_changes_and_removes_the_cluster() {
    let redis = RedisServer::start();
    let other = RedisServer::start();
    let up = TestUpstream::start("app").await;
    let c = plain_client();
    let admin = free_port();
    let clustered = limit_toml(&redis.url(), "n1", admin, up.addr, "10/s", 5);
    // the same without [cluster] and with a local zone
    let local: String = clustered
        .lines()
        .filter(|l| !l.starts_with("redis =") && !l.starts_with("node_name") && !l.starts_with("secret_file"))
        .filter(|l| *l != "[cluster]")
        .map(|l| {
            if l.starts_with("scope") {
                "scope = \"local\"\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let g = BinGateway::start_with(&local, write_secret);
    let url = format!("http://{}/", g.http.unwrap());
    assert!(status_json(&c, format!("127.0.0.1:{admin}")).await["cluster"].is_null());
    let bucket = "orta-gateway:rl:z:127.0.0.1";
    let has_bucket = |r: &RedisServer| -> bool { redis::cmd("EXISTS").arg(bucket).query(&mut r.conn()).unwrap() };
    // added
    assert!(reload(&g, &c, admin, &clustered).await);
    wait_reachable(&c, admin).await;
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert!(has_bucket(&redis), "the zone counts in Redis once [cluster] is added");
    // a wrong password is refused; the old config keeps serving
    assert!(!reload(&g, &c, admin, &clustered.replace(&redis.password, "wrong")).await);
    let s = status_json(&c, format!("127.0.0.1:{admin}")).await;
    assert!(s["last_reload_error"].as_str().unwrap().contains("refused"), "{s}");
    assert_eq!(s["cluster"]["reachable"], true);
    // changed: another Redis
    let moved = clustered.replace(&format!(":{}/0", redis.port), &format!(":{}/0", other.port));
    assert!(reload(&g, &c, admin, &moved.replace(&redis.password, &other.password)).await);
    wait_reachable(&c, admin).await;
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert!(has_bucket(&other), "the zone counts in the new Redis");
    // removed: local again, nothing more in Redis
    redis::cmd("FLUSHALL").query::<()>(&mut other.conn()).unwrap();
    assert!(reload(&g, &c, admin, &local).await);
    assert!(status_json(&c, format!("127.0.0.1:{admin}")).await["cluster"].is_null());
    let mut refused = 0;
    for _ in 0..30 {
        let s = c.get(&url).send().await.unwrap().status();
        refused += usize::from(s == 429);
    }
    assert!(refused > 0, "the local zone limits");
    assert!(!has_bucket(&other), "no bucket in Redis after [cluster] is removed");
}

#[tokio::test]
async fn one_node_renews_and_every_node_swaps() {
    // 60 s certificates renewed with 50 s left: the renewal is due 10 s after issuance
    let (redis, pebble, http, https) = redis_and_ca("127.0.0.2", Some(60)).await;
    let renew = "renew_before = \"50s\"";
    let nodes = [
        acme_node("127.0.0.2", (http, https), &pebble, &redis, "a", renew),
        acme_node("127.0.0.3", (http, https), &pebble, &redis, "b", renew),
        acme_node("127.0.0.4", (http, https), &pebble, &redis, "c", renew),
    ];
    let addrs = [2u8, 3, 4].map(|last| SocketAddr::from(([127, 0, 0, last], https)));
    let first = pebble_serial(addrs[0], Duration::from_secs(30)).await;
    let started = Instant::now();
    for addr in addrs {
        let first = &first;
        wait_until(
            Duration::from_secs(40),
            "every node serves the renewed certificate",
            || async move {
                served_serial(addr, DOMAINS[0])
                    .await
                    .is_some_and(|(serial, issuer)| issuer.contains("Pebble") && serial != *first)
            },
        )
        .await;
    }
    let renewed = served_serial(addrs[0], DOMAINS[0]).await.unwrap().0;
    for addr in &addrs[1..] {
        assert_eq!(
            served_serial(*addr, DOMAINS[0]).await.unwrap().0,
            renewed,
            "one certificate"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(40));
    assert_eq!(pebble.issued(), 2, "one issuance and one renewal for the three nodes");
    let orders: usize = nodes
        .iter()
        .map(|(g, _)| g.log_text().matches("this node holds the order lock").count())
        .sum();
    assert_eq!(orders, 2, "one node ordered each time");
}

#[tokio::test]
async fn without_redis_a_node_orders_alone_after_a_while() {
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https, None);
    pebble.ready().await;
    // nothing listens at this Redis; lock_ttl is 2 s, so the node waits 4 s before ordering alone
    let nowhere = format!("redis://127.0.0.1:{}/0", free_port());
    let admin = free_port();
    let toml = acme_toml("127.0.0.1", (http, https, admin), &pebble, &nowhere, "alone", "");
    let started = Instant::now();
    let g = BinGateway::start_with(&toml, write_secret);
    let serial = pebble_serial(SocketAddr::from(([127, 0, 0, 1], https)), Duration::from_secs(30)).await;
    assert!(!serial.is_empty());
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "it waited for Redis first: {:?}",
        started.elapsed()
    );
    assert!(
        g.log_text().contains("ordering without the cluster"),
        "{}",
        g.log_text()
    );
    assert_eq!(pebble.issued(), 1);
}

#[tokio::test]
async fn concurrent_requests_of_one_client_are_each_counted() {
    let redis = RedisServer::start();
    let up = TestUpstream::start("app").await;
    let admin = free_port();
    // one request per 6 s after the first 15: no refill during the test
    let g = BinGateway::start_with(&limit_toml(&redis.url(), "n1", admin, up.addr, "10/m", 5), write_secret);
    let c = plain_client();
    wait_reachable(&c, admin).await;
    let url = format!("http://{}/", g.http.unwrap());
    // 60 at once from one address: they reach Redis together, in batches holding the same key
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let (c, url) = (c.clone(), url.clone());
        tasks.spawn(async move { c.get(url).send().await.unwrap().status().as_u16() });
    }
    let mut statuses = Vec::new();
    while let Some(s) = tasks.join_next().await {
        statuses.push(s.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (ok, limited),
        (15, 45),
        "rate 10 + burst 5, each request counted once: {statuses:?}"
    );
    assert_eq!(fallbacks(&c, admin).await, 0, "all decided by Redis");
}
