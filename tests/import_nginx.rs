//! `orta-gateway import-nginx` on the corpus in `tests/nginx/` (the Orta stack's nginx, an SPA
//! with its API, several domains with redirects and a wildcard, a layout of included files, and
//! one full of what the gateway does not do): every directive is translated or reported with
//! its file and line, the result passes `check`, the translations say what nginx said, and bad
//! syntax gets `FILE:LINE:COL`. The corpus's `/srv/orta` paths are rewritten to a scratch
//! directory where the roots and certificates exist.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// The corpus copied under `dir` with `/srv/orta` rewritten to `dir/srv`, whose roots and
/// certificates exist.
fn corpus(dir: &Path) -> PathBuf {
    let srv = dir.join("srv");
    for d in [
        "static",
        "media",
        "spa/assets",
        "www/downloads",
        "files",
        "certs",
        "logs",
    ] {
        std::fs::create_dir_all(srv.join(d)).unwrap();
    }
    for name in ["new", "old"] {
        let cert = rcgen::generate_simple_self_signed(vec![format!("{name}.example.test")]).unwrap();
        std::fs::write(srv.join(format!("certs/{name}.pem")), cert.cert.pem()).unwrap();
        let key = srv.join(format!("certs/{name}.key"));
        std::fs::write(&key, cert.key_pair.serialize_pem()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let to = dir.join("nginx");
    copy(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nginx"), &to, &srv);
    to
}

fn copy(from: &Path, to: &Path, srv: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy(&entry.path(), &target, srv);
        } else {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            std::fs::write(&target, text.replace("/srv/orta", srv.to_str().unwrap())).unwrap();
        }
    }
}

/// `import-nginx FILE --output OUT` in `dir`: (exit code, the toml, stderr).
fn import(dir: &Path, file: &Path) -> (Option<i32>, String, String) {
    let out_file = dir.join("gateway.toml");
    let out = Command::new(bin_path())
        .args(["import-nginx"])
        .arg(file)
        .arg("--output")
        .arg(&out_file)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        std::fs::read_to_string(&out_file).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Directives in nginx text, counted independently of the importer: each ends at a `;` or
/// opens a `{` outside quotes and comments.
fn count_directives(text: &str) -> usize {
    let (mut n, mut quote, mut comment, mut escaped) = (0, None, false, false);
    for c in text.chars() {
        if comment {
            comment = c != '\n';
        } else if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
        } else {
            match c {
                '#' => comment = true,
                '"' | '\'' => quote = Some(c),
                ';' | '{' => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// Every directive of `files` is translated or reported: the summary's two numbers add up to
/// the count (an include that was read is replaced by what it holds, so `spliced` are not
/// directives of their own).
fn assert_all_accounted(stderr: &str, files: &[PathBuf], spliced: usize) {
    let total: usize = files
        .iter()
        .map(|f| count_directives(&std::fs::read_to_string(f).unwrap()))
        .sum::<usize>()
        - spliced;
    let summary = stderr
        .lines()
        .find(|l| l.ends_with(" reported"))
        .unwrap_or_else(|| panic!("no summary line: {stderr}"));
    let nums: Vec<usize> = summary.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(nums[0] + nums[1], total, "{summary} ({total} directives): {stderr}");
    let reported = stderr.lines().filter(|l| l.contains(" not translated: ")).count();
    assert_eq!(reported, nums[1], "{stderr}");
}

#[test]
fn the_orta_stack_translates_and_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = corpus(dir.path());
    let file = nginx.join("orta.conf");
    let (code, toml, err) = import(dir.path(), &file);
    assert_eq!(code, Some(0), "{err}\n{toml}");
    assert_all_accounted(&err, std::slice::from_ref(&file), 0);
    // the HTTP server that redirects (and served certbot's webroot) is redirect_to_https
    assert!(toml.contains("redirect_to_https = true"), "{toml}");
    assert!(toml.contains("certbot webroot location is dropped"));
    // certbot's certificate: ACME for the server's names
    assert!(toml.contains("source = \"acme\""));
    assert!(toml.contains("domains = [\"ortanovias.com\", \"www.ortanovias.com\"]"));
    // the upstream, its balance and timeouts, the zone with the location's burst
    for line in [
        "balance = \"least_conn\"",
        "servers = [\"127.0.0.1:8001\", \"127.0.0.1:8002\"]",
        "connect_timeout = \"2s\"",
        "rate = \"10/s\"",
        "burst = 20",
        "rate_limit = \"api\"",
        "allow = [\"10.8.0.0/24\", \"192.168.1.0/24\"]",
        "cache_control = \"max-age=2592000\"",
        "max_body_size = \"20MiB\"",
        "max_header_size = \"32KiB\"",
        "max_connections_per_ip = 256",
        "strict_transport_security = \"max-age=63072000; includeSubDomains\"",
    ] {
        assert!(toml.contains(line), "{line} missing:\n{toml}");
    }
    // each section says where it came from; what is left out is listed, in the file too
    assert!(toml.contains("# from "), "{toml}");
    assert!(err.contains("orta.conf:42: directive `listen` not translated"), "{err}");
    assert!(
        err.contains("orta.conf:61: directive `ssl_dhparam` not translated"),
        "{err}"
    );
    assert!(toml.contains("# Not translated:"));
    // and it runs: `check` says ok
    let out = Command::new(bin_path())
        .args(["check", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn every_directive_of_the_corpus_is_translated_or_reported() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = corpus(dir.path());
    let inc = nginx.join("includes");
    let cases: [(&str, Vec<PathBuf>, usize); 4] = [
        ("spa-api.conf", vec![nginx.join("spa-api.conf")], 0),
        ("multi-domain.conf", vec![nginx.join("multi-domain.conf")], 0),
        (
            "includes/main.conf",
            vec![
                inc.join("main.conf"),
                inc.join("conf.d/10-upstreams.conf"),
                inc.join("conf.d/20-site.conf"),
                inc.join("snippets/proxy.conf"),
            ],
            2,
        ),
        ("unsupported.conf", vec![nginx.join("unsupported.conf")], 0),
    ];
    for (name, files, spliced) in cases {
        let (code, toml, err) = import(dir.path(), &nginx.join(name));
        assert_eq!(code, Some(0), "{name}: {err}\n{toml}");
        assert_all_accounted(&err, &files, spliced);
        for line in err.lines().filter(|l| l.contains(" not translated: ")) {
            assert!(toml.contains(&format!("# {line}")), "{name}: {line} not in the output");
        }
    }
}

#[test]
fn what_the_gateway_cannot_do_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = corpus(dir.path());
    let (_, _, err) = import(dir.path(), &nginx.join("unsupported.conf"));
    for (line, name) in [
        (3, "map"),
        (13, "rewrite"),
        (15, "if"),
        (19, "location"),
        (21, "fastcgi_pass"),
        (25, "location"),
        (31, "sub_filter"),
    ] {
        let want = format!("unsupported.conf:{line}: directive `{name}` not translated: ");
        assert!(err.contains(&want), "{want} missing: {err}");
    }
    let (_, toml, err) = import(dir.path(), &nginx.join("spa-api.conf"));
    assert!(
        err.contains("spa-api.conf:13: directive `try_files` not translated"),
        "{err}"
    );
    assert!(
        err.contains("spa-api.conf:33: directive `return` not translated: `return 200`: a fixed answer"),
        "{err}"
    );
    // a proxy_pass whose URI is the location's own path forwards paths unchanged, as nginx does
    assert!(!err.contains("spa-api.conf:21"), "{err}");
    assert!(toml.contains("upstream = \"127_0_0_1_9000\""), "{toml}");
    assert!(
        toml.contains("read_timeout = \"30s\"") && toml.contains("retries = 0"),
        "{toml}"
    );
    assert!(
        toml.contains("cache_control = \"public, max-age=31536000, immutable\""),
        "{toml}"
    );
    let (_, toml, err) = import(dir.path(), &nginx.join("multi-domain.conf"));
    assert!(err.contains("`*.example.test`"), "{err}");
    assert!(err.contains("multi-domain.conf:37: directive `return` not translated: the gateway redirects with 301"));
    assert!(toml.contains("redirect = \"https://new.example.test\""), "{toml}");
    assert!(toml.contains("[[tls.certificates]]"), "{toml}");
    assert!(toml.contains("TLS 1.0 and 1.1 are not offered"), "{toml}");
    assert!(
        toml.contains("gzip_static: the gateway serves precompressed siblings"),
        "{toml}"
    );
    let (_, toml, err) = import(dir.path(), &nginx.join("includes/main.conf"));
    assert!(
        err.contains("10-upstreams.conf:4: directive `server` not translated: 127.0.0.1:9002 is kept; `weight=2`"),
        "{err}"
    );
    assert!(err.contains("proxy.conf:5: directive `proxy_set_header`"), "{err}");
    assert!(
        toml.contains("balance = \"ip_hash\"") && toml.contains("connect_timeout = \"3s\""),
        "{toml}"
    );
    assert!(toml.contains("trusted_proxies = [\"10.0.0.0/8\"]"), "{toml}");
}

#[test]
fn bad_nginx_syntax_gets_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.conf");
    std::fs::write(&file, "http {\n    server {\n        listen 80\n    }\n}\n").unwrap();
    let (code, _, err) = import(dir.path(), &file);
    assert_eq!(code, Some(1));
    assert_eq!(
        err.trim(),
        format!(
            "{}:4:5: unexpected \"}}\": directive \"listen\" is not terminated by \";\"",
            file.display()
        )
    );
    std::fs::write(&file, "http {\n  server { listen 80; }\n").unwrap();
    let (code, _, err) = import(dir.path(), &file);
    assert_eq!(code, Some(1));
    assert!(err.contains(":3:1: unexpected end of file, expecting \"}\""), "{err}");
}

#[test]
fn a_result_that_would_not_pass_check_exits_1_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.conf");
    std::fs::write(&file, "server { listen 8080; root /nonexistent/www; }\n").unwrap();
    let (code, toml, err) = import(dir.path(), &file);
    assert_eq!(code, Some(1));
    assert!(toml.contains("root = \"/nonexistent/www\""), "{toml}");
    assert!(
        err.contains("gateway.toml:") && err.contains("not a readable directory"),
        "{err}"
    );
}

// ---- differential: the Orta nginx config in real nginx and, imported, in the gateway ---------

/// A real upstream on two addresses (the config's two replicas) that records each request's
/// head and answers `200 ok`.
struct Recorder {
    addrs: [std::net::SocketAddr; 2],
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            let heads = heads.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(Self::serve(stream, heads.clone()));
                }
            });
        }
        Recorder {
            addrs: [addrs[0], addrs[1]],
            heads,
        }
    }

    async fn serve(mut stream: tokio::net::TcpStream, heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = Vec::new();
        loop {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            let close = head.to_ascii_lowercase().contains("connection: close") || head.contains("HTTP/1.0");
            heads.lock().unwrap().push(head);
            let answer = if close {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            } else {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            };
            if stream.write_all(answer.as_bytes()).await.is_err() || close {
                return;
            }
        }
    }

    /// The last request head: its request line and the named fields, lowercased names.
    fn last(&self) -> (String, std::collections::BTreeMap<String, String>) {
        let heads = self.heads.lock().unwrap();
        let head = heads.last().expect("the upstream saw no request");
        let mut lines = head.split("\r\n");
        let line = lines.next().unwrap().to_string();
        let fields = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (line, fields)
    }
}

/// A server process (nginx, the gateway) stopped with SIGTERM when dropped: nginx's master
/// then stops its workers (SIGKILL would leave them running).
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts connections on `port`.
async fn listening(port: u16, what: &str) {
    wait_until(Duration::from_secs(20), what, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
}

/// A CA, and a certificate it signed for the Orta names, as certbot would have left them.
fn certbot_files(dir: &Path) -> Vec<u8> {
    let live = dir.join("letsencrypt/live/ortanovias.com");
    std::fs::create_dir_all(&live).unwrap();
    let (ca, leaf, key) = ca_and_leaf(&["ortanovias.com", "www.ortanovias.com"], &[]);
    std::fs::write(live.join("fullchain.pem"), leaf + &ca).unwrap();
    let privkey = live.join("privkey.pem");
    std::fs::write(&privkey, key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&privkey, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        dir.join("letsencrypt/options-ssl-nginx.conf"),
        "ssl_session_timeout 1440m;\n",
    )
    .unwrap();
    let dh = Command::new("openssl")
        .args(["dhparam", "-dsaparam", "-out"])
        .arg(dir.join("letsencrypt/ssl-dhparams.pem"))
        .arg("2048")
        .output()
        .expect("openssl is needed: apt-get install openssl (scripts/test installs it)");
    assert!(dh.status.success());
    ca.into_bytes()
}

/// orta.conf with only its ports, paths and certificate files changed.
fn rewritten(dir: &Path, http: u16, https: u16, up: &Recorder, who: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nginx/orta.conf")).unwrap();
    let d = dir.to_str().unwrap();
    text.replace("listen 80;", &format!("listen 127.0.0.1:{http};"))
        .replace("listen [::]:80;", &format!("listen 127.0.0.2:{http};"))
        .replace("listen 443 ssl http2;", &format!("listen 127.0.0.1:{https} ssl http2;"))
        .replace("/etc/letsencrypt/", &format!("{d}/letsencrypt/"))
        .replace("/srv/orta", &format!("{d}/srv"))
        .replace("/var/www/certbot", &format!("{d}/certbot"))
        .replace("/run/nginx.pid", &format!("{d}/{who}.pid"))
        .replace("127.0.0.1:8001", &up.addrs[0].to_string())
        .replace("127.0.0.1:8002", &up.addrs[1].to_string())
        .replace("127.0.0.1:5555", &up.addrs[0].to_string())
}

/// The same request to both servers: (nginx's answer, the gateway's), as status, Location
/// without the port, Cache-Control and body.
type Answer = (u16, String, String, Vec<u8>);

async fn answer(c: &reqwest::Client, url: String, port: u16) -> Answer {
    let r = c.get(url).send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().replace(&format!(":{port}"), ""))
            .unwrap_or_default()
    };
    let (status, location, cache) = (r.status().as_u16(), header("location"), header("cache-control"));
    (status, location, cache, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orta_config_answers_alike_in_nginx_and_imported_in_the_gateway() {
    need("nginx", "nginx");
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    // nginx's workers run as www-data: everything they serve is readable by all
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path();
    for d in ["srv/static", "srv/media", "srv/logs", "certbot"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let css = "body { color: #333; }\n".repeat(200);
    std::fs::write(root.join("srv/static/app.css"), &css).unwrap();
    let photo: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(root.join("srv/media/photo.jpg"), &photo).unwrap();
    let ca = certbot_files(root);
    let up = Recorder::start().await;
    let (n_http, n_https, g_http, g_https) = (free_port(), free_port(), free_port(), free_port());
    // nginx on the original
    let conf = root.join("nginx.conf");
    std::fs::write(&conf, rewritten(root, n_http, n_https, &up, "nginx")).unwrap();
    let nginx = Command::new("nginx")
        .args(["-e", "stderr", "-g", "daemon off;", "-p"])
        .arg(root)
        .arg("-c")
        .arg(&conf)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _nginx = Process(nginx);
    // the gateway on the import of the same file (its own ports)
    let source = root.join("for-gateway.conf");
    std::fs::write(&source, rewritten(root, g_http, g_https, &up, "gateway")).unwrap();
    let (code, toml, err) = import(root, &source);
    assert_eq!(code, Some(0), "{err}\n{toml}");
    let gateway = Command::new(bin_path())
        .args(["run", "--config"])
        .arg(root.join("gateway.toml"))
        .current_dir(root)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _gateway = Process(gateway);
    listening(n_https, "nginx").await;
    listening(g_https, "the gateway").await;
    let n_addr = std::net::SocketAddr::from(([127, 0, 0, 1], n_https));
    let g_addr = std::net::SocketAddr::from(([127, 0, 0, 1], g_https));
    let trusting = |addr| {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .resolve("ortanovias.com", addr)
            .resolve("www.ortanovias.com", addr)
            .http1_only()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    let (nc, gc) = (trusting(n_addr), trusting(g_addr));
    let plain = plain_client();
    // plain HTTP: the redirect to HTTPS, same Location but for the port
    for (host, path) in [("ortanovias.com", "/"), ("www.ortanovias.com", "/catalog?page=2")] {
        let n = plain
            .get(format!("http://127.0.0.1:{n_http}{path}"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        let g = plain
            .get(format!("http://127.0.0.1:{g_http}{path}"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!((n.status().as_u16(), g.status().as_u16()), (301, 301), "{host}{path}");
        let loc = |r: &reqwest::Response, port: u16| {
            r.headers()["location"]
                .to_str()
                .unwrap()
                .replace(&format!(":{port}"), "")
        };
        assert_eq!(loc(&n, n_https), loc(&g, g_addr.port()), "{host}{path}");
    }
    // static files: status, body and Cache-Control alike
    for path in [
        "/static/app.css",
        "/media/photo.jpg",
        "/static/missing.css",
        "/media/../static/app.css",
    ] {
        let n = answer(&nc, format!("https://ortanovias.com:{n_https}{path}"), n_https).await;
        let g = answer(
            &gc,
            format!("https://ortanovias.com:{}{path}", g_addr.port()),
            g_addr.port(),
        )
        .await;
        assert_eq!(n.0, g.0, "{path}: status");
        if n.0 == 200 {
            assert_eq!(
                (n.2.as_str(), &n.3),
                (g.2.as_str(), &g.3),
                "{path}: Cache-Control and body"
            );
        }
    }
    // proxied: the upstream sees the same request target, Host and forwarding fields
    for path in ["/api/items?q=1&page=2", "/", "/account/login/"] {
        let mut seen = Vec::new();
        for (c, port) in [(&nc, n_https), (&gc, g_addr.port())] {
            let r = c
                .get(format!("https://ortanovias.com:{port}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let (line, fields) = up.last();
            let target: Vec<&str> = line.split(' ').take(2).collect();
            let pick = |k: &str| fields.get(k).cloned().unwrap_or_default();
            seen.push((
                target.join(" "),
                pick("host").replace(&format!(":{port}"), ""),
                pick("x-forwarded-for"),
                pick("x-forwarded-proto"),
                pick("x-real-ip"),
            ));
        }
        // the gateway always sends X-Real-IP; where nginx was told to, it is the same
        if seen[0].4.is_empty() {
            seen[1].4.clear();
        }
        assert_eq!(seen[0], seen[1], "{path}: nginx then the gateway");
    }
    // an allow-list that leaves out loopback: 403 from both
    for (c, port) in [(&nc, n_https), (&gc, g_addr.port())] {
        let r = c
            .get(format!("https://ortanovias.com:{port}/flower/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    // the rate limit (10 r/s, burst 20, nodelay; one /api/ request spent above): a run of 200s,
    // then refusals. How the two differ: nginx refuses with 503 (limit_req_status's default) and
    // lets burst + 1 requests through at once; the gateway refuses with 429 and Retry-After and
    // lets a second's worth more through (rate + burst).
    for (c, port, refused, at_once) in [(&nc, n_https, 503, 21), (&gc, g_addr.port(), 429, 30)] {
        let start = std::time::Instant::now();
        let mut statuses = Vec::new();
        for _ in 0..60 {
            let r = c
                .get(format!("https://ortanovias.com:{port}/api/limited"))
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        let refill = (start.elapsed().as_secs_f64() * 10.0).ceil() as usize;
        let first_refused = statuses.iter().position(|s| *s != 200).unwrap();
        let passed = statuses.iter().filter(|s| **s == 200).count();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == refused),
            "port {port}: {statuses:?}"
        );
        assert!(
            (at_once - 1..=at_once + refill).contains(&first_refused) && passed <= at_once + refill,
            "port {port}: {statuses:?} ({refill} refilled)"
        );
    }
}

#[test]
fn inheritance_and_nginx_defaults_carry_over() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    for d in ["admin", "private"] {
        std::fs::create_dir_all(www.join(d)).unwrap();
    }
    let file = dir.path().join("site.conf");
    let text = r#"
http {
    server {
        server_name a.test;
        root WWW;
        expires 1h;
        allow 10.0.0.0/8;
        deny all;
        location /admin/ { allow 127.0.0.1; deny all; }
        location /app/ { uwsgi_pass 127.0.0.1:3031; }
        location /api/ { proxy_pass http://a-b:8000; }
        location /v2/ { proxy_pass http://a.b:8000; }
        location = /favicon.ico { }
    }
    server {
        listen 8080;
        server_name b.test;
        return 301 https://a.test$request_uri;
        location /keep/ { root WWW; }
    }
    server {
        listen 8443 ssl;
        listen 8443 quic reuseport;
        server_name c.test;
        location /private/ { deny all; root WWW; }
    }
}
"#
    .replace("WWW", www.to_str().unwrap());
    std::fs::write(&file, &text).unwrap();
    let (code, toml, err) = import(dir.path(), &file);
    assert_all_accounted(&err, std::slice::from_ref(&file), 0);
    // no listen: nginx's *:80; `quic` is reported, not a second listener on the port
    assert!(toml.contains("http = \"0.0.0.0:80\""), "{toml}");
    assert!(
        err.contains("site.conf:23: directive `listen` not translated: HTTP/3"),
        "{err}"
    );
    // a location's own allow/deny replace the server's (never widened)
    assert!(toml.contains("allow = [\"127.0.0.1\"]"), "{toml}");
    assert!(!toml.contains("allow = [\"10.0.0.0/8\", \"127.0.0.1\"]"), "{toml}");
    // `deny all` alone refuses everyone
    assert!(toml.contains("allow = [\"0.0.0.0/32\"]"), "{toml}");
    // an untranslated uwsgi_pass makes no route (never the root's files in its place)
    assert!(!toml.contains("path = \"/app/\""), "{toml}");
    // nginx's default index; Cache-Control only on the routes serving files
    assert!(toml.contains("index = \"index.html\""), "{toml}");
    let api = toml
        .split("[[route]]")
        .find(|r| r.contains("path = \"/api/\""))
        .unwrap();
    assert!(!api.contains("cache_control"), "{api}");
    // two addresses that read alike get two upstreams
    assert!(
        toml.contains("name = \"a_b_8000\"") && toml.contains("name = \"a_b_8000_2\""),
        "{toml}"
    );
    // a server-level return answers before its locations
    assert!(
        err.contains("site.conf:19: directive `location` not translated: never reached"),
        "{err}"
    );
    assert!(!toml.contains("path = \"/keep/\""), "{toml}");
    // and the result passes check (an exact-match file location left to the enclosing route)
    assert_eq!(code, Some(0), "{err}\n{toml}");
}

#[test]
fn deeply_nested_blocks_are_refused_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deep.conf");
    std::fs::write(&file, "a {".repeat(5000)).unwrap();
    let (code, _, err) = import(dir.path(), &file);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(":1:") && err.contains("blocks nested deeper than 64"),
        "{err}"
    );
}
