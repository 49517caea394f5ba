//! The command line: `check` like `nginx -t` with FILE:LINE:COL for every problem, `run`
//! refusing a bad config, the `api` subcommand, `health` (the container health check),
//! `--version`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let out = Command::new(bin_path())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).replace(path.to_str().unwrap(), "FILE");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "FILE");
    (out.status.success(), stdout, stderr)
}

#[test]
fn check_accepts_the_default_config() {
    let out = Command::new(bin_path())
        .args(["check", "--config", "conf/gateway.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn check_reports_every_mistake_with_line_and_column() {
    let text = r#"[server]
http = "127.0.0.1:99999"
https = "127.0.0.1:8443"
max_body_size = "20 MB"
keepalive_timeout = "75"
workers = "four"

[tls]
source = "magic"

[[upstream]]
name = "backend"
servers = ["127.0.0.1:8001", "nonsense"]
balance = "random"

[[route]]
path = "/api/"
upstream = "missing"

[[route]]
path = "/files/"
root = "/definitely/not/here"

[[route]]
path = "static/"
upstream = "backend"

[[route]]
path = "/x/"
upstream = "backend"
colour = "blue"

[log]
level = "loud"

[admin]
listen = "127.0.0.1:8443"
"#;
    let (ok, stdout, _) = check(text);
    assert!(!ok, "exit code 1");
    let lines: Vec<&str> = stdout.lines().collect();
    let expect = [
        ("FILE:2:8: `127.0.0.1:99999` is not a listen address", "bad port"),
        ("FILE:4:17: unknown size unit `MB`", "bad size unit"),
        ("FILE:5:21: `75` has no unit", "duration without unit"),
        ("FILE:6:11: invalid type: string \"four\", expected i64", "wrong type"),
        ("FILE:9:10: tls.source `magic` is not one of", "bad enum value"),
        ("FILE:13:30: `nonsense` is not a server address", "bad upstream server"),
        ("FILE:14:11: balance `random` is not one of", "bad balance"),
        ("FILE:18:12: route names unknown upstream `missing`", "unknown upstream"),
        (
            "FILE:22:8: root `/definitely/not/here` is not a readable directory",
            "unreadable root",
        ),
        (
            "FILE:25:8: route path `static/` must be a plain path prefix",
            "bad route path",
        ),
        ("FILE:31:1: unknown field `colour`", "unknown key"),
        ("FILE:34:9: log level `loud` is not one of", "bad log level"),
        (
            "FILE:37:10: two listeners on 127.0.0.1:8443: admin.listen and server.https (line 3, column 9)",
            "address clash",
        ),
    ];
    for (prefix, what) in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(prefix)),
            "{what}: no line starting with {prefix:?} in:\n{stdout}"
        );
    }
    // workers is rejected as a whole [server] table, so its other mistakes come first; all
    // reported problems carry a position
    assert!(lines.iter().all(|l| l.starts_with("FILE:")), "{stdout}");
}

#[test]
fn check_reports_syntax_errors_with_position() {
    let (ok, stdout, _) = check("[server]\nhttp = \"127.0.0.1:8080\nhttps = 1\n");
    assert!(!ok);
    assert!(stdout.starts_with("FILE:2:"), "{stdout}");
    let (ok, stdout, _) = check("[servr]\nhttp = \"127.0.0.1:8080\"\n");
    assert!(!ok);
    assert!(stdout.starts_with("FILE:1:2: unknown section `servr`"), "{stdout}");
}

#[test]
fn check_prints_ok_and_run_refuses_the_same_problems() {
    let (ok, stdout, _) = check(&format!(
        "{}\n[[upstream]]\nname = \"b\"\nservers = [\"127.0.0.1:9\"]\n[[route]]\npath = \"/\"\nupstream = \"b\"\n",
        base_config()
    ));
    assert!(ok, "{stdout}");
    assert_eq!(stdout.trim(), "ok");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nhttp = \"nope\"\n").unwrap();
    let out = Command::new(bin_path())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2:8: `nope` is not a listen address", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("not started"), "{stderr}");
}

/// A child process, killed even if an assertion fails before it is stopped.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn api_subcommand_answers_its_health_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Reap(
        Command::new(bin_path())
            .args(["api", "--listen", "127.0.0.1:0", "--database"])
            .arg(dir.path().join("orta.db"))
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("api announces its address").unwrap();
        if let Some(a) = line.split("api=").nth(1) {
            break a.split_whitespace().next().unwrap().to_string();
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body: serde_json::Value = rt.block_on(async {
        plain_client()
            .get(format!("http://{addr}/api/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(body["status"], "ok");
    assert_eq!(body["replica"], addr.as_str());
    let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn api_replicas_starting_together_on_a_new_database_all_start() {
    // SQLite answers a race to switch a new database to WAL with "database is locked" at once;
    // found when docker started three replicas on a fresh volume
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let mut children: Vec<Reap> = (0..3)
            .map(|_| {
                Reap(
                    Command::new(bin_path())
                        .args(["api", "--listen", "127.0.0.1:0", "--database"])
                        .arg(dir.path().join("orta.db"))
                        .stderr(Stdio::piped())
                        .stdout(Stdio::null())
                        .spawn()
                        .unwrap(),
                )
            })
            .collect();
        for Reap(child) in &mut children {
            let lines = BufReader::new(child.stderr.take().unwrap()).lines();
            let mut seen = Vec::new();
            let mut listening = false;
            for line in lines.map_while(Result::ok) {
                listening = line.contains("replica listening");
                seen.push(line);
                if listening {
                    break;
                }
            }
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let status = child.wait().unwrap();
            assert!(listening, "a replica did not start: {seen:?}");
            assert_eq!(status.code(), Some(0));
        }
    }
}

#[test]
fn version_and_help() {
    let out = Command::new(bin_path()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("orta-gateway "));
    let out = Command::new(bin_path()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "check", "certs", "api", "health"] {
        assert!(help.contains(cmd), "{help}");
    }
}

/// `orta-gateway health ARGS`: (exit code, stdout, stderr).
fn health(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin_path()).arg("health").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn health_asks_the_admin_listener_and_exits_1_on_anything_but_200() {
    let admin = free_port();
    let gw = BinGateway::start(&format!("{}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n", base_config()));
    let conf = gw.dir.path().join("gateway.toml");
    let conf = conf.to_str().unwrap();
    // the config's admin listener: 200 "ok"
    let (code, out, _) = health(&["--config", conf]);
    assert_eq!((code, out.as_str()), (Some(0), "ok\n"));
    // any URL: the answer printed (the status JSON, here)
    let (code, out, _) = health(&["--url", &format!("http://127.0.0.1:{admin}/status")]);
    assert_eq!(code, Some(0));
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["generation"], 1, "{out}");
    // not 200, nothing listening, no admin listener in the config: exit 1, saying why
    let (code, _, err) = health(&["--url", &format!("http://127.0.0.1:{admin}/nowhere")]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");
    let closed = free_port();
    let (code, _, err) = health(&["--url", &format!("http://127.0.0.1:{closed}/healthz"), "--timeout", "2"]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("127.0.0.1:{closed}")), "{err}");
    let (code, _, err) = health(&["--url", "https://127.0.0.1/healthz"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("http://"), "{err}");
    let plain = gw.dir.path().join("no-admin.toml");
    std::fs::write(&plain, base_config().replace("{dir}", gw.dir.path().to_str().unwrap())).unwrap();
    let (code, _, err) = health(&["--config", plain.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no [admin] listener"), "{err}");
}
