//! The Docker engine for the container tests: every command with a deadline (an engine that
//! hangs fails the test instead of hanging it), the base image made offline
//! (`scripts/docker-base`), the image built once per test process from `docker/Dockerfile`'s
//! final stage with the binary this test build made, and containers and compose projects
//! named for this run and removed (with their volumes and networks) when dropped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::bin_path;

/// The image the tests build (one tag, rebuilt by each test process from its own binary).
pub const IMAGE: &str = "orta-gateway:test";

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The docker client: `DOCKER`, else Debian's (it builds with BuildKit without the buildx
/// plugin, which a newer client on PATH may refuse to do), else the one on PATH.
pub fn docker() -> String {
    if let Ok(d) = std::env::var("DOCKER") {
        return d;
    }
    if Path::new("/usr/bin/docker").exists() {
        return "/usr/bin/docker".into();
    }
    "docker".into()
}

/// Runs `program args` with `envs`, killed after `limit`; the output, or what went wrong.
pub fn run_for(program: &str, args: &[&str], envs: &[(&str, &str)], limit: Duration) -> Result<Output, String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.map_err(|e| e.to_string()),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            Err(format!(
                "`{program} {}` did not finish within {limit:?}",
                args.join(" ")
            ))
        }
    }
}

/// Runs `program args` and returns its stdout; panics with its stderr if it fails.
pub fn must(program: &str, args: &[&str], envs: &[(&str, &str)], limit: Duration) -> String {
    let out = run_for(program, args, envs, limit).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker ARGS`, which must succeed within two minutes; its stdout, trimmed.
pub fn dk(args: &[&str]) -> String {
    must(&docker(), args, &[], Duration::from_secs(120)).trim().to_string()
}

/// The engine, the base image and the test image, made once per test process; panics (in
/// every test that needs them) saying what is missing.
pub fn engine() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = READY.get_or_init(prepare) {
        panic!("{e}");
    }
}

fn prepare() -> Result<(), String> {
    let version = run_for(
        &docker(),
        &["version", "--format", "{{.Server.Version}}"],
        &[],
        Duration::from_secs(20),
    )
    .map_err(|e| {
        format!("the container tests need a Docker engine: {e} (apt-get install docker.io, then start dockerd)")
    })?;
    if !version.status.success() {
        return Err(format!(
            "the container tests need a running Docker engine (apt-get install docker.io, then start dockerd): {}",
            String::from_utf8_lossy(&version.stderr).trim()
        ));
    }
    let compose = run_for("docker-compose", &["version", "--short"], &[], Duration::from_secs(20));
    if !compose.is_ok_and(|o| o.status.success()) {
        return Err(
            "the container tests need docker-compose: apt-get install docker-compose (scripts/test installs it)".into(),
        );
    }
    let base = run_for(
        "bash",
        &[repo().join("scripts/docker-base").to_str().unwrap()],
        &[("DOCKER", &docker())],
        Duration::from_secs(900),
    )?;
    if !base.status.success() {
        return Err(format!(
            "scripts/docker-base could not make the base image: {}",
            String::from_utf8_lossy(&base.stderr)
        ));
    }
    build_image()
}

/// Builds `IMAGE`: the Dockerfile's final stage, with the binary this test build made (stripped
/// of its debug information) taken from a small build context.
fn build_image() -> Result<(), String> {
    let ctx = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::create_dir(ctx.path().join("docker")).map_err(|e| e.to_string())?;
    for f in ["docker/Dockerfile", "docker/gateway.production.toml"] {
        std::fs::copy(repo().join(f), ctx.path().join(f)).map_err(|e| format!("{f}: {e}"))?;
    }
    let binary = ctx.path().join("orta-gateway");
    let strip = run_for(
        "strip",
        &[
            "--strip-debug",
            "-o",
            binary.to_str().unwrap(),
            bin_path().to_str().unwrap(),
        ],
        &[],
        Duration::from_secs(120),
    );
    if !strip.is_ok_and(|o| o.status.success()) {
        std::fs::copy(bin_path(), &binary).map_err(|e| e.to_string())?;
    }
    // the image an earlier run built under the tag, removed once replaced (no dangling images)
    let earlier = run_for(
        &docker(),
        &["image", "inspect", "-f", "{{.Id}}", IMAGE],
        &[],
        Duration::from_secs(30),
    )
    .ok()
    .filter(|o| o.status.success())
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let dockerfile = ctx.path().join("docker/Dockerfile");
    let out = run_for(
        &docker(),
        &[
            "build",
            "--quiet",
            "-f",
            dockerfile.to_str().unwrap(),
            "--build-arg",
            "BINARY_FROM=prebuilt",
            "--build-arg",
            "PREBUILT=orta-gateway",
            "-t",
            IMAGE,
            ctx.path().to_str().unwrap(),
        ],
        &[("DOCKER_BUILDKIT", "1")],
        Duration::from_secs(600),
    )?;
    if !out.status.success() {
        return Err(format!(
            "docker build of docker/Dockerfile (BINARY_FROM=prebuilt) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if let Some(id) = earlier
        && !String::from_utf8_lossy(&out.stdout).contains(&id)
    {
        let _ = run_for(&docker(), &["image", "rm", &id], &[], Duration::from_secs(60));
    }
    Ok(())
}

/// The stack's `redis` service for the tests, as no image can be pulled: the base image with
/// Debian's redis-server and redis-cli of this machine and the libraries they link, made once
/// per test process (after [`engine`]).
pub const REDIS_IMAGE: &str = "orta-test-redis:latest";

pub fn redis_image() -> &'static str {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = READY.get_or_init(build_redis_image) {
        panic!("{e}");
    }
    REDIS_IMAGE
}

fn build_redis_image() -> Result<(), String> {
    super::need("redis-server", "redis-server");
    let ctx = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = ctx.path().join("rootfs");
    for bin in ["redis-server", "redis-cli"] {
        let path = must(
            "sh",
            &["-c", &format!("command -v {bin}")],
            &[],
            Duration::from_secs(10),
        )
        .trim()
        .to_string();
        let to = root.join("usr/bin").join(bin);
        std::fs::create_dir_all(to.parent().unwrap()).map_err(|e| e.to_string())?;
        std::fs::copy(&path, &to).map_err(|e| format!("{path}: {e}"))?;
        // each library at its merged-/usr path (the base image's /lib is a link to /usr/lib)
        for line in must("ldd", &[&path], &[], Duration::from_secs(10)).lines() {
            let Some(lib) = line.split("=> ").nth(1).and_then(|r| r.split_whitespace().next()) else {
                continue;
            };
            let name = Path::new(lib).file_name().unwrap();
            let to = root.join("usr/lib/x86_64-linux-gnu").join(name);
            std::fs::create_dir_all(to.parent().unwrap()).map_err(|e| e.to_string())?;
            std::fs::copy(lib, &to).map_err(|e| format!("{lib}: {e}"))?;
        }
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM debian:bookworm-slim\nCOPY rootfs/ /\nWORKDIR /data\nCMD [\"redis-server\"]\n",
    )
    .map_err(|e| e.to_string())?;
    let out = run_for(
        &docker(),
        &["build", "--quiet", "-t", REDIS_IMAGE, ctx.path().to_str().unwrap()],
        &[("DOCKER_BUILDKIT", "1")],
        Duration::from_secs(300),
    )?;
    if !out.status.success() {
        return Err(format!(
            "docker build of the test redis image failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A name for this run: `orta-t<pid>-<n>-<what>`.
pub fn run_name(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "orta-t{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A container of this run, removed with its anonymous volumes when dropped.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run_for(&docker(), &["rm", "-f", "-v", &self.0], &[], Duration::from_secs(60));
    }
}

/// `docker inspect -f FORMAT name`.
pub fn inspect(name: &str, format: &str) -> String {
    dk(&["inspect", "-f", format, name])
}

/// The container's address on its (first) network.
pub fn container_ip(name: &str) -> String {
    inspect(name, "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}")
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `docker exec name ARGS`: the output, whatever the exit status.
pub fn exec(name: &str, args: &[&str]) -> Output {
    let mut all = vec!["exec", name];
    all.extend_from_slice(args);
    run_for(&docker(), &all, &[], Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"))
}

/// A file's bytes inside a container, once it is there (within `limit`).
pub fn read_in(name: &str, path: &str, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    loop {
        let out = exec(name, &["cat", path]);
        if out.status.success() && !out.stdout.is_empty() {
            return out.stdout;
        }
        if inspect(name, "{{.State.Running}}") != "true" {
            let logs = run_for(&docker(), &["logs", "--tail", "20", name], &[], Duration::from_secs(30))
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            panic!("{name} stopped before {path} appeared: {logs}");
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not appear in {name} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The admin `/status` of the gateway in `container`, asked from inside it.
pub fn gateway_status(container: &str) -> serde_json::Value {
    let out = exec(
        container,
        &["orta-gateway", "health", "--url", "http://127.0.0.1:9901/status"],
    );
    assert!(
        out.status.success(),
        "/status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The addresses `/status` lists for `upstream`.
pub fn upstream_servers(status: &serde_json::Value, upstream: &str) -> Vec<String> {
    status["upstreams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| u["name"] == upstream)
        .flat_map(|u| u["servers"].as_array().cloned().unwrap_or_default())
        .map(|s| s["address"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A compose project of this run: its files and environment; `down -v` when dropped.
pub struct Stack {
    pub project: String,
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
}

impl Stack {
    pub fn new(what: &str, files: &[PathBuf], env: &[(&str, &str)]) -> Stack {
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.push(("ORTA_IMAGE".into(), IMAGE.into()));
        Stack {
            project: run_name(what),
            files: files.to_vec(),
            env,
        }
    }

    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<String> {
        let mut args = vec!["-p".to_string(), self.project.clone()];
        for f in &self.files {
            args.push("-f".into());
            args.push(f.to_str().unwrap().into());
        }
        args.extend(rest.iter().map(|s| s.to_string()));
        args
    }

    /// `docker-compose ARGS`, which must succeed within three minutes; its stdout.
    pub fn compose(&self, rest: &[&str]) -> String {
        let args = self.args(rest);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        must("docker-compose", &args, &env, Duration::from_secs(180))
    }

    /// The ids of the service's containers (running or not).
    pub fn ids(&self, service: &str) -> BTreeSet<String> {
        self.compose(&["ps", "-q", service])
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// The one container of `service`.
    pub fn one(&self, service: &str) -> String {
        let ids = self.ids(service);
        assert_eq!(ids.len(), 1, "{service}: {ids:?}");
        ids.into_iter().next().unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let args = self.args(&["down", "-v", "--remove-orphans", "-t", "5"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let _ = run_for("docker-compose", &args, &env, Duration::from_secs(120));
    }
}

/// A container's host name as the bundled API reports it: its id's first 12 characters.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}
