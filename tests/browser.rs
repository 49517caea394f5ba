//! The demo site in a real browser: the gateway runs on the default `conf/gateway.toml`
//! (self-signed HTTPS, the bundled API behind `/api/`, the site from `www/`), headless Chromium
//! loads it over HTTPS and is driven over the DevTools protocol: the catalog renders dress cards
//! from the API, the booking form submits and shows its confirmation, and no Content-Security-
//! Policy violation is reported. Screenshots go to `target/browser-*.png`. And Chromium with QUIC
//! forced for the gateway's origin loads the catalog over HTTP/3 (the access log says so).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium with a DevTools port; killed when dropped.
struct Browser {
    child: Child,
    ws_url: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "Chromium is needed for this test: apt-get install chromium (scripts/test installs it)"
        );
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                // the gateway's certificate is self-signed
                "--ignore-certificate-errors",
                "--remote-debugging-port=0",
                "--window-size=1280,1800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let ws_url = loop {
            let line = lines.next().expect("chromium prints its DevTools address").unwrap();
            if let Some(url) = line.split("DevTools listening on ").nth(1) {
                break url.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Browser {
            child,
            ws_url,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A minimal DevTools protocol client on one page.
struct Cdp {
    ws: Ws,
    next_id: u64,
    session: String,
    /// Console messages and log entries seen so far.
    console: Vec<String>,
}

impl Cdp {
    async fn connect(ws_url: &str) -> Cdp {
        let hostport = ws_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let tcp = tokio::net::TcpStream::connect(hostport).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(ws_url, tcp).await.unwrap();
        let mut cdp = Cdp {
            ws,
            next_id: 0,
            session: String::new(),
            console: Vec::new(),
        };
        let target = cdp.call("Target.createTarget", json!({"url": "about:blank"})).await;
        let attached = cdp
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        cdp.session = attached["sessionId"].as_str().unwrap().to_string();
        for m in ["Page.enable", "Runtime.enable", "Log.enable"] {
            cdp.call(m, json!({})).await;
        }
        // record CSP violations from the first moment of every page (DevTools-injected, so the
        // page's own CSP does not apply to this script)
        cdp.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": "window.__csp = []; document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"}),
        )
        .await;
        cdp
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .unwrap()
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            match v.get("method").and_then(Value::as_str) {
                Some("Runtime.consoleAPICalled") => {
                    let args: Vec<String> = v["params"]["args"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| {
                            a["value"]
                                .as_str()
                                .map_or_else(|| a["description"].to_string(), str::to_string)
                        })
                        .collect();
                    self.console
                        .push(format!("{}: {}", v["params"]["type"], args.join(" ")));
                }
                Some("Log.entryAdded") => {
                    let e = &v["params"]["entry"];
                    self.console
                        .push(format!("{} {}: {}", e["source"], e["level"], e["text"]));
                }
                _ => {}
            }
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for("document.readyState === 'complete'", "page load").await;
    }

    async fn wait_for(&mut self, js: &str, what: &str) {
        for _ in 0..200 {
            if self.eval(js).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what} ({js}); console: {:?}", self.console);
    }

    async fn screenshot(&mut self, name: &str) {
        use std::io::Write;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64_decode(shot["data"].as_str().unwrap());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("browser-{name}.png"));
        std::fs::File::create(&path).unwrap().write_all(&png).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    }

    fn csp_messages(&self) -> Vec<&String> {
        self.console
            .iter()
            .filter(|m| m.contains("Content Security Policy") || m.contains("Content-Security-Policy"))
            .collect()
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        acc = (acc << 6) | T.iter().position(|t| *t == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The real binary on the default config, from a scratch directory holding the repository's
/// config and site (so runtime files stay out of the checkout).
fn default_gateway() -> BinGateway {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("conf/gateway.toml")).unwrap();
    let gw = BinGateway::start_with(&text, |dir| {
        for d in ["www", "media"] {
            std::os::unix::fs::symlink(repo.join(d), dir.join(d)).unwrap();
        }
    });
    assert_eq!(gw.https.map(|a| a.to_string()).as_deref(), Some("127.0.0.1:8443"));
    gw
}

#[tokio::test]
async fn the_site_renders_the_catalog_and_books_a_fitting_in_chromium() {
    let gw = default_gateway();
    let browser = Browser::start();
    let mut page = Cdp::connect(&browser.ws_url).await;

    page.goto("https://127.0.0.1:8443/").await;
    let title = page.eval("document.title").await;
    assert!(title.as_str().unwrap().contains("Orta Novias"), "{title}");
    page.screenshot("home").await;

    page.goto("https://127.0.0.1:8443/catalog.html").await;
    page.wait_for(
        "document.querySelectorAll('#catalog-grid .dress-card').length >= 12",
        "dress cards from /api/dresses",
    )
    .await;
    let names = page
        .eval("[...document.querySelectorAll('#catalog-grid .dress-card')].map(c => c.textContent).join('|')")
        .await;
    assert!(names.as_str().unwrap().contains("Alba"), "{names}");
    let images = page
        .eval("[...document.querySelectorAll('#catalog-grid .dress-card img')].every(i => i.alt.length > 0 && new URL(i.src).pathname.startsWith('/media/'))")
        .await;
    assert_eq!(
        images,
        json!(true),
        "every card shows an image from /media/ with alt text"
    );
    // the cards on screen (the rest may load lazily): their images arrived
    page.wait_for(
        "[...document.querySelectorAll('#catalog-grid .dress-card img')].filter(i => i.getBoundingClientRect().top < innerHeight).every(i => i.complete && i.naturalWidth > 0)",
        "the images of the cards on screen",
    )
    .await;
    page.screenshot("catalog").await;

    // book a fitting: a Wednesday two weeks ahead, 11:00, dress 3
    let mut day = time::OffsetDateTime::now_utc().date() + time::Duration::days(14);
    while day.weekday() != time::Weekday::Wednesday {
        day = day.next_day().unwrap();
    }
    page.goto("https://127.0.0.1:8443/book.html?dress=3").await;
    page.wait_for("!!document.querySelector('#booking-form')", "the booking form")
        .await;
    let fill = format!(
        r#"(async () => {{
            const f = document.querySelector('#booking-form');
            const set = (name, value) => {{
                const el = f.elements[name];
                el.value = value;
                el.dispatchEvent(new Event('input', {{ bubbles: true }}));
                el.dispatchEvent(new Event('change', {{ bubbles: true }}));
            }};
            set('name', 'Elena Martín');
            set('email', 'elena@example.com');
            set('phone', '+34 622 333 444');
            set('date', '{day}');
            await new Promise(r => setTimeout(r, 100));
            set('slot', '11:00');
            set('notes', 'Booked by the browser test');
            f.requestSubmit();
            return true;
        }})()"#
    );
    page.eval(&fill).await;
    page.wait_for(
        "!!document.querySelector('#booking-confirmation') && document.querySelector('#booking-confirmation').offsetParent !== null",
        "the booking confirmation",
    )
    .await;
    // (it fades in)
    page.wait_for(
        "getComputedStyle(document.querySelector('#booking-confirmation')).opacity === '1'",
        "the confirmation fully shown",
    )
    .await;
    let confirmation = page
        .eval("document.querySelector('#booking-confirmation').textContent")
        .await;
    let text = confirmation.as_str().unwrap();
    assert!(text.contains(&day.to_string()), "{text}");
    assert!(text.contains("11:00"), "{text}");
    page.screenshot("booking").await;

    // the same slot again: the server's 409 is shown on the slot field
    page.goto("https://127.0.0.1:8443/book.html").await;
    page.wait_for("!!document.querySelector('#booking-form')", "the booking form")
        .await;
    page.eval(&fill).await;
    page.wait_for(
        "(document.querySelector('#slot-error') || {textContent: ''}).textContent.includes('already booked')",
        "the 409 on the slot field",
    )
    .await;

    let violations = page.eval("window.__csp").await;
    assert_eq!(violations, json!([]), "CSP violations");
    assert!(page.csp_messages().is_empty(), "{:?}", page.csp_messages());
    drop(gw);
}

/// The base64 SHA-256 of a PEM certificate's public key (what Chromium's
/// `--ignore-certificate-errors-spki-list` takes), by openssl.
fn spki_sha256(cert: &std::path::Path) -> String {
    need("openssl", "openssl");
    let script = format!(
        "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        cert.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn chromium_loads_the_site_over_http3() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "Chromium is needed for this test: apt-get install chromium (scripts/test installs it)"
    );
    // the default config with HTTP/3 on, on ports of its own (the other browser test has the
    // default ones), its access log in one file
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (https, http, a, b) = (free_port(), free_port(), free_port(), free_port());
    let text = std::fs::read_to_string(repo.join("conf/gateway.toml"))
        .unwrap()
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{https}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{http}"))
        .replace("127.0.0.1:8001", &format!("127.0.0.1:{a}"))
        .replace("127.0.0.1:8002", &format!("127.0.0.1:{b}"))
        .replace("rotation = \"daily\"", "rotation = \"never\"")
        .replace("listen = \"127.0.0.1:9901\"", "listen = \"127.0.0.1:0\"");
    let gw = BinGateway::start_with(&text, |dir| {
        for d in ["www", "media"] {
            std::os::unix::fs::symlink(repo.join(d), dir.join(d)).unwrap();
        }
    });
    let spki = spki_sha256(&gw.dir.path().join("certs/self-signed/cert.pem"));
    let profile = tempfile::tempdir().unwrap();
    let origin = format!("127.0.0.1:{https}");
    let mut chromium = Command::new(CHROMIUM);
    chromium
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-dev-shm-usage",
        ])
        .arg("--enable-quic")
        .arg(format!("--origin-to-force-quic-on={origin}"))
        .arg(format!("--ignore-certificate-errors-spki-list={spki}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("https://{origin}/catalog.html"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || chromium.output()),
    )
    .await
    .expect("chromium finishes")
    .unwrap()
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("Orta Novias"), "the page did not load: {dom}");
    let log = gw.dir.path().join("logs/access.log");
    wait_until(
        Duration::from_secs(5),
        "Chromium's requests over HTTP/3 in the access log",
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let h3: Vec<String> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["http_version"] == "HTTP/3")
                .filter_map(|v| v["path"].as_str().map(str::to_string))
                .collect();
            h3.iter().any(|p| p == "/catalog.html") && h3.iter().any(|p| p.starts_with("/api/dresses"))
        },
    )
    .await;
}
