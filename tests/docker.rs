//! The docker deployment's files and the features it relies on, without the engine (the engine
//! runs them in `tests/containers.rs`): both compose files validate with docker-compose, the
//! Dockerfile follows the rules hadolint would enforce, the production config passes `check`
//! offline; upstream servers found by name (every address, following changes), IP allow-lists.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn both_compose_files_validate() {
    let found = Command::new("sh")
        .args(["-c", "command -v docker-compose"])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "docker-compose is needed for this test: apt-get install docker-compose (scripts/test installs it)"
    );
    for file in ["docker/docker-compose.production.yml", "docker/docker-compose.yml"] {
        let out = Command::new("docker-compose")
            .args(["-f", file, "config", "--quiet"])
            .current_dir(repo())
            .env("POSTGRES_PASSWORD", "test-only")
            .env("ORTA_CLUSTER_SECRET", "test-only-cluster-secret")
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new("docker-compose")
        .args(["-f", "docker/docker-compose.production.yml", "config"])
        .current_dir(repo())
        .env("POSTGRES_PASSWORD", "test-only")
        .env("ORTA_CLUSTER_SECRET", "test-only-cluster-secret")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for service in [
        "db:",
        "redis:",
        "backend:",
        "celery:",
        "celery-beat:",
        "flower:",
        "gateway:",
    ] {
        assert!(text.contains(service), "service {service} missing");
    }
    assert!(
        !text.contains("nginx") && !text.contains("certbot"),
        "gateway replaces nginx and certbot"
    );
    assert!(text.contains("memory: 128M"), "the gateway is limited to 128M");
    // 80/443 bound by the unprivileged user through the namespaced sysctl, not a capability
    assert!(text.contains("net.ipv4.ip_unprivileged_port_start"));
    assert!(text.contains("read_only: true"));
    // cluster mode on the stack's redis: the secret comes from the environment
    assert!(text.contains("ORTA_CLUSTER_SECRET: test-only-cluster-secret"), "{text}");
    let without = Command::new("docker-compose")
        .args(["-f", "docker/docker-compose.production.yml", "config", "--quiet"])
        .current_dir(repo())
        .env("POSTGRES_PASSWORD", "test-only")
        .env_remove("ORTA_CLUSTER_SECRET")
        .output()
        .unwrap();
    assert!(
        !without.status.success() && String::from_utf8_lossy(&without.stderr).contains("ORTA_CLUSTER_SECRET"),
        "the stack refuses to start without the cluster secret"
    );
}

#[test]
fn the_dockerfile_follows_the_usual_lint_rules() {
    let text = std::fs::read_to_string(repo().join("docker/Dockerfile")).unwrap();
    // logical instructions (continuation lines joined)
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage");
    // `scratch`, stages of this file and a stage chosen by a build argument are not images
    let stages: Vec<&str> = froms.iter().filter_map(|f| f.split_whitespace().nth(3)).collect();
    for f in &froms {
        let image = f.split_whitespace().nth(1).unwrap();
        if image == "scratch" || image.starts_with("${") || stages.contains(&image) {
            continue;
        }
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "DL3006/DL3007: pin {image}"
        );
    }
    assert!(!lines.iter().any(|l| l.starts_with("ADD ")), "DL3020: COPY, not ADD");
    for l in lines.iter().filter(|l| l.contains("apt-get install")) {
        assert!(l.contains("--no-install-recommends"), "DL3015: {l}");
        assert!(l.contains("-y"), "DL3014: {l}");
        assert!(l.contains("rm -rf /var/lib/apt/lists"), "DL3009: {l}");
    }
    for l in lines.iter().filter(|l| l.starts_with("WORKDIR ")) {
        assert!(l.split_whitespace().nth(1).unwrap().starts_with('/'), "DL3000: {l}");
    }
    let pos = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix));
    let user = pos("USER ").expect("a USER");
    assert!(
        !lines[user].ends_with("root") && !lines[user].ends_with(" 0"),
        "DL3002: not root"
    );
    assert!(user < pos("ENTRYPOINT").unwrap(), "runs as the unprivileged user");
    // the binary is its own health check: no curl (nor anything else) installed
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("HEALTHCHECK ") && l.contains(r#"CMD ["orta-gateway", "health"]"#))
    );
    let final_stage = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    assert!(
        !lines[final_stage..]
            .iter()
            .any(|l| l.contains("apt-get") || l.contains("setcap") || l.contains("curl")),
        "the runtime stage installs nothing"
    );
    assert!(lines.contains(&"STOPSIGNAL SIGTERM"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("VOLUME ") && l.contains("certs") && l.contains("logs") && l.contains("data"))
    );
    // the tests build this final stage from their own binary
    assert!(lines.iter().any(|l| l.starts_with("FROM ${BINARY_FROM} AS binary")));
    // the image ships the binary the benchmarks measure: the release build with PGO
    assert!(
        lines.iter().any(|l| l.contains("bash benches/wrk/pgo.sh")),
        "built by benches/wrk/pgo.sh"
    );
    // the dependency layer comes before the sources, so it is cached
    let manifest = pos("COPY Cargo.toml").unwrap();
    let sources = pos("COPY src").unwrap();
    assert!(manifest < sources);
    assert!(
        lines[manifest..sources]
            .iter()
            .any(|l| l.contains("cargo build --release"))
    );
}

#[test]
fn the_production_config_passes_check_offline() {
    // run where the container runs it: a working directory with the shared volumes
    let dir = tempfile::tempdir().unwrap();
    for d in ["static", "media"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let out = Command::new(bin_path())
        .args(["check", "--config"])
        .arg(repo().join("docker/gateway.production.toml"))
        .current_dir(dir.path())
        // no network: an unreachable proxy and no DNS would not matter
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("ORTA_CLUSTER_SECRET", "test-only-cluster-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    // the one warning: the stack's redis is not there offline (the gateway would serve on its
    // local state until it is)
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains("warning: [cluster] redis redis://redis:6379/1 is unreachable"),
        "no other warnings: {stderr}"
    );
}

#[tokio::test]
async fn a_server_name_spreads_over_every_address_and_follows_changes() {
    // two replicas on one port, at 127.0.0.1 and 127.0.0.2
    let a = TestUpstream::start("replica-1").await;
    let port = a.addr.port();
    let _replica_2 = TestUpstream::start_on(SocketAddr::from(([127, 0, 0, 2], port)), "replica-2").await;
    let hosts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(hosts.path(), "127.0.0.1 backend.test\n127.0.0.2 backend.test\n").unwrap();
    let toml = base_config().replace("[tls]", &format!("hosts_file = \"{}\"\n[tls]", hosts.path().display()))
        + &format!(
            r#"
[[upstream]]
name = "backend"
servers = ["backend.test:{port}"]
  [upstream.health]
  path = "/api/health"
  interval = "200ms"
[[route]]
path = "/"
upstream = "backend"
"#
        );
    let gw = TestGateway::start(&toml).await;
    let c = plain_client();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for _ in 0..20 {
        let r = c.get(gw.http_url("/x")).send().await.unwrap();
        *seen
            .entry(r.headers()["x-upstream"].to_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(seen.get("replica-1"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("replica-2"), Some(&10), "{seen:?}");
    // scaled down to one replica: within a re-resolution interval, all traffic goes there
    std::fs::write(hosts.path(), "127.0.0.2 backend.test\n").unwrap();
    let (gw_ref, c_ref) = (&gw, &c);
    wait_until(Duration::from_secs(3), "only replica-2 left", || async move {
        let mut all = true;
        for _ in 0..6 {
            let r = c_ref.get(gw_ref.http_url("/x")).send().await.unwrap();
            all &= r.headers()["x-upstream"] == "replica-2";
        }
        all
    })
    .await;
    let status = gw.gw().snapshot();
    let servers = status.upstreams["backend"].servers();
    assert_eq!(servers.len(), 1);
    assert_eq!(*servers[0].label, format!("127.0.0.2:{port}"));
}

#[tokio::test]
async fn routes_can_admit_only_some_networks() {
    let up = TestUpstream::start("flower").await;
    let toml = base_config()
        + &format!(
            "[[upstream]]\nname = \"f\"\nservers = [\"{}\"]\n[[route]]\npath = \"/flower/\"\nupstream = \"f\"\nallow = [\"127.0.0.1\", \"10.0.0.0/8\"]\n",
            up.addr
        );
    let gw = TestGateway::start(&toml).await;
    let r = plain_client().get(gw.http_url("/flower/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let other = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .build()
        .unwrap();
    let r = other
        .get(gw.http_url("/flower/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(up.hits(), 1, "the refused request never reached the upstream");
}
