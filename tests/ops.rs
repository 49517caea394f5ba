//! Operations: hot reload (file write, rename-replace, SIGHUP, bad edits), state carried across
//! reloads, listener re-binding, access logs, the admin endpoints, and restarts without losing
//! a request.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use orta_gateway::config;

fn parse(text: &str, dir: &Path) -> Arc<config::Config> {
    let text = text.replace("{dir}", dir.to_str().unwrap());
    match config::parse(Path::new("test.toml"), &text) {
        Ok(l) => l.config,
        Err(d) => panic!("{d}"),
    }
}

/// Two upstreams, `/` routed to `which`, an admin listener.
fn routed_to(a: SocketAddr, b: SocketAddr, which: &str, admin: &str) -> String {
    base_config()
        + &format!(
            r#"
[[upstream]]
name = "a"
servers = ["{a}"]
[[upstream]]
name = "b"
servers = ["{b}"]
[[route]]
path = "/"
upstream = "{which}"
[admin]
listen = "{admin}"
"#
        )
}

async fn who(c: &reqwest::Client, url: &str) -> Option<String> {
    let r = c.get(url).send().await.ok()?;
    r.headers().get("x-upstream").map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn reload_by_file_write_rename_and_sighup() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let admin = format!("127.0.0.1:{}", free_port());
    let gw = BinGateway::start(&routed_to(a.addr, b.addr, "a", &admin));
    let conf = gw.dir.path().join("gateway.toml");
    let c = plain_client();
    let url = format!("http://{}/", gw.http.unwrap());
    assert_eq!(who(&c, &url).await.as_deref(), Some("a"));

    // written in place
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace("upstream = \"a\"", "upstream = \"b\"")).unwrap();
    let t = Instant::now();
    wait_until(Duration::from_secs(2), "routing follows a file write", || async {
        who(&c, &url).await.as_deref() == Some("b")
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(2));

    // replaced by rename (vim, sed -i)
    let tmp = gw.dir.path().join("gateway.toml.swp");
    std::fs::write(&tmp, text.clone()).unwrap();
    std::fs::rename(&tmp, &conf).unwrap();
    let t = Instant::now();
    wait_until(Duration::from_secs(2), "routing follows a rename", || async {
        who(&c, &url).await.as_deref() == Some("a")
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(2));

    // SIGHUP reloads even without a change: the generation moves on
    let status_url = format!("http://{admin}/status");
    let generation = || async {
        let s: serde_json::Value = c.get(&status_url).send().await.unwrap().json().await.unwrap();
        s["generation"].as_u64().unwrap()
    };
    let before = generation().await;
    gw.signal("HUP");
    let t = Instant::now();
    wait_until(Duration::from_secs(2), "SIGHUP reloads", || async {
        generation().await == before + 1
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_bad_edit_keeps_the_old_config_and_is_reported() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let admin = format!("127.0.0.1:{}", free_port());
    let gw = BinGateway::start(&routed_to(a.addr, b.addr, "a", &admin));
    let conf = gw.dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace("upstream = \"a\"", "upstream = \"nowhere\"")).unwrap();
    let conf_s = conf.display().to_string();
    let gw_log = || gw.log_text();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !gw_log().contains("route names unknown upstream `nowhere`") {
        assert!(Instant::now() < deadline, "no error logged:\n{}", gw_log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = gw_log()
        .lines()
        .find(|l| l.contains("unknown upstream"))
        .unwrap()
        .to_string();
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(&format!("{conf_s}:")), "FILE:LINE:COL in {line}");
    // still serving the old routes
    let c = plain_client();
    assert_eq!(
        who(&c, &format!("http://{}/", gw.http.unwrap())).await.as_deref(),
        Some("a")
    );
    let metrics = metrics_text(&c, &admin).await;
    assert!(metrics.contains("reloads_total{result=\"failed\"} 1"), "{metrics}");
    let status = status_json(&c, admin).await;
    assert!(status["last_reload_error"].as_str().unwrap().contains("nowhere"));
    assert_eq!(status["generation"], 1);
}

#[tokio::test]
async fn a_hundred_reloads_under_load_fail_no_request() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let gw = Arc::new(TestGateway::start(&routed_to(a.addr, b.addr, "a", "")).await);
    let dir = gw.dir.path().to_path_buf();
    let configs = [
        parse(&routed_to(a.addr, b.addr, "a", ""), &dir),
        parse(&routed_to(a.addr, b.addr, "b", ""), &dir),
    ];
    let load = Load::start(&tokio::runtime::Handle::current(), 6, |i| {
        // half on keep-alive HTTP/1.1, half on HTTP/2
        let (c, url) = if i % 2 == 0 {
            (plain_client(), gw.http_url("/x"))
        } else {
            (gw.client(), gw.https_url("/x"))
        };
        move || c.get(&url)
    });
    for i in 0..100 {
        let generation = gw.gw().reload(configs[i % 2].clone()).unwrap();
        assert_eq!(generation, i as u64 + 2);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(load.finish().await > 100);
    assert!(a.hits() > 0 && b.hits() > 0, "both configs served");
}

#[tokio::test]
async fn rate_limit_buckets_and_upstream_health_survive_an_unrelated_reload() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let toml = |extra: &str| {
        base_config()
            + &format!(
                r#"
[[rate_limit]]
name = "api"
rate = "1/m"
burst = 2
[[upstream]]
name = "pair"
servers = ["{}", "{}"]
  [upstream.health]
  path = "/api/health"
  interval = "100ms"
  fails = 1
  passes = 100
[[route]]
path = "/"
upstream = "pair"
rate_limit = "api"
{extra}
"#,
                a.addr, b.addr
            )
    };
    let gw = TestGateway::start(&toml("")).await;
    let c = plain_client();
    for _ in 0..3 {
        assert_eq!(c.get(gw.http_url("/x")).send().await.unwrap().status(), 200);
    }
    assert_eq!(c.get(gw.http_url("/x")).send().await.unwrap().status(), 429);
    // take b out (and it needs 100 passing checks, 10 s, to come back)
    b.set_healthy(false);
    let gw_ref = &gw;
    wait_until(Duration::from_secs(3), "b marked down", || async move {
        let snap = gw_ref.gw().snapshot();
        !snap.upstreams["pair"].servers()[1].is_up()
    })
    .await;
    b.set_healthy(true);
    let unrelated = "[[route]]\nhost = [\"other.example\"]\npath = \"/\"\nredirect = \"https://example.com\"";
    gw.gw().reload(parse(&toml(unrelated), gw.dir.path())).unwrap();
    assert_eq!(
        c.get(gw.http_url("/x")).send().await.unwrap().status(),
        429,
        "the bucket is still empty"
    );
    let snap = gw.gw().snapshot();
    assert!(!snap.upstreams["pair"].servers()[1].is_up(), "health state kept");
    assert!(snap.upstreams["pair"].servers()[0].is_up());
    // a changed zone starts afresh
    gw.gw()
        .reload(parse(&toml(unrelated).replace("burst = 2", "burst = 3"), gw.dir.path()))
        .unwrap();
    assert_eq!(c.get(gw.http_url("/x")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_websocket_stays_open_across_reloads() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let gw = TestGateway::start(&routed_to(a.addr, b.addr, "a", "")).await;
    let tcp = tokio::net::TcpStream::connect(gw.http()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", gw.http()), tcp)
        .await
        .unwrap();
    for i in 0..3 {
        let which = if i % 2 == 0 { "b" } else { "a" };
        gw.gw()
            .reload(parse(&routed_to(a.addr, b.addr, which, ""), gw.dir.path()))
            .unwrap();
        let msg = format!("after reload {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
            .await
            .unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), msg);
    }
}

#[tokio::test]
async fn a_changed_listen_address_is_rebound() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let gw = TestGateway::start(&routed_to(a.addr, b.addr, "a", "")).await;
    let old = gw.http();
    // a keep-alive connection on the old listener
    let mut conn = tokio::net::TcpStream::connect(old).await.unwrap();
    let new_port = free_port();
    let moved = routed_to(a.addr, b.addr, "a", "")
        .replace("http = \"127.0.0.1:0\"", &format!("http = \"127.0.0.1:{new_port}\""));
    gw.gw().reload(parse(&moved, gw.dir.path())).unwrap();
    assert_eq!(gw.gw().http_addr().unwrap().port(), new_port);
    let r = plain_client()
        .get(format!("http://127.0.0.1:{new_port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let old_ref = old;
    wait_until(Duration::from_secs(2), "the old address closed", || async move {
        tokio::net::TcpStream::connect(old_ref).await.is_err()
    })
    .await;
    // the connection accepted before still works
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn access_log_lines_are_json_with_every_field() {
    let up = TestUpstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/a.txt"), "hello").unwrap();
    // old rotated files: `keep = 2` leaves the two newest
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for day in 1..=5 {
        std::fs::write(logs.join(format!("access.2020-01-0{day}.log")), "").unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let toml = proxy_config(&[up.addr], "").replace("[[route]]\npath = \"/\"", "[[route]]\npath = \"/api/\"")
        + "[[route]]\npath = \"/\"\nroot = \"{dir}/www\"\n[log]\naccess = \"{dir}/logs/access.log\"\nrotation = \"daily\"\nkeep = 2\n";
    let gw = TestGateway::start_in(dir, &toml).await;
    let c = gw.client();
    c.get(gw.https_url("/api/echo?x=1"))
        .header("user-agent", "ops-test")
        .header("referer", "https://ref.example/")
        .header("x-request-id", "rid-1")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    plain_client()
        .get(gw.http_url("/a.txt"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    plain_client()
        .get(gw.http_url("/a.txt"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let today = time::OffsetDateTime::now_utc().date();
    let file = logs.join(format!("access.{}.log", today));
    let lines = || std::fs::read_to_string(&file).unwrap_or_default();
    wait_until(Duration::from_secs(3), "three access lines", || async {
        lines().lines().count() == 3
    })
    .await;
    let recs: Vec<serde_json::Value> = lines().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let api = &recs[0];
    for field in [
        "time",
        "client_ip",
        "method",
        "host",
        "path",
        "query",
        "status",
        "bytes_sent",
        "duration_ms",
        "upstream",
        "upstream_ms",
        "request_id",
        "user_agent",
        "referer",
        "tls_version",
        "http_version",
        "route",
        "cache",
        "rate_limited",
    ] {
        assert!(api.get(field).is_some(), "missing {field}: {api}");
    }
    assert_eq!(api["method"], "GET");
    assert_eq!(api["path"], "/api/echo");
    assert_eq!(api["query"], "x=1");
    assert_eq!(api["status"], 200);
    assert_eq!(api["upstream"], up.addr.to_string());
    assert_eq!(api["request_id"], "rid-1");
    assert_eq!(api["user_agent"], "ops-test");
    assert_eq!(api["referer"], "https://ref.example/");
    assert_eq!(api["http_version"], "HTTP/2");
    assert_eq!(api["client_ip"], "127.0.0.1");
    assert!(api["tls_version"].as_str().unwrap().starts_with("TLSv1."));
    assert!(api["bytes_sent"].as_u64().unwrap() > 0);
    assert!(api["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(api["rate_limited"], false);
    assert_eq!(recs[1]["cache"], "miss");
    assert_eq!(recs[2]["cache"], "hit");
    assert_eq!(recs[2]["bytes_sent"], 5);
    assert!(recs[2]["tls_version"].is_null());
    // rotation keeps `keep` old files beside today's
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&format!("access.{today}.log")));
    assert!(!names.contains(&"access.2020-01-01.log".to_string()), "{names:?}");
}

#[tokio::test]
async fn access_logs_rotate() {
    let up = TestUpstream::start("u").await;
    let toml =
        proxy_config(&[up.addr], "") + "[log]\naccess = \"{dir}/logs/access.log\"\nrotation = \"minutely\"\nkeep = 5\n";
    let gw = TestGateway::start(&toml).await;
    let logs = gw.dir.path().join("logs");
    let files = || std::fs::read_dir(&logs).map(|d| d.count()).unwrap_or(0);
    let started = Instant::now();
    let c = plain_client();
    // keep logging until the minute turns and a second file appears
    while files() < 2 {
        assert!(started.elapsed() < Duration::from_secs(75), "no rotation");
        c.get(gw.http_url("/x")).send().await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    c.get(gw.http_url("/x")).send().await.unwrap();
    wait_until(Duration::from_secs(3), "lines in both files", || async {
        std::fs::read_dir(&logs)
            .unwrap()
            .all(|e| std::fs::read_to_string(e.unwrap().path()).unwrap().lines().count() > 0)
    })
    .await;
    for e in std::fs::read_dir(&logs).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(name.starts_with("access.") && name.ends_with(".log"), "{name}");
    }
}

#[tokio::test]
async fn access_log_off_writes_nothing() {
    let up = TestUpstream::start("u").await;
    let toml = proxy_config(&[up.addr], "") + "[log]\naccess = \"off\"\n";
    let gw = TestGateway::start(&toml).await;
    for _ in 0..5 {
        plain_client().get(gw.http_url("/x")).send().await.unwrap();
    }
    assert!(gw.gw().state().access_log().is_none());
    let entries: Vec<_> = std::fs::read_dir(gw.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "certs")
        .collect();
    assert!(entries.is_empty(), "{entries:?}");
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic_and_status_shows_a_downed_upstream() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let admin = format!("127.0.0.1:{}", free_port());
    let toml = base_config()
        + &format!(
            r#"
[[rate_limit]]
name = "api"
rate = "1/m"
burst = 0
[[upstream]]
name = "pair"
servers = ["{}", "{}"]
  [upstream.health]
  path = "/api/health"
  interval = "100ms"
  fails = 1
  passes = 1
[[route]]
path = "/"
upstream = "pair"
[[route]]
path = "/limited/"
upstream = "pair"
rate_limit = "api"
[admin]
listen = "{admin}"
"#,
            a.addr, b.addr
        );
    let gw = TestGateway::start(&toml).await;
    let c = plain_client();
    let scrape = || async {
        let text = metrics_text(&c, &admin).await;
        let lines = text.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
    };
    let value = |s: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>| -> f64 {
        s.samples
            .iter()
            .filter(|x| x.metric == name)
            .filter(|x| label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let before = scrape().await;
    for _ in 0..5 {
        c.get(gw.http_url("/x")).send().await.unwrap();
    }
    c.get(gw.http_url("/limited/x")).send().await.unwrap();
    c.get(gw.http_url("/limited/x")).send().await.unwrap();
    let after = scrape().await;
    let d = |name, label| value(&after, name, label) - value(&before, name, label);
    assert_eq!(d("requests_total", Some(("status", "200"))), 6.0);
    assert_eq!(d("requests_total", Some(("status", "429"))), 1.0);
    assert_eq!(
        d("rate_limited_total", Some(("zone", "api"))),
        1.0,
        "{:?}",
        after
            .samples
            .iter()
            .filter(|s| s.metric.contains("rate"))
            .collect::<Vec<_>>()
    );
    assert_eq!(value(&after, "upstream_up", Some(("server", &b.addr.to_string()))), 1.0);
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "request_duration_seconds_count")
    );
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "certificate_expiry_seconds" && s.labels.get("domain") == Some("localhost"))
    );

    b.set_healthy(false);
    let status_url = format!("http://{admin}/status");
    let (c_ref, url_ref) = (&c, &status_url);
    wait_until(Duration::from_secs(3), "/status shows b down", || async move {
        let s: serde_json::Value = c_ref.get(url_ref).send().await.unwrap().json().await.unwrap();
        s["upstreams"][0]["servers"][1]["up"] == false && s["upstreams"][0]["servers"][0]["up"] == true
    })
    .await;
    let down = scrape().await;
    assert_eq!(value(&down, "upstream_up", Some(("server", &b.addr.to_string()))), 0.0);
    let healthz = c.get(format!("http://{admin}/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let status = status_json(&c, admin).await;
    assert_eq!(status["generation"], 1);
    assert_eq!(status["listeners"]["http"], gw.http().to_string());
    assert!(
        status["certificates"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "localhost")
    );
}

#[test]
fn admin_refuses_a_public_address_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("g.toml");
    let write = |extra: &str| {
        std::fs::write(
            &conf,
            format!("[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"\"\n[admin]\nlisten = \"0.0.0.0:9901\"\n{extra}"),
        )
        .unwrap();
        std::process::Command::new(bin_path())
            .args(["check", "--config"])
            .arg(&conf)
            .output()
            .unwrap()
    };
    let out = write("");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(":5:10: admin.listen 0.0.0.0:9901 is not a loopback address")
    );
    let out = write("allow_remote = true\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn the_error_log_can_be_json() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(TestUpstream::start("u"));
    let gw = BinGateway::start(&(proxy_config(&[up.addr], "") + "[log]\nformat = \"json\"\n"));
    let started = gw
        .log_text()
        .lines()
        .find(|l| l.contains("orta-gateway started"))
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&started).expect("a JSON log line");
    assert_eq!(v["level"], "INFO");
}

#[test]
fn restart_handover_loses_no_request() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(TestUpstream::start("u"));
    let port = free_port();
    let toml = proxy_config(&[up.addr], "").replace("http = \"127.0.0.1:0\"", &format!("http = \"127.0.0.1:{port}\""));
    let old = BinGateway::start(&toml);
    let url = format!("http://127.0.0.1:{port}/x");
    let load = Load::start(rt.handle(), 4, |_| {
        let (c, url) = (plain_client(), url.clone());
        move || c.get(&url)
    });
    rt.block_on(wait_until(
        Duration::from_secs(5),
        "load on the old process",
        || async { load.ok() > 200 },
    ));
    // the new process binds the same address (SO_REUSEPORT), then the old one drains
    let new = BinGateway::start(&toml);
    let mut old = old;
    old.signal("TERM");
    let code = old.child.wait().unwrap();
    assert_eq!(code.code(), Some(0));
    let at_exit = load.ok();
    rt.block_on(wait_until(
        Duration::from_secs(5),
        "load on the new process",
        || async { load.ok() > at_exit + 200 },
    ));
    rt.block_on(load.finish());
    drop(new);
}

/// Ports a test must know before its server binds them come from outside the range that
/// sockets bound to port 0 and outgoing connections draw from, so nothing can take one in the
/// meantime (a port found by binding 0 and released once lost that race in CI).
#[test]
fn ports_chosen_before_binding_cannot_be_taken_by_ephemeral_sockets() {
    let low = ephemeral_low();
    let chosen: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let distinct: std::collections::HashSet<_> = chosen.iter().collect();
    assert_eq!(distinct.len(), chosen.len(), "never handed out twice");
    assert!(chosen.iter().all(|p| *p < low), "{chosen:?} below {low}");
    let ephemeral: Vec<_> = (0..200)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    for l in &ephemeral {
        assert!(!chosen.contains(&l.local_addr().unwrap().port()));
    }
}

/// A reload whose ACME manager cannot start, after the listeners it moves could be bound: the
/// whole reload is refused, and nothing of it is left serving (before, the new listener was
/// live with the old snapshot while reload reported an error).
#[tokio::test]
async fn a_reload_that_fails_late_changes_nothing() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let gw = TestGateway::start(&routed_to(a.addr, b.addr, "a", "")).await;
    let old = gw.http();
    let generation = gw.gw().snapshot().generation;
    // the ACME cache directory holds a file where the temporary certificate's directory goes
    let acme_dir = gw.dir.path().join("acme");
    std::fs::create_dir_all(&acme_dir).unwrap();
    std::fs::write(acme_dir.join("temporary"), "not a directory").unwrap();
    let new_port = free_port();
    let moved = routed_to(a.addr, b.addr, "b", "")
        .replace("http = \"127.0.0.1:0\"", &format!("http = \"127.0.0.1:{new_port}\""))
        .replace(
            "[tls]\nsource = \"self-signed\"\nself_signed_dir = \"{dir}/certs\"\n",
            "[tls]\nsource = \"acme\"\n[acme]\ndomains = [\"shop.test\"]\ndirectory = \"https://127.0.0.1:9/dir\"\ncache_dir = \"{dir}/acme\"\n",
        );
    assert!(moved.contains("source = \"acme\""));
    let err = gw.gw().reload(parse(&moved, gw.dir.path())).unwrap_err();
    assert!(err.contains("temporary"), "{err}");
    // nothing moved: the old listener, the old routes, the old generation
    assert_eq!(gw.gw().http_addr(), Some(old));
    assert_eq!(gw.gw().snapshot().generation, generation);
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", new_port)).await.is_err(),
        "the new address was left listening"
    );
    assert_eq!(who(&plain_client(), &gw.http_url("/")).await.as_deref(), Some("a"));
    // a listener that cannot bind refuses the whole reload too (before: the rest applied)
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let blocked =
        routed_to(a.addr, b.addr, "b", "").replace("http = \"127.0.0.1:0\"", &format!("http = \"127.0.0.1:{port}\""));
    let err = gw.gw().reload(parse(&blocked, gw.dir.path())).unwrap_err();
    assert!(err.contains("cannot listen"), "{err}");
    assert_eq!(gw.gw().http_addr(), Some(old));
    assert_eq!(gw.gw().snapshot().generation, generation);
    assert_eq!(who(&plain_client(), &gw.http_url("/")).await.as_deref(), Some("a"));
}

/// Route labels in /metrics are the route's `name`, else its host and path: they stay the same
/// when lines above the route move (they were `/api/@LINE`).
#[tokio::test]
async fn route_labels_survive_edits_above_the_route() {
    let up = TestUpstream::start("u").await;
    let routes = format!(
        "[[upstream]]\nname = \"backend\"\nservers = [\"{}\"]\n\
         [[route]]\nname = \"api\"\npath = \"/api/\"\nupstream = \"backend\"\n\
         [[route]]\nhost = [\"shop.test\", \"www.shop.test\"]\npath = \"/\"\nupstream = \"backend\"\n\
         [[route]]\npath = \"/\"\nupstream = \"backend\"\n",
        up.addr
    );
    let gw = TestGateway::start(&(base_config() + "[admin]\nlisten = \"127.0.0.1:0\"\n" + &routes)).await;
    let c = plain_client();
    let admin = gw.gw().admin_addr().unwrap();
    let labels = || async {
        let text = metrics_text(&c, &admin).await;
        let mut found: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("requests_total{"))
            .filter_map(|l| Some(l.split("route=\"").nth(1)?.split('"').next()?.to_string()))
            .collect();
        found.sort();
        found.dedup();
        found
    };
    for (host, path) in [("x", "/api/a"), ("shop.test", "/b"), ("other.test", "/c")] {
        let r = c.get(gw.http_url(path)).header("host", host).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(labels().await, ["/", "api", "shop.test/"]);
    // lines added above every route: the same series go on counting
    let edited =
        base_config() + "# a comment\n\n[admin]\nlisten = \"127.0.0.1:0\"\n[compression]\nmin_size = 2048\n" + &routes;
    gw.gw().reload(parse(&edited, gw.dir.path())).unwrap();
    for (host, path) in [("x", "/api/a"), ("shop.test", "/b"), ("other.test", "/c")] {
        c.get(gw.http_url(path)).header("host", host).send().await.unwrap();
    }
    assert_eq!(labels().await, ["/", "api", "shop.test/"]);
    // two routes with one label: refused with both places named
    let twice = base_config()
        + &routes.replace(
            "[[route]]\nname = \"api\"",
            "[[route]]\nname = \"api\"\npath = \"/v2/\"\nupstream = \"backend\"\n[[route]]\nname = \"api\"",
        );
    let Err(diags) = orta_gateway::config::parse(Path::new("test.toml"), &twice.replace("{dir}", "/tmp")) else {
        panic!("a label used twice is refused");
    };
    assert!(diags.to_string().contains("route name `api` is taken"), "{diags}");
}
